"""Approximate vs exact nearest-neighbour search: at what index size do HNSW and IVF beat flat?

Notebook 08 compares FAISS's flat, IVF and HNSW indexes on the course index (~600 chunks),
where exact search is already fast. This benchmark repeats the comparison on larger
synthetic sets of unit vectors shaped like sentence embeddings (a mixture of clusters in
384 dimensions, queries near the data), and prints one row per (size, index): build
time, query latency (one query at a time, as a RAG service sees them), memory, and
recall@10 against flat.

    python -m benchmarks.bench_ann                      # sizes 1k 4k 16k 64k (~2-4 min on 2 cores)
    python -m benchmarks.bench_ann --sizes 1000 200000  # any sizes
    python -m benchmarks.bench_ann --json               # one JSON line, last

The answer is printed at the end: the smallest size at which an approximate index with
recall@10 >= 0.95 of flat answers a query at least twice as fast as flat (below a few
thousand vectors every index answers in about 0.1 ms, most of it the cost of the call).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from course_utils.rag import compare_faiss


def synthetic(n: int, dim: int = 384, clusters: int | None = None, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random centres (default ~sqrt(n)/2)."""
    rng = np.random.default_rng(seed)
    clusters = clusters or max(8, int(n ** 0.5 / 2))
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def queries_near(x: np.ndarray, nq: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = 0.5 / np.sqrt(x.shape[1])  # a query vector is ~0.5 away from its nearest document vector
    q = x[rng.integers(0, len(x), nq)] + noise * rng.normal(size=(nq, x.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def run(sizes: list[int], dim: int = 384, nq: int = 200, k: int = 10, nprobe: int = 16, ef_search: int = 64,
        progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    rows = []
    for n in tqdm(sizes, desc="index sizes", disable=not progress):
        x = synthetic(n, dim)
        q = queries_near(x, nq)
        specs = {"flat": {"kind": "flat"}, "ivf": {"kind": "ivf", "nprobe": nprobe},
                 "hnsw": {"kind": "hnsw", "ef_search": ef_search}}
        for r in compare_faiss(x, q, k=k, specs=specs, repeats=3, threads=1):
            rows.append({"n": n, **r})
    crossover = {}
    for kind in ("ivf", "hnsw"):
        wins = [r["n"] for r in rows if r["index"] == kind and r[f"recall@{k}"] >= 0.95
                and 2 * r["latency_ms"] <= next(f["latency_ms"] for f in rows if f["n"] == r["n"] and f["index"] == "flat")]
        crossover[kind] = min(wins) if wins else None
    return {"rows": rows, "crossover": crossover, "dim": dim, "queries": nq, "k": k}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000], help="index sizes")
    p.add_argument("--dim", type=int, default=384, help="vector dimension (384: all-MiniLM-L6-v2)")
    p.add_argument("--queries", type=int, default=200, help="queries per size")
    p.add_argument("--nprobe", type=int, default=16, help="IVF cells visited per query")
    p.add_argument("--ef-search", type=int, default=64, help="HNSW candidate list size")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    args = p.parse_args(argv)
    result = run(args.sizes, args.dim, args.queries, nprobe=args.nprobe, ef_search=args.ef_search)
    print(f"{'n':>8} {'index':<6} {'build s':>8} {'ms/query':>9} {'MB':>8} {'recall@10':>9}")
    for r in result["rows"]:
        print(f"{r['n']:>8} {r['index']:<6} {r['build_s']:>8.3f} {r['latency_ms']:>9.4f} {r['memory_mb']:>8.2f} "
              f"{r['recall@10']:>9.3f}")
    for kind, n in result["crossover"].items():
        print(f"{kind}: " + (f"at least 2x faster than flat with recall@10 >= 0.95 from n = {n}" if n else
                             "never 2x faster than flat with recall@10 >= 0.95 at these sizes"))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
