"""Retrieval: FAISS indexes (flat, IVF, HNSW), BM25, hybrid fusion, retrieval metrics, the course index.

Taught in notebook 08 (RAG with FAISS and LangChain); notebook 07 uses
:func:`evaluate_retrieval` to measure what cleansing and chunk size do to retrieval,
and notebooks 09-11 load the course index with :func:`load_or_build_index`. The
LangChain chain and answer generation live in :mod:`course_utils.rag_chain`.

- Dense: the chunks are embedded with :mod:`course_utils.embed` (unit vectors), so the
  inner product is the cosine similarity; :func:`make_faiss_index` builds an exact
  ``IndexFlatIP``, an ``IndexIVFFlat`` (k-means cells, search ``nprobe`` of them) or an
  ``IndexHNSWFlat`` (a navigable small-world graph); :func:`compare_faiss` measures
  recall against flat, build time, latency and memory.
- Lexical: BM25 (``rank_bm25.BM25Okapi``) over lower-cased word tokens.
- Hybrid: reciprocal-rank fusion (:func:`reciprocal_rank_fusion`) of the two rankings.
- Metrics: recall@k of the gold documents and mean reciprocal rank
  (:func:`retrieval_metrics`), on document ids (a chunk counts for its document, and a
  removed duplicate counts as the copy that was kept).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_utils.prep import Chunk, PrepConfig, PrepResult, prepare

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "IndexConfig",
    "RagIndex",
    "build_index",
    "source_files",
    "text_key",
    "compare_faiss",
    "compare_preparations",
    "evaluate_retrieval",
    "faiss_search",
    "index_bytes",
    "load_or_build_index",
    "make_faiss_index",
    "reciprocal_rank_fusion",
    "retrieval_metrics",
    "tokenize_bm25",
]

METHODS = ("dense", "bm25", "hybrid")


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


# ----------------------------------------------------------------------------- the index

@dataclass(frozen=True)
class IndexConfig:
    """How the course index is built; its hash is the artifact's cache key."""

    prep: PrepConfig = field(default_factory=PrepConfig)  # data preparation (notebook 07)
    embedder: str = "all-MiniLM-L6-v2"  # sentence-transformers model (packaged default offline)
    kind: str = "flat"  # FAISS index: flat | ivf | hnsw
    nlist: int | None = None  # IVF cells (None: about 4·sqrt(n))
    nprobe: int = 8  # IVF cells visited per query
    hnsw_m: int = 32  # HNSW links per node
    ef_search: int = 64  # HNSW candidates kept while searching
    folder: str | None = None  # folder of documents (None: the course's document store)
    store: str = "faiss"  # where dense search runs: faiss (in this process) | qdrant (a vector database)
    url: str | None = None  # qdrant: a server's URL (None: Qdrant's embedded local mode, in the index folder)
    collection: str = "course"  # qdrant: the collection's name


STORES = ("faiss", "qdrant")


