"""The course's data: build it, load it, validate it, count it.

One home for every loader the notebooks use:

=========================  ===========================================  ==============
function                   what                                         taught in
=========================  ===========================================  ==============
:func:`world`              the structured world (``data/world.json``)   00
:func:`load_corpus`        pretraining documents (built and cached)     01, 02
:func:`load_sft`           chat conversations (``messages``)            04
:func:`load_preferences`   prompt / chosen / rejected / flaw            06
:func:`load_documents`     the raw document store (HTML, Markdown, txt) 07, 08
:func:`load_eval`          questions with gold answers and documents    08, 10
:func:`to_dataset`         any of the above as a ``datasets.Dataset``   04, 06
:func:`build`              regenerate everything (``course data build``)
:func:`stats`              counts and token sizes (``course data stats``)
=========================  ===========================================  ==============

Every loader takes ``source=``: ``None`` for the course's own data, a local file
(``.jsonl`` with one JSON object per line; ``.txt`` for a corpus) or a hub data set id
(``"owner/name"``, only contacted when named). Whatever the source, records are
validated: a malformed line raises :class:`DataError` naming the file, the line and
what is wrong, and what to do about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from course_utils.settings import Settings, get_settings

__all__ = [
    "DataError",
    "build",
    "document_text",
    "load_corpus",
    "load_documents",
    "load_eval",
    "load_preferences",
    "load_security",
    "load_sft",
    "preferences_sha",
    "read_jsonl",
    "sft_sha",
    "stats",
    "to_dataset",
    "validate_record",
    "world",
    "world_sha",
]

#: Files under the data folder, relative paths.
WORLD_FILE = "world.json"
DOCS_INDEX = "documents/index.jsonl"
SFT_FILES = {"train": "sft/train.jsonl", "test": "sft/test.jsonl"}
PREF_FILES = {"train": "preferences/train.jsonl", "test": "preferences/test.jsonl"}
EVAL_FILE = "eval/questions.jsonl"
SECURITY_FILES = {"attacks": "security/attacks.jsonl", "benign": "security/benign.jsonl"}

#: Bumped whenever the corpus renderers change, so a cached corpus is never stale.
CORPUS_VERSION = 3

_ROLES = {"system", "user", "assistant"}

#: Required fields per record type: name -> expected type (or "messages" / "chat_or_text").
SCHEMAS: dict[str, dict[str, Any]] = {
    "corpus": {"text": str},
    "sft": {"messages": "messages"},
    "preference": {"prompt": "chat_or_text", "chosen": "chat_or_text", "rejected": "chat_or_text"},
    "eval": {"question": str, "answer": str, "gold_doc_ids": list, "seen": bool, "kind": str},
    "document": {"id": str, "path": str, "format": str, "entity_id": str, "kind": str, "seen": bool},
    "security": {"id": str, "kind": str, "split": str, "messages": list, "documents": list},
}


class DataError(ValueError):
    """A data file or record is malformed; the message says where and what to do."""


# ----------------------------------------------------------------------------- validation

def _type_name(t: Any) -> str:
    return {str: "a string", bool: "true or false", list: "a list", int: "an integer", dict: "an object"}.get(t, str(t))


def _check_messages(value: Any, field: str) -> str | None:
    if not isinstance(value, list) or not value:
        return f"field {field!r} should be a non-empty list of messages, got {type(value).__name__}"
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return f"{field}[{i}] should be an object with 'role' and 'content', got {type(m).__name__}"
        if m.get("role") not in _ROLES:
            return f"{field}[{i}] has role {m.get('role')!r}; use one of system, user, assistant"
        if not isinstance(m.get("content"), str):
            return f"{field}[{i}] needs a string 'content'"
    return None


def validate_record(record: Any, kind: str) -> str | None:
    """What is wrong with ``record`` as a ``kind`` record (see :data:`SCHEMAS`), or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for field, expected in SCHEMAS[kind].items():
        if field not in record:
            return f"missing field {field!r}"
        value = record[field]
        if expected == "messages":
            problem = _check_messages(value, field)
        elif expected == "chat_or_text":
            problem = None if isinstance(value, str) else _check_messages(value, field)
        elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problem = f"field {field!r} should be {_type_name(expected)}, got {type(value).__name__}"
        else:
            problem = None
        if problem:
            return problem
    return None


