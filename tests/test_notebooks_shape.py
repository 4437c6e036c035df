"""Every notebook has the course's shape, and is committed without outputs."""

import re
from pathlib import Path

import nbformat
import pytest

from course_utils.coursemap import COURSE_MAP
from course_utils.runbook import discover_notebooks
from course_utils.settings import REPO_SLUG, repo_root

NOTEBOOKS = discover_notebooks()
IDS = [p.name for p in NOTEBOOKS]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks_and_each_is_on_the_map():
    assert NOTEBOOKS, "no notebooks found"
    files = {m.filename for m in COURSE_MAP}
    for p in NOTEBOOKS:
        assert p.name in files, f"{p.name} is not in course_utils/coursemap.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_without_outputs_or_widget_state(path):
    nb = _read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them (nbstripout)"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} carries widget state"
    nbformat.validate(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_title_cell_has_badges_time_and_prerequisites(path):
    title = _read(path).cells[0]
    assert title.cell_type == "markdown" and title.source.startswith(f"# {path.name[:2]} ")
    colab = f"https://colab.research.google.com/github/{REPO_SLUG}/blob/main/notebooks/{path.name}"
    binder = f"https://mybinder.org/v2/gh/{REPO_SLUG}/main?urlpath=lab/tree/notebooks/{path.name}"
    assert colab in title.source and binder in title.source
    assert "**Time.**" in title.source and "2-core" in title.source and "GPU" in title.source
    assert "**Prerequisites.**" in title.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_colab_cell_parameters_checks_summary_exercises(path):
    cells = _read(path).cells
    code = [c for c in cells if c.cell_type == "code"]
    assert 'if "google.colab" in sys.modules:' in code[0].source, "first code cell: Colab-only set-up"
    assert f"https://github.com/{REPO_SLUG}" in code[0].source
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged `parameters`"
    assert "get_settings()" in params[0].source
    asserts = [c for c in code if re.search(r"^\s*assert ", c.source, re.M)]
    assert len(asserts) >= 2, "check cells must assert on measured results"
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "## Summary" in markdown and "## Exercises" in markdown
    assert "<details><summary>Solution" in markdown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_defines_no_reusable_code_of_its_own(path):
    """Reusable code lives in course_utils; a notebook may define small local helpers only."""
    for cell in _read(path).cells:
        if cell.cell_type == "code":
            assert not re.search(r"^from \.|^import \*|import \*", cell.source, re.M), "no star imports"


def test_notebook_numbers_are_unique_and_ordered():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers))
    assert (repo_root() / "notebooks" / "00_llmops_overview.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_cell_has_a_unique_id(path):
    import json

    raw = json.loads(path.read_text(encoding="utf-8"))  # nbformat.read would quietly invent missing ids
    ids = [cell.get("id") for cell in raw["cells"]]
    missing = [i for i, cell_id in enumerate(ids) if not cell_id]
    assert not missing, f"{path.name}: cells {missing} have no id (nbformat 4.5 requires one)"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
