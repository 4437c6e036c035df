"""The course site: a static HTML book of the executed notebooks, built by ``make site``.

Sphinx with MyST-NB and the Jupyter Book theme (the tool chain Jupyter Book 1 wraps; pinned as the
``site`` extra) renders the executed copies that ``make course`` writes to ``build/notebooks/`` (learner
mode), or any folder of executed copies such as a fast-mode run's; nothing is executed again, so the
build is offline and takes about a minute. The site has:

- the course map as its home page (:func:`course_utils.coursemap.course_map_markdown`), every title a
  link to its notebook's page;
- a page per notebook with its outputs and plots, and a line saying how and when it was executed
  (from the run's ``report.json``) with links to its deck;
- the decks: the HTML and PDF decks of ``make slides`` when built (``build/slides/``), else the Marp
  sources; the instructor pack (``docs/instructor.md``, its generated parts refreshed);
- full-text search (Sphinx's own index, no server).

Mermaid diagrams (```` ```mermaid ```` blocks of notebooks 00 and 06, which JupyterLab draws) are drawn by
Mermaid's own script, served by the site (``node_modules/mermaid/dist/mermaid.min.js``, pinned in
``package.json`` and installed by ``npm ci`` as the decks' Marp is); without it they show as their text.

Progress bars are saved by Jupyter as widgets whose final state lies in the notebook's metadata; the site
shows them as the text bar they ended as, so no widget script is needed (a bar whose state was not saved,
as in the notebook tests' copies, is left out). A notebook missing from the
executed folder gets its page from ``notebooks/`` without outputs, and a line saying so.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from course_utils.coursemap import COURSE_MAP, course_map_markdown
from course_utils.runbook import discover_notebooks
from course_utils.settings import REPO_SLUG, repo_root

__all__ = ["build_site", "mermaid_blocks", "prepare_notebook", "site_sources"]

TITLE = "From an empty folder to your own LLM product"
_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

_CONF = '''\
# Written by course_utils/site.py (make site); edit it there.
project = {title!r}
author = "The course's authors"
extensions = ["myst_nb"]
html_theme = "sphinx_book_theme"
html_title = {title!r}
html_theme_options = {{
    "repository_url": "https://github.com/{slug}",
    "use_repository_button": True,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
}}
html_extra_path = ["_extra"]
html_static_path = ["_static"]
html_css_files = ["course.css"]
html_js_files = {js_files!r}
html_show_sourcelink = False
exclude_patterns = ["_extra", "_static", "_doctrees"]
nb_execution_mode = "off"  # the notebooks are executed copies: render their outputs, run nothing
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
myst_heading_anchors = 3
suppress_warnings = ["misc.highlighting_failure", "myst.header", "myst.xref_missing"]
# MathJax from the site itself (jupyter-server-mathjax's MathJax 2.7), not a CDN: the site works offline
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {{"tex2jax": {{"inlineMath": [["\\\\(", "\\\\)"]], "displayMath": [["\\\\[", "\\\\]"]],
                               "processRefs": False, "processEnvironments": False,
                               "ignoreClass": "tex2jax_ignore|mathjax_ignore", "processClass": "math"}}}}
'''


_CSS = """/* Written by course_utils/site.py: times in tables stay on one line ("20 min", "0.2 min"). */
.bd-article table td { vertical-align: top; }
.bd-article table td:nth-child(n+4):not(:last-child) { white-space: nowrap; }
"""


def _bar(state: dict, model: dict) -> str | None:
    """The text of a tqdm progress bar widget (HTML, FloatProgress, HTML) in its final state, else None."""
    children = [state.get(c.replace("IPY_MODEL_", ""), {}) for c in model["state"].get("children", [])]
    names = [c.get("model_name") for c in children]
    if names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c["state"] for c in children)
    value, top = float(bar.get("value") or 0), float(bar.get("max") or 0)
    filled = round(10 * value / top) if top else 0
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
    return html.unescape(text).replace("\u2007", " ")


_MERMAID_FENCE = re.compile(r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def mermaid_blocks(markdown: str) -> str:
    """``markdown`` with every ```` ```mermaid ```` block as ``<pre class="mermaid">`` (its text escaped),
    which Mermaid's script draws in the browser (MyST passes the HTML through)."""
    return _MERMAID_FENCE.sub(lambda m: f'<pre class="mermaid">\n{html.escape(m.group(1).rstrip())}\n</pre>', markdown)


def prepare_notebook(nb: dict, banner: str) -> dict:
    """``nb`` ready for the site: the ``banner`` (Markdown) after the title cell, Mermaid blocks for Mermaid's
    script (:func:`mermaid_blocks`), progress-bar widgets as the text they ended as, other widgets as a
    sentence, and no widget state (which would pull scripts from a CDN)."""
    nb = json.loads(json.dumps(nb))  # a copy
    state = nb.get("metadata", {}).pop("widgets", {}).get(_WIDGET_STATE, {}).get("state", {})
    for cell in nb["cells"]:
        if cell.get("cell_type") == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            if "```mermaid" in text:
                cell["source"] = mermaid_blocks(text)
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(_WIDGET_VIEW)
            if view is None:
                outputs.append(out)
                continue
            model = state.get(view.get("model_id", ""))
            text = _bar(state, model) if model else None
            if text is None:
                plain = "".join(out.get("data", {}).get("text/plain", ""))
                if not model and re.search(r"\d+%\|", plain):
                    continue  # a progress bar whose end was not saved (its start, 0%, would mislead)
                text = "(an interactive widget: open the notebook in JupyterLab to use it)"
            outputs.append({"output_type": "stream", "name": "stderr", "text": text + "\n"})
        if cell.get("cell_type") == "code":
            cell["outputs"] = outputs
    cells = nb["cells"]
    at = 1 if cells and cells[0]["cell_type"] == "markdown" else 0
    cells.insert(at, {"cell_type": "markdown", "metadata": {}, "source": banner, "id": "course-site-banner"})
    return nb


