"""The course index: prepared chunks, their vectors in FAISS (or Qdrant), BM25, and dense, lexical or hybrid
search over them; built incrementally (only new or changed files are embedded) and cached.

Taught in notebook 08 (RAG with FAISS and LangChain), and the later notebooks load the course index with
:func:`load_or_build_index`. The search primitives (FAISS, BM25 tokens, fusion) are in
:mod:`course_utils.search` (re-exported here), retrieval metrics in :mod:`course_utils.retrieval_eval`,
the LangChain chain and answer generation in :mod:`course_utils.rag_chain`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_utils.prep import Chunk, PrepConfig, PrepResult, prepare
from course_utils.search import (compare_faiss, faiss_search, index_bytes, make_faiss_index, reciprocal_rank_fusion,
                                   tokenize_bm25)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "IndexConfig",
    "RagIndex",
    "build_index",
    "source_files",
    "text_key",
    "compare_faiss",
    "faiss_search",
    "index_bytes",
    "load_or_build_index",
    "make_faiss_index",
    "reciprocal_rank_fusion",
    "tokenize_bm25",
]

METHODS = ("dense", "bm25", "hybrid")


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
            embedder = embedder or load_embedder(config.embedder, lean=True)
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
    # transformers alone where the layout allows (the same vectors; no sentence-transformers import to wait for)
    load = embedder if embedder is not None else (lambda: load_embedder(config.embedder, lean=True))
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
