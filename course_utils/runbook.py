"""Execute the course's notebooks and record each one's wall time and peak memory.

Used by ``make course`` (learner mode: executed copies to read, and the timing table
that the README's course map quotes) and ``course notebooks``. Each notebook runs in
a fresh kernel started in its own folder, exactly as restart-and-run-all would.

A learner-mode run also records each notebook that passed in ``results/times.json`` (committed, like the
figures in ``results/NN.json``; ``COURSE_RESULTS`` points it elsewhere): the measured times that the
instructor pack's workshop agendas are built from (:mod:`course_utils.instructor`).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from course_utils.settings import repo_root

__all__ = ["NotebookRun", "discover_notebooks", "export_figures", "load_times", "record_times", "run_notebook",
           "run_notebooks", "times_path"]

NOTEBOOK_PATTERN = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")

# Appended to the notebook in memory (never saved): reports the kernel's peak resident
# memory, its own and that of any child process it waited for (torchrun workers).
_PEAK_CELL = """\
import json as _j, resource as _r, sys as _s
_k = 1 if _s.platform == "darwin" else 1024
print("__PEAK__" + _j.dumps({"self": _r.getrusage(_r.RUSAGE_SELF).ru_maxrss * _k,
                             "children": _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss * _k}))
"""


@dataclass(frozen=True)
class NotebookRun:
    """How one notebook's execution went."""

    notebook: str  # file name
    mode: str  # "fast" or "learner"
    ok: bool  # every cell ran without error
    seconds: float  # wall time including kernel start
    peak_mib: float  # peak resident memory of the kernel (or its largest child), MiB
    error: str  # first line of the error, or ""


def discover_notebooks(folder: Path | None = None) -> list[Path]:
    """The course's numbered notebooks ``NN_name.ipynb``, in order."""
    folder = folder or repo_root() / "notebooks"
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))


def run_notebook(path: Path, out_path: Path, *, fast: bool, timeout: int = 3600) -> NotebookRun:
    """Execute ``path`` in a fresh kernel; write the executed copy to ``out_path``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(_PEAK_CELL))
    previous = os.environ.get("COURSE_FAST")
    os.environ["COURSE_FAST"] = "1" if fast else "0"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as exc:
        error = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    except Exception as exc:  # kernel died, timeout
        error = f"{type(exc).__name__}: {exc}"
    finally:
        if previous is None:
            os.environ.pop("COURSE_FAST", None)
        else:
            os.environ["COURSE_FAST"] = previous
    seconds = time.perf_counter() - start
    peak = 0.0
    last = nb.cells.pop()
    for output in last.get("outputs", []):
        text = output.get("text", "")
        if "__PEAK__" in text:
            data = json.loads(text.split("__PEAK__", 1)[1])
            peak = max(data["self"], data["children"]) / 2**20
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_path)
    return NotebookRun(
        notebook=path.name,
        mode="fast" if fast else "learner",
        ok=not error,
        seconds=round(seconds, 1),
        peak_mib=round(peak, 1),
        error=error,
    )


def _table(runs: list[NotebookRun]) -> str:
    lines = [
        "| notebook | mode | status | wall time | peak memory |",
        "|---|---|---|---:|---:|",
    ]
    for r in runs:
        status = "ok" if r.ok else f"FAILED: {r.error[:80]}"
        lines.append(
            f"| {r.notebook} | {r.mode} | {status} | {r.seconds / 60:.1f} min | {r.peak_mib:.0f} MiB |"
        )
    return "\n".join(lines)


def run_notebooks(
    notebooks: list[str] | None = None,
    *,
    out_dir: str | Path = "build",
    fast: bool = False,
    timeout: int = 3600,
) -> dict:
    """Execute notebooks one after another; write copies, ``report.md`` and ``report.json``.

    Returns ``{"ok": bool, "runs": [...], "report": path}``; a failing notebook does not
    stop the others.
    """
    from tqdm.auto import tqdm

    paths = [Path(n).resolve() for n in notebooks] if notebooks else discover_notebooks()
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"No such notebook: {', '.join(missing)}")
    out = Path(out_dir).resolve()
    runs = []
    bar = tqdm(paths, desc="notebooks", unit="nb")
    for path in bar:
        bar.set_postfix_str(path.name)
        run = run_notebook(path, out / "notebooks" / path.name, fast=fast, timeout=timeout)
        runs.append(run)
        bar.write(f"{'ok    ' if run.ok else 'FAILED'} {run.notebook}: {run.seconds:.0f} s, {run.peak_mib:.0f} MiB")
    (out / "report.md").write_text(
        f"# Executed notebooks ({'fast' if fast else 'learner'} mode)\n\n{_table(runs)}\n"
    )
    (out / "report.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    # the course's own notebooks only (a notebook of yours elsewhere has no place in the course's agenda)
    ours = [r for r, p in zip(runs, paths) if r.ok and p.parent == (repo_root() / "notebooks").resolve()]
    times = record_times(ours) if not fast and ours else None
    return {
        "ok": all(r.ok for r in runs),
        "runs": [asdict(r) for r in runs],
        "report": str(out / "report.md"),
        "times": str(times) if times else None,
        "_exit": 0 if all(r.ok for r in runs) else 1,
    }


def times_path() -> Path:
    """``times.json`` in the results folder: ``COURSE_RESULTS`` if set, else ``results/`` in the repository."""
    folder = os.environ.get("COURSE_RESULTS")
    return (Path(folder).expanduser() if folder else repo_root() / "results") / "times.json"


_TIMES_ABOUT = ("Learner-mode wall time (minutes) and peak memory (MiB) of each course notebook, written by "
                "`make course` (course notebooks in learner mode) for every notebook that passed; the instructor "
                "pack's agendas are built from it (course instructor). They assume the artifacts are pre-built "
                "(course prebuild), as they were when these times were measured.")


def load_times(path: Path | None = None) -> dict[str, dict]:
    """The recorded learner-mode times, ``{"05": {"file", "minutes", "peak_mib", "measured", "machine",
    "source"}}``; empty when nothing was recorded yet."""
    path = path or times_path()
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
        entries = doc["notebooks"]
        for number, entry in entries.items():
            float(entry["minutes"]), entry["measured"]  # noqa: B018
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a times file ({type(exc).__name__}: {exc}); rerun `make course` or restore "
                         "it from git.") from None
    return entries


def record_times(runs: list[NotebookRun], path: Path | None = None) -> Path:
    """Write the learner-mode runs that passed into ``times.json`` (other notebooks' entries are kept)."""
    from course_utils.results import _machine

    path = path or times_path()
    entries = load_times(path)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for r in runs:
        if r.ok and r.mode == "learner":
            entries[r.notebook[:2]] = {"file": r.notebook, "minutes": round(r.seconds / 60, 1),
                                       "peak_mib": round(r.peak_mib), "measured": today, "machine": _machine(),
                                       "source": "course notebooks (learner mode)"}
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"about": _TIMES_ABOUT, "notebooks": dict(sorted(entries.items()))}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return path