def _runs(executed: Path) -> dict[str, dict]:
    """The ``report.json`` of the run that wrote ``executed``: in it (the notebook tests' copies) or next to it
    (``<out>/notebooks`` of ``course notebooks``); ``{}`` when there is none."""
    for report in (executed / "report.json", executed.parent / "report.json"):
        if report.exists():
            try:
                return {r["notebook"]: r for r in json.loads(report.read_text())}
            except (json.JSONDecodeError, KeyError, TypeError):
                return {}
    return {}


def _deck_links(stem: str, decks: dict[str, str], prefix: str) -> str:
    links = [f'<a href="{prefix}slides/{stem}.{kind}">{label}</a>' for kind, label in
             (("html", "slides"), ("pdf", "PDF")) if f"{stem}.{kind}" in decks]
    if not links and f"{stem}.md" in decks:
        links.append(f'<a href="{prefix}slides/{stem}.md">slides (Marp source)</a>')
    return " · ".join(links)


def site_sources(executed: Path, src: Path, *, slides: Path | None = None) -> dict:
    """Write the Sphinx project of the site into ``src`` (emptied first) from the executed copies in
    ``executed``; returns what went in: ``{"notebooks": {file: "executed" | "not executed"}, "mode", "decks"}``."""
    from course_utils.instructor import update_doc

    root = repo_root()
    slides = slides if slides is not None else root / "build" / "slides"
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    extra = src / "_extra" / "slides"
    extra.mkdir(parents=True)
    # decks: the built HTML/PDF when there are, always the Marp sources and their pictures
    for deck in sorted((root / "slides").glob("[0-9][0-9]_*.md")):
        shutil.copy2(deck, extra / deck.name)
    shutil.copytree(root / "slides" / "img", extra / "img")
    for built in sorted(slides.glob("[0-9][0-9]_*.*")) if slides.exists() else []:
        if built.suffix in (".html", ".pdf"):
            shutil.copy2(built, extra / built.name)
    decks = {p.name: p.suffix for p in extra.iterdir() if p.is_file()}

    runs = _runs(executed)
    modes = {r["mode"] for r in runs.values()}
    status = {}
    for nb_path in discover_notebooks():
        copy = executed / nb_path.name
        run = runs.get(nb_path.name)
        if copy.exists():
            nb = json.loads(copy.read_text(encoding="utf-8"))
            when = time.strftime("%Y-%m-%d", time.localtime(copy.stat().st_mtime))
            how = (f"Executed in {run['mode']} mode on {when} ({run['seconds'] / 60:.1f} min"
                   + (f", peak {run['peak_mib']:.0f} MiB)" if run.get("peak_mib") else ")")
                   + ("" if run.get("ok", True) else f"; it failed: {run.get('error', '')[:100]}")
                   if run else f"Executed copy from {when}")
            status[nb_path.name] = "executed"
        else:
            nb = json.loads(nb_path.read_text(encoding="utf-8"))
            how = "Not executed for this site (no outputs): `make course` runs every notebook"
            status[nb_path.name] = "not executed"
        links = _deck_links(nb_path.stem, decks, "../")
        github = f"https://github.com/{REPO_SLUG}/blob/main/notebooks/{nb_path.name}"
        banner = (f"*{how}.* Deck: {links or '-'} · the notebook "
                  f'<a href="{github}">on GitHub</a> (run it yourself: `make lab`).')
        (src / "notebooks" / nb_path.name).write_text(json.dumps(prepare_notebook(nb, banner), indent=1),
                                                     encoding="utf-8")

    instructor = src / "instructor.md"
    shutil.copy2(root / "docs" / "instructor.md", instructor)
    update_doc(instructor)  # the generated parts as the course is now
    deck_rows = ["| # | deck | |", "|---|---|---|"]
    for m in COURSE_MAP:
        stem = f"{m.number}_{m.name}"
        if f"{stem}.md" in decks:
            deck_rows.append(f"| {m.number} | {m.title} | {_deck_links(stem, decks, '')} |")
    built = any(s in (".html", ".pdf") for s in decks.values())
    (src / "decks.md").write_text(
        "# Slide decks\n\nOne Marp deck per notebook, for an instructor to present. "
        + ("The HTML and PDF decks are those `make slides` built." if built else
           "These are the Marp sources: `make slides` builds them to HTML and PDF, and the next `make site` "
           "links those.") + "\n\n" + "\n".join(deck_rows) + "\n")

    mode = " and ".join(sorted(modes)) if modes else ""
    ran = f"the outputs of a run in {mode} mode" if mode else "the outputs of its executed copy"
    pages = [f"notebooks/{p.stem}" for p in discover_notebooks()]
    index = f"""# {TITLE}

Pretrain a small Llama-style model of your own, turn it into an assistant, adapt it with LoRA, align it
with a reward model and DPO, give it knowledge it never saw with retrieval, and evaluate it: on a 2-core
laptop with no GPU. Each page below is a notebook with {ran}.

## The course map
CPU: the learner-mode minutes `make course` measured on a 2-core laptop CPU with the artifacts pre-built (`course prebuild`); ~ marks an estimate (a notebook not measured yet, and every GPU time, for one Colab-class GPU).

{course_map_markdown(prefix="notebooks/")}

## Using this site
Each notebook page links its [slide deck](decks.md); instructors find agendas, the pre-build list and the
answers to the exercises in the [instructor pack](instructor.md). To run the notebooks yourself, clone the
[repository](https://github.com/{REPO_SLUG}) and `make lab`.

```{{toctree}}
:hidden:
:caption: Notebooks

{chr(10).join(pages)}
```

```{{toctree}}
:hidden:
:caption: Teaching

decks
instructor
```
"""
    (src / "index.md").write_text(index)
    (src / "_static").mkdir()
    (src / "_static" / "course.css").write_text(_CSS)
    shutil.copytree(_mathjax(), src / "_static" / "mathjax")
    mermaid = _mermaid_js()
    js_files = []
    if mermaid is not None:
        shutil.copy2(mermaid, src / "_static" / "mermaid.min.js")
        (src / "_static" / "mermaid-init.js").write_text(
            "// Written by course_utils/site.py: draw every <pre class=\"mermaid\"> once the page is loaded.\n"
            "window.addEventListener('load', () => { mermaid.initialize({startOnLoad: false}); mermaid.run(); });\n")
        js_files = ["mermaid.min.js", "mermaid-init.js"]
    (src / "conf.py").write_text(_CONF.format(title=TITLE, slug=REPO_SLUG, js_files=js_files))
    return {"notebooks": status, "mode": mode, "decks": sorted(decks), "mermaid": mermaid is not None}


