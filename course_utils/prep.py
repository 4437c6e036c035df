"""Data preparation for retrieval: aggregate, cleanse, deduplicate and chunk raw documents.

Taught in notebook 07 (data preparation); notebook 08 and ``course rag index PATH`` build
their index on what :func:`prepare` returns. The steps, each measured:

1. **Aggregate** (:func:`aggregate`): read every HTML, Markdown and text file under a
   folder (the course's document store by default, with the metadata of its
   ``index.jsonl``). A file that cannot be read (not UTF-8, binary, empty, unknown
   type) is skipped with a sentence saying why, never a traceback.
2. **Cleanse** (:func:`cleanse`): HTML to text with Beautiful Soup, dropping scripts,
   styles, navigation, banners, sidebars and footers; Markdown without front matter,
   markup and link-only lines; text without archive headers and signature footers and
   with hard-wrapped lines re-joined; Unicode NFKC normalisation (full-width letters,
   ligatures, non-breaking spaces), invisible characters removed, white space collapsed.
3. **Deduplicate** (:func:`deduplicate`): exact duplicates by a hash of the cleansed
   text, near-duplicates by MinHash over word shingles (:func:`minhash_signatures`,
   checked against exact Jaccard similarity, :func:`jaccard`).
4. **Chunk** (:func:`chunk_documents`): langchain's text splitters by characters or by
   tokens of the embedding model, with overlap; every chunk keeps its metadata (source
   file, document, entity, kind, position).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SUFFIXES",
    "Chunk",
    "Document",
    "PrepConfig",
    "PrepResult",
    "aggregate",
    "chunk_documents",
    "clean_html",
    "clean_markdown",
    "clean_plain_text",
    "cleanse",
    "deduplicate",
    "document_files",
    "document_folder",
    "jaccard",
    "minhash_signatures",
    "near_duplicate_pairs",
    "normalize_unicode",
    "prepare",
    "shingles",
]

#: File suffixes :func:`aggregate` reads, and the format each one is cleansed as.
SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".txt": "txt", ".text": "txt"}


@dataclass
class Document:
    """One source document, raw then cleansed."""

    id: str  # unique id: the course store's id, else the path relative to the folder
    source: str  # file path (relative to the ingested folder's parent for the course store)
    format: str  # html | md | txt
    raw: str  # the file's content as read
    text: str = ""  # cleansed text (filled by cleanse)
    title: str = ""  # title found in the file (HTML <title>/<h1>, Markdown front matter or heading)
    meta: dict[str, Any] = field(default_factory=dict)  # entity_id, kind, seen, ... when known


@dataclass
class Chunk:
    """One passage of a document: what the retriever indexes and returns."""

    id: str  # "<doc id>#<position>", what answers cite
    text: str  # the passage (with the document title in front when asked for)
    doc_id: str  # the document it comes from
    source: str  # the file it comes from
    position: int  # 0-based index of the chunk within its document
    meta: dict[str, Any] = field(default_factory=dict)  # entity_id, kind, seen, title, format

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "doc_id": self.doc_id, "source": self.source,
                "position": self.position, **{k: v for k, v in self.meta.items() if k not in {"id", "text"}}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        core = {"id", "text", "doc_id", "source", "position"}
        return cls(id=d["id"], text=d["text"], doc_id=d["doc_id"], source=d["source"],
                   position=int(d["position"]), meta={k: v for k, v in d.items() if k not in core})


# ----------------------------------------------------------------------------- aggregate

def _course_index(folder: Path) -> dict[str, dict[str, Any]]:
    """Metadata of the course store's files by relative path (empty for other folders)."""
    index = folder / "index.jsonl"
    if not index.exists():
        return {}
    out = {}
    for line in index.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            # paths in index.jsonl are relative to the data folder ("documents/html/x.html")
            rel = Path(rec["path"]).relative_to(Path(rec["path"]).parts[0]).as_posix()
            out[rel] = rec
    return out


def document_folder(folder: str | Path | None = None) -> Path:
    """``folder`` as a path, or the course's document store (``<data>/documents``) when it is None."""
    if folder is None:
        from course_utils.settings import get_settings

        return get_settings().data_dir / "documents"
    return Path(folder).expanduser()


def document_files(folder: str | Path | None = None) -> list[Path]:
    """The files :func:`aggregate` considers, in name order: every file under ``folder``
    (:func:`document_folder`) except hidden ones and the store's ``index.jsonl``; a file path is itself.
    Those with a suffix outside :data:`SUFFIXES` are reported as skipped by :func:`aggregate`."""
    folder = document_folder(folder)
    if folder.is_file():
        return [folder]
    return [p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "index.jsonl" and not p.name.startswith(".")]


