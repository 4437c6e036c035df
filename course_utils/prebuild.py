"""Pre-build every artifact the notebooks need: ``course prebuild``, before a class or a flight.

Not taught in a notebook; the instructor pack (``docs/instructor.md``) says when to run it. Each step calls
the stage's own ``load_or_build_*`` with the arguments the notebooks pass (each stage's ``default_config``
of the mode), so the cache keys are the notebooks' keys: after ``course prebuild`` every notebook says
*using cached* where it would have trained, and runs in the time ``results/times.json`` records. An
artifact already in the cache is only checked, never rebuilt; the artifacts a step needs first (the corpus,
the tokenized data, the reading drills) are built by the step that needs them and reported with it.

Notebook 00's ``taste-embeddings`` is not pre-built: it is notebook 00's lesson on the cache (it builds
them in a second and shows the second call finding them). ``tests/`` and ``make test-notebooks`` check that
after the notebooks ran, a prebuild finds every artifact cached: the plan builds what they use.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from course_utils.settings import Settings, get_settings

__all__ = ["PLAN", "PrebuildRow", "Step", "format_table", "prebuild", "rows_as_dicts"]


@dataclass(frozen=True)
class Step:
    """One artifact of the plan."""

    name: str  # the artifact's name in the cache (folder under COURSE_CACHE)
    notebooks: str  # the notebooks that load it
    build: Callable[[Settings], Path]  # loads or builds it as the notebooks do; returns its folder


@dataclass(frozen=True)
class PrebuildRow:
    """One line of the final table."""

    artifact: str  # name in the cache
    key: str  # hash of its configuration (the folder's name)
    status: str  # "cached" (found) or "built" (now)
    seconds: float  # time this step took: the build, or checking the cached copy
    mib: float  # size on disk
    needed_by: str  # notebooks, or "(for base-model)" for what a step built first
    path: str  # the folder


def _tokenizer(s: Settings) -> Path:
    from course_utils.tokenizer import load_or_build_tokenizer

    return Path(load_or_build_tokenizer(s).name_or_path)


def _base_model(s: Settings) -> Path:
    from course_utils.pretrain import load_or_build_base_model

    return load_or_build_base_model(s)  # preset by mode, as notebook 02's PRESET


def _sft_model(s: Settings) -> Path:
    from course_utils.sft import load_or_build_sft_model

    return load_or_build_sft_model(s)


def _lora_facts(s: Settings) -> Path:
    from course_utils.lora import load_or_build_lora_facts

    return load_or_build_lora_facts(s)


def _legal_reader(s: Settings) -> Path:
    from course_utils.lora import load_or_build_legal_reader

    return load_or_build_legal_reader(s)


def _assistant_helpful(s: Settings) -> Path:
    from course_utils.security import load_or_build_assistant

    return load_or_build_assistant(hierarchy=False, settings=s)


def _assistant_rules(s: Settings) -> Path:
    from course_utils.security import load_or_build_assistant

    return load_or_build_assistant(hierarchy=True, settings=s)


def _agent_model(s: Settings) -> Path:
    from course_utils.agent_model import load_or_build_agent_model

    return load_or_build_agent_model(s)


def _reward_model(s: Settings) -> Path:
    from course_utils.reward import load_or_build_reward_model

    return load_or_build_reward_model(s)


def _dpo_model(s: Settings) -> Path:
    from course_utils.dpo import load_or_build_dpo_model

    return load_or_build_dpo_model(s)


def _rag_index(s: Settings) -> Path:
    from course_utils.rag import load_or_build_index

    return load_or_build_index(settings=s).folder


#: In the order the notebooks need them; each step also builds what it stands on if it is missing.
PLAN: tuple[Step, ...] = (
    Step("tokenizer", "01, 02 and every model", _tokenizer),
    Step("base-model", "02, 04-06, 10", _base_model),
    Step("sft-model", "04, 05, 06, 08, 10, 12", _sft_model),
    Step("lora-facts", "05, 08, 10", _lora_facts),
    Step("reward-model", "06, 09, 10", _reward_model),
    Step("dpo-model", "06, 09, 10", _dpo_model),
    Step("rag-index", "08, 09, 10, 12", _rag_index),
    Step("legal-reader", "09", _legal_reader),
    Step("assistant-helpful", "11", _assistant_helpful),
    Step("assistant-rules", "11", _assistant_rules),
    Step("agent-model", "12", _agent_model),
)


def _mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def prebuild(names: Sequence[str] | None = None, settings: Settings | None = None, *,
             plan: Sequence[Step] | None = None, say: Callable[[str], None] | None = None) -> list[PrebuildRow]:
    """Load or build the artifacts of ``plan`` (default :data:`PLAN`; all, or those ``names``) in order; one
    progress line per artifact through ``say`` (default: standard error). Returns the table's rows: each
    step's artifact and, before it, whatever it had to build first."""
    from course_utils.artifacts import list_artifacts

    plan = PLAN if plan is None else plan
    settings = settings or get_settings()
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    known = [s.name for s in plan]
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise ValueError(f"No artifact {', '.join(unknown)} in the plan: choose from {', '.join(known)}.")
    steps = [s for s in plan if not names or s.name in names]
    rows: list[PrebuildRow] = []
    for i, step in enumerate(steps, 1):
        before = {(r.name, r.key) for r in list_artifacts(settings)}
        say(f"[prebuild {i}/{len(steps)}] {step.name} ({settings.mode} mode, for notebooks {step.notebooks}): "
            "loading or building ...")
        t0 = time.perf_counter()
        folder = Path(step.build(settings)).resolve()
        seconds = time.perf_counter() - t0
        records = {r.path.resolve(): r for r in list_artifacts(settings)}
        if folder not in records:
            raise ValueError(f"{step.name}: {folder} is not a finished artifact of the cache {settings.cache_dir}.")
        record = records[folder]
        for r in records.values():  # what the step built first (the corpus, tokens, drills)
            if (r.name, r.key) not in before and r.path.resolve() != folder:
                rows.append(PrebuildRow(r.name, r.key, "built", round(r.build_seconds, 1), round(_mib(r.path), 1),
                                        f"(for {step.name})", str(r.path)))
        status = "cached" if (record.name, record.key) in before else "built"
        rows.append(PrebuildRow(record.name, record.key, status, round(seconds, 1), round(_mib(folder), 1),
                                step.notebooks, str(folder)))
        say(f"[prebuild {i}/{len(steps)}] {step.name} {record.key}: {status} in {seconds:.1f} s, "
            f"{rows[-1].mib:.1f} MiB -> {folder}")
    return rows


def format_table(rows: Sequence[PrebuildRow]) -> str:
    """The rows as a Markdown table, with the total size last."""
    lines = ["| artifact | key | status | time | size | needed by |", "|---|---|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.artifact} | {r.key} | {r.status} | {r.seconds:.1f} s | {r.mib:.1f} MiB | {r.needed_by} |")
    built = sum(r.status == "built" for r in rows)
    lines.append(f"| **{len(rows)} artifacts** | | {built} built | {sum(r.seconds for r in rows):.1f} s | "
                 f"{sum(r.mib for r in rows):.1f} MiB | |")
    return "\n".join(lines)


def rows_as_dicts(rows: Sequence[PrebuildRow]) -> list[dict]:
    """The rows as JSON-able dicts (``course prebuild --json``)."""
    return [asdict(r) for r in rows]
