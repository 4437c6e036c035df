"""Run-wide settings: fast vs learner mode, device, where artifacts and data live, seeding.

Taught in notebook 00 (section "Your machine"). Every notebook's ``parameters`` cell
starts from :func:`get_settings`, so ``COURSE_FAST=1`` (set by the tests) shrinks the
budgets there and nowhere else.

Environment variables read (only when :func:`get_settings` is called, never at import):

``COURSE_FAST``   ``1``/``true``/``yes`` selects fast mode (tiny budgets that prove a
                  notebook runs); anything else, or unset, is learner mode.
``COURSE_CACHE``  folder for built artifacts (tokenizer, base model, SFT model, ...);
                  default ``<repo>/artifacts``.
``COURSE_DATA``   folder holding the course's data; default ``<repo>/data``.
``COURSE_DEVICE`` force a device (``cpu``, ``cuda``, ``mps``); default: auto-detect.
``COURSE_SEED``   global seed; default 1234.
``COURSE_TRACKING`` ``0``/``false``/``no``/``off`` turns experiment tracking off (no MLflow runs
                  are recorded, :mod:`course_utils.tracking`); anything else, or unset, leaves it on.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "REPO_SLUG",
    "Settings",
    "detect_device",
    "get_settings",
    "repo_root",
    "seed_everything",
]

#: GitHub ``owner/name`` of the course repository: used for the Colab and Binder badges
#: and by the Colab set-up cell. A fork changes it here and in the notebooks' badges
#: (``tests/test_notebooks_shape.py`` checks that they agree).
REPO_SLUG = "llm-course-org/llm-course"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def repo_root() -> Path:
    """The folder holding ``course_utils/``, ``data/`` and ``notebooks/``."""
    return Path(__file__).resolve().parent.parent


def detect_device(prefer: str | None = None) -> str:
    """Return ``"cuda"``, ``"mps"`` or ``"cpu"``: the best device torch can use here.

    ``prefer`` (or ``COURSE_DEVICE``) forces a choice; asking for a device that is not
    available raises a ``ValueError`` that says so, rather than failing later in torch.
    """
    import torch  # imported here so that `import course_utils` stays light

    choice = (prefer or os.environ.get("COURSE_DEVICE") or "").strip().lower()
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if choice:
        if choice not in available:
            raise ValueError(f"Unknown device {choice!r}: use one of cpu, cuda, mps.")
        if not available[choice]:
            raise ValueError(
                f"Device {choice!r} was requested (COURSE_DEVICE or an argument) but torch "
                f"cannot use it on this machine. Unset COURSE_DEVICE or choose 'cpu'."
            )
        return choice
    for name in ("cuda", "mps"):
        if available[name]:
            return name
    return "cpu"


@dataclass(frozen=True)
class Settings:
    """What every notebook and command needs to know about this run."""

    fast: bool = False  # fast mode: tiny budgets that only prove the code runs (tests, CI)
    cache_dir: Path = field(default_factory=lambda: repo_root() / "artifacts")  # built artifacts
    data_dir: Path = field(default_factory=lambda: repo_root() / "data")  # the course's data
    seed: int = 1234  # global seed; each stage derives its own from it
    device_pref: str | None = None  # forced device, or None to auto-detect
    tracking: bool = True  # record every training run in MLflow (course_utils.tracking); never part of a cache key

    @property
    def mode(self) -> str:
        """``"fast"`` or ``"learner"``."""
        return "fast" if self.fast else "learner"

    @property
    def device(self) -> str:
        """The torch device this run uses (imports torch on first use)."""
        return detect_device(self.device_pref)

    def budget(self, fast: int | float, learner: int | float) -> int | float:
        """Pick a budget by mode: ``STEPS = S.budget(fast=20, learner=3000)``."""
        return fast if self.fast else learner


def get_settings() -> Settings:
    """Read the settings from the environment (see the module docstring)."""
    env = os.environ
    seed_text = env.get("COURSE_SEED", "1234")
    try:
        seed = int(seed_text)
    except ValueError:
        raise ValueError(f"COURSE_SEED must be an integer, got {seed_text!r}.") from None
    kwargs: dict = {
        "fast": env.get("COURSE_FAST", "").strip().lower() in _TRUE,
        "seed": seed,
        "device_pref": env.get("COURSE_DEVICE") or None,
        "tracking": env.get("COURSE_TRACKING", "").strip().lower() not in _FALSE,
    }
    if env.get("COURSE_CACHE"):
        kwargs["cache_dir"] = Path(env["COURSE_CACHE"]).expanduser().resolve()
    if env.get("COURSE_DATA"):
        kwargs["data_dir"] = Path(env["COURSE_DATA"]).expanduser().resolve()
    return Settings(**kwargs)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and (if imported or importable) torch's generators."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
