"""FAISS vs Qdrant behind the same retriever: recall, latency, build time, disk size, filters, hybrid search.

The same chunks and vectors (a course index, nothing embedded twice) are searched by FAISS flat (exact, in
this process) and by Qdrant in its embedded local mode (a database folder on disk, what ``course rag index
--store qdrant`` builds), on the course evaluation set and on a real documentation set with its own
questions (Debian's ``python3-doc``: the 317 pages of the Python 3.11 library reference under
``/usr/share/doc/python3.11/html/library``, questions with gold pages in
``data/docsets/python3-library-questions.jsonl``):

    python -m benchmarks.bench_vectorstores                  # the course store and its 424 questions
    course rag index /usr/share/doc/python3.11/html/library --out build/pylib
    python -m benchmarks.bench_vectorstores --index build/pylib --questions data/docsets/python3-library-questions.jsonl

Per set it prints:

- **stores**: overlap of each store's top 5 / 10 chunks with FAISS flat's (recall@k against flat), recall@5 of
  the gold documents, query latency p50 / p95 (one query vector at a time, embedding excluded), build time
  (FAISS: the index; Qdrant: writing every point into a new collection) and size on disk;
- **filter**: a retrieval that needs metadata. Course set: the legal scenario questions need the article *and*
  its leading case, and the top hits are mostly cases; asking for the best chunk with ``where={"kind":
  "article"}`` finds the article (recall@1 of the gold article, without and with the filter). Doc set:
  each question's ``scope`` (the module family a reader would restrict the search to, e.g. ``asyncio``)
  as ``where={"doc_id": [pages whose name starts with it]}``;
- **hybrid**: dense + BM25 fused by reciprocal rank, the course's ``search_hybrid`` (both top 50, RRF k = 60)
  over each store, against Qdrant's own fusion of its dense and sparse (BM25, IDF by Qdrant) vectors: with
  the course's settings, and with LangChain's ``QdrantVectorStore`` hybrid defaults (each side's top k, RRF
  with Qdrant's k = 2).

Measured 2026-12-02 on a 2-core AMD EPYC (AVX512-BF16) shared with other jobs (load average about 2:
compare within a table, not across machines). Course store, 621 chunks, 424 questions:

| store | recall@5 / @10 vs flat | gold recall@5 | p50 / p95 ms | build s | disk MB |
|---|---|---|---|---|---|
| FAISS flat | 1 / 1 | 0.9847 | 0.083 / 0.092 | 0.00 | 0.91 |
| Qdrant local | 1 / 1 | 0.9847 | 1.13 / 1.21 | 1.03 | 2.96 |

Python library reference (python3-doc), 317 pages, 17,733 chunks, the file's first 20 questions (the other 30 came later):

| store | recall@5 / @10 vs flat | gold recall@5 | p50 / p95 ms | build s | disk MB |
|---|---|---|---|---|---|
| FAISS flat | 1 / 1 | 1.0 | 1.41 / 2.06 | 0.12 | 26.0 |
| Qdrant local | 1 / 1 | 1.0 | 19.9 / 21.4 | 9.94 | 91.1 |

Both are exact searches, so Qdrant returns FAISS flat's chunks (recall 1 against flat on both sets: the
target was within 1 point). Local mode is pure Python and keeps every point in memory: ~14x FAISS's latency
on the manual, 3.5x its disk (points pickled into SQLite with their payload, sparse vectors included). A
Qdrant server indexes with HNSW and serves over HTTP/gRPC instead; not measured here (no server reachable).

Metadata filters (recall of the gold page / gold article among the top 1 and top 5, without -> with):

| set | filter | questions | recall@1 | recall@5 |
|---|---|---|---|---|
| course store | ``kind = article`` (legal scenarios: the article, not its cases) | 44 | 0.864 -> 0.909 | 1.0 -> 1.0 |
| Python library | ``doc_id`` in the question's module family (``scope``) | 20 | 0.80 -> 1.00 | 1.0 -> 1.0 |

Same figures for both stores (FAISS filters through an ID selector, Qdrant through a payload filter).

Hybrid search, gold recall@5 (ms/query includes BM25 for the course's RRF; LangChain's row embeds the query):

| | course store | Python library |
|---|---|---|
| dense alone / BM25 alone | 0.9847 / 0.9894 | 1.0 / 0.85 |
| course RRF over FAISS (top 50 each, k 60) | 0.9988 (1.0 ms) | 1.0 (138 ms) |
| course RRF over Qdrant | 0.9988 (2.1 ms) | 1.0 (150 ms) |
| Qdrant's own fusion of dense + sparse BM25 (top 50 each, RRF k 60) | 0.9988 (11.8 ms) | 1.0 (394 ms) |
| LangChain ``QdrantVectorStore`` hybrid mode (top 30 each, Qdrant's RRF k 2) | 1.0 (25.6 ms) | 1.0 (440 ms) |

Qdrant's fusion matches the course's on both sets (BM25 weights computed the same way; only the IDF formula
differs slightly). On the manual the 20 questions are easy for dense retrieval (recall@5 at the ceiling);
BM25 alone is weaker there, and fusing it costs nothing at k = 5.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _doc_ids(index, hit_ids: list[str]) -> list[str]:
    pos = index.positions
    seen, out = set(), []
    for cid in hit_ids:
        d = index.chunks[pos[cid]].doc_id
        d = index.duplicates.get(d, d)
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def _recall(ranked: list[list[str]], golds: list[list[str]], k: int) -> float:
    return float(np.mean([len(set(r[:k]) & set(g)) / len(set(g)) for r, g in zip(ranked, golds)]))


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 95)), 3)


def compare(index, questions: list[dict], *, name: str, repeats: int = 2, depth: int = 50) -> dict:
    """Every measurement of the module's docstring for one index (a FAISS ``RagIndex``) and its questions."""
    import faiss

    from course_utils.rag import RagIndex, make_faiss_index
    from course_utils.vectordb import QdrantStore, disk_bytes

    work = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    texts = [q["question"] for q in questions]
    golds = [[index.duplicates.get(g, g) for g in q["gold_doc_ids"]] for q in questions]
    qvec = index.embed_queries(texts)

    QdrantStore.memory().close()  # import the client (seconds) before anything is timed
    # build: FAISS flat in memory + its file; Qdrant: every point into a new local-mode collection
    t0 = time.perf_counter()
    flat = make_faiss_index(index.vectors, "flat")
    faiss.write_index(flat, str(work / "index.faiss"))
    faiss_build = time.perf_counter() - t0
    qindex = RagIndex(index.chunks, index.vectors, replace(index.config, store="qdrant"), index.duplicates,
                      embedder=index.embedder)
    t0 = time.perf_counter()
    QdrantStore.write_local(work / "qdrant", [c.to_dict() for c in index.chunks], index.vectors, qindex.sparse(),
                            progress=False)
    qdrant_build = time.perf_counter() - t0
    qindex.folder = work
    stores = {"FAISS flat": index, "Qdrant local": qindex}
    sizes = {"FAISS flat": disk_bytes(work / "index.faiss"), "Qdrant local": disk_bytes(work / "qdrant")}
    builds = {"FAISS flat": faiss_build, "Qdrant local": qdrant_build}

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query on one core, as compare_faiss measures
    try:
        k_chunks = max(depth, 30)
        hits, lat = {}, {}
        for label, idx in stores.items():
            idx.search_dense(texts[:1], 5, vectors=qvec[:1])  # warm (opens Qdrant's folder)
            best = None
            for _ in range(repeats):
                times, rows = [], []
                for v in qvec:
                    t0 = time.perf_counter()
                    rows.append(idx.search_dense([""], k_chunks, vectors=v[None, :])[0])
                    times.append(time.perf_counter() - t0)
                best = times if best is None else [min(a, b) for a, b in zip(best, times)]
            hits[label], lat[label] = rows, best
    finally:
        faiss.omp_set_num_threads(threads)
    ref = hits["FAISS flat"]
    rows = []
    for label in stores:
        ids = [[h["id"] for h in r] for r in hits[label]]
        against = {k: float(np.mean([len(set(a[:k]) & {h["id"] for h in b[:k]}) / max(1, len(b[:k]))
                                     for a, b in zip(ids, ref)])) for k in (5, 10)}
        ranked = [_doc_ids(index, r) for r in ids]
        p50, p95 = _percentiles(lat[label])
        rows.append({"store": label, "recall@5 vs flat": round(against[5], 4), "recall@10 vs flat": round(against[10], 4),
                     "gold recall@5": round(_recall(ranked, golds, 5), 4), "p50 ms": p50, "p95 ms": p95,
                     "build s": round(builds[label], 2), "disk MB": round(sizes[label] / 2**20, 2)})

    # a retrieval that needs a metadata filter
    filt = []
    if any("scope" in q for q in questions):
        pages = sorted({c.doc_id for c in index.chunks})
        sel = [i for i, q in enumerate(questions) if q.get("scope")]
        for label, idx in stores.items():
            plain = [_doc_ids(index, [h["id"] for h in idx.search_dense([""], 10, vectors=qvec[i][None, :])[0]])
                     for i in sel]
            scoped = []
            for i in sel:
                where = {"doc_id": [p for p in pages if p.startswith(questions[i]["scope"])]}
                hit = idx.search_dense([""], 10, vectors=qvec[i][None, :], where=where)[0]
                scoped.append(_doc_ids(index, [h["id"] for h in hit]))
            g = [golds[i] for i in sel]
            filt.append({"store": label, "filter": "doc_id in the question's scope", "questions": len(sel),
                         "recall@1 without": round(_recall(plain, g, 1), 4), "recall@1 with": round(_recall(scoped, g, 1), 4),
                         "recall@5 without": round(_recall(plain, g, 5), 4), "recall@5 with": round(_recall(scoped, g, 5), 4)})
    else:
        kinds = {c.doc_id: c.meta.get("kind") for c in index.chunks}
        sel = [i for i, q in enumerate(questions) if q.get("kind") == "legal:scenario"]
        for label, idx in stores.items():
            arts = [[g for g in golds[i] if kinds.get(g) == "article"] for i in sel]
            plain = [_doc_ids(index, [h["id"] for h in idx.search_dense([""], 10, vectors=qvec[i][None, :])[0]])
                     for i in sel]
            scoped = [_doc_ids(index, [h["id"] for h in idx.search_dense([""], 10, vectors=qvec[i][None, :],
                                                                         where={"kind": "article"})[0]]) for i in sel]
            filt.append({"store": label, "filter": "kind = article", "questions": len(sel),
                         "recall@1 without": round(_recall(plain, arts, 1), 4), "recall@1 with": round(_recall(scoped, arts, 1), 4),
                         "recall@5 without": round(_recall(plain, arts, 5), 4), "recall@5 with": round(_recall(scoped, arts, 5), 4)})

    # hybrid: the course's RRF over each store vs Qdrant's fusion in the database
    hyb = []
    for label, idx in stores.items():
        t0 = time.perf_counter()
        res = idx.search_hybrid(texts, 30, depth=depth, vectors=qvec)
        hyb.append({"hybrid": f"course RRF over {label} (top {depth} each, k 60)",
                    "gold recall@5": round(_recall([_doc_ids(index, [h["id"] for h in r]) for r in res], golds, 5), 4),
                    "ms/query": round((time.perf_counter() - t0) / len(texts) * 1000, 2)})
    sparse = qindex.sparse()
    t0 = time.perf_counter()
    res = qindex.qdrant.search_hybrid(qvec, texts, sparse, 30, depth=depth, rrf_k=60)
    hyb.append({"hybrid": f"Qdrant's fusion in the database (top {depth} each, RRF k 60)",
                "gold recall@5": round(_recall([_doc_ids(index, [cid for cid, _ in r]) for r in res], golds, 5), 4),
                "ms/query": round((time.perf_counter() - t0) / len(texts) * 1000, 2)})
    from course_utils.rag_chain import hf_embeddings

    store = qindex.qdrant.langchain(hf_embeddings(index.config.embedder), hybrid=sparse)
    t0 = time.perf_counter()
    res = [store.similarity_search(t, k=30) for t in texts]  # LangChain: each side's top k, Qdrant's RRF (k 2)
    hyb.append({"hybrid": "LangChain QdrantVectorStore, hybrid mode (k 30: top 30 each, RRF k 2; embeds the query)",
                "gold recall@5": round(_recall([_doc_ids(index, [d.metadata["id"] for d in r]) for r in res], golds, 5), 4),
                "ms/query": round((time.perf_counter() - t0) / len(texts) * 1000, 2)})
    dense = [_doc_ids(index, [h["id"] for h in r]) for r in ref]
    lexical = [_doc_ids(index, [h["id"] for h in r]) for r in index.search_bm25(texts, 30)]
    hyb.insert(0, {"hybrid": "(dense alone, FAISS)", "gold recall@5": round(_recall(dense, golds, 5), 4), "ms/query": None})
    hyb.insert(1, {"hybrid": "(BM25 alone, rank_bm25)", "gold recall@5": round(_recall(lexical, golds, 5), 4),
                   "ms/query": None})
    qindex.close()
    shutil.rmtree(work, ignore_errors=True)
    return {"set": name, "chunks": len(index), "questions": len(questions), "stores": rows, "filter": filt,
            "hybrid": hyb}


def _table(rows: list[dict]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("-" if r[c] is None else str(r[c]) for c in cols) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None, help="a FAISS index folder from `course rag index` (default: the course "
                                                  "index, built if not cached)")
    ap.add_argument("--questions", default=None, help="JSONL of {question, gold_doc_ids[, scope]} (default: the course "
                                                      "evaluation set)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the queries (the fastest counts)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    args = ap.parse_args(argv)
    from course_utils import data
    from course_utils.rag import RagIndex, load_or_build_index

    if args.index:
        index = RagIndex.load(args.index)
        if index.config.store != "faiss":
            raise SystemExit(f"{args.index} is a {index.config.store} index: give one built with the default --store faiss.")
    else:
        index = load_or_build_index()
    if args.questions:
        questions = [json.loads(line) for line in Path(args.questions).read_text(encoding="utf-8").splitlines()
                     if line.strip()]
    else:
        questions = data.load_eval()
    name = Path(args.index).name if args.index else "course store"
    result = compare(index, questions, name=name, repeats=args.repeats)
    print(f"## {name}: {result['chunks']:,} chunks, {result['questions']} questions\n")
    for part in ("stores", "filter", "hybrid"):
        print(_table(result[part]) + "\n")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