def read_jsonl(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Read a JSONL file (one object per line), validating each line as a ``kind`` record.

    Errors name the file and line: missing file, empty file, bytes that are not UTF-8,
    a line that is not JSON, a missing field or a field of the wrong type.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file. Check the path, or run `course data build` "
                                f"to regenerate the course's data.")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected one JSON object per line.")
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at "
                            f"column {exc.start + 1}); save the file as UTF-8.") from None
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
        if kind is not None:
            problem = validate_record(record, kind)
            if problem:
                raise DataError(f"{path}, line {number}: {problem}.")
        records.append(record)
    return records


def _read_text_corpus(path: Path) -> list[str]:
    """A plain-text corpus: documents are separated by blank lines."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; expected text, documents separated by blank lines.")
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at "
                            f"column {exc.start + 1}); save the file as UTF-8.") from None
    text = raw.decode("utf-8").replace("\r\n", "\n")
    return [d.strip() for d in text.split("\n\n") if d.strip()]


# ----------------------------------------------------------------------------- sources

def _data_dir(settings: Settings | None) -> Path:
    return (settings or get_settings()).data_dir


def _is_local(source: str) -> bool:
    return Path(source).suffix in (".jsonl", ".json", ".txt") or Path(source).exists() or source.startswith((".", "/", "~"))


def _from_hub(source: str, split: str, kind: str) -> list[dict[str, Any]]:
    """Records of a hub data set (only called when the learner names one)."""
    try:
        from datasets import load_dataset
    except ImportError:  # pragma: no cover
        raise DataError("Loading a hub data set needs the `datasets` package: pip install datasets") from None
    try:
        ds = load_dataset(source, split=split)
    except Exception as exc:  # network, unknown id, unknown split: say which
        raise DataError(f"Could not load hub data set {source!r} (split {split!r}): {exc}. Check the id and "
                        f"your internet connection, or pass a local .jsonl file instead.") from None
    records = [dict(r) for r in ds]
    for i, r in enumerate(records):
        problem = validate_record(r, kind)
        if problem:
            raise DataError(f"hub data set {source!r}, split {split!r}, row {i}: {problem}.")
    return records


def _held_out(items: list, split: str, every: int, held: str) -> list:
    """The deterministic split of a local file: every ``every``-th item is the held-out split
    ``held`` (validation or test), the rest train; a file of one item is all train."""
    if len(items) < 2:
        return items if split == "train" else []
    return [x for i, x in enumerate(items) if (i % every == every - 1) == (split == held)]


def _local_or_hub(source: str, split: str, kind: str) -> list[dict[str, Any]]:
    """Records of a local JSONL file (split: every 10th record is ``test``) or of a hub data set's split."""
    if _is_local(source):
        _check_split(split, ("train", "test"))
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file. Give a .jsonl file of {kind} records or a hub id.")
        return _held_out(read_jsonl(path, kind), split, 10, "test")
    return _from_hub(source, split, kind)


