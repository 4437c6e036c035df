"""The notebook runner behind `make course`: executed copies, wall time, peak memory."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_utils.runbook import run_notebook, run_notebooks


def _notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_runs_a_notebook_and_measures_it(tmp_path):
    src = _notebook(
        tmp_path / "01_demo.ipynb",
        "import os\nprint('fast' if os.environ.get('COURSE_FAST') == '1' else 'learner')",
        "block = bytearray(200 * 2**20)  # 200 MiB, so the peak is visible",
    )
    run = run_notebook(src, tmp_path / "out" / "01_demo.ipynb", fast=True)
    assert run.ok and run.error == "" and run.mode == "fast"
    assert run.peak_mib > 200, run
    executed = nbformat.read(tmp_path / "out" / "01_demo.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "fast"
    assert len(executed.cells) == 2, "the measuring cell is not saved"


def test_a_failing_notebook_is_reported_and_the_rest_still_run(tmp_path):
    bad = _notebook(tmp_path / "02_bad.ipynb", "raise RuntimeError('broken on purpose')")
    good = _notebook(tmp_path / "03_good.ipynb", "x = 1")
    report = run_notebooks([str(bad), str(good)], out_dir=tmp_path / "build", fast=False)
    assert report["ok"] is False and report["_exit"] == 1
    runs = {r["notebook"]: r for r in report["runs"]}
    assert "broken on purpose" in runs["02_bad.ipynb"]["error"] and runs["03_good.ipynb"]["ok"]
    table = (tmp_path / "build" / "report.md").read_text()
    assert "| 03_good.ipynb | learner | ok |" in table and "FAILED" in table
    assert json.loads((tmp_path / "build" / "report.json").read_text())[1]["notebook"] == "03_good.ipynb"


def test_course_notebooks_honours_course_fast(tmp_path, monkeypatch):
    """`COURSE_FAST=1 course notebooks` runs fast mode, like every other command (no silent learner run)."""
    from course_utils.cli import main

    src = _notebook(tmp_path / "01_mode.ipynb", "import os\nprint(os.environ.get('COURSE_FAST'))")
    monkeypatch.setenv("COURSE_FAST", "1")
    assert main(["notebooks", str(src), "--out", str(tmp_path / "build")]) == 0
    assert "| 01_mode.ipynb | fast | ok |" in (tmp_path / "build" / "report.md").read_text()
    monkeypatch.setenv("COURSE_FAST", "0")
    assert main(["notebooks", str(src), "--out", str(tmp_path / "b2")]) == 0
    assert "| 01_mode.ipynb | learner | ok |" in (tmp_path / "b2" / "report.md").read_text()


def test_figures_are_exported_from_tagged_cells(tmp_path, capsys):
    import base64

    import nbformat

    from course_utils.cli import main
    from course_utils.runbook import export_figures

    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    nb = nbformat.v4.new_notebook()
    tagged = nbformat.v4.new_code_cell("plot()", metadata={"tags": ["figure:loss"]})
    tagged.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), tagged]
    path = tmp_path / "04_demo.ipynb"
    nbformat.write(nb, path)
    written = export_figures([path], tmp_path / "img")
    assert written == [tmp_path / "img" / "04_loss.png"] and written[0].read_bytes() == b"\x89PNG\r\n\x1a\nfake"
    tagged.outputs = []  # a run that failed before the plot
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match="tagged figure:loss but has no picture"):
        export_figures([path], tmp_path / "img")
    assert main(["figures", str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "img")]) == 2
    assert "No such executed notebook" in capsys.readouterr().err


def test_learner_times_are_recorded_for_course_notebooks_only(tmp_path, monkeypatch):
    """`make course` keeps results/times.json (the agendas' source); a notebook outside notebooks/ is not the
    course's, and fast mode or a failed run records nothing."""
    from course_utils.runbook import NotebookRun, load_times, record_times, times_path

    monkeypatch.setenv("COURSE_RESULTS", str(tmp_path / "results"))
    assert times_path() == tmp_path / "results" / "times.json" and load_times() == {}
    report = run_notebooks([str(_notebook(tmp_path / "03_mine.ipynb", "x = 1"))], out_dir=tmp_path / "b", fast=False)
    assert report["ok"] and report["times"] is None and not times_path().exists()
    runs = [NotebookRun("05_lora_qlora.ipynb", "learner", True, 1176.0, 2211.4, ""),
            NotebookRun("06_reward_model_dpo.ipynb", "learner", False, 30.0, 0.0, "AssertionError"),
            NotebookRun("07_data_preparation.ipynb", "fast", True, 60.0, 900.0, "")]
    record_times(runs)
    record_times([NotebookRun("00_llmops_overview.ipynb", "learner", True, 12.0, 698.0, "")])
    times = load_times()
    assert sorted(times) == ["00", "05"], "a later run keeps the other notebooks' times"
    assert times["05"]["minutes"] == 19.6 and times["05"]["peak_mib"] == 2211 and times["05"]["file"] == "05_lora_qlora.ipynb"
    times_path().write_text("{not json")
    with pytest.raises(ValueError, match="not a times file"):
        load_times()
