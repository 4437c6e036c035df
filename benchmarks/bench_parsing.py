"""What parsing real HTML documentation buys retrieval: the course's parser against what a quick script does.

On a real manual with hand-written questions (Debian's ``python3-doc``: the Python 3.11 library reference,
``/usr/share/doc/python3.11/html/library``; 50 questions with gold pages in
``data/docsets/python3-library-questions.jsonl``), the same dense retriever (the packaged MiniLM, FAISS flat,
chunks of 600 characters with 80 of overlap) over the pages prepared three ways (``--variants`` adds
**raw HTML**, the files as they are, ``PrepConfig(cleanse=False)``: notebook 07's baseline, about five
times the chunks):

- **page text**: BeautifulSoup's ``get_text`` of the whole page with its ``<title>``, what a quick script
  does: navigation, sidebars, "Previous topic", footers and permalink marks stay in, headings become plain
  lines (then the course's plain-text cleaning: paragraphs re-joined, white space normalised);
- **parser without prefix**: the course's parser (:mod:`course_utils.htmldoc`: boilerplate dropped, headings,
  code blocks and tables kept), chunks without their page title and section heading in front;
- **parser**: the course's default, every chunk starting with its page title and section path.

It prints recall@1/5/10 and MRR of the gold pages, the number of chunks, their mean length, the share of
chunks that carry navigation text (``Previous topic``, ``Next topic``, ``This Page``, ``Navigation``,
``Quick search``) and the embedding time:

    python -m benchmarks.bench_parsing                    # the gold pages and 40 other pages of the library
    python -m benchmarks.bench_parsing --distractors 0    # the gold pages alone
    python -m benchmarks.bench_parsing --all              # all 317 pages (about 4 x 18,000 chunks to embed)

Pages other than the gold ones are drawn at random (seed 0); every variant indexes the same pages.

Measured 2026-12-02 on a quiet 2-core AMD EPYC (AVX512-BF16), the default run (the 51 gold pages of the 50
questions and 40 others, 91 pages; dense retrieval, exact search):

| preparation | chunks | mean chars | chunks with navigation | recall@1 | recall@5 | recall@10 | MRR | embed s |
|---|---|---|---|---|---|---|---|---|
| page text | 5,465 | 587 | 4% | 0.87 | 1.00 | 1.00 | 0.935 | 146.5 |
| parser without prefix | 7,635 | 312 | 0% | 0.87 | 1.00 | 1.00 | 0.937 | 134.3 |
| parser | 7,635 | 397 | 0% | 0.93 | 1.00 | 1.00 | 0.967 | 135.8 |

Every variant finds every gold page within five results on this set, so the differences are at the top: the page
title and section path in front of each chunk put the right page first for three more questions of the 50 (recall@1
0.87 -> 0.93, MRR 0.935 -> 0.967). Dropping navigation alone changes no ranking here (Sphinx keeps it to a header and
a footer: 4% of the page-text chunks); the parser's chunks are shorter because it cuts at section headings, and they
keep code blocks and tables whole. A harder set (more pages, questions whose words are in many pages) would separate
the variants further: ``--all`` indexes the whole library.

``--all`` (2026-12-03, a later session, quiet; all 317 pages, ``apt-get install python3-doc``):

| preparation | chunks | mean chars | chunks with navigation | recall@1 | recall@5 | recall@10 | MRR | embed s |
|---|---|---|---|---|---|---|---|---|
| page text | 12,349 | 583 | 7% | 0.73 | 1.00 | 1.00 | 0.852 | 214.8 |
| parser without prefix | 17,733 | 302 | 0% | 0.74 | 0.98 | 1.00 | 0.842 | 186.1 |
| parser | 17,733 | 382 | 0% | 0.74 | 1.00 | 1.00 | 0.852 | 210.4 |

With every page in the index the questions get harder for all three (recall@1 0.93 -> 0.74 for the parser), and the
title-and-section prefix no longer puts the right page first more often than the plain page text does (MRR 0.852
both); it still beats the parser without it (0.842, which lost one gold page from the top five). The parser's gain
on the whole manual is in what a chunk holds (no navigation, code and tables whole, shorter chunks), not in these
50 questions' ranks.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

LIBRARY = "/usr/share/doc/python3.11/html/library"
QUESTIONS = "data/docsets/python3-library-questions.jsonl"
NAVIGATION = ("Previous topic", "Next topic", "This Page", "Navigation", "Quick search")


def page_text(html: str) -> tuple[str, str]:
    """What a quick script indexes: ``(title, text)``, the page's ``<title>`` and every piece of text of
    the page, one line per element."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style"]):
        tag.decompose()
    return title, soup.get_text("\n")


