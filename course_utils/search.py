"""Search primitives under the course index: FAISS indexes (flat, IVF, HNSW) and their comparison, the
word tokens BM25 matches on, and reciprocal-rank fusion. Taught in notebook 08; :mod:`course_utils.rag`
builds the course index on them, :mod:`course_utils.vectordb` the Qdrant store.

- Dense: the chunks are embedded with :mod:`course_utils.embed` (unit vectors), so the
  inner product is the cosine similarity; :func:`make_faiss_index` builds an exact
  ``IndexFlatIP``, an ``IndexIVFFlat`` (k-means cells, search ``nprobe`` of them) or an
  ``IndexHNSWFlat`` (a navigable small-world graph); :func:`compare_faiss` measures
  recall against flat, build time, latency and memory.
- Lexical: BM25 (``rank_bm25.BM25Okapi``) over lower-cased word tokens (:func:`tokenize_bm25`).
- Hybrid: reciprocal-rank fusion (:func:`reciprocal_rank_fusion`) of the two rankings.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["compare_faiss", "faiss_search", "index_bytes", "make_faiss_index", "reciprocal_rank_fusion",
           "tokenize_bm25"]


# ----------------------------------------------------------------------------- FAISS

def make_faiss_index(vectors: np.ndarray, kind: str = "flat", *, nlist: int | None = None, nprobe: int = 8,
                     hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 64, seed: int = 0):
    """A FAISS inner-product index over ``vectors`` (float32, unit length), filled.

    ``kind``: ``"flat"`` (exact, compares the query with every vector), ``"ivf"``
    (k-means into ``nlist`` cells, default ~4·sqrt(n); a query visits ``nprobe`` cells)
    or ``"hnsw"`` (a graph with ``hnsw_m`` links per node; ``ef_search`` candidates kept
    while walking it). IVF needs at least ``nlist`` vectors to train its cells.
    """
    import faiss
    import numpy as np

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"Expected a non-empty (n, dim) array of vectors, got shape {x.shape}.")
    n, dim = x.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or max(1, min(n // 39, int(4 * n ** 0.5)))  # FAISS wants >= 39 points per cell
        if n < nlist:
            raise ValueError(f"IVF with nlist={nlist} needs at least {nlist} vectors to train, got {n}.")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # small course index: no warning spam
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    else:
        raise ValueError(f"Unknown index kind {kind!r}: use 'flat', 'ivf' or 'hnsw'.")
    index.add(x)
    return index


def faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the ``k`` nearest vectors for each query, shape ``(nq, k)``; id -1 = none."""
    import numpy as np

    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    return index.search(q, min(k, index.ntotal))


def index_bytes(index) -> int:
    """Size of ``index`` serialised (what it takes on disk and, roughly, in memory)."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)


def compare_faiss(vectors: np.ndarray, queries: np.ndarray, k: int = 10, specs: dict[str, dict] | None = None,
                  repeats: int = 3, threads: int | None = 1) -> list[dict[str, Any]]:
    """Build each index of ``specs`` (name -> :func:`make_faiss_index` kwargs) and measure it.

    Rows: ``index``, ``build_s``, ``latency_ms`` (per query, one query at a time, best of
    ``repeats``), ``memory_mb``, ``recall@k`` (share of the flat index's top ``k`` that
    the index also returns). ``threads`` caps FAISS's OpenMP threads while measuring
    (default 1: one query on one core, stable on a shared machine; None leaves it).
    """
    import faiss

    before = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        return _compare_faiss(vectors, queries, k, specs, repeats)
    finally:
        faiss.omp_set_num_threads(before)


def _compare_faiss(vectors, queries, k, specs, repeats):
    import numpy as np

    specs = specs or {"flat": {"kind": "flat"}, "ivf": {"kind": "ivf"}, "hnsw": {"kind": "hnsw"}}
    rows, truth = [], None
    names = sorted(specs, key=lambda s: specs[s].get("kind") != "flat")  # flat first: the reference
    for name in names:
        t0 = time.perf_counter()
        index = make_faiss_index(vectors, **specs[name])
        build = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            ids = np.stack([faiss_search(index, q[None, :], k)[1][0] for q in queries])
            best = min(best, (time.perf_counter() - t0) / len(queries))
        if truth is None:
            if specs[name].get("kind") != "flat":
                raise ValueError("compare_faiss needs a flat index in specs as the reference.")
            truth = ids
        recall = float(np.mean([len(set(a) & set(b)) / len(set(b)) for a, b in zip(ids, truth)]))
        rows.append({"index": name, "build_s": round(build, 4), "latency_ms": round(best * 1000, 4),
                     "memory_mb": round(index_bytes(index) / 2**20, 3), f"recall@{k}": round(recall, 4)})
    return rows


# ----------------------------------------------------------------------------- BM25 and fusion

def tokenize_bm25(text: str) -> list[str]:
    """Lower-cased word tokens (what BM25 matches on)."""
    return re.findall(r"\w+", text.lower())


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = 60) -> list[tuple[str, float]]:
    """Fuse ranked lists of ids: ``score(id) = Σ 1 / (k + rank)`` (rank from 1), best first.

    Cormack et al. (2009): needs no score calibration between the retrievers, only ranks;
    ``k`` damps the weight of the very first places.
    """
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
