"""Load-or-build cache for what one stage produces and a later stage needs.

Taught in notebook 00 (section "How the notebooks hand work to each other"). Every
notebook runs alone: when notebook 04 needs the base model that notebook 02 trains,
it calls the stage's ``load_or_build_*`` function, which ends up here. If the artifact
was built before with the same configuration it is loaded from the cache; otherwise it
is built now, with a line saying so, and cached.

Layout of the cache (``Settings.cache_dir``, default ``<repo>/artifacts``)::

    <cache>/<name>/<key>/            a finished artifact (folder written by the builder)
    <cache>/<name>/<key>/artifact.json   name, key, config, build time, when
    <cache>/<name>/<key>.partial/    an unfinished build; kept when a build is
                                     interrupted so that a builder that checkpoints
                                     (pretraining) resumes where it stopped

``key`` is a short hash of the configuration (a dataclass or a JSON-able dict), so a
change of any knob builds a new artifact next to the old one instead of silently
reusing it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_utils.settings import Settings, get_settings

__all__ = ["ArtifactRecord", "built_from", "config_dict", "config_key", "fingerprint", "list_artifacts",
           "load_or_build", "training_record"]

MARKER = "artifact.json"


#: Files up to this size are hashed by content; larger ones by size and modification time.
_HASH_BYTES = 64 * 2**20


def fingerprint(path: str | Path) -> str:
    """A short hash of what a file or folder holds, for cache keys: change a data file or retrain a
    model in place and the key changes. Files are hashed by content (up to 64 MiB each, by size and
    modification time beyond), folders file by file in name order (hidden files skipped)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: nothing there to fingerprint.")
    if path.is_file() and path.stat().st_size <= _HASH_BYTES:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]  # a file: its content alone
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    h = hashlib.sha256()
    for f in files:
        stat = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{stat.st_size}\0".encode())
        if stat.st_size <= _HASH_BYTES:
            h.update(hashlib.sha256(f.read_bytes()).digest())
        else:
            h.update(str(stat.st_mtime_ns).encode())
    return h.hexdigest()[:12]