def load_pages(folder: str, questions: list[dict], distractors: int | None, seed: int = 0):
    """The course's documents of ``folder``: the questions' gold pages and ``distractors`` other pages drawn
    at random (None: every page)."""
    from course_utils.prep import aggregate

    docs, _ = aggregate(folder, verbose=False)
    if distractors is None:
        return docs
    gold = {g for q in questions for g in q["gold_doc_ids"]}
    missing = gold - {d.id for d in docs}
    if missing:
        raise SystemExit(f"Gold pages not in {folder}: {', '.join(sorted(missing))}.")
    others = sorted(d.id for d in docs if d.id not in gold)
    keep = gold | set(random.Random(seed).sample(others, min(distractors, len(others))))
    return [d for d in docs if d.id in keep]


def run(folder: str = LIBRARY, questions_path: str = QUESTIONS, distractors: int | None = 40,
        variants: tuple[str, ...] = ("page text", "parser without prefix", "parser")) -> list[dict[str, Any]]:
    """One row per variant (see the module docstring)."""
    import dataclasses

    from course_utils.embed import embed, load_embedder
    from course_utils.prep import PrepConfig, prepare
    from course_utils.rag import IndexConfig, RagIndex
    from course_utils.retrieval_eval import evaluate_retrieval

    questions = [json.loads(line) for line in Path(questions_path).read_text().splitlines() if line.strip()]
    docs = load_pages(folder, questions, distractors)
    embedder = load_embedder(device="cpu")
    base = PrepConfig()
    setups = {
        "raw HTML": (docs, dataclasses.replace(base, cleanse=False)),
        "page text": ([dataclasses.replace(d, format="txt", raw=text, meta={"title": title})
                       for d in docs for title, text in [page_text(d.raw)]], base),
        "parser without prefix": (docs, dataclasses.replace(base, title_prefix=False)),
        "parser": (docs, base),
    }
    rows = []
    for name in variants:
        pages, cfg = setups[name]
        prepared = prepare(pages, cfg, verbose=False)
        texts = [c.text for c in prepared.chunks]
        t0 = time.perf_counter()
        vectors = embed(texts, embedder, progress=True)
        seconds = time.perf_counter() - t0
        index = RagIndex(prepared.chunks, vectors, IndexConfig(prep=cfg), prepared.duplicates, embedder=embedder)
        m = [r for r in evaluate_retrieval(index, questions, ("dense",)) if r["subset"] == "all"][0]
        rows.append({"prep": name, "pages": len(pages), "chunks": len(texts),
                     "chunk_chars": round(sum(map(len, texts)) / len(texts)),
                     "navigation_share": round(sum(any(n in t for n in NAVIGATION) for t in texts) / len(texts), 3),
                     **{k: v for k, v in m.items() if k.startswith("recall") or k == "mrr"},
                     "embed_s": round(seconds, 1)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| preparation | chunks | mean chars | chunks with navigation | recall@1 | recall@5 | recall@10 | MRR | embed s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['prep']} | {r['chunks']:,} | {r['chunk_chars']} | {r['navigation_share']:.0%} | "
                   f"{r['recall@1']:.2f} | {r['recall@5']:.2f} | {r['recall@10']:.2f} | {r['mrr']:.3f} | {r['embed_s']} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", default=LIBRARY, help="the manual's HTML folder")
    ap.add_argument("--questions", default=QUESTIONS, help="JSONL of {id, question, gold_doc_ids}")
    ap.add_argument("--distractors", type=int, default=40, help="pages besides the gold ones")
    ap.add_argument("--all", action="store_true", help="every page of the folder")
    ap.add_argument("--variants", default="page text,parser without prefix,parser",
                    help="comma-separated, of: raw HTML, page text, parser without prefix, parser")
    ap.add_argument("--results", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if not Path(args.folder).is_dir():
        raise SystemExit(f"No folder {args.folder}: install Debian's python3-doc (apt-get install python3-doc) "
                         "or give --folder.")
    rows = run(args.folder, args.questions, None if args.all else args.distractors, tuple(args.variants.split(",")))
    if args.results:
        Path(args.results).write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