def _check_split(split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(f"Unknown split {split!r}: use one of {', '.join(allowed)}.")


# ----------------------------------------------------------------------------- the world

def world(settings: Settings | None = None):
    """The structured world (:class:`course_utils.world.World`) from ``data/world.json``.

    Taught in notebook 00. If the file is missing it is generated from the default seed
    (the same world ``course data build`` writes).
    """
    from course_utils.world import world_from_dict

    path = _data_dir(settings) / WORLD_FILE
    if not path.exists():
        return _generate_world()
    try:
        return world_from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a valid world file ({exc}); run `course data build` to regenerate it.") from None


def _generate_world():
    from course_utils.corpus import general_vocabulary
    from course_utils.world import generate_world

    return generate_world(avoid=general_vocabulary())


# ----------------------------------------------------------------------------- corpus

def world_sha(settings: Settings | None = None) -> str:
    """A short hash of the world file (or of the default world when the file is missing)."""
    path = _data_dir(settings) / WORLD_FILE
    data = path.read_bytes() if path.exists() else json.dumps(_generate_world().to_dict()).encode()
    return hashlib.sha256(data).hexdigest()[:12]


def sft_sha(settings: Settings | None = None) -> str:
    """A short hash of the SFT training file: the SFT model's cache key changes with its data."""
    from course_utils.artifacts import fingerprint

    return fingerprint(_data_dir(settings) / SFT_FILES["train"])


def preferences_sha(settings: Settings | None = None) -> str:
    """A short hash of the preference training file: the DPO and reward models' keys change with it."""
    from course_utils.artifacts import fingerprint

    return fingerprint(_data_dir(settings) / PREF_FILES["train"])


def write_corpus(folder: Path, w, config) -> dict[str, Any]:
    """Render the corpus of world ``w`` into ``folder`` (train/validation JSONL + stats.json)."""
    from course_utils.corpus import count_tokens, generate_corpus

    start = time.perf_counter()
    train, val = generate_corpus(w, config)
    info: dict[str, Any] = {}
    for split, docs in (("train", train), ("validation", val)):
        lines = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
        (folder / f"{split}.jsonl").write_text(lines, encoding="utf-8")
        text = "\n".join(docs)
        info[split] = {"documents": len(docs), "rough_tokens": count_tokens(text),
                       "words": len(text.split()), "characters": len(text)}
    info["seconds"] = round(time.perf_counter() - start, 2)
    (folder / "stats.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def corpus_folder(settings: Settings | None = None, target_tokens: int | None = None, rebuild: bool = False) -> Path:
    """The cached corpus folder (artifact ``corpus``), built on first use (~10 s)."""
    from course_utils.artifacts import load_or_build
    from course_utils.corpus import CorpusConfig

    settings = settings or get_settings()
    cfg = CorpusConfig() if target_tokens is None else CorpusConfig(target_tokens=target_tokens)
    w = world(settings)
    key = {"corpus": dataclasses.asdict(cfg), "world_sha": world_sha(settings), "version": CORPUS_VERSION}
    return load_or_build("corpus", key, lambda folder: write_corpus(folder, w, cfg), settings=settings, rebuild=rebuild)


def load_corpus(split: str = "train", settings: Settings | None = None, source: str | None = None,
                target_tokens: int | None = None) -> list[str]:
    """The pretraining corpus: a list of documents (strings). Taught in notebooks 01 and 02.

    ``source=None``: the course's corpus about the seen world (about 3.5M rough tokens by
    default, ``target_tokens`` to change it), built and cached on first use. A local
    ``.txt`` file (documents separated by blank lines) or ``.jsonl`` file (``{"text": ...}``
    per line) is split deterministically: every 50th document is validation. A hub id
    (``"owner/name"``) loads that data set's ``split`` and its ``text`` column.
    """
    _check_split(split, ("train", "validation"))
    if source is None:
        folder = corpus_folder(settings, target_tokens)
        return [r["text"] for r in read_jsonl(folder / f"{split}.jsonl", "corpus")]
    if _is_local(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such corpus file. Give a .txt or .jsonl file, or a hub id.")
        docs = _read_text_corpus(path) if path.suffix == ".txt" else [r["text"] for r in read_jsonl(path, "corpus")]
        return _held_out(docs, split, 50, "validation")
    return [r["text"] for r in _from_hub(source, split, "corpus")]


# ----------------------------------------------------------------------------- sets

def load_sft(split: str = "train", settings: Settings | None = None, source: str | None = None) -> list[dict[str, Any]]:
    """SFT conversations ``{"id", "kind", "messages": [{"role", "content"}, ...]}``. Notebook 04.

    ``source``: a local ``.jsonl`` file of such records (split deterministically: every 10th
    record is ``test``, the rest ``train``) or a hub id (that data set's ``split``)."""
    if source is not None:
        return _local_or_hub(source, split, "sft")
    _check_split(split, ("train", "test"))
    return read_jsonl(_data_dir(settings) / SFT_FILES[split], "sft")


def load_security(name: str = "attacks", settings: Settings | None = None) -> list[dict[str, Any]]:
    """Notebook 11's attack suite (``"attacks"``) or the benign requests that look like it (``"benign"``):
    records of :mod:`course_utils.redteam` (``id``, ``kind``, ``phrasing``, ``split``, ``messages``, ``documents``
    and, for attacks, ``success``)."""
    _check_split(name, tuple(SECURITY_FILES))
    return read_jsonl(_data_dir(settings) / SECURITY_FILES[name], "security")


def load_preferences(split: str = "train", settings: Settings | None = None,
                     source: str | None = None) -> list[dict[str, Any]]:
    """Preference pairs ``{"id", "flaw", "prompt", "chosen", "rejected"}``. Notebook 06.

    ``prompt`` is a list of messages (the user turn), ``chosen`` and ``rejected`` each a
    one-message assistant list: trl's conversational preference format, which
    ``DPOTrainer`` accepts as is. A local file may also use plain strings; it is split
    deterministically (every 10th pair is ``test``), a hub id loads that data set's ``split``.
    """
    if source is not None:
        return _local_or_hub(source, split, "preference")
    _check_split(split, ("train", "test"))
    return read_jsonl(_data_dir(settings) / PREF_FILES[split], "preference")


def load_eval(seen: bool | None = None, kind: str | None = None, settings: Settings | None = None,
              source: str | None = None) -> list[dict[str, Any]]:
    """Evaluation questions. Notebooks 08 and 10.

    Each: ``id``, ``question``, ``answer`` (short: a name, year or number), ``aliases``,
    ``gold_doc_ids`` (ids in :func:`load_documents`), ``seen``, ``kind`` (``fact:<attr>``
    or ``legal:scenario|articles|year``), ``entity_id``, ``articles``, ``precedents``.
    ``seen`` filters seen/unseen; ``kind`` filters by prefix (``"legal"``, ``"fact"``).
    """
    records = (_local_or_hub(source, "test", "eval") if source is not None
               else read_jsonl(_data_dir(settings) / EVAL_FILE, "eval"))
    return [r for r in records if (seen is None or r["seen"] == seen)
            and (kind is None or r["kind"].startswith(kind))]


def load_documents(settings: Settings | None = None, with_content: bool = False) -> list[dict[str, Any]]:
    """The raw document store's index. Notebook 07 (cleansing) and 08 (retrieval).

    Each: ``id``, ``path`` (relative to the data folder), ``format`` (html/md/txt),
    ``entity_id``, ``kind``, ``seen``, ``title``, ``duplicate_of`` (mirror copies).
    ``with_content=True`` adds ``content`` (the raw file) and ``text`` (cleaned).
    """
    from course_utils.documents import clean_text

    root = _data_dir(settings)
    docs = read_jsonl(root / DOCS_INDEX, "document")
    if with_content:
        for d in docs:
            d["content"] = (root / d["path"]).read_text(encoding="utf-8")
            d["text"] = clean_text(d["content"], d["format"])
    return docs


def document_text(doc: dict[str, Any], settings: Settings | None = None) -> str:
    """The cleaned text of one document record (minimal cleansing; notebook 07 does better)."""
    from course_utils.documents import clean_text

    content = doc.get("content") or (_data_dir(settings) / doc["path"]).read_text(encoding="utf-8")
    return clean_text(content, doc["format"])


def to_dataset(records: list[dict[str, Any]] | list[str]):
    """A ``datasets.Dataset`` of records (dicts) or of corpus documents (strings -> ``text``)."""
    from datasets import Dataset

    if records and isinstance(records[0], str):
        return Dataset.from_dict({"text": list(records)})
    return Dataset.from_list(list(records))


# ----------------------------------------------------------------------------- build and stats

def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def _remove_generated_documents(root: Path) -> list[str]:
    """Delete the documents a previous build wrote (those its index lists, and the index); return
    the other files found under ``documents/`` (a learner's own), which stay."""
    folder = root / "documents"
    if not folder.exists():
        return []
    index = root / DOCS_INDEX
    ours = {root / r["path"] for r in read_jsonl(index, "document")} if index.exists() else set()
    ours.add(index)
    kept = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path in ours:
            path.unlink()
        else:
            kept.append(str(path.relative_to(root)))
    for d in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    return kept


def build(settings: Settings | None = None, out_dir: Path | None = None, corpus: bool = True,
          corpus_tokens: int | None = None) -> dict[str, Any]:
    """Regenerate all the data (``course data build``): world, documents, sets, corpus.

    Writes ``world.json``, ``documents/``, ``sft/``, ``preferences/``, ``eval/`` and ``security/`` into
    ``out_dir`` (default: the data folder), then (``corpus=True``) rebuilds the cached
    corpus. Everything is deterministic: two builds give identical bytes. Files a learner added
    under ``documents/`` are kept (``kept_documents`` in the result lists them).
    """
    from course_utils.documents import render_documents
    from course_utils.supervised import build_eval, build_preferences, build_sft

    settings = settings or get_settings()
    root = Path(out_dir) if out_dir is not None else settings.data_dir
    start = time.perf_counter()
    w = _generate_world()
    root.mkdir(parents=True, exist_ok=True)
    (root / WORLD_FILE).write_text(json.dumps(w.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    kept = _remove_generated_documents(root)
    docs = render_documents(w)
    index = []
    for d in docs:
        path = root / d.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(d.content, encoding="utf-8")
        index.append({k: v for k, v in dataclasses.asdict(d).items() if k != "content"})
    _write_jsonl(root / DOCS_INDEX, index)
    for split, recs in build_sft(w).items():
        _write_jsonl(root / SFT_FILES[split], recs)
    for split, recs in build_preferences(w).items():
        _write_jsonl(root / PREF_FILES[split], recs)
    evals = build_eval(w)
    _write_jsonl(root / EVAL_FILE, evals)
    from course_utils.redteam import build_attacks, build_benign

    _write_jsonl(root / SECURITY_FILES["attacks"], build_attacks(w, evals))
    _write_jsonl(root / SECURITY_FILES["benign"], build_benign(w, evals))
    result: dict[str, Any] = {"data_dir": str(root), "sets_seconds": round(time.perf_counter() - start, 2)}
    if kept:
        result["kept_documents"] = kept  # files a learner added to documents/: left in place
    if corpus:
        s = dataclasses.replace(settings, data_dir=root)
        folder = corpus_folder(s, corpus_tokens, rebuild=True)
        result["corpus_dir"] = str(folder)
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _tokens_of(records: list[dict[str, Any]]) -> int:
    from course_utils.corpus import count_tokens

    total = 0
    for r in records:
        for key in ("messages", "prompt", "chosen", "rejected"):
            value = r.get(key)
            if isinstance(value, list):
                total += sum(count_tokens(m["content"]) for m in value)
            elif isinstance(value, str):
                total += count_tokens(value)
    return total


def stats(settings: Settings | None = None, corpus: bool = True) -> dict[str, Any]:
    """Counts of every set and split, with rough token sizes (``course data stats``)."""
    from collections import Counter

    settings = settings or get_settings()
    w = world(settings)
    docs = load_documents(settings)
    out: dict[str, Any] = {
        "world": {"entities": len(w.entities), "unseen_entities": sum(not e.seen for e in w.entities),
                  "kinds": dict(Counter(e.kind for e in w.entities)), "articles": len(w.articles),
                  "precedents": len(w.precedents), "unseen_precedents": sum(not p.seen for p in w.precedents)},
        "documents": {"total": len(docs), "formats": dict(Counter(d["format"] for d in docs)),
                      "unseen": sum(not d["seen"] for d in docs),
                      "mirrors": sum(d.get("duplicate_of") is not None for d in docs)},
    }
    for name, loader in (("sft", load_sft), ("preferences", load_preferences)):
        out[name] = {}
        for split in ("train", "test"):
            recs = loader(split, settings)
            field = "kind" if name == "sft" else "flaw"
            out[name][split] = {"count": len(recs), "rough_tokens": _tokens_of(recs),
                                "by_" + field: dict(sorted(Counter(r[field] for r in recs).items()))}
    ev = load_eval(settings=settings)
    out["eval"] = {"count": len(ev), "seen": sum(r["seen"] for r in ev), "unseen": sum(not r["seen"] for r in ev),
                   "legal": sum(r["kind"].startswith("legal") for r in ev)}
    if corpus:
        folder = corpus_folder(settings)
        out["corpus"] = json.loads((folder / "stats.json").read_text())
        out["corpus"]["path"] = str(folder)
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(build(), indent=1), file=sys.stderr)
