"""Retrieval metrics and the experiments built on them: recall@k and MRR on document ids (a chunk counts for
its document, and a removed duplicate counts as the copy that was kept), each retriever of an index on the
evaluation questions (notebook 08), and the same retriever over differently prepared documents
(notebook 07)."""

from __future__ import annotations

import time
from typing import Any

from course_utils.prep import PrepConfig, prepare
from course_utils.rag import METHODS, IndexConfig, RagIndex

__all__ = ["compare_preparations", "evaluate_retrieval", "retrieval_metrics"]


def retrieval_metrics(ranked: list[list[str]], golds: list[list[str]], ks: tuple[int, ...] = (1, 5, 10)
                      ) -> dict[str, float]:
    """Mean recall@k (share of a question's gold documents in its top ``k``) and MRR
    (1 / rank of the first gold document, 0 if none) over questions.

    ``ranked``: each question's retrieved document ids, best first, without repeats.
    """
    if len(ranked) != len(golds):
        raise ValueError(f"{len(ranked)} rankings for {len(golds)} questions.")
    if not golds:
        raise ValueError("No questions to score.")
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = sum(len(set(r[:k]) & set(g)) / len(set(g)) for r, g in zip(ranked, golds)) / len(golds)
    rr = []
    for r, g in zip(ranked, golds):
        ranks = [i for i, d in enumerate(r, 1) if d in set(g)]
        rr.append(1.0 / ranks[0] if ranks else 0.0)
    out["mrr"] = sum(rr) / len(rr)
    return out


def _doc_ranking(hits: list[dict], duplicates: dict[str, str]) -> list[str]:
    """Document ids of ``hits`` in order, each once (a removed duplicate's id maps to the kept one)."""
    seen, out = set(), []
    for h in hits:
        d = duplicates.get(h["doc_id"], h["doc_id"])
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def evaluate_retrieval(index: RagIndex, questions: list[dict], methods: tuple[str, ...] = METHODS,
                       ks: tuple[int, ...] = (1, 5, 10), depth: int = 50) -> list[dict[str, Any]]:
    """Recall@k and MRR of each method on ``questions`` (records of ``data.load_eval``), for
    all questions and for the seen and unseen halves. One row per (method, subset)."""
    if not questions:
        raise ValueError("No questions to evaluate.")
    texts = [q["question"] for q in questions]
    golds = [[index.duplicates.get(g, g) for g in q["gold_doc_ids"]] for q in questions]
    k_chunks = max(depth, max(ks) * 3)  # several chunks can come from one document
    vectors = index.embed_queries(texts) if ("dense" in methods or "hybrid" in methods) else None
    rows = []
    for method in methods:
        kw = {} if method == "bm25" else {"vectors": vectors}
        if method == "hybrid":
            kw["depth"] = k_chunks
        t0 = time.perf_counter()
        hits = index.search(texts, k_chunks, method=method, **kw)
        ms = (time.perf_counter() - t0) / len(texts) * 1000
        ranked = [_doc_ranking(h, index.duplicates) for h in hits]
        for subset, keep in (("all", None), ("seen", True), ("unseen", False)):
            sel = [i for i, q in enumerate(questions) if keep is None or q.get("seen") == keep]
            if not sel:
                continue
            m = retrieval_metrics([ranked[i] for i in sel], [golds[i] for i in sel], ks)
            rows.append({"method": method, "subset": subset, "questions": len(sel),
                         **{k: round(v, 4) for k, v in m.items()}, "ms_per_query": round(ms, 2)})
    return rows


def compare_preparations(documents: list, questions: list[dict], configs: dict[str, PrepConfig], *, embedder=None,
                         ks: tuple[int, ...] = (1, 5, 10), tokenizer=None) -> list[dict[str, Any]]:
    """Notebook 07's experiment: the same dense retriever over differently prepared documents.

    ``documents``: what :func:`course_utils.prep.aggregate` read (left untouched);
    ``configs``: name -> :class:`PrepConfig`. One row per configuration: ``prep``,
    ``chunks``, mean ``chunk_chars``, recall@k, MRR and ``embed_s`` (time to embed the chunks).
    """
    from course_utils.embed import embed, load_embedder

    embedder = embedder or load_embedder()
    rows = []
    for name, cfg in configs.items():
        prepared = prepare(documents, cfg, tokenizer=tokenizer or embedder.tokenizer, verbose=False)
        t0 = time.perf_counter()
        vectors = embed([c.text for c in prepared.chunks], embedder, progress=True)
        seconds = time.perf_counter() - t0
        index = RagIndex(prepared.chunks, vectors, IndexConfig(prep=cfg), prepared.duplicates, embedder=embedder)
        m = [r for r in evaluate_retrieval(index, questions, ("dense",), ks) if r["subset"] == "all"][0]
        rows.append({"prep": name, "chunks": len(prepared.chunks),
                     "chunk_chars": round(sum(len(c.text) for c in prepared.chunks) / len(prepared.chunks)),
                     **{k: v for k, v in m.items() if k.startswith("recall") or k == "mrr"},
                     "embed_s": round(seconds, 1)})
    return rows
