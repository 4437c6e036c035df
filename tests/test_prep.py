"""Data preparation (course_utils/prep.py, notebook 07): cleansing, deduplication, chunking, ingestion."""

from __future__ import annotations

import itertools
import random

import pytest

from course_utils import prep
from course_utils.prep import Document, PrepConfig

HTML = """<!DOCTYPE html><html><head><title>Kithka - Wiki</title>
<script>var tracker = 1;</script><style>body {color: red}</style></head><body>
<div class="cookie-banner">We use cookies. <button>Accept all</button></div>
<header><a href="/">Wiki</a></header><nav><ul><li><a href="/towns">Towns</a></li></ul></nav>
<main><article><h1>Kithka</h1><p>Kithka lies on the&nbsp;river Bemfal.</p>
<table class="infobox"><tr><th>Founded</th><td>1402</td></tr></table></article></main>
<aside class="sidebar">Print this page</aside><footer>&copy; Wiki contributors</footer></body></html>"""

MARKDOWN = """---
title: Article 1: False measures
id: article-01
---

# Article 1: False measures

Every **trader** shall sell by the [measures](https://x.example/m) kept at the town hall.

---

[Edit this page](https://x.example/edit) · [History](https://x.example/history)
"""

TEXT = """VALDMARK ARCHIVE - record town-001
========================================

KITHKA

Kithka lies on the river
Bemfal and was founded in
1402.

-- 
Printed from the Valdmark Archive. Do not remove this record.
"""


def test_clean_html_keeps_content_drops_boilerplate():
    title, text = prep.clean_html(HTML)
    text = prep.normalize_whitespace(prep.normalize_unicode(text))
    assert title == "Kithka"
    assert "Kithka lies on the river Bemfal." in text  # &nbsp; became a plain space
    assert "Founded: 1402." in text  # table rows become "Header: value" lines
    for junk in ("cookies", "Accept", "tracker", "color", "Towns", "Print this page", "contributors"):
        assert junk not in text, junk


def test_clean_markdown_drops_front_matter_markup_and_link_lines():
    title, text = prep.clean_markdown(MARKDOWN)
    assert title == "Article 1: False measures"
    assert "Every trader shall sell by the measures kept at the town hall." in text
    for junk in ("---", "id: article-01", "Edit this page", "https://", "**"):
        assert junk not in text, junk


def test_clean_plain_text_drops_header_footer_and_unwraps_lines():
    title, text = prep.clean_plain_text(TEXT)
    assert title == "Kithka"
    assert "Kithka lies on the river Bemfal and was founded in 1402." in text
    assert "ARCHIVE" not in text and "Printed" not in text


def test_normalize_unicode():
    assert prep.normalize_unicode("ﬁne Ｋｉｔｈｋａ\u00a0x\u200by") == "fine Kithka xy"
    assert prep.normalize_unicode("Tréville") == "Tréville"  # accents are kept (NFKC composes)
    assert prep.normalize_unicode("Tre\u0301ville") == "Tréville"


def test_cleanse_reports_sizes_per_step():
    d = Document(id="x", source="x.html", format="html", raw=HTML)
    sizes = prep.cleanse(d)
    assert sizes["raw"] > sizes["markup"] >= sizes["unicode"] >= sizes["whitespace"] == len(d.text) > 0


def test_minhash_estimates_jaccard():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    base = [rng.choice(vocab) for _ in range(200)]
    texts = [" ".join(base)]
    for frac in (0.05, 0.2, 0.5):  # replace a share of the words
        words = list(base)
        for i in rng.sample(range(len(words)), int(frac * len(words))):
            words[i] = rng.choice(vocab)
        texts.append(" ".join(words))
    sets = [prep.shingles(t, 3) for t in texts]
    sigs = prep.minhash_signatures(sets, num_perm=256, seed=1)
    for i, j in itertools.combinations(range(len(texts)), 2):
        exact = prep.jaccard(sets[i], sets[j])
        estimate = float((sigs[i] == sigs[j]).mean())
        assert abs(exact - estimate) < 0.1, (i, j, exact, estimate)


