"""The recorded figures: written by notebooks, quoted by the README and the decks, never typed by hand."""

from __future__ import annotations

import json
import re

import pytest

from course_utils.results import (
    fill,
    format_figure,
    markdown_table,
    load_results,
    record_figures,
    results_dir,
    stale_markers,
    unmarked_figures,
)
from course_utils.settings import get_settings, repo_root


def test_record_load_and_fill_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    path = record_figures("06", {"win_rate": (0.523, ".0%"), "kl": (0.0312, ".3f"), "ci": ((0.2, 0.4), "[{:.2f}, {:.2f}]"),
                         "time": (12.34, "{:.1f} min")})
    assert path == tmp_path / "06.json"
    doc = json.loads(path.read_text())
    assert doc["notebook"] == "06" and doc["figures"]["win_rate"]["text"] == "52%"
    results = load_results(tmp_path)
    assert results["06.ci"]["text"] == "[0.20, 0.40]" and results["06.time"]["text"] == "12.3 min"
    text = "win rate <!--r:06.win_rate-->47%<!--/r--> and KL <!--r:06.kl-->?<!--/r-->."
    assert stale_markers(text, results) == [("06.win_rate", "47%", "52%"), ("06.kl", "?", "0.031")]
    filled = fill(text, results)
    assert filled == "win rate <!--r:06.win_rate-->52%<!--/r--> and KL <!--r:06.kl-->0.031<!--/r-->."
    assert stale_markers(filled, results) == []
    with pytest.raises(KeyError, match="06.nope"):
        fill("<!--r:06.nope-->1<!--/r-->", results)


def test_learner_times_are_figures_too(tmp_path):
    (tmp_path / "times.json").write_text(json.dumps({"notebooks": {
        "02": {"minutes": 5.8, "measured": "2026-12-03"}, "00": {"minutes": 0.2, "measured": "2026-12-03"}}}))
    results = load_results(tmp_path)
    assert results["02.learner_minutes"]["text"] == "6 min" and results["00.learner_minutes"]["text"] == "under 1 min"
    assert stale_markers("<!--r:02.learner_minutes-->12 min<!--/r-->", results) == [("02.learner_minutes", "12 min", "6 min")]


def test_record_rejects_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path))
    with pytest.raises(ValueError, match="two digits"):
        record_figures("6", {"x": (1, "d")})
    with pytest.raises(TypeError, match="value, format"):
        record_figures("06", {"x": 0.5})
    with pytest.raises(ValueError, match="letters"):
        record_figures("06", {"win rate": (0.5, ".0%")})


def test_fast_mode_never_writes_the_committed_results(monkeypatch):
    monkeypatch.delenv("COURSE_RESULTS", raising=False)
    fast = get_settings()
    assert fast.fast  # the tests run in fast mode
    assert results_dir(fast) == fast.cache_dir / "results" and results_dir(fast) != repo_root() / "results"


def test_format_figure():
    assert format_figure(0.4567, ".1%") == "45.7%" and format_figure(7243.2, ",.0f") == "7,243"
    assert format_figure((0.1, 0.2), "{:.1f}-{:.1f}") == "0.1-0.2"
    assert format_figure("| a |\n|---|\n| 1 |", "s") == "\n\n| a |\n|---|\n| 1 |\n\n"


def test_unmarked_figures_finds_typed_numbers_only():
    text = ("Recall rose to 45% and F1 to 0.78.\n"
            "Quoted: <!--r:04.f1-->0.78<!--/r--> and <!--r:04.share-->45%<!--/r-->.\n"
            "`lr=0.001` and ```\nx = 0.55\n``` and $\\log 2 \\approx 0.693$ and version 0.50.2.\n"
            "The 95% interval, a 95% bootstrap CI; keep the middle 90% <!-- not-a-result -->\n"
            "beta 0.1, 1.5e-4\n")
    assert unmarked_figures(text) == ["45%", "0.78"]


def _status_section(readme: str) -> str:
    start = readme.index("## Status")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_readme_and_decks_quote_recorded_figures_only():
    """Every marker quotes the recorded figure (``course results --update`` after ``make course``), and
    no percentage or decimal figure is typed by hand into the README's status or a deck."""
    results = load_results()
    files = {"README.md": _status_section((repo_root() / "README.md").read_text())}
    files |= {f"slides/{p.name}": p.read_text() for p in sorted((repo_root() / "slides").glob("*.md"))}
    stale = {name: stale_markers(text, results) for name, text in files.items()}
    assert not any(stale.values()), {k: v for k, v in stale.items() if v}
    typed = {name: unmarked_figures(text) for name, text in files.items()}
    assert not any(typed.values()), {k: v for k, v in typed.items() if v}
    assert results, "no results/NN.json: run the notebooks in learner mode (make course)"


def test_every_recorded_file_names_its_notebook():
    for path in sorted((repo_root() / "results").glob("*.json")):
        if path.name == "times.json":  # the notebooks' measured times: tests/test_instructor.py
            continue
        doc = json.loads(path.read_text())
        assert re.fullmatch(r"\d\d", doc["notebook"]) and path.stem == doc["notebook"]
        assert doc["mode"] == "learner", f"{path.name} holds {doc['mode']}-mode figures"
        assert list((repo_root() / "notebooks").glob(f"{doc['notebook']}_*.ipynb")), path.name


def test_markdown_table_formats_whole_numbers_and_decimals():
    import pandas as pd

    md = markdown_table(pd.DataFrame({"chars": [729415, 12], "share": [0.71234, 0.5]}, index=["raw", "clean"]))
    assert "729,415" in md and "0.712" in md and "0.500" in md and "raw" in md and "e+" not in md


def test_notebook_prose_quotes_no_measured_figure():
    """A notebook's prose refers to the cell that measured a figure ("the table above") instead of typing it."""
    import json as _json

    typed = {}
    for path in sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(_json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                text = "".join(cell["source"]).split("## Exercises")[0]  # solutions show their own numbers
                if unmarked_figures(text):
                    typed[f"{path.name} cell {i}"] = unmarked_figures(text)
    assert not typed, typed
