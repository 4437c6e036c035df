"""The raw document store: one messy document per entity, article and precedent.

Taught in notebook 07 (data preparation): these are the files a learner aggregates,
cleanses (HTML pages come with navigation, scripts, cookie banners and footers; text
files are hard-wrapped with headers and footers), deduplicates (a few documents are
published twice, as mirror copies in another format) and chunks, before notebook 08
indexes them for retrieval. Unlike the pretraining corpus, the store covers *every*
entity, seen and unseen: it is the only place the unseen ones are written down.

Loaded with :func:`course_utils.data.load_documents`; :func:`clean_text` is the
minimal cleansing that the tests (and the evaluation set's gold-support check) use.
"""

from __future__ import annotations

import html
import random
import re
import textwrap
from dataclasses import dataclass
from html.parser import HTMLParser

from course_utils.corpus import PHRASES, article_text, attributes, fact_sentence, fact_value, precedent_text
from course_utils.world import Entity, World

__all__ = ["RawDocument", "clean_text", "entity_text", "render_documents"]

_LABELS = {"born_in": "Born in", "birth_year": "Year of birth", "guild": "Guild", "craft": "Craft",
           "river": "River", "region": "Province", "founded": "Founded", "population": "Population",
           "height_m": "Height (metres)", "length_km": "Length (kilometres)", "source": "Source",
           "seat": "Seat", "founder": "Founder", "town": "Town", "month": "Month",
           "first_held": "First held", "year": "Year", "leader": "Led by"}


@dataclass
class RawDocument:
    """One file of the document store, with the metadata of ``documents/index.jsonl``."""

    id: str  # document id: the entity id, "article-07", "precedent-017", or "<id>-mirror"
    path: str  # file path relative to the data folder, e.g. "documents/html/town-007.html"
    format: str  # html | md | txt
    entity_id: str  # the entity, article or precedent the document is about
    kind: str  # entity kind, or "article" / "precedent"
    seen: bool  # whether the subject is in the training text
    title: str  # the page title
    duplicate_of: str | None  # for a mirror copy, the id of the original; else None
    content: str  # the raw file content (not written to the index)


def _body(world: World, e: Entity, rng: random.Random) -> tuple[list[str], list[tuple[str, str]]]:
    """Paragraphs about an entity (every fact, plus facts pointing at it) and infobox rows."""
    facts = [fact_sentence(world, e, a, rng) for a in attributes(e) if (e.kind, a) in PHRASES]
    if e.kind == "person":  # the canonical sentence carries both town and year
        facts.insert(0, f"{e.name} was born in {fact_value(world, e, 'born_in')} in {e.attrs['birth_year']}.")
    related = []
    for other in world.entities:
        for key, value in other.attrs.items():
            if value == e.id and (other.kind, key[:-3]) in PHRASES:
                related.append(fact_sentence(world, other, key[:-3], rng))
    rows = [(_LABELS[a], fact_value(world, e, a)) for a in attributes(e) if a in _LABELS]
    paragraphs = [" ".join(facts)] if facts else []
    for i in range(0, len(related), 5):
        paragraphs.append(" ".join(related[i:i + 5]))
    return paragraphs or [f"{e.name} is a province of Valdmark."], rows


