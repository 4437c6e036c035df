"""One Marp deck per notebook, 10-20 slides, the images they show exist, the diagrams are
slides/diagrams.py's output, and the decks build to HTML and print to PDF."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from course_utils.instructor import deck_slides, exercises as notebook_exercises
from course_utils.runbook import discover_notebooks
from course_utils.settings import repo_root

ROOT = repo_root()
NOTEBOOKS = discover_notebooks()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_notebook_has_its_deck(nb):
    deck = ROOT / "slides" / f"{nb.stem}.md"
    assert deck.exists(), f"{nb.name} needs its deck slides/{nb.stem}.md"
    text = deck.read_text()
    assert text.startswith("---\nmarp: true"), "a deck starts with Marp front matter"
    assert 10 <= deck_slides(text) <= 20, f"{deck.name}: {deck_slides(text)} slides, want 10-20"
    assert nb.stem[:2] in text.split("\n# ", 1)[1][:10], "first heading names the notebook number"


def test_decks_build_to_html(tmp_path):
    marp = _marp()
    out = tmp_path / "slides"
    proc = subprocess.run(
        [str(marp), "--html", "--input-dir", str(ROOT / "slides"), "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for nb in NOTEBOOKS:
        html = out / f"{nb.stem}.html"
        assert html.exists(), f"no HTML for {nb.stem}: {proc.stderr}"
        assert html.stat().st_size > 10_000 and "<section" in html.read_text()
        # a `---` right under a line of text is a heading's underline, not a new slide: the two slides merge
        slides = deck_slides((ROOT / "slides" / f"{nb.stem}.md").read_text())
        assert len(re.findall(r"<section\b", html.read_text())) == slides, \
            f"{nb.stem}: Marp made fewer slides than the deck's `---` lines: leave a blank line above each `---`"


def _marp() -> Path:
    """Marp from node_modules, installed by `npm ci` if needed (skips, or fails under CI, without npm)."""
    marp = ROOT / "node_modules" / ".bin" / "marp"
    if not marp.exists():
        if shutil.which("npm") is None:
            if os.environ.get("CI"):
                pytest.fail("npm is needed to build the slides (make slides)")
            pytest.skip("Node.js/npm not installed: decks are built with `make slides`")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True, timeout=600)
    return marp


def _pdf_pages_and_images(data: bytes) -> tuple[int, int]:
    """Pages and embedded raster images of a PDF (its object streams inflated; no PDF library needed).

    Each stream is cut by its dictionary's `/Length`, not by searching for `endstream`: compressed bytes
    end in a carriage return now and then (Chromium's streams change from run to run), and a search that
    takes `\\r\\n` as the line end would cut that byte off and lose the stream (pages counted 0 once in CI).
    """
    import zlib

    text = data
    for m in re.finditer(rb"/Length\s+(\d+)(?!\s+\d+\s+R)[^>]*>>\s*stream\r?\n", data):
        chunk = data[m.end():m.end() + int(m.group(1))]
        try:
            text += zlib.decompressobj().decompress(chunk)
        except zlib.error:
            pass
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", text)), len(re.findall(rb"/Subtype\s*/Image", text))


def test_the_pdf_reader_keeps_a_stream_whose_last_byte_is_a_carriage_return():
    import zlib

    # zlib's stream ends with the Adler-32 sum, whose last byte follows the payload's byte sum: vary one byte.
    body = next(b for c in range(256) if zlib.compress(b := b"/Type /Page\n%" + bytes([c])).endswith(b"\r"))
    packed = zlib.compress(body)
    pdf = b"%%PDF-1.7\n1 0 obj\n<<\n/Filter /FlateDecode\n/Length %d\n>>\nstream\n%s\nendstream\nendobj\n" % (
        len(packed), packed)
    assert _pdf_pages_and_images(pdf) == (1, 0)


def test_a_deck_prints_to_pdf_with_every_slide_and_picture(tmp_path):
    """`make slides` prints the decks to PDF with the system's Chromium (`make chromium` installs it; CI does)."""
    chrome = os.environ.get("CHROME_PATH") or next(
        (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
         if shutil.which(n)), None)
    if chrome is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium for the PDF decks: .ci/run installs it with `make chromium`")
        pytest.skip("no Chromium or Chrome here: `make chromium` installs it (PDF decks only)")
    deck = ROOT / "slides" / "07_data_preparation.md"
    out = tmp_path / "deck.pdf"
    proc = subprocess.run([str(_marp()), "--pdf", "--allow-local-files", str(deck), "--output", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "CHROME_PATH": chrome})
    assert proc.returncode == 0 and out.exists(), proc.stderr
    data = out.read_bytes()
    pages, images = _pdf_pages_and_images(data)
    assert data.startswith(b"%PDF") and pages == deck_slides(deck.read_text()), (pages, proc.stderr)
    shown = [src for src in _images(deck.read_text()) if src.endswith(".png")]
    assert images >= len(shown) > 0, f"{images} pictures in the PDF, the deck shows {shown}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_deck_lists_its_exercises(nb):
    exercises = notebook_exercises(nb)
    if not exercises:
        pytest.skip(f"{nb.name} has no exercises")
    deck = (ROOT / "slides" / f"{nb.stem}.md").read_text()
    listed = deck.split("Exercises", 1)[1] if "Exercises" in deck else ""
    assert listed, f"{nb.stem}: the deck should list the notebook's exercises"
    items = re.findall(r"^\d+\. ", listed, re.M) or [x for x in listed.split("\n", 2)[0].split(" · ") if x.strip()]
    assert len(items) >= len(exercises), f"{nb.stem}: {len(exercises)} exercises in the notebook, {len(items)} in the deck"


def _images(text: str) -> list[str]:
    """The local files a deck shows: Markdown images (Marp sizes them in the alt text) and HTML <img>."""
    found = re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)", text) + re.findall(r"<img[^>]*\ssrc=[\"']([^\"']+)", text)
    return [src for src in found if "://" not in src and not src.startswith("data:")]


