"""The instructor pack's generated parts: workshop agendas, the pre-build list, room numbers, the answers.

``docs/instructor.md`` is written by hand except between ``<!-- generated:NAME -->`` markers, which
``course instructor --update`` rewrites from the repository: the agendas from the learner-mode times
that ``make course`` measured (``results/times.json``), the decks' slide counts and the notebooks'
exercises; the answers from the notebooks' solutions. ``tests/test_instructor.py`` fails when a block is
stale, so the pack never quotes a time or an answer the course no longer has.

A session of the agenda is one notebook: its deck presented (``AgendaConfig.minutes_per_slide``), the
notebook worked through (its measured learner-mode time, at least ``least_hands_on`` minutes: reading
takes that long even where the computing takes seconds), then exercises worked in class. Breaks and
lunch fall at the session boundary nearest to their time; with several days the sessions are split, in
the course's order, so that the longest day is as short as it can be.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from course_utils.coursemap import COURSE_MAP
from course_utils.runbook import discover_notebooks, load_times
from course_utils.settings import repo_root

__all__ = ["AgendaConfig", "Exercise", "ONE_DAY", "Session", "TWO_DAYS", "agenda", "agenda_markdown",
           "deck_slides", "exercises", "generated_blocks", "sessions", "stale_blocks", "update_doc"]


@dataclass(frozen=True)
class AgendaConfig:
    """How a workshop is laid out; the sessions' lengths come from the course itself."""

    days: int = 1  # days of the workshop
    start: str = "09:00"  # each day's first session
    end: str = "17:00"  # each day ends by then (an agenda that does not fit raises a ValueError)
    lunch: str = "12:30"  # lunch starts at the session boundary nearest to this
    lunch_minutes: int = 60
    breaks: tuple[str, ...] = ("10:30", "15:00")  # short breaks, at the session boundaries nearest to these
    break_minutes: int = 15
    opening_minutes: int = 15  # day 1: set-up check and the plan; later days: a recap
    closing_minutes: int = 15  # the last day: wrap-up, questions, what to do next
    minutes_per_slide: float = 1.0  # presenting the notebook's deck
    least_hands_on: int = 10  # least time to work through a notebook, even one that computes in seconds
    exercises: int = 1  # exercises worked in class per notebook (the others are homework)
    exercise_minutes: int = 10  # per exercise
    slot: int = 5  # durations are rounded up to this many minutes


ONE_DAY = AgendaConfig(end="17:30", exercises=0)  # eleven notebooks and more: exercises are homework
TWO_DAYS = AgendaConfig(days=2, end="17:45", minutes_per_slide=1.25, least_hands_on=15, exercises=2)  # two in class, the rest homework


@dataclass(frozen=True)
class Session:
    """One notebook in the agenda."""

    number: str  # "05"
    title: str  # the course map's title
    file: str  # notebook file name
    slides: int  # slides in its deck
    run_minutes: float  # learner-mode wall time on the measuring machine
    estimated: bool  # True: no measured time yet, the course map's estimate
    exercises_total: int  # exercises the notebook has
    talk: int  # minutes presenting the deck
    hands_on: int  # minutes working through the notebook
    exercises: int  # exercises worked in class
    exercise_minutes: int  # minutes for them

    @property
    def minutes(self) -> int:
        return self.talk + self.hands_on + self.exercise_minutes


@dataclass(frozen=True)
class Exercise:
    """An exercise of a notebook and its solution."""

    notebook: str  # "05"
    number: int  # 1, 2, ...
    question: str  # Markdown
    answer: str  # Markdown (the solution inside <details>)


def deck_slides(text: str) -> int:
    """The slides of a Marp deck's text: its ``---`` lines after the front matter, plus one."""
    body = text.split("---", 2)[2]  # after the front matter
    return len(re.findall(r"^---\s*$", body, re.M)) + 1