class RagIndex:
    """Chunks, their vectors, a vector store over them (FAISS, or Qdrant: ``config.store``) and a BM25
    index: search three ways, optionally only among chunks whose metadata match ``where``.

    Hits are dicts ``{id, doc_id, source, score, rank, text}``; ``id`` is the chunk id
    (``<doc id>#<position>``) that answers cite. Both stores hold the same chunks and vectors and
    give the same hits (the tests and ``benchmarks/bench_vectorstores.py`` check it).
    """

    def __init__(self, chunks: list[Chunk], vectors: np.ndarray, config: IndexConfig | None = None,
                 duplicates: dict[str, str] | None = None, embedder=None):
        self.config = config or IndexConfig()
        if self.config.store not in STORES:
            raise ValueError(f"Unknown vector store {self.config.store!r}: use one of {', '.join(STORES)}.")
        self.chunks = list(chunks)
        self.vectors = vectors
        self.duplicates = dict(duplicates or {})
        self._embedder = embedder
        self.files: dict[str, str] = {}  # source file -> content hash, when built from a folder
        self.update: dict[str, Any] = {}  # what the last build_index did (embedded, reused, files changed)
        self.seconds: dict[str, float] = {}  # time of each stage of the last build_index (prepare..., embed, index)
        self.prep_cache: dict[str, Any] = {}  # prepare()'s cache: what an update of this index reuses
        self.folder: Path | None = None  # where it was saved or loaded from
        self.bm25_avgdl: float | None = None  # the average chunk length Qdrant's BM25 vectors were weighted with
        self.index = None  # the FAISS index (store "faiss")
        if self.config.store == "faiss":
            self.index = make_faiss_index(vectors, self.config.kind, nlist=self.config.nlist,
                                          nprobe=self.config.nprobe, hnsw_m=self.config.hnsw_m,
                                          ef_search=self.config.ef_search)
        self._qdrant = None
        self._bm25 = None
        self._positions: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        docs = len({c.doc_id for c in self.chunks})
        store = self.config.kind if self.config.store == "faiss" else f"qdrant {self.config.url or 'local'}"
        return f"RagIndex({len(self)} chunks from {docs} documents, {store}, {self.config.embedder})"

    @property
    def embedder(self):
        """The sentence-transformers model (loaded on first use)."""
        if self._embedder is None:
            from course_utils.embed import load_embedder

            self._embedder = load_embedder(self.config.embedder)
        return self._embedder

    @property
    def bm25(self):
        if self._bm25 is None:
            from rank_bm25 import BM25Okapi

            self._bm25 = BM25Okapi([tokenize_bm25(c.text) for c in self.chunks])
        return self._bm25

    @property
    def positions(self) -> dict[str, int]:
        """Chunk id -> its position in ``chunks``."""
        if self._positions is None or len(self._positions) != len(self.chunks):
            self._positions = {c.id: i for i, c in enumerate(self.chunks)}
        return self._positions

    def sparse(self):
        """The BM25 sparse vectors Qdrant stores (:class:`course_utils.vectordb.BM25Sparse`)."""
        from course_utils.vectordb import BM25Sparse

        if self.bm25_avgdl is None:
            self.bm25_avgdl = BM25Sparse.fit([c.text for c in self.chunks], tokenize_bm25).avgdl
        return BM25Sparse(self.bm25_avgdl, tokenize_bm25)

    @property
    def qdrant(self):
        """The Qdrant collection of a ``store="qdrant"`` index (:class:`course_utils.vectordb.QdrantStore`):
        the server at ``config.url``; else the embedded database in the folder the index was saved to or
        loaded from; else, until it is saved, one in memory. Opened on first use."""
        from course_utils.vectordb import QdrantStore

        if self.config.store != "qdrant":
            raise ValueError("This index keeps its vectors in FAISS; build it with store='qdrant' "
                             "(`course rag index ... --store qdrant`) for a Qdrant collection.")
        if self._qdrant is None:
            if self.config.url:
                store = QdrantStore.server(self.config.url, self.config.collection)
            elif self.folder is not None and (self.folder / "qdrant").exists():
                store = QdrantStore.local(self.folder / "qdrant", self.config.collection)
            else:
                store = QdrantStore.memory(self.config.collection)
            if store.path is None and (self.config.url is None or store.count() != len(self.chunks)):
                store.sync([c.to_dict() for c in self.chunks], self.vectors, self.sparse())
            n = store.count()
            if n != len(self.chunks):
                store.close()
                raise ValueError(f"The Qdrant collection {store} holds {n} points for {len(self.chunks)} chunks. "
                                 f"Build the index again with `course rag index PATH --out DIR --store qdrant`.")
            self._qdrant = store
        return self._qdrant

    def close(self) -> None:
        """Release the Qdrant collection (local mode lets one client at a time open a folder)."""
        if self._qdrant is not None:
            self._qdrant.close()
            self._qdrant = None

    def _matching(self, where: dict[str, Any] | None) -> list[int] | None:
        """Positions of the chunks whose metadata match ``where`` (every field; a list matches any value)."""
        if not where:
            return None
        out = []
        for i, c in enumerate(self.chunks):
            d = c.to_dict()
            if all((d.get(f) in v) if isinstance(v, (list, tuple, set)) else d.get(f) == v for f, v in where.items()):
                out.append(i)
        return out

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        from course_utils.embed import embed

        # Queries are few: fp32, the way LangChain's HuggingFaceEmbeddings embeds them, so both stores rank
        # alike; documents are many, and are embedded in whatever precision is fastest here (embed's "auto").
        return embed(list(queries), self.embedder, progress=False, precision="fp32")

    def _hit(self, i: int, score: float, rank: int) -> dict[str, Any]:
        c = self.chunks[i]
        return {"id": c.id, "doc_id": c.doc_id, "source": c.source, "score": round(float(score), 6),
                "rank": rank, "text": c.text}

    def search_dense(self, queries: list[str], k: int = 5, vectors: np.ndarray | None = None,
                     where: dict[str, Any] | None = None) -> list[list[dict]]:
        """Nearest chunks by cosine similarity, for each query (among those matching ``where``)."""
        import numpy as np

        q = self.embed_queries(queries) if vectors is None else vectors
        q = np.atleast_2d(np.asarray(q, dtype=np.float32))
        if self.config.store == "qdrant":
            pos = self.positions
            return [[self._hit(pos[cid], s, r) for r, (cid, s) in enumerate(row, 1)]
                    for row in self.qdrant.search(q, k, where)]
        allowed = self._matching(where)
        if allowed is None:
            scores, ids = faiss_search(self.index, q, k)
        elif not allowed:
            return [[] for _ in q]
        else:
            scores, ids = self._faiss_search_among(q, k, allowed)
        return [[self._hit(int(i), s, r) for r, (i, s) in enumerate(zip(row_i, row_s), 1) if i >= 0]
                for row_i, row_s in zip(ids, scores)]

    def _faiss_search_among(self, q: np.ndarray, k: int, allowed: list[int]):
        """FAISS search restricted to the vectors ``allowed`` (an ID selector: flat, IVF and HNSW honour it)."""
        import faiss
        import numpy as np

        sel = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
        if self.config.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
        elif self.config.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=sel)
        return self.index.search(np.ascontiguousarray(q), min(k, len(allowed)), params=params)

    def search_bm25(self, queries: list[str], k: int = 5, where: dict[str, Any] | None = None) -> list[list[dict]]:
        """Best chunks by BM25 score, for each query (among those matching ``where``)."""
        import numpy as np

        allowed = self._matching(where)
        out = []
        for q in queries:
            scores = self.bm25.get_scores(tokenize_bm25(q))
            if allowed is None:
                top = np.argsort(-scores, kind="stable")[:k]
            else:
                keep = np.asarray(allowed, dtype=np.int64)
                top = keep[np.argsort(-scores[keep], kind="stable")[:k]]
            out.append([self._hit(int(i), scores[i], r) for r, i in enumerate(top, 1)])
        return out

    def search_hybrid(self, queries: list[str], k: int = 5, depth: int = 50, rrf_k: int = 60,
                      vectors: np.ndarray | None = None, where: dict[str, Any] | None = None) -> list[list[dict]]:
        """Reciprocal-rank fusion of the dense and BM25 top ``depth`` (score = fused RRF score)."""
        dense = self.search_dense(queries, depth, vectors=vectors, where=where)
        lexical = self.search_bm25(queries, depth, where=where)
        by_id = self.positions
        out = []
        for d, b in zip(dense, lexical):
            fused = reciprocal_rank_fusion([[h["id"] for h in d], [h["id"] for h in b]], k=rrf_k)[:k]
            out.append([self._hit(by_id[cid], s, r) for r, (cid, s) in enumerate(fused, 1)])
        return out

    def search(self, queries: str | list[str], k: int = 5, method: str = "dense", **kw) -> list[list[dict]]:
        """Search by ``method`` (dense | bm25 | hybrid); a single query string gives one list.
        ``where={"kind": "article"}`` (or ``{"doc_id": [...]}``) searches only the chunks whose metadata match."""
        single = isinstance(queries, str)
        qs = [queries] if single else list(queries)
        if method == "dense":
            hits = self.search_dense(qs, k, **kw)
        elif method == "bm25":
            hits = self.search_bm25(qs, k, where=kw.get("where"))
        elif method == "hybrid":
            hits = self.search_hybrid(qs, k, **kw)
        else:
            raise ValueError(f"Unknown retrieval method {method!r}: use one of {', '.join(METHODS)}.")
        return hits[0] if single else hits

    def add(self, chunks: list[Chunk], progress: bool | None = None) -> int:
        """Embed ``chunks`` and add them to the index (FAISS ``add``; BM25 is rebuilt lazily).

        Chunk ids must be new. Returns the number of chunks in the index afterwards. A Qdrant
        index writes the new points into its collection at once, as a database does; :meth:`save`
        the index to keep its folder's chunk list in step.
        """
        import numpy as np

        from course_utils.embed import embed

        known = {c.id for c in self.chunks}
        clash = [c.id for c in chunks if c.id in known]
        if clash:
            raise ValueError(f"{len(clash)} chunk ids are already in the index, e.g. {clash[0]!r}.")
        vecs = embed([c.text for c in chunks], self.embedder, progress=progress)
        if self.index is not None:
            self.index.add(vecs)
        self.vectors = np.concatenate([self.vectors, vecs])
        self.chunks.extend(chunks)
        self._bm25 = None
        if self._qdrant is not None:  # the collection gets the new points (the others are left alone)
            self._qdrant.sync([c.to_dict() for c in self.chunks], self.vectors, self.sparse())
        return len(self.chunks)

    def save(self, folder: str | Path, progress: bool | None = None) -> Path:
        """Write ``vectors.npy``, ``chunks.jsonl``, ``meta.json`` and the store: ``index.faiss`` for FAISS,
        the ``qdrant/`` folder of Qdrant's embedded database (or the points on the server at ``config.url``)
        for Qdrant; with the preparation cache (``prep_cache.json``) that an update reuses.

        The files are written to a temporary folder next to ``folder`` that then replaces it, so an
        interrupted save leaves the previous index (or none), never a mix of old and new files. Saving
        over an earlier Qdrant index writes only the points that changed (``update["store"]`` says how many).
        FAISS's file and the arrays hold no pickle; Qdrant's local mode pickles points into SQLite, so open
        only index folders you built."""
        import faiss
        import numpy as np

        from course_utils.vectordb import close_local

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder.with_name(folder.name + ".saving")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        records = [c.to_dict() for c in self.chunks]
        if self.config.store == "faiss":
            faiss.write_index(self.index, str(tmp / "index.faiss"))
        elif self.config.url:
            self.update["store"] = self.qdrant.sync(records, self.vectors, self.sparse(), progress=progress)
        else:
            from course_utils.vectordb import QdrantStore

            earlier = next((f / "qdrant" for f in (folder, self.folder) if f is not None and (f / "qdrant").exists()),
                           None)
            self.close()
            self.update["store"] = QdrantStore.write_local(tmp / "qdrant", records, self.vectors, self.sparse(),
                                                           collection=self.config.collection, start_from=earlier,
                                                           progress=progress)
        np.save(tmp / "vectors.npy", self.vectors)
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        if self.prep_cache:
            (tmp / "prep_cache.json").write_text(json.dumps(self.prep_cache, ensure_ascii=False), encoding="utf-8")
        meta = {"config": asdict(self.config), "duplicates": self.duplicates, "chunks": len(self.chunks),
                "files": self.files}
        if self.config.store == "qdrant":
            meta["bm25_avgdl"] = self.sparse().avgdl
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        old = folder.with_name(folder.name + ".replaced")
        if old.exists():
            shutil.rmtree(old)
        close_local(folder / "qdrant")  # local mode: the folder's client must let go before it moves
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
        self.folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path, embedder=None) -> RagIndex:
        """Load an index written by :meth:`save` (or by ``course rag index``)."""
        import faiss
        import numpy as np

        folder = Path(folder).expanduser()
        if not (folder / "meta.json").exists():
            raise FileNotFoundError(
                f"{folder} is not a course index (no meta.json). Build one with `course rag index PATH --out {folder}`.")
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except json.JSONDecodeError:
            meta = None
        cfg = meta.get("config") if isinstance(meta, dict) else None
        cfg = cfg if isinstance(cfg, dict) else {}
        store = {"faiss": ["index.faiss"], "qdrant": [] if cfg.get("url") else ["qdrant"]}.get(cfg.get("store", "faiss"), [])
        missing = [n for n in (*store, "vectors.npy", "chunks.jsonl") if not (folder / n).exists()]
        if missing:
            raise FileNotFoundError(f"The index in {folder} is incomplete: {', '.join(missing)} missing. "
                                    f"Build it again with `course rag index PATH --out {folder}`.")
        try:
            if meta is None:
                raise ValueError("not JSON")
            cfg = dict(meta["config"])
            cfg["prep"] = PrepConfig(**cfg["prep"])
            config = IndexConfig(**cfg)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{folder / 'meta.json'} is not a course index's metadata ({exc}).") from None
        chunks = []
        for n, line in enumerate((folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    chunks.append(Chunk.from_dict(json.loads(line)))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{folder / 'chunks.jsonl'}, line {n}: not a chunk ({exc}).") from None
        self = cls.__new__(cls)
        self.config, self.chunks, self.duplicates = config, chunks, meta.get("duplicates", {})
        self.vectors = np.load(folder / "vectors.npy")
        self.index = faiss.read_index(str(folder / "index.faiss")) if config.store == "faiss" else None
        counts = {"chunks.jsonl": len(chunks), "vectors.npy": int(self.vectors.shape[0]),
                  "meta.json": int(meta.get("chunks", len(chunks)))}
        if self.index is not None:  # (a Qdrant collection is counted when it is opened, see `qdrant`)
            counts = {"chunks.jsonl": len(chunks), "index.faiss": int(self.index.ntotal), **counts}
        if len(set(counts.values())) > 1:
            raise ValueError(f"The index in {folder} is inconsistent: " +
                             ", ".join(f"{k} holds {v}" for k, v in counts.items()) +
                             f". Build it again with `course rag index PATH --out {folder}`.")
        self._embedder, self._bm25, self._qdrant, self._positions = embedder, None, None, None
        self.files, self.update, self.seconds = dict(meta.get("files", {})), {}, {}
        self.folder = folder  # where it was loaded from (course prebuild reports the cached artifact)
        self.bm25_avgdl = meta.get("bm25_avgdl")
        cache = folder / "prep_cache.json"
        self.prep_cache = json.loads(cache.read_text(encoding="utf-8")) if cache.exists() else {}
        return self


def text_key(text: str) -> str:
    """The key of a chunk's text in an embedding cache: the same text always gets the same vector."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def source_files(folder: str | Path | None = None) -> dict[str, str]:
    """``{path relative to folder: content sha256[:16]}`` of the documents a folder holds (default: the
    course's store), the files :func:`course_utils.prep.aggregate` reads: what an index was built from.
    :meth:`RagIndex.save` stores it, and an update compares it with the folder now."""
    import hashlib

    from course_utils.prep import SUFFIXES, document_files, document_folder

    folder = document_folder(folder)
    base = folder.parent if folder.is_file() else folder
    return {f.relative_to(base).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            for f in document_files(folder) if f.suffix.lower() in SUFFIXES}


def _embed_resumable(texts: list[str], embedder, known: dict[str, np.ndarray], checkpoint: Path | None,
                     progress: bool | None, slice_size: int = 512, *, precision: str = "auto",
                     label: str = "") -> tuple[dict[str, np.ndarray], int, int]:
    """Vectors for every text of ``texts`` not in ``known`` (by :func:`text_key`), embedded in slices;
    with ``checkpoint`` each slice is saved there at once, and a rerun after an interruption starts
    from what it holds. ``embedder``: the model, or a function that loads it (called only if there is
    something to embed). A bar counts chunks and chunks per second. Returns ``known`` plus the new
    vectors, the number of texts embedded now and the number taken from the checkpoint."""
    import numpy as np
    from tqdm.auto import tqdm

    from course_utils.embed import embed

    known = dict(known)
    saved_keys: list[str] = []
    saved_vecs: list[np.ndarray] = []
    if checkpoint is not None and checkpoint.exists():
        with np.load(checkpoint) as saved:
            saved_keys, saved_vecs = saved["keys"].tolist(), [saved["vectors"]]
        known.update(zip(saved_keys, saved_vecs[0]))
    resumed = len(saved_keys)
    todo = list(dict.fromkeys(t for t in texts if text_key(t) not in known))  # each new text once, in order
    if todo and callable(embedder) and not hasattr(embedder, "encode"):
        embedder = embedder()
    show = len(todo) > 256 if progress is None else progress
    bar = tqdm(total=len(todo), desc=f"embedding {len(todo):,} chunks{label}", unit="chunk", disable=not show)
    step = max(1, min(128, slice_size))  # the bar moves every few seconds; the checkpoint is written per slice
    for start in range(0, len(todo), slice_size):
        part = todo[start:start + slice_size]
        pieces = []
        for s in range(0, len(part), step):
            pieces.append(embed(part[s:s + step], embedder, progress=False, precision=precision))
            bar.update(len(pieces[-1]))
        vecs = np.concatenate(pieces)
        keys = [text_key(t) for t in part]
        known.update(zip(keys, vecs))
        if checkpoint is not None:  # everything embedded so far, written whole, then moved into place
            saved_keys += keys
            saved_vecs = [np.concatenate(saved_vecs + [vecs])]
            tmp = checkpoint.with_name(checkpoint.name + ".tmp.npz")
            np.savez(tmp, keys=np.array(saved_keys), vectors=saved_vecs[0])
            os.replace(tmp, checkpoint)
    bar.close()
    return known, len(todo), resumed


def build_index(source: PrepResult | str | Path | None = None, config: IndexConfig | None = None, *, embedder=None,
                progress: bool | None = None, reuse: RagIndex | None = None,
                checkpoint: str | Path | None = None, precision: str = "auto") -> RagIndex:
    """Prepare documents (unless ``source`` is already a :class:`PrepResult`), embed the chunks
    with a progress bar, and index them.

    ``reuse``: an earlier index of the same embedder; chunks whose text it already holds keep their
    vectors, so only new or changed text is embedded, and files whose content did not change are not
    cleansed again (its preparation cache): an update after editing a few files takes seconds.
    ``checkpoint``: a file where vectors are saved slice by slice while embedding, so that
    an interrupted build resumes from there. ``precision``: of the embedding model, as
    :func:`course_utils.embed.embed` (``"fp32"`` is how every index was embedded before bf16).
    ``progress``: bars over the files cleansed and the chunks embedded (None: when there are many).
    The returned index's ``update`` says what happened: chunks embedded and reused, and (with
    ``reuse``) the files added, changed and deleted; ``seconds`` the time of each stage.
    """
    import numpy as np

    from course_utils.embed import load_embedder

    config = config or IndexConfig()
    seconds: dict[str, float] = {}
    if isinstance(source, PrepResult):
        prepared = source
    else:
        folder = source if source is not None else config.folder
        tokenizer = None
        if config.prep.chunk_by == "tokens":
            embedder = embedder or load_embedder(config.embedder)
            tokenizer = embedder.tokenizer
        cache = reuse.prep_cache if reuse is not None and reuse.config.prep == config.prep else None
        prepared = prepare(folder, config.prep, tokenizer=tokenizer, progress=progress, cache=cache)
        seconds.update(prepared.seconds)
    if not prepared.chunks:
        raise ValueError("Nothing to index: preparation produced no chunks.")
    known: dict[str, np.ndarray] = {}
    if reuse is not None:
        if reuse.config.embedder != config.embedder:
            raise ValueError(f"The earlier index was embedded with {reuse.config.embedder!r}, not "
                             f"{config.embedder!r}: its vectors cannot be reused; build it anew.")
        known = {text_key(c.text): v for c, v in zip(reuse.chunks, reuse.vectors)}
    texts = [c.text for c in prepared.chunks]
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    t0 = time.perf_counter()
    files = len({c.doc_id for c in prepared.chunks})
    load = embedder if embedder is not None else (lambda: load_embedder(config.embedder))
    vectors_by_key, embedded, resumed = _embed_resumable(texts, load, known, checkpoint, progress,
                                                         precision=precision, label=f" from {files:,} files")
    vectors = np.stack([vectors_by_key[text_key(t)] for t in texts])
    seconds["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = RagIndex(prepared.chunks, vectors, config, prepared.duplicates, embedder=embedder)
    seconds["index"] = time.perf_counter() - t0
    index.seconds = {k: round(v, 3) for k, v in seconds.items()}
    index.prep_cache = prepared.cache
    if reuse is not None and reuse.bm25_avgdl is not None:
        index.bm25_avgdl = reuse.bm25_avgdl  # the points Qdrant keeps were weighted with it
    index.update = {"chunks": len(texts), "embedded": embedded, "resumed": resumed,
                    "reused": sum(text_key(t) in known for t in texts)}
    if not isinstance(source, PrepResult):  # built from files: remember them, and say what an update changed
        index.files = source_files(folder)
        if reuse is not None:
            before, now = reuse.files, index.files
            index.update |= {"files_added": sorted(set(now) - set(before)),
                             "files_changed": sorted(f for f in now if f in before and now[f] != before[f]),
                             "files_deleted": sorted(set(before) - set(now)),
                             "chunks_removed": len({c.id for c in reuse.chunks} - {c.id for c in prepared.chunks})}
    return index


def load_or_build_index(config: IndexConfig | None = None, settings=None, *, embedder=None,
                        rebuild: bool = False) -> RagIndex:
    """The course index (artifact ``rag-index``): loaded from the cache, or built and cached.

    Notebooks 08-11 call this; the key is the hash of ``config`` and of the document folder's
    files (:func:`course_utils.artifacts.fingerprint`), so changed documents build a new index.
    """
    from course_utils.artifacts import load_or_build
    from course_utils.settings import get_settings

    settings = settings or get_settings()
    config = config or IndexConfig()
    store = Path(config.folder) if config.folder else settings.data_dir / "documents"
    if not store.exists():
        raise FileNotFoundError(f"No document folder at {store}: give a folder of .html/.md/.txt files.")
    from course_utils.artifacts import fingerprint

    # every file's content: edit, add or delete a document and the index is built again
    fields = asdict(config)
    vector_store = {name: fields.pop(name) for name in ("store", "url", "collection")}
    key = {**fields, "store": str(store), "store_files": fingerprint(store)}
    if config.store != "faiss":  # a FAISS index keeps the key it had before Qdrant came
        key["vector_store"] = vector_store

    def build(folder: Path) -> None:
        build_index(store, config, embedder=embedder).save(folder)

    path = load_or_build("rag-index", key, build, settings=settings, rebuild=rebuild)
    return RagIndex.load(path, embedder=embedder)


# ----------------------------------------------------------------------------- metrics

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