def test_every_image_a_deck_shows_exists():
    shown = 0
    for deck in sorted((ROOT / "slides").glob("*.md")):
        for src in _images(deck.read_text()):
            shown += 1
            assert (deck.parent / src).is_file(), f"{deck.name} shows {src}, which does not exist"
    assert shown, "no deck shows an image: is the image syntax still ![w:NNN](img/...)?"


def test_every_diagram_is_shown_by_a_deck():
    shown = {src for deck in (ROOT / "slides").glob("*.md") for src in _images(deck.read_text())}
    for svg in sorted((ROOT / "slides" / "img").glob("diagram_*.svg")):
        assert f"img/{svg.name}" in shown, f"no deck shows {svg.name}: remove it from slides/diagrams.py"


def test_diagrams_are_the_scripts_output(tmp_path):
    """The committed SVGs are exactly what `python slides/diagrams.py` draws (it writes the same bytes
    every run): edit a diagram in the script, rerun it, commit both."""
    proc = subprocess.run([sys.executable, str(ROOT / "slides" / "diagrams.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    made = {p.name: p.read_bytes() for p in tmp_path.glob("diagram_*.svg")}
    committed = {p.name: p.read_bytes() for p in (ROOT / "slides" / "img").glob("diagram_*.svg")}
    assert made, proc.stdout
    assert sorted(made) == sorted(committed), "run `.venv/bin/python slides/diagrams.py` and commit slides/img/"
    differ = [name for name in made if made[name] != committed[name]]
    assert not differ, f"{differ} differ from the script's output: run `.venv/bin/python slides/diagrams.py`"


def test_no_quoted_figure_starts_a_line():
    """Markdown reads a line that starts with `<!--` as an HTML block, and Marp drops the whole line: a quoted
    figure (`<!--r:NN.key-->value<!--/r-->`) must follow some text on its line, unless it stands alone (a table)."""
    bad = [f"{deck.name}:{i}" for deck in sorted((ROOT / "slides").glob("*.md"))
           for i, line in enumerate(deck.read_text().splitlines(), 1)
           if re.match(r"\s*<!--r:[^>]*-->\s*\S", line)]
    assert not bad, f"a figure tag starts these lines, so the slide loses them: {bad}"
