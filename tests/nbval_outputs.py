"""A pytest plugin for `make test-notebooks`: keep what nbval executed, as executed notebooks.

nbval runs every cell of a notebook and compares nothing in ``--nbval-lax`` mode, then throws the outputs
away. With ``-p tests.nbval_outputs`` and ``COURSE_NB_OUTPUTS=DIR`` each notebook is also written to
``DIR/<name>.ipynb`` with the outputs its cells produced (a cell that failed keeps its traceback), and
``DIR/report.json`` says how each went (as ``course notebooks`` does), so the notebook tests' fast-mode run
also gives the course site (``course site --executed DIR``) its pages, at no second execution. It reads nbval's cell items (``cell``, ``test_outputs``, ``parent.nb``; nbval 0.11).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest


def _folder() -> Path | None:
    folder = os.environ.get("COURSE_NB_OUTPUTS")
    return Path(folder) if folder else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    folder = _folder()
    if folder is None or call.when != "call" or not hasattr(item, "test_outputs") or not hasattr(item, "cell"):
        return
    item.cell.outputs = list(item.test_outputs or [])  # the cell object is the one in item.parent.nb
    item.cell.execution_count = (item.cell_num or 0) + 1


def pytest_collection_finish(session):
    """Remember the last cell of each notebook: the notebook is written when that cell has run."""
    last = {}
    for item in session.items:
        if hasattr(item, "cell") and hasattr(item.parent, "nb"):
            last[item.parent] = item
    session.config._nbval_last_cells = set(last.values())


@pytest.hookimpl(trylast=True)
def pytest_runtest_setup(item):
    if hasattr(item, "cell") and not hasattr(item.parent, "_course_start"):
        item.parent._course_start = time.perf_counter()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    folder = _folder()
    if folder is None or item not in getattr(item.config, "_nbval_last_cells", ()):
        return
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    name = Path(str(item.parent.fspath)).name
    nbformat.write(item.parent.nb, folder / name)
    # what `course notebooks` writes in report.json, so that the site says how each copy was made
    errors = [o for c in item.parent.nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    fast = os.environ.get("COURSE_FAST", "").strip().lower() in {"1", "true", "yes", "on"}
    report = folder / "report.json"
    runs = [r for r in (json.loads(report.read_text()) if report.exists() else []) if r["notebook"] != name]
    runs.append({"notebook": name, "mode": "fast" if fast else "learner", "ok": not errors,
                 "seconds": round(time.perf_counter() - getattr(item.parent, "_course_start", time.perf_counter()), 1),
                 "peak_mib": 0.0, "error": f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else ""})
    report.write_text(json.dumps(runs, indent=2) + "\n")