def test_mulmod_matches_python_ints():
    import numpy as np

    rng = np.random.default_rng(0)
    p = (1 << 61) - 1
    x = rng.integers(0, p, size=50, dtype=np.uint64)
    a = rng.integers(1, p, size=50, dtype=np.uint64)
    got = prep._mulmod(x, a)
    assert [int(v) for v in got] == [int(u) * int(w) % p for u, w in zip(x, a)]


def test_deduplicate_exact_and_near_keeps_first():
    a = "Kithka lies on the river Bemfal. It was founded in 1402 by the tanners of the valley guild."
    docs = [Document(id=i, source=i, format="txt", raw="", text=t) for i, t in [
        ("a", a), ("a-copy", a.upper()), ("a-near", a + " Its mayor is Warath."), ("b", "Something else entirely, about mills.")]]
    kept, removed, counts = prep.deduplicate(docs, near_threshold=0.5)
    assert [d.id for d in kept] == ["a", "b"]
    assert removed == {"a-copy": "a", "a-near": "a"}
    assert counts == {"exact": 1, "near": 1}


def test_chunking_by_chars_and_tokens_keeps_metadata_and_overlap():
    words = " ".join(f"word{i}" for i in range(300))
    d = Document(id="doc", source="docs/doc.md", format="md", raw="", text=words, title="Doc",
                 meta={"entity_id": "town-001", "kind": "town", "seen": False})
    chunks = prep.chunk_documents([d], by="chars", size=200, overlap=40)
    assert len(chunks) > 5 and all(len(c.text) <= 200 + len("Doc: ") for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    c = chunks[1]
    assert c.id == "doc#1" and c.source == "docs/doc.md" and c.meta["entity_id"] == "town-001" and c.meta["kind"] == "town"
    assert c.text.startswith("Doc: ")
    first_words = chunks[0].text.split()[-2:]
    assert any(w in chunks[1].text for w in first_words), "neighbouring chunks overlap"
    assert prep.Chunk.from_dict(c.to_dict()) == c

    from transformers import AutoTokenizer

    from course_utils.embed import embedder_path

    tok = AutoTokenizer.from_pretrained(embedder_path())  # the embedding model's own tokenizer
    tchunks = prep.chunk_documents([d], by="tokens", size=50, overlap=10, tokenizer=tok, title_prefix=False)
    assert len(tchunks) >= 6
    assert all(len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 50 for c in tchunks)
    with pytest.raises(ValueError, match="overlap"):
        prep.chunk_documents([d], size=10, overlap=10)


def test_aggregate_reports_unreadable_files(tmp_path, capsys):
    (tmp_path / "a.html").write_text(HTML)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text(MARKDOWN)
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "d.txt").write_text("   ")
    (tmp_path / "e.pdf").write_bytes(b"%PDF")
    (tmp_path / "f.md").write_bytes(b"abc\x00def")
    docs, problems = prep.aggregate(tmp_path)
    assert sorted(d.id for d in docs) == ["a.html", "sub/b.md"]
    assert len(problems) == 4
    text = " ".join(problems)
    assert "not UTF-8" in text and "empty" in text and "'.pdf'" in text and "binary" in text
    assert "c.txt" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="No such folder"):
        prep.aggregate(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.pdf").write_bytes(b"%PDF")
    with pytest.raises(ValueError, match="No readable"):
        prep.aggregate(tmp_path / "only", verbose=False)


def test_prepare_pipeline_stats(tmp_path):
    (tmp_path / "a.html").write_text(HTML)
    (tmp_path / "a-mirror.txt").write_text(TEXT)
    (tmp_path / "b.md").write_text(MARKDOWN)
    result = prep.prepare(tmp_path, PrepConfig(chunk_size=120, chunk_overlap=20), verbose=False)
    steps = [r["step"] for r in result.stats]
    assert steps[0] == "aggregate" and steps[-1].startswith("chunk")
    assert result.stats[1]["removed"] > 0.5 * result.stats[0]["characters"]  # markup is most of the bytes
    assert all(r["characters"] >= 0 for r in result.stats)
    assert result.chunks and all(c.doc_id in {d.id for d in result.documents} for c in result.chunks)
    raw = prep.prepare(tmp_path, PrepConfig(cleanse=False, dedup_near=False, dedup_exact=False), verbose=False)
    assert any("<script>" in c.text for c in raw.chunks)


def test_course_store_metadata_and_mirrors():
    result = prep.prepare(verbose=False)
    assert not result.problems
    by_id = {d.id: d for d in result.documents}
    mirrors = [d for d in prep.aggregate(verbose=False)[0] if d.meta.get("duplicate_of")]
    assert mirrors, "the course store has mirror copies"
    # every mirror copy is removed and points at its original (which is kept)
    for m in mirrors:
        assert m.id not in by_id and result.duplicates[m.id] == m.meta["duplicate_of"]
    assert len(result.duplicates) == len(mirrors), "no false positives"
    c = result.chunks[0]
    assert {"entity_id", "kind", "seen", "title"} <= set(c.meta)


SPHINX = """<html><head><title>json — JSON encoder and decoder — Python 3.11 documentation</title></head><body>
<div class="mobile-nav"><nav class="nav-content" role="navigation"><a href="/">Python</a></nav></div>
<div class="related" role="navigation"><h3>Navigation</h3><ul><li><a href="index.html">index</a></li>
<li><a href="next.html">next</a> |</li></ul></div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper"><div class="body" role="main">
<section id="module-http.cookies"><h1>json — JSON encoder and decoder<a class="headerlink" href="#x">¶</a></h1>
<p>JSON is a lightweight data interchange format.</p>
<section id="basic-usage"><h2>Basic Usage<a class="headerlink" href="#basic-usage">¶</a></h2>
<dl class="py function"><dt class="sig sig-object py" id="json.dump"><span class="sig-prename descclassname">json.\
</span><span class="sig-name descname">dump</span><span class="sig-paren">(</span><em>obj</em>, <em>fp</em>, <em>indent=None\
</em><span class="sig-paren">)</span><a class="headerlink" href="#json.dump">¶</a></dt>
<dd><p>Serialize obj as a JSON formatted stream to fp.</p>
<div class="highlight"><pre><span></span>def main():
    with open("x.json", "w") as fp:
        json.dump({"a": 1}, fp, indent=4)
</pre></div></dd></dl>
<p>After the functions comes a note on the whole section.</p>
<dl class="py class"><dt class="sig sig-object py" id="http.cookies.SimpleCookie"><span class="sig-prename">http.cookies.\
</span><span class="sig-name">SimpleCookie</span></dt><dd><p>A cookie jar.</p>
<dl class="py method"><dt class="sig sig-object py" id="http.cookies.SimpleCookie.load"><span class="sig-name">load\
</span><span class="sig-paren">(</span><em>rawdata</em><span class="sig-paren">)</span></dt><dd><p>Load cookies from a string.</p></dd></dl>
<p>More about the cookie jar.</p></dd></dl>
</section>
<section id="conversions"><h2>Conversions</h2>
<table class="docutils"><thead><tr><th><p>JSON</p></th><th><p>Python</p></th></tr></thead>
<tbody><tr><td><p>object</p></td><td><p>dict</p></td></tr><tr><td><p>array</p></td><td><p>list</p></td></tr></tbody></table>
</section></section></div></div></div>
<div class="sphinxsidebar" role="navigation"><h3>Table of Contents</h3><ul><li>Basic Usage</li></ul></div></div>
<div class="footer">&copy; Copyright 2001-2026, Python Software Foundation. Please donate.</div>
</body></html>"""


def _sphinx_doc(**kw):
    doc = Document(id="json.html", source="library/json.html", format="html", raw=SPHINX)
    prep.cleanse(doc)
    return doc, prep.chunk_documents([doc], **kw)


def test_clean_html_keeps_a_manuals_sections_code_and_tables_and_drops_its_navigation():
    doc, _ = _sphinx_doc()
    assert doc.title == "json — JSON encoder and decoder"  # the h1 without its permalink mark
    text = doc.text
    for junk in ("Navigation", "index", "next", "Table of Contents", "Copyright", "donate", "¶", "Python 3.11"):
        assert junk not in text, junk
    assert "## Basic Usage" in text and "## Conversions" in text
    assert "### json.dump()" in text and "json.dump(obj, fp, indent=None)" in text  # heading + full signature
    assert "### http.cookies.SimpleCookie" in text and "#### SimpleCookie.load()" not in text
    assert "#### load()" in text  # a method is one level below its class
    assert "A cookie jar." in text  # a section whose id says "cookies" is content, not a cookie banner
    code = '```\ndef main():\n    with open("x.json", "w") as fp:\n        json.dump({"a": 1}, fp, indent=4)\n```'
    assert code in text  # line breaks and indentation kept
    assert "| JSON | Python |\n|---|---|\n| object | dict |\n| array | list |" in text


def test_split_sections_follows_the_heading_path():
    from course_utils.htmldoc import split_sections

    doc, _ = _sphinx_doc()
    sections = {s.path: s.text for s in split_sections(doc.text, doc.title)}
    assert sections[()].startswith("json — JSON encoder and decoder")
    assert "Serialize obj" in sections[("Basic Usage", "json.dump()")]
    assert "Load cookies" in sections[("Basic Usage", "http.cookies.SimpleCookie", "load()")]
    # text after a function's or a method's entry belongs to the section or class around it again
    assert "After the functions" in sections[("Basic Usage",)]
    assert "More about the cookie jar." in sections[("Basic Usage", "http.cookies.SimpleCookie")]
    assert "| object | dict |" in sections[("Conversions",)]
    assert split_sections("# Not the title\n\n```\n## a comment in code\n```", "Title")[0].path == ()


def test_chunks_of_a_manual_carry_their_section_as_prefix_and_metadata():
    doc, chunks = _sphinx_doc(size=120, overlap=0)
    by_section = {}
    for c in chunks:
        by_section.setdefault(c.meta.get("section"), []).append(c)
        prefix = " > ".join(p for p in (doc.title, c.meta.get("section")) if p)
        assert c.text.startswith(prefix), c.text
        assert c.text.count("```") % 2 == 0, c.text  # a code block cut in two is closed and reopened
    assert [c.position for c in chunks] == list(range(len(chunks)))
    dump = by_section["Basic Usage > json.dump()"]
    assert dump[0].text.startswith("json — JSON encoder and decoder > Basic Usage > json.dump(): json.dump(obj")
    code = [c for c in dump if "```" in c.text]
    assert code and all("\n    " in c.text or "\n        " in c.text or "def main" in c.text for c in code)
    table = by_section["Conversions"][0].text
    assert table.startswith("json — JSON encoder and decoder > Conversions:\n| JSON | Python |")
    assert {"title", "format", "section"} <= set(dump[0].meta)


def test_a_page_without_sections_chunks_as_before():
    from course_utils.htmldoc import tidy_chunk

    doc = Document(id="kithka", source="kithka.html", format="html", raw=HTML)
    prep.cleanse(doc)
    (chunk,) = prep.chunk_documents([doc])
    assert chunk.text == "Kithka Kithka lies on the river Bemfal. Founded: 1402." and "section" not in chunk.meta
    assert tidy_chunk("a\n  b   c\n\nd") == "a b c d"  # prose: one line, single spaces, as chunks always were
    assert tidy_chunk("x = 1\n    y = 2\n```\nafter", in_code=True) == "```\nx = 1\n    y = 2\n```\nafter"


def test_prepare_reuses_the_cleansing_of_unchanged_files(tmp_path, monkeypatch):
    import json

    (tmp_path / "json.html").write_text(SPHINX, encoding="utf-8")
    (tmp_path / "kithka.html").write_text(HTML, encoding="utf-8")
    first = prep.prepare(tmp_path, verbose=False)
    assert set(first.seconds) == {"aggregate", "cleanse", "deduplicate", "chunk"}
    cache = json.loads(json.dumps(first.cache))  # what an index folder keeps between runs
    cleansed = []
    real = prep.cleanse
    monkeypatch.setattr(prep, "cleanse", lambda d, **kw: cleansed.append(d.id) or real(d, **kw))
    (tmp_path / "kithka.html").write_text(HTML.replace("1402", "1403"), encoding="utf-8")
    second = prep.prepare(tmp_path, verbose=False, cache=cache)
    assert cleansed == ["kithka.html"]  # the unchanged manual page came from the cache
    fresh = prep.prepare(tmp_path, verbose=False)
    assert [c.to_dict() for c in second.chunks] == [c.to_dict() for c in fresh.chunks]
    assert second.stats == fresh.stats and len(second.cache) == len(first.cache)
