"""`course prebuild`: the plan builds what the notebooks load, one line per artifact, a table of what is cached.

The whole plan takes minutes even in fast mode, so these tests run it on a plan of tiny artifacts and the real
tokenizer step; `make test-notebooks` runs the real plan after the notebooks and checks it finds everything
they built already cached (so its keys are theirs)."""

import json
import re

import pytest

from course_utils import prebuild
from course_utils.artifacts import list_artifacts, load_or_build
from course_utils.cli import main
from course_utils.runbook import discover_notebooks
from course_utils.settings import get_settings

#: The stage loaders the notebooks call, and the plan's artifact each one stands for.
LOADERS = {"tokenizer": "tokenizer", "base_model": "base-model", "sft_model": "sft-model", "lora_facts": "lora-facts",
           "reward_model": "reward-model", "dpo_model": "dpo-model", "index": "rag-index", "legal_reader": "legal-reader",
           "assistant": "assistant-rules", "agent_model": "agent-model"}


def test_the_plan_builds_every_artifact_a_notebook_loads():
    used = set()
    for nb in discover_notebooks():
        used |= set(re.findall(r"load_or_build_([a-z_]+)\(", nb.read_text()))
    assert used, "no load_or_build_* call found in the notebooks"
    unknown = used - set(LOADERS)
    assert not unknown, f"notebooks call load_or_build_{unknown}: add it to prebuild.PLAN and to LOADERS here"
    assert {LOADERS[u] for u in used} <= {s.name for s in prebuild.PLAN}
    assert [s.name for s in prebuild.PLAN][:2] == ["tokenizer", "base-model"], "in the order the stages need them"


def _tiny_plan():
    def dep(settings):
        return load_or_build("tiny-dep", {"n": 1}, lambda f: (f / "x.bin").write_bytes(b"0" * 2048), settings=settings,
                             verbose=False)

    def model(settings):
        dep(settings)  # a step builds what it stands on first
        return load_or_build("tiny-model", {"n": 2}, lambda f: (f / "w.bin").write_bytes(b"1" * 300_000),
                             settings=settings, verbose=False)

    def index(settings):
        return load_or_build("tiny-index", {"n": 3}, lambda f: (f / "i.bin").write_bytes(b"2"), settings=settings,
                             verbose=False)

    return (prebuild.Step("tiny-model", "04, 05", model), prebuild.Step("tiny-index", "08", index))


def test_built_then_cached_with_a_line_per_artifact_and_a_table():
    settings = get_settings()
    lines = []
    rows = prebuild.prebuild(settings=settings, plan=_tiny_plan(), say=lines.append)
    assert [(r.artifact, r.status, r.needed_by) for r in rows] == [
        ("tiny-dep", "built", "(for tiny-model)"), ("tiny-model", "built", "04, 05"), ("tiny-index", "built", "08")]
    assert len(lines) == 4 and lines[0].startswith("[prebuild 1/2] tiny-model") and "built in" in lines[1]
    assert rows[1].key == rows[1].path.rsplit("/", 1)[1] and rows[1].mib > 0
    again = prebuild.prebuild(settings=settings, plan=_tiny_plan(), say=lines.append)
    assert [(r.artifact, r.status) for r in again] == [("tiny-model", "cached"), ("tiny-index", "cached")]
    assert {r.path for r in again} == {str(r.path) for r in list_artifacts(settings) if r.name != "tiny-dep"}
    table = prebuild.format_table(rows + again).splitlines()
    assert table[0].startswith("| artifact | key | status |") and len(table) == 2 + 5 + 1
    assert table[-1].startswith("| **5 artifacts** | | 3 built |")
    only = prebuild.prebuild(["tiny-index"], settings=settings, plan=_tiny_plan(), say=lines.append)
    assert [r.artifact for r in only] == ["tiny-index"]
    with pytest.raises(ValueError, match="No artifact nope in the plan: choose from tiny-model, tiny-index"):
        prebuild.prebuild(["nope"], settings=settings, plan=_tiny_plan())


def test_cli_prints_progress_to_stderr_and_the_table_as_json(monkeypatch, capsys):
    monkeypatch.setattr(prebuild, "PLAN", _tiny_plan())
    assert main(["prebuild", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out.splitlines()[-1])
    assert result["mode"] == "fast" and result["built"] == 3 and result["cache_dir"] == str(get_settings().cache_dir)
    assert [a["artifact"] for a in result["artifacts"]] == ["tiny-dep", "tiny-model", "tiny-index"]
    assert set(result["artifacts"][0]) == {"artifact", "key", "status", "seconds", "mib", "needed_by", "path"}
    assert err.count("[prebuild ") == 4
    assert main(["prebuild"]) == 0
    out, _ = capsys.readouterr()
    assert "| tiny-index |" in out and "| **2 artifacts** | | 0 built |" in out
    assert main(["prebuild", "--expect-cached"]) == 0
    monkeypatch.setattr(prebuild, "PLAN", prebuild.PLAN + (prebuild.Step("tiny-new", "10", lambda s: load_or_build(
        "tiny-new", {}, lambda f: None, settings=s, verbose=False)),))
    assert main(["prebuild", "--expect-cached"]) == 1
    assert "tiny-new had to be built" in capsys.readouterr().out
    assert main(["prebuild", "--json", "nope"]) == 2
    assert "No artifact nope" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]


@pytest.mark.slow
def test_the_real_tokenizer_step_in_fast_mode(capsys):
    """The real plan's first step through the command line (the corpus it stands on comes with it)."""
    assert main(["prebuild", "tokenizer", "--fast", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    rows = {a["artifact"]: a for a in result["artifacts"]}
    assert rows["tokenizer"]["status"] == "built" and rows["corpus"]["needed_by"] == "(for tokenizer)"
    assert main(["prebuild", "tokenizer", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["built"] == 0