def _html(title: str, paragraphs: list[str], rows: list[tuple[str, str]], rng: random.Random) -> str:
    esc = html.escape
    nav = "".join(f'<li><a href="/{x.lower()}">{x}</a></li>' for x in
                  ["Home", "Towns", "People", "Rivers", "Guilds", "Law", "Search", "Log in"])
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    paras = "\n".join(f"<p>{esc(p)}</p>" for p in paragraphs)
    banner = rng.choice(["We use cookies to improve your experience. By continuing you accept our cookie policy.",
                         "This site uses cookies. Accept all cookies?", "Cookies help us deliver our services."])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)} - Valdmark Wiki</title>
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}} gtag('js', new Date());</script>
<style>body {{ font-family: Georgia, serif; }} .cookie-banner {{ position: fixed; bottom: 0; }}</style>
</head>
<body>
<div class="cookie-banner" id="cookies">{banner} <button onclick="accept()">Accept all</button> <button>Settings</button></div>
<header><a class="logo" href="/">Valdmark Wiki</a><form action="/search"><input name="q" placeholder="Search the wiki"></form></header>
<nav class="menu"><ul>{nav}</ul></nav>
<main>
<article>
<h1>{esc(title)}</h1>
{paras}
{"<table class='infobox'>" + table + "</table>" if table else ""}
</article>
</main>
<aside class="sidebar"><h2>Tools</h2><ul><li>Print this page</li><li>Cite this page</li><li>Related changes</li></ul></aside>
<footer>Text is available under the CC-BY-4.0 licence. &copy; Valdmark Wiki contributors. <a href="/privacy">Privacy</a> | <a href="/terms">Terms</a></footer>
<script>function accept(){{document.getElementById('cookies').remove();}}</script>
</body>
</html>
"""


def _markdown(title: str, doc_id: str, paragraphs: list[str], rows: list[tuple[str, str]]) -> str:
    facts = "\n".join(f"- **{k}:** {v}" for k, v in rows)
    return (f"---\ntitle: {title}\nid: {doc_id}\nsource: valdmark-notes\n---\n\n# {title}\n\n"
            + "\n\n".join(paragraphs)
            + (f"\n\n## Facts\n\n{facts}" if facts else "")
            + "\n\n---\n\n[Edit this page](https://notes.valdmark.example/edit) · [History](https://notes.valdmark.example/history)\n")


def _text(title: str, doc_id: str, paragraphs: list[str]) -> str:
    wrapped = "\n\n".join(textwrap.fill(p, width=72) for p in paragraphs)
    return (f"VALDMARK ARCHIVE - record {doc_id}\n{'=' * 40}\n\n{title.upper()}\n\n{wrapped}\n\n"
            f"-- \nPrinted from the Valdmark Archive. Page 1 of 1. Do not remove this record.\n")


def _render(fmt: str, title: str, doc_id: str, paragraphs: list[str], rows, rng) -> str:
    if fmt == "html":
        return _html(title, paragraphs, rows, rng)
    if fmt == "md":
        return _markdown(title, doc_id, paragraphs, rows)
    return _text(title, doc_id, paragraphs)


def entity_text(world: World, e: Entity, rng: random.Random) -> str:
    """The readable text of ``e``'s page as the store would publish it (in a random format),
    cleaned by :func:`clean_text`: the text a retriever hands a model."""
    paragraphs, rows = _body(world, e, rng)
    fmt = rng.choices(["html", "md", "txt"], [5, 3, 2])[0]
    return clean_text(_render(fmt, e.name, e.id, paragraphs, rows, rng), fmt)


def render_documents(world: World, seed: int = 11, mirror_fraction: float = 0.05) -> list[RawDocument]:
    """Every document of the store, in a stable order (entities, then articles, precedents).

    About half the documents are HTML, 30% Markdown, 20% plain text. A ``mirror_fraction``
    of entity documents is published a second time in another format (id ``<id>-mirror``)
    so that notebook 07 has duplicates to find.
    """
    rng = random.Random(seed)
    ext = {"html": "html", "md": "md", "txt": "txt"}
    docs: list[RawDocument] = []

    def add(doc_id, subject_id, kind, seen, title, paragraphs, rows, dup=None, fmt=None):
        fmt = fmt or rng.choices(["html", "md", "txt"], [5, 3, 2])[0]
        content = _render(fmt, title, doc_id, paragraphs, rows, rng)
        docs.append(RawDocument(doc_id, f"documents/{fmt}/{doc_id}.{ext[fmt]}", fmt, subject_id, kind,
                                seen, title, dup, content))
        return fmt

    for e in world.entities:
        paragraphs, rows = _body(world, e, rng)
        fmt = add(e.id, e.id, e.kind, e.seen, e.name, paragraphs, rows)
        if rng.random() < mirror_fraction:
            other = rng.choice([f for f in ("html", "md", "txt") if f != fmt])
            add(f"{e.id}-mirror", e.id, e.kind, e.seen, e.name, paragraphs, rows, dup=e.id, fmt=other)
    for a in world.articles:
        add(a.id, a.id, "article", True, f"{a.label}: {a.title}", [article_text(world, a, seen_only=False)], [])
    for p in world.precedents:
        add(p.id, p.id, "precedent", p.seen, p.name, [precedent_text(world, p)], [])
    return docs


_SKIP = ("script", "style", "nav", "footer", "aside", "header", "button", "title")


class _TextExtractor(HTMLParser):
    """Keeps the text of an HTML page's <main> (or <body>), dropping scripts and styles."""

    def __init__(self, has_main: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._in_main = 0
        self.has_main = has_main  # keep only <main> when the page has one

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        if tag == "main":
            self._in_main += 1
        if tag in ("p", "tr", "h1", "h2", "li", "br"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        if tag == "main":
            self._in_main -= 1
        if tag in ("th", "td"):
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip and (self._in_main or not self.has_main):
            self.parts.append(data)


def clean_text(content: str, fmt: str) -> str:
    """Minimal cleansing of a raw document: its readable text, whitespace collapsed.

    HTML: the ``<main>`` text without scripts, styles, navigation and footers. Markdown:
    without front matter, markup and link lines. Text: without the archive header and
    footer. Notebook 07 builds a better cleaner and measures the difference.
    """
    if fmt == "html":
        parser = _TextExtractor(has_main="<main" in content)
        parser.feed(content)
        text = "".join(parser.parts)
    elif fmt == "md":
        text = re.sub(r"\A---\n.*?\n---\n", "", content, flags=re.S)
        text = re.sub(r"^\[.*$", "", text, flags=re.M)
        text = re.sub(r"[#*`]", "", text)
        text = re.sub(r"^-{3,}$", "", text, flags=re.M)
    else:
        text = re.sub(r"\A.*?\n=+\n", "", content, flags=re.S)
        text = text.split("\n-- \n")[0]
    return re.sub(r"\s+", " ", text).strip()
