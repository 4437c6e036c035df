"""The schedule of a pretraining run: the learning rate and the batch's mix of corpus and drill rows,
step by step. Taught in notebook 02 ("The learning-rate schedule"); :func:`course_utils.pretrain.train`
follows it.

A run's :class:`Schedule` is read from its ``TrainConfig``: a linear warmup, then either a cosine decay
to ``lr * min_lr_ratio`` or "wsd" (warmup, stable, decay: a constant rate, then a linear decay over the
last ``decay_frac`` of the run). The batch keeps ``batch_size + drill_rows`` rows throughout; the
drills take ``early_drill_rows`` of them at the start, ``decay_drill_rows`` while decaying and
``drill_rows`` otherwise, and the corpus the rest.

**A gated decay** (``gate`` set, "wsd" only): the phase change in which the model learns to copy from
a passage comes at a step that moves by hundreds from build to build (``benchmarks/base_models.py``),
so a decay at a fixed step sometimes starts before copying has grown. With a gate the rate stays
stable until a validation measures ``reading_gate`` (the share of facts copied from held-out passages,
:func:`course_utils.probes.gate_probe`) at or above ``gate``; the decay starts there, lasts
``decay_frac * max_steps`` steps, and the run ends with it. ``max_steps`` caps the run: the decay starts
at the planned step at the latest, so a gate never reached costs nothing but the gate itself.
"""

from __future__ import annotations

import math
from typing import Any

#: ``cfg`` is a ``pretrain.TrainConfig``, typed loosely so that this module needs nothing from pretrain.
_TrainConfig = Any

__all__ = ["Schedule"]


class Schedule:
    """The learning-rate factor and the rows of each step of a run; holds where a gated decay opened."""

    def __init__(self, cfg: _TrainConfig):
        if cfg.schedule not in ("cosine", "wsd"):
            raise ValueError(f"schedule must be 'cosine' or 'wsd', got {cfg.schedule!r}.")
        if cfg.gate is not None and cfg.schedule != "wsd":
            raise ValueError("a gated decay needs schedule='wsd' (a stable rate for the gate to end).")
        self.cfg = cfg
        self.gate_step: int | None = None  # the step whose validation opened the gate

    @property
    def decay_len(self) -> int:
        """Steps of the final decay ("wsd"); 0 for "cosine"."""
        return int(self.cfg.decay_frac * self.cfg.max_steps) if self.cfg.schedule == "wsd" else 0

    @property
    def decay_start(self) -> int:
        """The first step of the final decay: the gate's step once it opened, else the planned one."""
        planned = self.cfg.max_steps - self.decay_len
        return planned if self.gate_step is None else min(self.gate_step, planned)

    @property
    def end(self) -> int:
        """The step the run ends at: ``max_steps``, or the end of a decay a gate started early."""
        return self.decay_start + self.decay_len if self.cfg.schedule == "wsd" else self.cfg.max_steps

    @property
    def decay_drill_start(self) -> int:
        """The first step that uses ``decay_drill_rows``: the decay's first, or ``decay_drill_frac`` of
        ``max_steps`` before the end."""
        frac = self.cfg.decay_drill_frac
        return self.decay_start if frac is None else self.end - int(frac * self.cfg.max_steps)

    def open_gate(self, step: int, reading: float | None) -> bool:
        """At a validation of ``step``: open the gate if ``reading`` reached ``cfg.gate``. True if it opened now."""
        if self.cfg.gate is None or self.gate_step is not None or reading is None or reading < self.cfg.gate:
            return False
        if step >= self.decay_start:  # the planned decay has begun: nothing to move
            return False
        self.gate_step = step
        return True

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` (0-based) as a share of ``cfg.lr`` (a ``LambdaLR`` function)."""
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "wsd":  # warmup, stable, decay
            start = self.decay_start
            if step < start:
                return 1.0
            progress = min(1.0, (step - start) / max(1, self.end - start))
            return 1.0 - (1 - cfg.min_lr_ratio) * progress
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def rows(self, step: int) -> tuple[int, int]:
        """``(corpus rows, drill rows)`` of each micro-batch at ``step`` (0-based); every batch keeps
        ``batch_size + drill_rows`` rows."""
        cfg = self.cfg
        total = cfg.batch_size + cfg.drill_rows
        if cfg.early_drill_rows is not None and step < int(cfg.early_frac * cfg.max_steps):
            drill = cfg.early_drill_rows
        elif cfg.decay_drill_rows is not None and step >= self.decay_drill_start:
            drill = cfg.decay_drill_rows
        else:
            drill = cfg.drill_rows
        if not 0 <= drill <= total:
            raise ValueError(f"drill rows must be between 0 and the {total} rows of a batch, got {drill}.")
        return total - drill, drill

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (where the gate opened)."""
        return {"gate_step": self.gate_step}

    def load(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state` (``None``: a checkpoint from before gates, nothing opened)."""
        self.gate_step = (state or {}).get("gate_step")
