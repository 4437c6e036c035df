"""The course site: the course map as home page, a page per notebook with its outputs, decks, search.

The build on real fast-mode outputs runs after the notebook tests (`make test-notebooks`); here the site is
built from the notebooks as committed (no outputs) plus one executed copy with a plot, which needs no
notebook run."""

import base64
import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_utils.cli import main
from course_utils.runbook import discover_notebooks
from course_utils.settings import repo_root
from course_utils.site import build_site, mermaid_blocks, prepare_notebook, site_sources

NOTEBOOKS = discover_notebooks()
# a 1x1 PNG
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf000000030101007ad6a3c50000000049454e44ae426082")).decode()


def _widget_nb():
    state = {
        "box": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_l", "IPY_MODEL_b", "IPY_MODEL_r"]}},
        "l": {"model_name": "HTMLModel", "state": {"value": "Loading\u2007weights:\u2007100%"}},
        "b": {"model_name": "FloatProgressModel", "state": {"value": 38.0, "max": 38.0}},
        "r": {"model_name": "HTMLModel", "state": {"value": "\u200738/38\u2007[00:00&lt;00:00]"}},
        "btn": {"model_name": "ButtonModel", "state": {}},
    }
    view = "application/vnd.jupyter.widget-view+json"
    outs = [{"output_type": "display_data", "metadata": {}, "data": {view: {"model_id": m}, "text/plain": [t]}}
            for m, t in (("box", "Loading weights:   0%|          | 0/38"), ("btn", "Button()"),
                         ("gone", "Tokenizing:   0%|          | 0/5070"))]
    outs.append({"output_type": "stream", "name": "stdout", "text": "done\n"})
    return {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# 05 · title"},
                      {"cell_type": "code", "metadata": {}, "source": "x", "outputs": outs, "execution_count": 1}],
            "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": state}}},
            "nbformat": 4, "nbformat_minor": 5}


def test_progress_bars_show_how_they_ended_and_no_widget_script_is_needed():
    nb = prepare_notebook(_widget_nb(), "*Executed in fast mode.*")
    assert "widgets" not in nb["metadata"]
    assert nb["cells"][1]["source"] == "*Executed in fast mode.*", "the banner follows the title cell"
    texts = [o.get("text") for o in nb["cells"][2]["outputs"]]
    assert texts[0] == "Loading weights: 100%|██████████| 38/38 [00:00<00:00]\n"
    assert "interactive widget" in texts[1] and texts[2] == "done\n", "a bar with no saved state is left out"
    assert len(texts) == 3
    assert _widget_nb()["metadata"], "the notebook given is not changed"


def _executed(tmp_path, nb_path):
    """An executed copy of ``nb_path`` whose first code cell shows a plot, and the run's report.json."""
    nb = json.loads(nb_path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "display_data", "metadata": {},
                        "data": {"image/png": PNG, "text/plain": ["<Figure size 640x480 with 1 Axes>"]}}]
    folder = tmp_path / "run" / "notebooks"
    folder.mkdir(parents=True)
    (folder / nb_path.name).write_text(json.dumps(nb))
    (tmp_path / "run" / "report.json").write_text(json.dumps(
        [{"notebook": nb_path.name, "mode": "fast", "ok": True, "seconds": 42.0, "peak_mib": 512.0, "error": ""}]))
    return folder


def test_sources_home_page_is_the_course_map_and_every_notebook_has_a_page(tmp_path):
    executed = _executed(tmp_path, NOTEBOOKS[-1])
    made = site_sources(executed, tmp_path / "src", slides=tmp_path / "no-slides")
    src = tmp_path / "src"
    index = (src / "index.md").read_text()
    assert "## The course map" in index
    for nb in NOTEBOOKS:
        assert f"]({'notebooks/' + nb.name})" in index, f"the course map links {nb.name}"
        assert f"notebooks/{nb.stem}\n" in index, f"{nb.stem} is in the table of contents"
        assert (src / "notebooks" / nb.name).exists()
    assert made["notebooks"][NOTEBOOKS[-1].name] == "executed" and made["mode"] == "fast"
    assert made["notebooks"][NOTEBOOKS[0].name] == "not executed"
    banner = json.loads((src / "notebooks" / NOTEBOOKS[-1].name).read_text())["cells"][1]["source"]
    assert "Executed in fast mode" in banner and "0.7 min" in banner and f"slides/{NOTEBOOKS[-1].stem}.md" in banner
    decks = (src / "decks.md").read_text()
    assert all(f"slides/{nb.stem}.md" in decks for nb in NOTEBOOKS) and "`make slides` builds them" in decks
    assert (src / "_extra" / "slides" / "img").is_dir() and (src / "instructor.md").exists()
    assert "<!-- generated:answers -->" in (src / "instructor.md").read_text()