#: Cell tag that names a figure for the decks: ``figure:<name>`` -> ``<NN>_<name>.png``.
FIGURE_TAG = "figure:"


def _figure_tags(cell: dict) -> list[str]:
    return [t[len(FIGURE_TAG):] for t in cell.get("metadata", {}).get("tags", []) if t.startswith(FIGURE_TAG)]


def export_figures(notebooks: list[Path], out_dir: Path, sources: Path | None = None) -> list[Path]:
    """Write the PNG output of every cell tagged ``figure:<name>`` in executed ``notebooks`` to
    ``out_dir/<NN>_<name>.png`` (``NN``: the notebook's number), the pictures of the decks in
    ``slides/``. The tags are read from the executed copy and from the notebook of the same name in
    ``sources`` (default: the course's ``notebooks/``), matched by cell id, so a copy executed before
    a tag was added still exports. A tagged cell must have a PNG output: an executed copy without one
    (a failed run, a notebook never run) is an error that names the cell. Returns the files written."""
    import base64

    sources = sources if sources is not None else repo_root() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in notebooks:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        number = Path(path).name[:2]
        source = sources / Path(path).name
        source_tags = {}
        if source.exists() and source.resolve() != Path(path).resolve():
            source_tags = {c.get("id"): _figure_tags(c) for c in json.loads(source.read_text(encoding="utf-8"))["cells"]}
        for cell in nb.get("cells", []):
            names = list(dict.fromkeys(_figure_tags(cell) + source_tags.get(cell.get("id"), [])))
            if not names:
                continue
            pngs = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if not pngs:
                raise ValueError(f"{path}: cell {cell.get('id', '?')} is tagged {FIGURE_TAG}{names[0]} but has no "
                                 "picture: export from an executed copy (course notebooks --out DIR).")
            for name in names:
                target = out_dir / f"{number}_{name}.png"
                data = pngs[-1]
                target.write_bytes(base64.b64decode("".join(data) if isinstance(data, list) else data))
                written.append(target)
    return written
