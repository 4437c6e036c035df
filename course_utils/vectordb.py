"""A vector database behind the course retriever: Qdrant, embedded on disk or as a server.

Taught in notebook 08 (section "The same retriever on a vector database"); ``course rag index PATH
--store qdrant`` builds an index whose dense search runs here, and :class:`course_utils.rag.RagIndex`
searches it through the same ``search`` call as its FAISS index. The chunks and vectors are the
index's own (nothing is embedded twice); each chunk is one Qdrant point:

- id: a UUID derived from the chunk id (``<doc id>#<position>``), so the same chunk always lands on
  the same point and an update overwrites or deletes exactly the chunks that changed;
- vectors: ``dense`` (the sentence embedding, cosine distance) and ``bm25`` (a sparse vector of word
  weights, :class:`BM25Sparse`, with Qdrant's IDF modifier: BM25 computed by the database);
- payload: LangChain's layout, ``page_content`` (the text) and ``metadata`` (chunk id, document,
  source, kind, title, section ...), plus ``key`` (a hash of both, to see what changed).

Where it runs: ``QdrantClient(path=...)`` is Qdrant's *local mode*, an embedded database in the
index folder (pure Python; made for prototypes and tests, one process at a time, points pickled in
SQLite: open only folders you built); ``QdrantClient(url=...)`` is the same code against a Qdrant
server or cluster (Docker ``qdrant/qdrant``, Qdrant Cloud), the route for indexes that outgrow one
process. :meth:`QdrantStore.langchain` gives LangChain's ``QdrantVectorStore`` over the collection
(dense, or hybrid dense + BM25 fused by Qdrant), which ``as_retriever()`` turns into a retriever.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["BM25Sparse", "QdrantStore", "close_local", "disk_bytes", "point_id", "qdrant_filter"]

DENSE, SPARSE = "dense", "bm25"  # the names of the two vectors of every point
_LOCAL: dict[str, Any] = {}  # open local-mode clients by folder: local mode allows one per folder and process


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk: a UUID derived from its id (Qdrant ids are integers or UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "course-chunk:" + chunk_id))


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _slot(token: str) -> int:
    """A stable index for a word in the sparse vector (a 31-bit hash: no vocabulary to store)."""
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=4).digest(), "little") & 0x7FFFFFFF


class BM25Sparse:
    """BM25 as sparse vectors, for Qdrant's sparse search (and LangChain's ``SparseEmbeddings``).

    A document's weight for word ``t`` is BM25's term part, ``tf·(k1+1) / (tf + k1·(1-b+b·len/avgdl))``;
    a query's is 1 for each of its words; Qdrant multiplies matching weights by the word's IDF, which
    it computes from the collection (``Modifier.IDF``). The sum is the BM25 score (Qdrant's IDF is
    ``ln(1 + (N-n+0.5)/(n+0.5))``, rank_bm25's Okapi variant ``ln((N-n+0.5)/(n+0.5))``, floored).
    ``tokenize`` must be the one the course's BM25 uses (:func:`course_utils.search.tokenize_bm25`).
    """

    def __init__(self, avgdl: float, tokenize: Callable[[str], list[str]] = _words, k1: float = 1.5,
                 b: float = 0.75):
        self.avgdl, self.tokenize, self.k1, self.b = float(avgdl), tokenize, k1, b

    @classmethod
    def fit(cls, texts: list[str], tokenize: Callable[[str], list[str]] = _words, **kw) -> BM25Sparse:
        """With the average document length of ``texts``."""
        lengths = [len(tokenize(t)) for t in texts]
        return cls(sum(lengths) / max(1, len(lengths)) or 1.0, tokenize, **kw)

    def _vector(self, weights: dict[int, float]):
        from langchain_qdrant import SparseVector

        slots = sorted(weights)
        return SparseVector(indices=slots, values=[float(weights[s]) for s in slots])

    def embed_documents(self, texts: list[str]) -> list:
        out = []
        for text in texts:
            words = self.tokenize(text)
            norm = self.k1 * (1 - self.b + self.b * len(words) / self.avgdl)
            weights: dict[int, float] = {}
            for word, tf in Counter(words).items():
                slot = _slot(word)
                weights[slot] = weights.get(slot, 0.0) + tf * (self.k1 + 1) / (tf + norm)
            out.append(self._vector(weights))
        return out

    def embed_query(self, text: str):
        return self._vector({_slot(w): 1.0 for w in set(self.tokenize(text))})

    async def aembed_documents(self, texts: list[str]) -> list:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str):
        return self.embed_query(text)


def _as_langchain_sparse(sparse: BM25Sparse):
    """``sparse`` as an instance of langchain-qdrant's ``SparseEmbeddings`` (which its store checks)."""
    from langchain_qdrant import SparseEmbeddings

    class _Sparse(SparseEmbeddings):
        def embed_documents(self, texts):
            return sparse.embed_documents(texts)

        def embed_query(self, text):
            return sparse.embed_query(text)

    return _Sparse()


def qdrant_filter(where: dict[str, Any] | None):
    """``{"kind": "article", "doc_id": [...]}`` as a Qdrant ``Filter`` on the chunks' metadata: every field
    must match; a list matches any of its values."""
    if not where:
        return None
    from qdrant_client import models

    must = []
    for field, value in where.items():
        match = (models.MatchAny(any=list(value)) if isinstance(value, (list, tuple, set))
                 else models.MatchValue(value=value))
        must.append(models.FieldCondition(key=f"metadata.{field}", match=match))
    return models.Filter(must=must)


def close_local(path: str | Path) -> None:
    """Close the local-mode client of the collection folder ``path``, if one is open."""
    client = _LOCAL.pop(str(Path(path).resolve()), None)
    if client is not None:
        client.close()


def _close_all() -> None:
    for key in list(_LOCAL):
        close_local(key)


def _open_local(path: Path):
    from qdrant_client import QdrantClient

    key = str(path.resolve())
    if key not in _LOCAL:
        if not _LOCAL:  # close them before the interpreter tears down the modules their __del__ needs
            import atexit

            atexit.register(_close_all)
        try:
            _LOCAL[key] = QdrantClient(path=key)
        except RuntimeError as exc:  # local mode's lock: another process has the folder open
            raise ValueError(f"The Qdrant folder {path} is open in another process ({exc}). Close it there, "
                             f"or run a Qdrant server and build the index with --url.") from None
    return _LOCAL[key]


def _scratch() -> Path | None:
    """A folder in memory (Linux's /dev/shm) where local mode's per-point SQLite commits cost nothing."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="course-qdrant-", dir=shm))
    return None


class QdrantStore:
    """One Qdrant collection holding an index's chunks: written by :meth:`sync`, searched by :meth:`search`."""

    def __init__(self, client, collection: str = "course", *, path: Path | None = None, url: str | None = None):
        self.client, self.collection, self.path, self.url = client, collection, path, url

    def __repr__(self) -> str:
        where = self.url or (str(self.path) if self.path else "in memory")
        return f"QdrantStore({self.collection!r}, {where})"

    @classmethod
    def memory(cls, collection: str = "course") -> QdrantStore:
        """A collection in this process's memory (gone when the process ends)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(":memory:"), collection)

    @classmethod
    def local(cls, path: str | Path, collection: str = "course") -> QdrantStore:
        """The embedded database in folder ``path`` (created if missing)."""
        path = Path(path)
        return cls(_open_local(path), collection, path=path)

    @classmethod
    def server(cls, url: str, collection: str = "course", api_key: str | None = None) -> QdrantStore:
        """A Qdrant server or cluster by URL (``http://localhost:6333``, a Qdrant Cloud URL with ``api_key``,
        default ``$QDRANT_API_KEY``)."""
        from qdrant_client import QdrantClient

        return cls(QdrantClient(url=url, api_key=api_key or os.environ.get("QDRANT_API_KEY")), collection, url=url)

    def close(self) -> None:
        if self.path is not None:
            close_local(self.path)
        elif self.url is None:
            self.client.close()

    def exists(self) -> bool:
        return bool(self.client.collection_exists(self.collection))

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count) if self.exists() else 0

    def _create(self, dim: int) -> None:
        from qdrant_client import models

        self.client.create_collection(
            self.collection,
            vectors_config={DENSE: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)})
        if self.url is not None:  # a server filters faster with payload indexes; local mode has none
            for field in ("doc_id", "source", "kind"):
                self.client.create_payload_index(self.collection, f"metadata.{field}",
                                                 field_schema=models.PayloadSchemaType.KEYWORD)

    def keys(self) -> dict[str, str]:
        """``{point id: key}`` of every point in the collection."""
        out, offset = {}, None
        while True:
            points, offset = self.client.scroll(self.collection, limit=2048, offset=offset, with_payload=["key"],
                                                with_vectors=False)
            out.update((str(p.id), (p.payload or {}).get("key")) for p in points)
            if offset is None:
                return out

    def sync(self, records: list[dict[str, Any]], vectors: np.ndarray, sparse: BM25Sparse,
             batch: int = 256, progress: bool | None = None) -> dict[str, int]:
        """Make the collection hold exactly ``records`` (chunk dicts, ``Chunk.to_dict()``) with ``vectors``:
        new or changed chunks are written, chunks no longer in ``records`` deleted, the rest left alone.
        Returns ``{"written", "deleted", "kept"}``."""
        from qdrant_client import models
        from tqdm.auto import tqdm

        if self.exists():
            dense = self.client.get_collection(self.collection).config.params.vectors
            if not isinstance(dense, dict) or DENSE not in dense or dense[DENSE].size != vectors.shape[1]:
                self.client.delete_collection(self.collection)  # another embedder's collection: start again
        if not self.exists():
            self._create(int(vectors.shape[1]))
        have = self.keys()
        want = {}
        for i, rec in enumerate(records):
            meta = {k: v for k, v in rec.items() if k != "text"}
            key = hashlib.sha256(json.dumps([rec["text"], meta], sort_keys=True, ensure_ascii=False)
                                 .encode("utf-8")).hexdigest()[:20]
            want[point_id(rec["id"])] = (i, key, meta)
        stale = [pid for pid in have if pid not in want]
        todo = [(pid, i, key, meta) for pid, (i, key, meta) in want.items() if have.get(pid) != key]
        if stale:
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=stale), wait=True)
        show = len(todo) > 4 * batch if progress is None else progress
        bar = tqdm(total=len(todo), desc=f"writing {len(todo)} points to Qdrant", unit="point", disable=not show)
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            sparse_vecs = sparse.embed_documents([records[i]["text"] for _, i, _, _ in part])
            points = [models.PointStruct(
                id=pid, vector={DENSE: vectors[i].tolist(),
                                SPARSE: models.SparseVector(indices=sv.indices, values=sv.values)},
                payload={"page_content": records[i]["text"], "metadata": meta, "key": key})
                for (pid, i, key, meta), sv in zip(part, sparse_vecs)]
            self.client.upsert(self.collection, points, wait=True)
            bar.update(len(part))
        bar.close()
        return {"written": len(todo), "deleted": len(stale), "kept": len(want) - len(todo)}

    @classmethod
    def write_local(cls, path: str | Path, records: list[dict[str, Any]], vectors: np.ndarray, sparse: BM25Sparse,
                    *, collection: str = "course", start_from: str | Path | None = None,
                    progress: bool | None = None) -> dict[str, int]:
        """Write the collection into folder ``path`` (local mode), starting from a copy of the collection
        folder ``start_from`` when given (an update writes only what changed). The work is done in
        memory-backed /dev/shm where there is one, then copied: local mode commits every point to
        SQLite, which on a disk costs milliseconds a point."""
        path = Path(path)
        scratch = _scratch()
        target = scratch / "qdrant" if scratch is not None else path
        try:
            if start_from is not None and Path(start_from).exists():
                close_local(start_from)
                shutil.copytree(start_from, target)
            store = cls.local(target, collection)
            try:
                done = store.sync(records, vectors, sparse, progress=progress)
            finally:
                store.close()
            if scratch is not None:
                shutil.copytree(target, path)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        return done

    def search(self, vectors: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """The ``k`` nearest chunks of each query vector: ``[(chunk id, cosine similarity), ...]`` per query."""
        flt = qdrant_filter(where)
        out = []
        for v in vectors:
            res = self.client.query_points(self.collection, query=[float(x) for x in v], using=DENSE, limit=k,
                                           query_filter=flt, with_payload=["metadata"], with_vectors=False)
            out.append([(p.payload["metadata"]["id"], float(p.score)) for p in res.points])
        return out

    def search_hybrid(self, vectors: np.ndarray, texts: list[str], sparse: BM25Sparse, k: int, *, depth: int = 50,
                      rrf_k: int | None = 60, where: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
        """Qdrant's own hybrid search: the dense and the BM25 top ``depth`` fused by reciprocal rank in the
        database (``rrf_k`` None: Qdrant's default constant, 2; 60 is the course's and Cormack et al.'s)."""
        from qdrant_client import models

        flt = qdrant_filter(where)
        fusion = models.FusionQuery(fusion=models.Fusion.RRF) if rrf_k is None else models.RrfQuery(
            rrf=models.Rrf(k=rrf_k))
        out = []
        for v, text in zip(vectors, texts):
            sv = sparse.embed_query(text)
            res = self.client.query_points(
                self.collection, limit=k, query=fusion, with_payload=["metadata"], with_vectors=False,
                prefetch=[models.Prefetch(query=[float(x) for x in v], using=DENSE, limit=depth, filter=flt),
                          models.Prefetch(query=models.SparseVector(indices=sv.indices, values=sv.values),
                                          using=SPARSE, limit=depth, filter=flt)])
            out.append([(p.payload["metadata"]["id"], float(p.score)) for p in res.points])
        return out

    def langchain(self, embeddings, *, hybrid: BM25Sparse | None = None):
        """LangChain's ``QdrantVectorStore`` over this collection: dense retrieval with ``embeddings`` (the
        same model that embedded the chunks), or with ``hybrid`` (a :class:`BM25Sparse`) dense + BM25 fused
        by Qdrant (LangChain's hybrid mode: each side's top ``k``, RRF with Qdrant's constant)."""
        from langchain_qdrant import QdrantVectorStore, RetrievalMode

        return QdrantVectorStore(
            client=self.client, collection_name=self.collection, embedding=embeddings, vector_name=DENSE,
            sparse_vector_name=SPARSE, retrieval_mode=RetrievalMode.HYBRID if hybrid else RetrievalMode.DENSE,
            sparse_embedding=_as_langchain_sparse(hybrid) if hybrid else None)


def disk_bytes(path: str | Path) -> int:
    """Bytes of the files under ``path`` (what a store takes on disk)."""
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size

