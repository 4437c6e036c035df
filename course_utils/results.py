"""Headline figures: written by the notebooks, quoted by the README and the decks.

A number typed by hand into prose drifts from the run that measured it. So each notebook ends its
learner-mode run by calling :func:`record_figures` with the figures it measured, and the README's status and
the decks quote them through markers that :func:`fill` rewrites:

    the win rate of DPO over SFT was <!--r:06.win_rate-->52%<!--/r--> (the reward model's verdict)

``course results --update`` (after ``make course``) refreshes every marker in ``README.md`` and
``slides/*.md`` from ``results/NN.json``; ``tests/test_results.py`` fails when a marker quotes a value that
is not the recorded one, names a figure nobody recorded, or when a deck or the README's status quotes a
percentage outside a marker.

Learner mode writes ``results/NN.json`` in the repository (they are committed: they are the course's
measured figures); fast mode writes to ``<cache>/results/`` so that the tests never touch the committed
files. ``COURSE_RESULTS`` points both elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

from course_utils.settings import Settings, get_settings, repo_root

__all__ = [
    "MARKER",
    "fill",
    "format_figure",
    "load_results",
    "markdown_table",
    "record_figures",
    "results_dir",
    "stale_markers",
    "unmarked_figures",
    "update_files",
]

#: ``<!--r:NN.name-->text<!--/r-->``: a recorded figure quoted in Markdown.
MARKER = re.compile(r"<!--r:(?P<key>\d\d\.[A-Za-z0-9_]+)-->(?P<text>.*?)<!--/r-->", re.S)


def results_dir(settings: Settings | None = None) -> Path:
    """Where :func:`record_figures` writes: ``COURSE_RESULTS``, else ``results/`` in the repository in learner
    mode and ``<cache>/results`` in fast mode."""
    if os.environ.get("COURSE_RESULTS"):
        return Path(os.environ["COURSE_RESULTS"]).expanduser()
    settings = settings or get_settings()
    return repo_root() / "results" if not settings.fast else Path(settings.cache_dir) / "results"


def format_figure(value: Any, fmt: str) -> str:
    """``value`` as prose shows it: ``fmt`` is a format spec (``".0%"``, ``".2f"``, ``",.0f"``) or a
    template with ``{}`` (``"{:.1f} min"``). A text of several lines (a Markdown table, format ``"s"``)
    is set apart by blank lines, so that it renders as a block inside its marker."""
    if isinstance(value, (list, tuple)):
        return fmt.format(*value)
    text = fmt.format(value) if "{" in fmt else format(value, fmt)
    return f"\n\n{text.strip()}\n\n" if "\n" in text else text  # a table: a block of its own


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def markdown_table(df: Any, floatfmt: str = ".3f") -> str:
    """A DataFrame as a Markdown table for :func:`record_figures` (format ``"s"``): whole numbers with
    thousands separators, other numbers with ``floatfmt``, the index as the first column."""
    import numbers

    def cell(v: Any) -> str:
        if isinstance(v, numbers.Integral) and not isinstance(v, bool):
            return f"{v:,}"
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            return format(v, floatfmt)
        return str(v)

    return df.map(cell).to_markdown(disable_numparse=True)


def record_figures(notebook: str, figures: dict[str, tuple[Any, str]], settings: Settings | None = None) -> Path:
    """Write ``figures`` of ``notebook`` (``"06"``): ``{name: (value, format)}``, e.g.
    ``{"win_rate": (0.52, ".0%")}``. Returns the file."""
    if not re.fullmatch(r"\d\d", notebook):
        raise ValueError(f"notebook must be two digits such as '06', got {notebook!r}.")
    settings = settings or get_settings()
    out: dict[str, Any] = {}
    for name, spec in figures.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise ValueError(f"A figure's name must be letters, digits and _, got {name!r}.")
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str)):
            raise TypeError(f"Figure {name!r}: give (value, format), e.g. (0.52, '.0%'); got {spec!r}.")
        value, fmt = spec
        value = [float(v) for v in value] if isinstance(value, (list, tuple)) else value
        if hasattr(value, "item"):  # numpy / torch scalars
            value = value.item()
        out[name] = {"value": value, "format": fmt, "text": format_figure(value, fmt)}
    doc = {"notebook": notebook, "mode": settings.mode,
           "measured": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "machine": _machine(), "figures": out}
    folder = results_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebook}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def load_results(folder: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every recorded figure, ``{"06.win_rate": {"value", "format", "text", ...}}``, from ``folder``
    (default: ``results/`` in the repository); ``NN.learner_minutes`` is notebook NN's learner-mode time from
    ``times.json`` (whole minutes, or "under 1 min")."""
    folder = Path(folder) if folder is not None else repo_root() / "results"
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("[0-9][0-9].json")):
        doc = json.loads(path.read_text())
        for name, fig in doc["figures"].items():
            out[f"{doc['notebook']}.{name}"] = {**fig, "measured": doc["measured"], "mode": doc["mode"]}
    times = folder / "times.json"  # learner-mode wall time of each notebook (course notebooks): NN.learner_minutes
    if times.exists():
        for nb, t in json.loads(times.read_text())["notebooks"].items():
            out[f"{nb}.learner_minutes"] = {"value": t["minutes"], "format": "{:.0f} min",
                                            "text": "under 1 min" if t["minutes"] < 1 else
                                            format_figure(t["minutes"], "{:.0f} min"),
                                            "measured": t["measured"], "mode": "learner"}
    return out


def fill(text: str, results: dict[str, dict[str, Any]]) -> str:
    """``text`` with every marker's content replaced by the recorded figure; an unknown key raises."""
    def sub(m: re.Match) -> str:
        key = m.group("key")
        if key not in results:
            raise KeyError(f"No recorded figure {key!r}: run its notebook in learner mode, or fix the marker.")
        return f"<!--r:{key}-->{results[key]['text']}<!--/r-->"

    return MARKER.sub(sub, text)


def stale_markers(text: str, results: dict[str, dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """``(key, quoted, recorded)`` for every marker of ``text`` whose content is not the recorded
    figure (``recorded`` is None when no notebook recorded that key)."""
    out = []
    for m in MARKER.finditer(text):
        key, quoted = m.group("key"), m.group("text")
        recorded = results.get(key, {}).get("text")
        if quoted != recorded:
            out.append((key, quoted, recorded))
    return out


_FIGURE = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?%|(?<![\w.])\d+\.\d{2,}(?![\w%]|\.\d)")


def unmarked_figures(text: str) -> list[str]:
    """Percentages and decimals with two or more places (``45%``, ``0.78``) in ``text`` outside markers,
    code and math: measured figures typed by hand. A line may opt out with ``<!-- not-a-result -->``
    (a number that is a setting or a definition, not a result)."""
    text = MARKER.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", "", text, flags=re.S)
    text = re.sub(r"\b\d+% (?=(?:\w+ )?(?:CI|confidence|interval|bootstrap))", "", text)  # a confidence level
    return [m.group(0).strip() for line in text.splitlines() if "not-a-result" not in line
            for m in _FIGURE.finditer(line)]


def update_files(paths: list[Path], results: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """Rewrite the markers of ``paths`` from ``results`` (default: the repository's); returns the
    files that changed."""
    results = load_results() if results is None else results
    changed = []
    for path in paths:
        old = path.read_text()
        new = fill(old, results)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed
