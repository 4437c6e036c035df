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