def aggregate(folder: str | Path | None = None, *, verbose: bool = True) -> tuple[list[Document], list[str]]:
    """Read every HTML/Markdown/text file under ``folder``: ``(documents, problems)``.

    ``folder`` defaults to the course's document store (``<data>/documents``). Each
    problem is one sentence naming a file that was skipped and why (printed too when
    ``verbose``). A folder that does not exist, or holds no readable file, raises a
    ``FileNotFoundError`` / ``ValueError`` that says so.
    """
    folder = document_folder(folder)
    if not folder.exists():
        raise FileNotFoundError(f"No such folder: {folder}. Give a folder of .html, .md or .txt files.")
    meta_by_path = _course_index(folder) if folder.is_dir() else {}
    docs: list[Document] = []
    problems: list[str] = []
    for path in document_files(folder):
        fmt = SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            problems.append(f"{path}: skipped, not HTML, Markdown or text (suffix {path.suffix or 'none'!r}).")
            continue
        data = path.read_bytes()
        if b"\x00" in data[:4096]:
            problems.append(f"{path}: skipped, it looks binary (NUL bytes) although it is named {path.suffix}.")
            continue
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: skipped, not UTF-8 (byte {exc.start}); re-save it as UTF-8.")
            continue
        if not raw.strip():
            problems.append(f"{path}: skipped, the file is empty.")
            continue
        rel = path.relative_to(folder).as_posix() if folder.is_dir() else path.name
        rec = meta_by_path.get(rel)
        if rec is not None:
            meta = {k: rec[k] for k in ("entity_id", "kind", "seen", "title", "duplicate_of") if k in rec}
            docs.append(Document(id=rec["id"], source=rec["path"], format=fmt, raw=raw, meta=meta))
        else:
            docs.append(Document(id=rel, source=str(path), format=fmt, raw=raw, meta={}))
    if verbose:
        for p in problems:
            print(f"[prep] {p}")
    docs.sort(key=lambda d: d.id)  # deterministic; an original ("town-001") before its copies
    if not docs:
        raise ValueError(f"No readable .html, .md or .txt file under {folder} ({len(problems)} skipped).")
    return docs, problems


# ----------------------------------------------------------------------------- cleanse

def clean_html(content: str) -> tuple[str, str]:
    """HTML page -> ``(title, text)``: the main content without boilerplate.

    Drops scripts, styles, navigation, headers, footers, sidebars, forms, and any
    element whose class, id or ARIA role says cookie/banner/menu/sidebar/navigation/...;
    keeps ``<main>`` (or ``role="main"``, ``<article>``, else ``<body>``); section headings become
    ``## Heading`` lines, code blocks stay fenced blocks, tables with a header row stay
    ``| a | b |`` rows and key-value rows become ``Header: value`` lines
    (:func:`course_utils.htmldoc.html_to_text`).
    """
    from course_utils.htmldoc import html_to_text

    return html_to_text(content)


def clean_markdown(content: str) -> tuple[str, str]:
    """Markdown -> ``(title, text)``: no front matter, markup, rules or link-only lines."""
    title = ""
    front = re.match(r"\A---\s*\n(.*?)\n---\s*\n", content, flags=re.S)
    if front:
        m = re.search(r"^title:\s*(.+)$", front.group(1), flags=re.M)
        title = m.group(1).strip().strip("'\"") if m else ""
        content = content[front.end():]
    lines = []
    for line in content.splitlines():
        s = line.strip()
        if re.fullmatch(r"(-{3,}|\*{3,}|_{3,})", s):
            continue  # horizontal rule
        if s and re.fullmatch(r"(\s*[·|•\-]?\s*\[[^\]]*\]\([^)]*\)\s*)+", s):
            continue  # a line of links only: edit/history/share links
        if s.startswith("#"):
            heading = s.lstrip("#").strip()
            title = title or heading
            lines.append("\n" + heading + "\n")
            continue
        line = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", line)  # images
        line = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)  # links keep their text
        line = re.sub(r"(\*\*|__|\*|`)", "", line)  # emphasis and code marks
        line = re.sub(r"^\s*[-*+]\s+", "", line)  # list bullets
        line = re.sub(r"^\s*\|?(.*?)\|?\s*$", lambda m: m.group(1).replace("|", ":") if "|" in line else m.group(0),
                      line)
        if re.fullmatch(r"[\s:\-]*", line) and "|" in content and line.strip():
            continue  # table separator row
        lines.append(line)
    return title, "\n".join(lines)


