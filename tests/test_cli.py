"""The `course` command: JSON last line, light imports, sentences instead of tracebacks."""

import json
import subprocess
import sys

from course_utils.cli import build_parser, main


def run_course(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "course_utils.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_env_json_is_the_last_line_and_reports_every_package():
    proc = run_course("env", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {c["name"] for c in result["checks"]}
    assert {"python", "torch", "transformers", "faiss-cpu", "device"} <= names
    assert result["ok"] is True and result["mode"] == "fast"


def test_env_prints_ok_lines_for_people():
    proc = run_course("env")
    assert "[OK]" in proc.stdout and "device" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("0 FAIL")


def test_importing_the_package_does_not_import_torch():
    code = (
        "import sys, course_utils, course_utils.cli, course_utils.settings, course_utils.artifacts,"
        " course_utils.envcheck, course_utils.coursemap, course_utils.embed, course_utils.runbook;"
        " heavy = [m for m in ('torch', 'transformers', 'datasets', 'sentence_transformers') if m in sys.modules];"
        " print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_subcommand_has_help_and_json():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert p.description, f"`course {name}` needs a help string"
        assert any("--json" in a.option_strings for a in p._actions), f"`course {name}` needs --json"


def test_artifacts_lists_the_cache(capsys):
    from course_utils.artifacts import load_or_build

    load_or_build("demo", {"a": 1}, lambda f: None, verbose=False)
    assert main(["artifacts", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [a["name"] for a in result["artifacts"]] == ["demo"]


def test_a_missing_notebook_is_a_sentence_not_a_traceback():
    proc = run_course("notebooks", "no_such_notebook.ipynb", "--json")
    assert proc.returncode == 2
    assert "No such notebook" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is False
