"""Shared plotting helpers: every figure has labelled axes, units and a title.

First used in notebooks 01 (compression vs vocabulary size) and 02 (loss curves, the
scaling experiment); later notebooks reuse them. Each function draws on ``ax`` (a new
figure if ``None``) and returns the axes, so a notebook can add to the plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plot_bars", "plot_loss_curves", "plot_xy"]


def _axes(ax, figsize=(7, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_loss_curves(
    runs: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    x: str = "tokens",
    baseline: float | None = None,
    baseline_label: str = "unigram baseline",
    title: str = "Training and validation loss",
    logx: bool = False,
    ax=None,
):
    """Loss against tokens (or ``x="step"``) for one run's history (rows with
    ``train_loss`` and sometimes ``val_loss``) or several runs ``{label: history}``."""
    ax = _axes(ax)
    if isinstance(runs, Mapping):
        items = list(runs.items())
    else:
        items = [("", runs)]
    for label, history in items:
        xs = [r[x] for r in history]
        line = ax.plot(xs, [r["train_loss"] for r in history], alpha=0.6,
                       label=f"{label} train".strip())[0]
        val = [(r[x], r["val_loss"]) for r in history if "val_loss" in r]
        if val:
            ax.plot(*zip(*val, strict=True), "o-", color=line.get_color(), label=f"{label} validation".strip())
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=baseline_label)
    ax.set_xlabel("training tokens" if x == "tokens" else "optimizer step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_xy(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    ax=None,
):
    """Lines with markers: ``{label: (xs, ys)}``."""
    ax = _axes(ax)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, "o-", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1 or next(iter(series), ""):
        ax.legend()
    return ax


def plot_bars(values: Mapping[str, float], *, ylabel: str, title: str, fmt: str = "{:.3g}", ax=None):
    """One bar per entry, its value written on top."""
    ax = _axes(ax, figsize=(6, 3.5))
    labels, heights = list(values), list(values.values())
    bars = ax.bar(labels, heights, color=["C0", "C1", "C2", "C3", "C4", "C5"][: len(labels)])
    for bar, h in zip(bars, heights, strict=True):
        ax.annotate(fmt.format(h), (bar.get_x() + bar.get_width() / 2, h), ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return ax