def test_built_decks_are_linked_when_make_slides_made_them(tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    stem = NOTEBOOKS[0].stem
    (slides / f"{stem}.html").write_text("<section>deck</section>")
    (slides / f"{stem}.pdf").write_bytes(b"%PDF-1.7")
    made = site_sources(_executed(tmp_path, NOTEBOOKS[0]), tmp_path / "src", slides=slides)
    assert f"{stem}.html" in made["decks"] and f"{stem}.pdf" in made["decks"]
    banner = json.loads((tmp_path / "src" / "notebooks" / NOTEBOOKS[0].name).read_text())["cells"][1]["source"]
    assert f'href="../slides/{stem}.html"' in banner and f'href="../slides/{stem}.pdf"' in banner


@pytest.mark.slow
def test_the_site_builds_with_every_page_plots_and_search(tmp_path, capsys):
    """Sphinx for real (about half a minute): every page, the plot of the executed copy, the search index."""
    last = NOTEBOOKS[-1]
    executed = _executed(tmp_path, last)
    out = tmp_path / "site"
    assert main(["site", "--executed", str(executed), "--out", str(out), "--slides", str(tmp_path / "none"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["ok"] and not result["missing"] and result["index"] == str(out / "index.html")
    assert len(result["pages"]) == 5 + len(NOTEBOOKS)
    home = (out / "index.html").read_text()
    assert "The course map" in home
    for nb in NOTEBOOKS:
        assert f'href="notebooks/{nb.stem}.html"' in home, f"the home page links {nb.stem}"
    page = (out / "notebooks" / f"{last.stem}.html").read_text()
    images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+\.png)"', page)
    assert images and all((out / img).exists() for img in images), "the executed copy's plot is on its page"
    assert "Executed in fast mode" in page and "cdn.jsdelivr.net/npm/@jupyter-widgets" not in page
    index = (out / "searchindex.js").read_text()
    assert "lora" in index.lower() and all(nb.stem in index for nb in NOTEBOOKS), "search covers every notebook"
    assert (out / "slides" / f"{last.stem}.md").exists() and (out / "instructor.html").exists()
    math = (out / "notebooks" / "06_reward_model_dpo.html").read_text()  # the DPO loss is written in TeX
    assert 'src="../_static/mathjax/MathJax.js?config=' in math and (out / "_static" / "mathjax" / "MathJax.js").exists()
    assert not [p.name for p in out.rglob("*.html") if "cdn.jsdelivr.net/npm/mathjax" in p.read_text()], "no CDN"
    overview = (out / "notebooks" / "00_llmops_overview.html").read_text()  # its routes are Mermaid diagrams
    assert '<pre class="mermaid">' in overview and "```mermaid" not in overview
    if (repo_root() / "node_modules" / "mermaid").is_dir():  # npm ci installs it (the slides' tests run it first)
        assert result["mermaid"] and 'src="../_static/mermaid.min.js' in overview
        assert (out / "_static" / "mermaid.min.js").stat().st_size > 1_000_000


def test_mermaid_blocks_become_html_for_mermaids_script():
    text = "Intro\n\n```mermaid\nflowchart LR\n  A[data] --> B{{ok?}}\n  B -- yes --> C\n```\n\n```python\nx = 1\n```\n"
    out = mermaid_blocks(text)
    assert '<pre class="mermaid">\nflowchart LR\n  A[data] --&gt; B{{ok?}}\n  B -- yes --&gt; C\n</pre>' in out
    assert out.startswith("Intro") and "```python\nx = 1\n```" in out and "```mermaid" not in out


def test_a_missing_folder_gets_a_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="make course"):
        build_site(tmp_path / "nothing", tmp_path / "site")


def test_the_notebook_tests_keep_their_outputs_for_the_site(tmp_path):
    """tests/nbval_outputs.py (make test-notebooks) writes each notebook nbval ran, with its outputs."""
    nb = new_notebook(cells=[new_markdown_cell("# 01 · demo"), new_code_cell("print('hello')"),
                             new_code_cell("1 + 1"), new_code_cell("raise ValueError('boom')"),
                             new_code_cell("print('after')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_demo.ipynb")
    out = tmp_path / "executed"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.nbval_outputs",
                           "--nbval-lax", "--nbval-current-env", str(tmp_path / "01_demo.ipynb")],
                          cwd=repo_root(), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COURSE_NB_OUTPUTS": str(out)})
    assert "1 failed, 3 passed" in proc.stdout, proc.stdout + proc.stderr
    kept = nbformat.read(out / "01_demo.ipynb", as_version=4)
    nbformat.validate(kept)
    outputs = [c.outputs for c in kept.cells if c.cell_type == "code"]
    assert outputs[0][0]["text"] == "hello\n" and outputs[1][0]["data"]["text/plain"] == "2"
    assert outputs[2][0]["ename"] == "ValueError" and outputs[3][0]["text"] == "after\n"
    report = json.loads((out / "report.json").read_text())
    assert report[0]["mode"] == "fast" and not report[0]["ok"] and report[0]["error"] == "ValueError: boom"