def _mermaid_js() -> Path | None:
    """Mermaid's script from ``node_modules`` (``npm ci``), or None where it is not installed."""
    path = repo_root() / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
    return path if path.is_file() else None


def _mathjax() -> Path:
    """The folder of MathJax 2.7 that jupyter-server-mathjax installs (``MathJax.js``, its fonts and configs)."""
    import jupyter_server_mathjax

    return Path(jupyter_server_mathjax.__file__).parent / "static"


def build_site(executed: str | Path | None = None, out: str | Path | None = None, *,
               slides: str | Path | None = None, jobs: str = "auto") -> dict:
    """Build the site from the executed copies in ``executed`` (default ``build/notebooks``, what
    ``make course`` writes) into ``out`` (default ``build/site``; its sources go to ``<out>-src``).
    Returns ``{"ok", "index", "pages", "missing", "seconds", ...}``; ``ok`` is False when Sphinx failed or a
    page is missing."""
    root = repo_root()
    executed = Path(executed) if executed else root / "build" / "notebooks"
    if not executed.is_dir():
        raise FileNotFoundError(
            f"No executed notebooks in {executed}: run `make course` (learner mode, what the site is for) or "
            "`course notebooks --fast --out build/site-nb` and give `--executed build/site-nb/notebooks`.")
    out = Path(out) if out else root / "build" / "site"
    src = out.with_name(out.name + "-src")
    t0 = time.perf_counter()
    made = site_sources(executed.resolve(), src, slides=Path(slides) if slides else None)
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", jobs, "-d", str(src / "_doctrees"),
           str(src), str(out)]
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
    expected = ["index.html", "search.html", "searchindex.js", "decks.html", "instructor.html"] + [
        f"notebooks/{p.stem}.html" for p in discover_notebooks()]
    missing = [page for page in expected if not (out / page).exists()]
    return {
        "ok": proc.returncode == 0 and not missing,
        "index": str(out / "index.html"),
        "pages": [p for p in expected if p not in missing],
        "missing": missing,
        "notebooks": made["notebooks"],
        "mode": made["mode"] or "unrecorded",
        "decks": made["decks"],
        "mermaid": made["mermaid"],
        "warnings": len(warnings),
        "seconds": round(time.perf_counter() - t0, 1),
        "_exit": 0 if proc.returncode == 0 and not missing else 1,
    }