def exercises(notebook: Path) -> list[Exercise]:
    """The exercises of ``notebook`` (a numbered list after its ``## Exercises`` heading) with their
    solutions (``<details><summary>Solution N</summary> ... </details>``)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    if "## Exercises" not in text:
        return []
    part = text.split("## Exercises", 1)[1]
    listing = part.split("<details>", 1)[0]
    questions = {int(m.group(1)): m.group(2).strip() for m in
                 re.finditer(r"^(\d+)\. (.*?)(?=^\d+\. |\Z)", listing, re.M | re.S)}
    answers = {int(m.group(1)): m.group(2).strip() for m in
               re.finditer(r"<details>\s*<summary>\s*Solution (\d+)\s*</summary>(.*?)</details>", part, re.S)}
    number = Path(notebook).name[:2]
    return [Exercise(number, n, re.sub(r"\n\s+", "\n", q), answers.get(n, "")) for n, q in sorted(questions.items())]


def _ceil(minutes: float, slot: int) -> int:
    return int(math.ceil(round(minutes, 6) / slot) * slot)


def sessions(config: AgendaConfig, times: dict[str, dict] | None = None) -> list[Session]:
    """One session per notebook of this checkout, in the course's order; ``times`` default to
    ``results/times.json`` (a notebook without a measured time gets the course map's estimate)."""
    times = load_times() if times is None else times
    maps = {m.number: m for m in COURSE_MAP}
    out = []
    for nb in discover_notebooks():
        number = nb.name[:2]
        entry = times.get(number)
        minutes = float(entry["minutes"]) if entry else float(maps[number].cpu_minutes)
        deck = repo_root() / "slides" / f"{nb.stem}.md"
        slides = deck_slides(deck.read_text()) if deck.exists() else 0
        n_ex = len(exercises(nb))
        k = min(config.exercises, n_ex)
        out.append(Session(number, maps[number].title, nb.name, slides, minutes, entry is None, n_ex,
                           talk=_ceil(slides * config.minutes_per_slide, config.slot),
                           hands_on=max(config.least_hands_on, _ceil(minutes, config.slot)),
                           exercises=k, exercise_minutes=k * config.exercise_minutes))
    return out


def _clock(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _split(loads: list[int], days: int, extra: list[int]) -> list[tuple[int, int]]:
    """Contiguous ranges of sessions per day that make the longest day (sessions + ``extra[day]``) shortest."""
    n = len(loads)
    if days == 1 or n <= 1:
        return [(0, n)]
    best, best_cuts = None, None
    for cuts in itertools.combinations(range(1, n), min(days, n) - 1):
        bounds = [0, *cuts, n]
        longest = max(sum(loads[a:b]) + extra[i] for i, (a, b) in enumerate(zip(bounds, bounds[1:])))
        if best is None or longest < best:
            best, best_cuts = longest, bounds
    return list(zip(best_cuts, best_cuts[1:]))


def agenda(config: AgendaConfig = ONE_DAY, times: dict[str, dict] | None = None) -> list[list[tuple[str, str, Session | None]]]:
    """The workshop day by day: rows ``(start "HH:MM", label, session or None)``; the last row of each day is
    its end. Raises ``ValueError`` when a day runs past ``config.end``."""
    plan = sessions(config, times)
    days = min(config.days, len(plan)) or 1
    extra = [config.opening_minutes + (config.closing_minutes if d == days - 1 else 0) for d in range(days)]
    out = []
    for d, (a, b) in enumerate(_split([s.minutes for s in plan], days, extra)):
        t = _clock(config.start)
        rows: list[tuple[str, str, Session | None]] = [
            (_hhmm(t), "Welcome: set-up check (`course env`), the plan" if d == 0 else "Recap of day "
             f"{d}, questions", None)]
        t += config.opening_minutes
        pauses = sorted([(_clock(x), "Break", config.break_minutes) for x in config.breaks]
                        + [(_clock(config.lunch), "Lunch", config.lunch_minutes)])
        for s in plan[a:b]:
            while pauses and abs(t - pauses[0][0]) <= abs(t + s.minutes - pauses[0][0]):
                _, label, length = pauses.pop(0)
                rows.append((_hhmm(t), label, None))
                t += length
            rows.append((_hhmm(t), s.number, s))
            t += s.minutes
        for when, label, length in pauses:  # a pause whose time came during the last session
            if when <= t:
                rows.append((_hhmm(t), label, None))
                t += length
        if d == days - 1:
            rows.append((_hhmm(t), "Wrap-up: questions, the exercises left as homework, where to go next", None))
            t += config.closing_minutes
        rows.append((_hhmm(t), "End", None))
        if t > _clock(config.end):
            raise ValueError(f"Day {d + 1} of the {config.days}-day agenda ends at {_hhmm(t)}, after {config.end}: "
                             "give it fewer exercises or minutes per slide, or another day (AgendaConfig).")
        out.append(rows)
    return out


def agenda_markdown(config: AgendaConfig = ONE_DAY, times: dict[str, dict] | None = None) -> str:
    """The agenda as Markdown tables, one per day, and how its lengths were computed."""
    parts = []
    days = agenda(config, times)
    for d, rows in enumerate(days, 1):
        lines = ([f"**Day {d}**", ""] if len(days) > 1 else []) + [
            "| time | session | deck | notebook | exercises in class |", "|---|---|---|---|---|"]
        for start, label, s in rows:
            if s is None:
                label = f"*{label}*" if label in ("Break", "Lunch", "End") else label
                lines.append(f"| {start} | {label} | | | |")
                continue
            run = (f"course map's estimate {s.run_minutes:g} min" if s.estimated
                   else f"computes {s.run_minutes:g} min")
            which = "exercise 1" if s.exercises == 1 else f"exercises 1-{s.exercises}"
            ex = f"{s.exercise_minutes} min ({which} of {s.exercises_total})" if s.exercises else "-"
            lines.append(f"| {start} | **{s.number}** {s.title} | {s.talk} min ({s.slides} slides) | "
                         f"{s.hands_on} min ({run}) | {ex} |")
        parts.append("\n".join(lines))
    how = (f"Deck: {config.minutes_per_slide:g} min per slide. Notebook: its measured learner-mode time "
           f"(results/times.json), at least {config.least_hands_on} min. Exercises: up to {config.exercises} per "
           f"notebook, {config.exercise_minutes} min each. Lengths rounded up to {config.slot} min.")
    return "\n\n".join(parts) + f"\n\n{how}"


def _times_source(times: dict[str, dict]) -> str:
    measured = sorted({(e["measured"], e["machine"]) for e in times.values()})
    return "; ".join(f"{m} on {machine}" for m, machine in measured) or "none measured yet"


def _prebuild_markdown() -> str:
    from course_utils.prebuild import PLAN
    from course_utils.results import load_results

    base = load_results().get("02.build_minutes", {}).get("text")
    lines = ["| # | artifact | needed by notebooks |", "|---:|---|---|"]
    lines += [f"| {i} | `{s.name}` | {s.notebooks} |" for i, s in enumerate(PLAN, 1)]
    note = (f"In learner mode the base model is most of the work: {base} on the 2-core reference machine "
            "(results/02.json); the later models take minutes each." if base else "")
    return "\n".join(lines) + (f"\n\n{note}" if note else "")


def _room_markdown(times: dict[str, dict]) -> str:
    peaks = {n: e["peak_mib"] for n, e in times.items() if e.get("peak_mib")}
    total = sum(float(e["minutes"]) for e in times.values())
    lines = [f"- **Time**: every notebook in learner mode computes {total:.0f} min in all with the artifacts "
             f"pre-built (measured {_times_source(times)})."]
    if peaks:
        top = max(peaks, key=peaks.get)
        gib = peaks[top] / 1024
        lines.append(f"- **Memory**: the largest notebook ({top}) peaked at {gib:.1f} GiB of resident memory; with "
                     f"JupyterLab, a browser and the system, plan {max(4, 2 ** math.ceil(math.log2(gib + 2)))} GB "
                     "of RAM per learner (one notebook running at a time).")
    return "\n".join(lines)


def _answers_markdown() -> str:
    maps = {m.number: m for m in COURSE_MAP}
    parts = []
    for nb in discover_notebooks():
        found = exercises(nb)
        if not found:
            continue
        parts.append(f"### {nb.name[:2]} · {maps[nb.name[:2]].title}")
        for ex in found:
            answer = ex.answer or "*(no solution in the notebook)*"
            parts.append(f"**Exercise {ex.number}.** {ex.question}\n\n**Answer.**\n\n{answer}")
    return "\n\n".join(parts)


def generated_blocks(times: dict[str, dict] | None = None) -> dict[str, str]:
    """The text of every generated block of ``docs/instructor.md``, by name."""
    times = load_times() if times is None else times
    return {
        "agenda-one-day": agenda_markdown(ONE_DAY, times),
        "agenda-two-days": agenda_markdown(TWO_DAYS, times),
        "times-source": f"Times measured {_times_source(times)}.",
        "prebuild": _prebuild_markdown(),
        "room": _room_markdown(times),
        "answers": _answers_markdown(),
    }


_BLOCK = re.compile(r"(<!-- generated:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def _fill(text: str, blocks: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in blocks:
            raise ValueError(f"docs/instructor.md has a block {name!r} that nothing generates: one of {', '.join(blocks)}.")
        return f"{m.group(1)}{blocks[name]}\n{m.group(4)}"

    return _BLOCK.sub(sub, text)


def stale_blocks(path: Path | None = None, times: dict[str, dict] | None = None) -> list[str]:
    """The generated blocks of ``path`` (default ``docs/instructor.md``) that differ from what the course
    generates now, and those missing from it."""
    path = path or repo_root() / "docs" / "instructor.md"
    blocks = generated_blocks(times)
    found = {m.group("name"): m.group("body") for m in _BLOCK.finditer(path.read_text())}
    return [name for name in blocks if found.get(name) != blocks[name] + "\n"]


def update_doc(path: Path | None = None, times: dict[str, dict] | None = None) -> bool:
    """Rewrite the generated blocks of ``path`` (default ``docs/instructor.md``); return whether it changed."""
    path = path or repo_root() / "docs" / "instructor.md"
    old = path.read_text()
    new = _fill(old, generated_blocks(times))
    if new != old:
        path.write_text(new)
    return new != old
