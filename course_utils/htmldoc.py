"""Documentation pages as sectioned text: headings, code blocks and tables kept, navigation dropped.

Taught in notebook 07 (data preparation) through :func:`course_utils.prep.clean_html`, which calls
:func:`html_to_text`; :func:`course_utils.prep.chunk_documents` cuts the text along
:func:`split_sections` so that every chunk of a real manual (a Sphinx site such as Debian's
``python3-doc``, a wiki page, a README rendered to HTML) says where it comes from.

The text keeps the structure a reader needs, in a form plain enough for an embedding model:

- section headings (``<h2>``-``<h6>``, and the signature of each documented function, class or
  method of a Sphinx page, ``<dt class="sig">``) become Markdown heading lines, ``## Basic Usage``,
  one ``#`` more per level; the page title (``<h1>``, else ``<title>``) is returned apart and stays
  the first line, as before;
- code blocks (``<pre>``) are fenced with ```` ``` ```` lines, their line breaks and indentation
  intact; table rows under a header row become ``| a | b |`` lines (a two-cell ``Key: value`` row,
  an infobox, stays one ``Key: value.`` sentence);
- navigation, sidebars, headers, footers, search boxes and permalink marks (``¶``) are dropped,
  by tag, by ARIA role, and by class or id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Section", "code_state", "html_to_text", "split_sections", "tidy_chunk"]

_BOILERPLATE_TAGS = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "button",
                     "iframe", "svg", "template")
_BOILERPLATE_ROLES = {"navigation", "search", "banner", "contentinfo", "complementary"}
#: Words of a class or id that mark boilerplate ("cookie-banner", "sphinxsidebar", "menu-wrapper"); an id
#: counts only on a container (a div, list, aside), since a section's or a signature's id names its subject
#: ("module-http.cookies", "http.cookies.SimpleCookie").
_BOILERPLATE_WORDS = {"cookie", "cookies", "consent", "banner", "sidebar", "sphinxsidebar", "menu", "navbar", "nav",
                      "breadcrumb", "breadcrumbs", "advert", "adverts", "advertisement", "popup", "share", "footer", "headerlink",
                      "skiplink", "related", "clearer", "toggler"}
_ID_CONTAINERS = {"div", "ul", "ol", "aside", "nav", "header", "footer", "form"}
_BLOCKS = ("p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "table", "section", "article",
           "blockquote", "pre", "dd", "dt", "br", "dl", "ul", "ol", "hr")
_HEADINGS = ("h2", "h3", "h4", "h5", "h6")
FENCE = "```"
_HEADING_LINE = re.compile(r"^(#{1,9}) (\S.*)$")


def _words(text: str) -> str:
    return " ".join(text.split())


def _is_boilerplate(tag) -> bool:
    if str(tag.get("role") or "").lower() in _BOILERPLATE_ROLES:
        return True
    classes = tag.get("class") or []
    words = " ".join(classes if isinstance(classes, list) else [classes])
    if tag.name in _ID_CONTAINERS and "section" not in classes:
        words += " " + str(tag.get("id") or "")
    return any(w in _BOILERPLATE_WORDS for w in re.split(r"[\s_.-]+", words.lower()) if w)


def _drop_boilerplate(soup) -> None:
    for tag in soup(_BOILERPLATE_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.attrs is not None and _is_boilerplate(tag):  # attrs None: already removed with a parent
            tag.decompose()


def _signature_label(dt) -> str:
    """A short name for a Sphinx signature: ``json.dump()``, ``json.JSONDecoder``, ``str.split()``."""
    pre = dt.find(class_="sig-prename")
    name = dt.find(class_="sig-name")
    if name is not None:
        label = (pre.get_text("") if pre is not None else "") + name.get_text("")
        if dt.find(class_="sig-paren") is not None:
            label += "()"
        return _words(label)
    text = _words(dt.get_text(""))
    return text if len(text) <= 80 else text[:77] + "..."


def _is_signature(dt) -> bool:
    return "sig" in (dt.get("class") or [])


def _table_text(table) -> str:
    """Rows under a header row as ``| a | b |`` lines; key-value rows as ``Key: value.`` sentences."""
    rows = []
    for tr in table.find_all("tr"):
        if tr.find_parent("table") is not table:
            continue  # a nested table's row: flattened into its cell
        cells = tr.find_all(["th", "td"], recursive=False)
        rows.append(([_words(c.get_text(" ")) for c in cells], all(c.name == "th" for c in cells)))
    header = rows and rows[0][1] and len(rows[0][0]) >= 2 or table.find("thead") is not None
    if not header:  # an infobox or a layout table: one sentence per row, as the course store's pages have
        return "\n" + "".join("\n" + ": ".join(c for c in cells if c) + ".\n" for cells, _ in rows if any(cells)) + "\n"
    width = max(len(cells) for cells, _ in rows)
    lines = []
    for i, (cells, _) in enumerate(rows):
        cells = [c.replace("|", "/") for c in cells] + [""] * (width - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "---|" * width)
    return "\n\n" + "\n".join(lines) + "\n\n"


def html_to_text(content: str) -> tuple[str, str]:
    """HTML page -> ``(title, text)``: the main content, with its structure (see the module's docstring).

    The content is ``<main>`` (or the element with ``role="main"``, as Sphinx marks it, or
    ``<article>``, else ``<body>``), after boilerplate is dropped.
    """
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(content, "lxml")  # libxml2: several times faster than html.parser on big pages
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    _drop_boilerplate(soup)
    root = soup.find("main") or soup.find(attrs={"role": "main"}) or soup.find("article") or soup.body or soup
    h1 = root.find("h1")
    if h1 is not None:
        title = h1.get_text(" ", strip=True)
    for pre in root.find_all("pre"):
        if pre.find_parent("pre") is None and pre.parent is not None:
            code = pre.get_text("").expandtabs(4).strip("\n")
            pre.replace_with(NavigableString(f"\n\n{FENCE}\n{code}\n{FENCE}\n\n"))
    for table in root.find_all("table"):
        if table.parent is not None and table.find_parent("table") is None:
            table.replace_with(NavigableString(_table_text(table)))
    # Headings in document order. A signature is a heading one level below the section (or the class) it
    # is documented in; where its list ends, the enclosing heading is repeated, so that the text after
    # a class or a function belongs to the section again, not to the last method.
    heading = (1, _words(title))  # (level, label) of the last section heading seen
    entries: dict[int, tuple] = {}  # id(dl) -> (dl, its own heading, the heading around it)
    for tag in root.find_all(list(_HEADINGS) + ["dt"]):
        if tag.parent is None:
            continue
        if tag.name == "dt":
            if not _is_signature(tag):
                continue
            dl = tag.find_parent("dl")
            if id(dl) not in entries:
                outer = next((entries[id(p)][1] for p in dl.find_parents("dl") if id(p) in entries), heading)
                entries[id(dl)] = (dl, (outer[0] + 1, _signature_label(tag)), outer)
            level, label = entries[id(dl)][1]
            marker = f"\n\n{'#' * level} {label}\n\n{_words(tag.get_text(''))}\n\n"
        else:
            label = _words(tag.get_text(" "))
            if not label:
                continue
            heading = (int(tag.name[1]), label)
            marker = f"\n\n{'#' * heading[0]} {label}\n\n"
        tag.replace_with(NavigableString(marker))
    for dl, _, (level, label) in entries.values():
        if label:
            dl.insert_after(NavigableString(f"\n\n{'#' * level} {label}\n\n"))
    for tag in root.find_all(_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    return title, root.get_text()


@dataclass
class Section:
    """A run of text under one heading."""

    path: tuple[str, ...]  # the headings above it, outermost first (empty: before the first heading)
    text: str  # its text, without the heading line


def split_sections(text: str, title: str = "") -> list[Section]:
    """Cut text with Markdown heading lines (``## Heading``, as :func:`html_to_text` writes them) into
    sections, each with the path of headings above it. Headings inside code blocks are code; a ``# ``
    line is a heading only when it is the document's ``title`` (the page level: an empty path). Text
    without heading lines is one section with an empty path. Sections without text are left out."""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []  # (level, heading)
    lines: list[str] = []
    in_code = False

    def flush():
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(tuple(h for _, h in stack), body))
        lines.clear()

    for line in text.split("\n"):
        if line.strip().startswith(FENCE):
            in_code = not in_code
        m = None if in_code else _HEADING_LINE.match(line)
        if m is not None and len(m.group(1)) == 1 and m.group(2).strip() != title:
            m = None
        if m is None:
            lines.append(line)
            continue
        flush()
        level = len(m.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        if level > 1:
            stack.append((level, m.group(2).strip()))
    flush()
    return sections


def tidy_chunk(piece: str, in_code: bool = False) -> str:
    """A chunk's text on as few lines as reads well: prose joined into one line with single spaces (as
    every chunk was before), code blocks line by line with their indentation, table rows one per line.

    ``in_code``: the piece starts inside a code block (the splitter cut one); it gets its opening fence
    back, and a block left open at the end gets its closing fence, so every chunk's code is a block.
    """
    out: list[str] = [FENCE] if in_code else []
    prose: list[str] = []

    def end_prose():
        if prose:
            joined = re.sub(r"\s+", " ", " ".join(prose)).strip()
            if joined:
                out.append(joined)
            prose.clear()

    for line in piece.split("\n"):
        s = line.strip()
        if s.startswith(FENCE):
            end_prose()
            out.append(FENCE)
            in_code = not in_code
        elif in_code:
            out.append(line.rstrip())
        elif s.startswith("|") and s.endswith("|") and len(s) > 1:
            end_prose()
            out.append(re.sub(r"\s+", " ", s))
        else:
            prose.append(line)
    end_prose()
    if in_code:
        out.append(FENCE)
    text = "\n".join(out)
    return re.sub(rf"{FENCE}\n(\s*\n)*{FENCE}(\n|$)", "", text).strip()  # an empty block left by a cut


def code_state(text: str, end: int) -> bool:
    """Whether position ``end`` of ``text`` lies inside a fenced code block."""
    return sum(1 for line in text[:end].split("\n") if line.strip().startswith(FENCE)) % 2 == 1