def built_from(path: str | Path) -> str:
    """How an artifact names a cached artifact it is built from, in its own key: the input's kind and key
    (its folder, ``kind/key``) and a fingerprint of its files. Rebuilt in place (``rebuild=True`` keeps
    the key), the input's files change and so does every key built on it: nothing downstream is stale.
    The cache's location is left out, so a copied cache keeps its keys."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}:{fingerprint(path)}"


def config_dict(config: Any) -> dict[str, Any]:
    """A configuration as a plain JSON-able dict (dataclasses and dicts accepted)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
        # A knob added after artifacts were built joins the key only when set away from the value
        # that those artifacts implied, so they keep their keys: ``field(metadata={"key_unless": v})``
        # leaves the field out of the key while it equals ``v`` (even after the default changes);
        # ``metadata={"key_if_set": True}`` is the same with ``v`` the field's default.
        for f in dataclasses.fields(config):
            if "key_unless" in f.metadata:
                neutral = f.metadata["key_unless"]
            elif f.metadata.get("key_if_set"):
                neutral = f.default
            else:
                continue
            if getattr(config, f.name) == neutral:
                data.pop(f.name, None)
        for f in dataclasses.fields(config):  # nested configurations (a run's model) follow the same rules
            value = getattr(config, f.name)
            if f.name in data and dataclasses.is_dataclass(value) and not isinstance(value, type):
                data[f.name] = config_dict(value)
    elif isinstance(config, dict):
        data = dict(config)
    else:
        raise TypeError(
            f"An artifact's config must be a dataclass instance or a dict, got {type(config).__name__}."
        )
    # Round-trip through JSON so that Paths and tuples compare the same way every time.
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def config_key(config: Any) -> str:
    """A 12-character hash that changes whenever any field of the configuration changes."""
    text = json.dumps(config_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class ArtifactRecord:
    """One finished artifact in the cache."""

    name: str  # the stage's artifact name, e.g. "base-model"
    key: str  # hash of its configuration
    path: Path  # folder holding it
    config: dict[str, Any]  # the configuration it was built with
    build_seconds: float  # wall time of the build
    built_at: str  # ISO time of the end of the build


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock, so that two processes never build the same artifact at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(message: str, verbose: bool) -> None:
    if verbose:
        print(f"[artifact] {message}", file=sys.stderr if not _in_notebook() else sys.stdout, flush=True)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def load_or_build(
    name: str,
    config: Any,
    build: Callable[[Path], None],
    *,
    settings: Settings | None = None,
    rebuild: bool = False,
    verbose: bool = True,
    track: str | None = None,
) -> Path:
    """Return the folder of artifact ``name`` built with ``config``, building it if needed.

    ``build(folder)`` must write the artifact into ``folder`` (which exists, and may hold
    what an interrupted earlier build left there). Only when it returns is the folder
    renamed into place, so a half-written artifact is never mistaken for a finished one.
    ``rebuild=True`` builds again; the cached copy stays in place (and in use) until the new
    one is complete, so an interrupted rebuild loses nothing.
    ``track`` (a training stage's name, e.g. ``"sft"``) records the build as an MLflow run of that
    stage (:func:`course_utils.tracking.track`), tagged with the artifact (``<name>/<key>``) and
    with ``config`` as its ``artifact.*`` parameters; the stage's training logs into the same run.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"Artifact names are plain folder names, got {name!r}.")
    settings = settings or get_settings()
    cfg = config_dict(config)
    key = config_key(cfg)
    root = settings.cache_dir / name
    final = root / key
    partial = root / f"{key}.partial"
    with _lock(root / f".{key}.lock"):
        old = root / f"{key}.old"
        if old.joinpath(MARKER).exists() and not final.joinpath(MARKER).exists():
            if final.exists():  # killed in the middle of a rebuild's swap: the old copy is the good one
                shutil.rmtree(final)
            os.replace(old, final)
        if final.joinpath(MARKER).exists() and not rebuild:
            _say(f"using cached {name} ({key}) from {final}", verbose)
            return final
        if final.exists() and not final.joinpath(MARKER).exists():
            shutil.rmtree(final)  # not a finished artifact (no marker): nothing to keep
        if rebuild and partial.exists():
            shutil.rmtree(partial)
        resumed = partial.exists() and any(partial.iterdir())
        partial.mkdir(parents=True, exist_ok=True)
        how = "resuming the interrupted build of" if resumed else "building"
        _say(f"{how} {name} ({key}) in {partial}; it is cached for next time", verbose)
        start = time.perf_counter()
        if track:
            from course_utils.tracking import track as tracked_run

            with tracked_run(track, cfg, artifact=f"{name}/{key}", run_name=name, prefix="artifact.",
                             settings=settings):
                build(partial)
        else:
            build(partial)
        seconds = time.perf_counter() - start
        record = {
            "name": name,
            "key": key,
            "config": cfg,
            "build_seconds": round(seconds, 3),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        partial.joinpath(MARKER).write_text(json.dumps(record, indent=2) + "\n")
        if final.exists():  # a rebuild: swap the new copy in, then drop the old one
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(partial, final)
            shutil.rmtree(old)
        else:
            os.replace(partial, final)
        _say(f"built {name} ({key}) in {seconds:.1f} s -> {final}", verbose)
        return final


def list_artifacts(settings: Settings | None = None) -> list[ArtifactRecord]:
    """Every finished artifact in the cache, oldest first."""
    settings = settings or get_settings()
    records = []
    if settings.cache_dir.exists():
        for marker in settings.cache_dir.glob(f"*/*/{MARKER}"):
            if marker.parent.suffix in (".old", ".partial"):  # a rebuild's copy being replaced or made
                continue
            try:
                data = json.loads(marker.read_text())
                data["name"], data["key"], data["config"], data["build_seconds"], data["built_at"]  # noqa: B018
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{marker} is not an artifact record ({type(exc).__name__}: {exc}); delete "
                                 f"{marker.parent} and build it again.") from None
            records.append(
                ArtifactRecord(
                    name=data["name"],
                    key=data["key"],
                    path=marker.parent,
                    config=data["config"],
                    build_seconds=float(data["build_seconds"]),
                    built_at=data["built_at"],
                )
            )
    return sorted(records, key=lambda r: r.built_at)


def training_record(path: str | Path) -> dict[str, Any]:
    """``training.json`` of a trained-model artifact (SFT, LoRA, reward model, DPO):
    ``summary`` (final figures), ``history`` (logged steps) and ``base`` (what it started from)."""
    file = Path(path) / "training.json"
    if not file.exists():
        raise FileNotFoundError(f"{file}: no training record; is {path} a trained-model artifact folder?")
    return json.loads(file.read_text())