def clean_plain_text(content: str) -> tuple[str, str]:
    """Plain text -> ``(title, text)``: no banner header or ``-- `` footer; wrapped lines re-joined."""
    title = ""
    header = re.match(r"\A(.{0,200}?)\n[=~#*]{5,}\s*\n", content, flags=re.S)
    if header:
        content = content[header.end():]
    content = re.split(r"\n-- ?\n", content)[0]  # signature / footer convention
    paragraphs = [p for p in re.split(r"\n\s*\n", content) if p.strip()]
    if paragraphs and paragraphs[0].isupper() and len(paragraphs[0]) < 120:
        title = paragraphs[0].strip().title()
    # A hard-wrapped paragraph is one sentence stream: join its lines with spaces.
    return title, "\n\n".join(re.sub(r"\s*\n\s*", " ", p.strip()) for p in paragraphs)


_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)


def normalize_unicode(text: str) -> str:
    """NFKC normalisation (full-width forms, ligatures, no-break spaces), invisible characters
    and control characters removed. Accents stay: "Tréville" is not "Treville"."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")


def normalize_whitespace(text: str) -> str:
    """Runs of spaces and tabs become one space; paragraphs (blank lines) are kept, at most one.
    Inside a fenced code block (```` ``` ```` lines) lines keep their indentation."""
    lines, in_code = [], False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            in_code = not in_code
            lines.append(line.strip())
        else:
            lines.append(line.rstrip() if in_code else re.sub(r"[ \t\f\v]+", " ", line).strip())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


_CLEANERS = {"html": clean_html, "md": clean_markdown, "txt": clean_plain_text}


def cleanse(doc: Document, *, unicode: bool = True) -> dict[str, int]:
    """Cleanse ``doc`` in place; return the characters each step left (``raw``, ``markup``,
    ``unicode``, ``whitespace``) so that notebook 07 can show what each step removes."""
    title, text = _CLEANERS[doc.format](doc.raw)
    sizes = {"raw": len(doc.raw), "markup": len(text)}
    if unicode:
        text = normalize_unicode(text)
        title = normalize_unicode(title)
    sizes["unicode"] = len(text)
    text = normalize_whitespace(text)
    sizes["whitespace"] = len(text)
    doc.text = text
    doc.title = doc.meta.get("title") or normalize_whitespace(title)
    return sizes


# ----------------------------------------------------------------------------- deduplicate

def shingles(text: str, n: int = 5) -> set[str]:
    """The set of word ``n``-grams of ``text`` (lower-cased, punctuation ignored)."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity |a ∩ b| / |a ∪ b| (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_MERSENNE = (1 << 61) - 1


def minhash_signatures(sets: list[set[str]], num_perm: int = 128, seed: int = 0):
    """MinHash signatures, shape ``(len(sets), num_perm)``: for each of ``num_perm`` random
    hash functions ``h(x) = (a·x + b) mod p``, the minimum over a set's elements. The share
    of equal positions between two signatures estimates their Jaccard similarity."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(1, _MERSENNE, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE, size=num_perm, dtype=np.uint64)
    sigs = np.full((len(sets), num_perm), np.iinfo(np.uint64).max, dtype=np.uint64)
    for row, s in enumerate(sets):
        if not s:
            continue
        x = np.array([int.from_bytes(hashlib.blake2b(e.encode(), digest_size=8).digest(), "little") % _MERSENNE
                      for e in s], dtype=np.uint64)
        # (a*x + b) mod p without overflow: Python ints per permutation would be slow, so use
        # object arithmetic on 61-bit values via float-free splitting.
        h = _mulmod(x[:, None], a[None, :]) + b[None, :]
        h %= np.uint64(_MERSENNE)
        sigs[row] = h.min(axis=0)
    return sigs


def _mulmod(x, a):
    """(x * a) mod 2^61-1 for uint64 arrays of values below 2^61, without overflow."""
    import numpy as np

    p = np.uint64(_MERSENNE)
    lo_mask = np.uint64((1 << 31) - 1)
    a_lo, a_hi = a & lo_mask, a >> np.uint64(31)  # a = a_hi·2^31 + a_lo, a_hi < 2^30
    # x·a_lo < 2^92 still overflows, so split x too: x = x_hi·2^31 + x_lo
    x_lo, x_hi = x & lo_mask, x >> np.uint64(31)
    # x·a = x_hi·a_hi·2^62 + (x_hi·a_lo + x_lo·a_hi)·2^31 + x_lo·a_lo ; 2^61 ≡ 1 (mod p)
    t = (x_hi * a_hi) % p * np.uint64(2) % p  # 2^62 ≡ 2
    mid = (x_hi * a_lo + x_lo * a_hi) % p  # each product < 2^61, sum < 2^62
    mid = ((mid >> np.uint64(30)) + ((mid & np.uint64((1 << 30) - 1)) << np.uint64(31))) % p  # ·2^31 mod p
    return (t + mid + (x_lo * a_lo) % p) % p


def near_duplicate_pairs(texts: list[str], threshold: float = 0.5, *, num_perm: int = 128, bands: int = 32,
                         ngram: int = 5, seed: int = 0, cache: dict[str, Any] | None = None
                         ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, estimated_jaccard)`` of texts whose MinHash similarity is at least
    ``threshold``. Candidates come from locality-sensitive hashing (``bands`` bands of
    ``num_perm // bands`` rows: texts that agree on a whole band), so the cost grows with
    the number of texts, not with its square. ``cache``: a dict of signatures by text (see
    :func:`prepare`); only texts it lacks are hashed, and their signatures are added to it."""
    import numpy as np

    if cache is None:
        sigs = minhash_signatures([shingles(t, ngram) for t in texts], num_perm=num_perm, seed=seed)
    else:
        keys = [f"minhash:{num_perm}:{ngram}:{seed}:{_digest(t)}" for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in cache]
        fresh = minhash_signatures([shingles(texts[i], ngram) for i in todo], num_perm=num_perm, seed=seed)
        for i, sig in zip(todo, fresh):
            cache[keys[i]] = [int(v) for v in sig]
        sigs = np.array([cache[k] for k in keys], dtype=np.uint64).reshape(len(texts), num_perm)
    rows = num_perm // bands
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i, key in enumerate(sigs[:, band * rows:(band + 1) * rows]):
            buckets.setdefault(key.tobytes(), []).append(i)
        for members in buckets.values():
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    candidates.add((members[x], members[y]))
    out = []
    for i, j in sorted(candidates):
        est = float(np.mean(sigs[i] == sigs[j]))
        if est >= threshold:
            out.append((i, j, est))
    return out


def deduplicate(docs: list[Document], *, near_threshold: float = 0.5, near: bool = True,
                seed: int = 0, cache: dict[str, Any] | None = None
                ) -> tuple[list[Document], dict[str, str], dict[str, int]]:
    """Drop exact and near-duplicate documents, keeping the first of each group.

    Returns ``(kept, removed, counts)``: ``removed`` maps each dropped id to the id it
    duplicates (so a retriever can credit the kept copy), ``counts`` has ``exact`` and
    ``near``. ``cache``: MinHash signatures of earlier runs (:func:`near_duplicate_pairs`).
    """
    seen: dict[str, str] = {}
    removed: dict[str, str] = {}
    first: list[Document] = []
    for d in docs:
        key = hashlib.sha256(re.sub(r"\W+", " ", d.text.lower()).strip().encode()).hexdigest()
        if key in seen:
            removed[d.id] = seen[key]
        else:
            seen[key] = d.id
            first.append(d)
    counts = {"exact": len(removed), "near": 0}
    if near and len(first) > 1:
        drop: dict[int, int] = {}
        for i, j, _ in near_duplicate_pairs([d.text for d in first], near_threshold, seed=seed, cache=cache):
            if i not in drop and j not in drop:
                drop[j] = i
        for j, i in drop.items():
            removed[first[j].id] = first[i].id
        counts["near"] = len(drop)
        first = [d for k, d in enumerate(first) if k not in drop]
    # a duplicate of a duplicate points to the kept document
    for k, v in removed.items():
        while v in removed:
            v = removed[v]
        removed[k] = v
    return first, removed, counts


# ----------------------------------------------------------------------------- chunk

def chunk_documents(docs: Iterable[Document], *, by: str = "chars", size: int = 500, overlap: int = 50,
                    tokenizer: Any = None, title_prefix: bool = True) -> list[Chunk]:
    """Split documents into overlapping chunks with langchain's recursive splitter.

    ``by="chars"`` counts characters; ``by="tokens"`` counts tokens of ``tokenizer`` (a
    Hugging Face tokenizer, by default the embedding model's, whose window is what
    matters). Splits fall on paragraphs, then lines, sentences, words. A document with
    section headings (``## Heading`` lines, as :func:`clean_html` writes a manual's) is cut
    section by section: no chunk spans two sections, and each chunk's ``section`` metadata
    is the path of headings above it. With ``title_prefix`` each chunk starts with
    ``"<title>: "`` (``"<title> > <section> > <subsection>: "`` in a section) so a passage cut
    from the middle of a page still says what it is about. Prose is joined into one line;
    code blocks and table rows keep their lines (:func:`course_utils.htmldoc.tidy_chunk`).
    """
    from course_utils.htmldoc import FENCE, code_state, split_sections, tidy_chunk

    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if overlap >= size:
        raise ValueError(f"The overlap ({overlap}) must be smaller than the chunk size ({size}).")
    separators = ["\n\n", "\n", ". ", " ", ""]
    if by == "chars":
        splitter = RecursiveCharacterTextSplitter(chunk_size=size, chunk_overlap=overlap, separators=separators)
    elif by == "tokens":
        if tokenizer is None:
            from course_utils.embed import load_embedder

            tokenizer = load_embedder().tokenizer
        splitter = RecursiveCharacterTextSplitter.from_huggingface_tokenizer(
            tokenizer, chunk_size=size, chunk_overlap=overlap, separators=separators)
    else:
        raise ValueError(f"by must be 'chars' or 'tokens', got {by!r}.")
    chunks = []
    for d in docs:
        meta = {k: v for k, v in d.meta.items() if k != "duplicate_of"}
        meta.update(title=d.title, format=d.format)
        pos = 0
        for section in split_sections(d.text, d.title) if d.text else []:
            heading = " > ".join(h for h in (d.title, *section.path) if h)
            fenced, start = FENCE in section.text, 0
            for piece in splitter.split_text(section.text):
                in_code = False
                if fenced:  # where the piece starts: inside a code block or not
                    at = section.text.find(piece, start)
                    at = at if at >= 0 else section.text.find(piece)
                    in_code, start = code_state(section.text, max(at, 0)), max(at, 0) + 1
                text = tidy_chunk(piece, in_code)
                if not text:
                    continue
                if title_prefix and heading and not text.lower().startswith(heading.lower()):
                    text = f"{heading}:{chr(10) if text.startswith(('```', '|')) else ' '}{text}"
                extra = {"section": " > ".join(section.path)} if section.path else {}
                chunks.append(Chunk(id=f"{d.id}#{pos}", text=text, doc_id=d.id, source=d.source, position=pos,
                                    meta={**meta, **extra}))
                pos += 1
    return chunks


# ----------------------------------------------------------------------------- pipeline

@dataclass(frozen=True)
class PrepConfig:
    """Every knob of :func:`prepare`; also the cache key of the course index."""

    cleanse: bool = True  # False: index the raw files as they are (the baseline notebook 07 measures)
    unicode: bool = True  # NFKC normalisation and invisible characters removed
    dedup_exact: bool = True  # drop documents whose cleansed text is identical
    dedup_near: bool = True  # drop near-duplicates (MinHash estimate of Jaccard >= near_threshold)
    near_threshold: float = 0.5  # estimated Jaccard above which two documents count as near-duplicates
    chunk_by: str = "chars"  # "chars" or "tokens" (tokens of the embedding model)
    chunk_size: int = 600  # characters or tokens per chunk
    chunk_overlap: int = 80  # characters or tokens shared by neighbouring chunks
    title_prefix: bool = True  # start every chunk with its document's title
    seed: int = 0  # seed of the MinHash permutations


@dataclass
class PrepResult:
    """What :func:`prepare` produced, with the numbers notebook 07 shows."""

    documents: list[Document]  # kept documents, cleansed
    chunks: list[Chunk]  # their chunks
    duplicates: dict[str, str]  # removed document id -> kept document id
    problems: list[str]  # files skipped, one sentence each
    stats: list[dict[str, Any]]  # one row per step: step, documents, characters, removed
    seconds: dict[str, float] = field(default_factory=dict)  # time of each stage: aggregate, cleanse, ...
    cache: dict[str, Any] = field(default_factory=dict)  # cleansed texts and signatures, for the next run


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def prepare(source: str | Path | list[Document] | None = None, config: PrepConfig | None = None, *,
            tokenizer: Any = None, verbose: bool = True, progress: bool | None = False,
            cache: dict[str, Any] | None = None) -> PrepResult:
    """Aggregate, cleanse, deduplicate and chunk a folder (default: the course store), or
    documents already read by :func:`aggregate` (copied, so they can be prepared again
    with another configuration).

    ``progress``: a bar over the files being cleansed (None: when there are more than 200).
    ``cache``: what an earlier run returned as ``result.cache`` (``course rag index`` keeps it
    in the index folder): a file whose content did not change is not cleansed again and its
    MinHash signature is reused, so an update after editing one file of a big manual spends
    its time on that file. ``result.seconds`` has the time of each stage.
    """
    import copy
    import time

    from tqdm.auto import tqdm

    cfg = config or PrepConfig()
    old, cache = cache or {}, {}  # only what this run used is passed on: deleted files drop out
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if isinstance(source, list):
        docs, problems = [copy.copy(d) for d in source], []
    else:
        docs, problems = aggregate(source, verbose=verbose)
    stats = [{"step": "aggregate", "documents": len(docs), "characters": sum(len(d.raw) for d in docs)}]
    seconds["aggregate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cfg.cleanse:
        totals = {"markup": 0, "unicode": 0, "whitespace": 0}
        show = len(docs) > 200 if progress is None else progress
        for d in tqdm(docs, desc=f"cleansing {len(docs)} files", unit="file", disable=not show):
            key = f"clean:{int(cfg.unicode)}:{d.id}:{_digest(d.raw)}"
            if key in old:
                d.text, d.title, sizes = old[key]["text"], old[key]["title"], old[key]["sizes"]
            else:
                sizes = cleanse(d, unicode=cfg.unicode)
            cache[key] = {"text": d.text, "title": d.title, "sizes": sizes}
            for k in totals:
                totals[k] += sizes[k]
        labels = {"markup": "cleanse markup and boilerplate", "unicode": "normalise Unicode",
                  "whitespace": "normalise white space"}
        for k, label in labels.items():
            stats.append({"step": label, "documents": len(docs), "characters": totals[k]})
        empty = [d for d in docs if not d.text]
        for d in empty:
            problems.append(f"{d.source}: skipped, no text left after cleansing.")
        docs = [d for d in docs if d.text]
    else:
        for d in docs:
            d.text = d.raw
            d.title = d.meta.get("title", "")
    seconds["cleanse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    signatures = {k: v for k, v in old.items() if k.startswith("minhash:")}
    duplicates: dict[str, str] = {}
    if cfg.dedup_exact:
        docs, removed, _ = deduplicate(docs, near=False, seed=cfg.seed)
        duplicates.update(removed)
        stats.append({"step": "remove exact duplicates", "documents": len(docs),
                      "characters": sum(len(d.text) for d in docs)})
    if cfg.dedup_near:
        # the exact pass inside finds nothing new when dedup_exact ran; otherwise it is part of "near"
        hashed = [d.text for d in docs]
        docs, removed, _ = deduplicate(docs, near=True, near_threshold=cfg.near_threshold, seed=cfg.seed,
                                       cache=signatures)
        for text in hashed:  # the signatures this run used, for the next one
            key = f"minhash:128:5:{cfg.seed}:{_digest(text)}"
            if key in signatures:
                cache[key] = signatures[key]
        duplicates.update(removed)
        for k, v in duplicates.items():
            while v in duplicates:
                v = duplicates[v]
            duplicates[k] = v
        stats.append({"step": "remove near-duplicates", "documents": len(docs),
                      "characters": sum(len(d.text) for d in docs)})
    seconds["deduplicate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    chunks = chunk_documents(docs, by=cfg.chunk_by, size=cfg.chunk_size, overlap=cfg.chunk_overlap,
                             tokenizer=tokenizer, title_prefix=cfg.title_prefix)
    seconds["chunk"] = time.perf_counter() - t0
    stats.append({"step": f"chunk ({cfg.chunk_by}, size {cfg.chunk_size}, overlap {cfg.chunk_overlap})",
                  "documents": len(docs), "characters": sum(len(c.text) for c in chunks), "chunks": len(chunks)})
    prev = None
    for row in stats:
        row["removed"] = 0 if prev is None else prev - row["characters"]
        prev = row["characters"]
    return PrepResult(documents=docs, chunks=chunks, duplicates=duplicates, problems=problems, stats=stats,
                      seconds={k: round(v, 3) for k, v in seconds.items()}, cache=cache)
