"""Draw the decks' diagrams as SVG files: ``slides/img/diagram_NN_name.svg``.

Each diagram is a few lines of data at the end of this file: boxes placed on a grid of columns and rows,
arrows between them, optional groups (a frame around boxes, with a title). One function, ``draw``, lays
the grid out (a column is as wide as its widest box, a row as tall as its tallest), draws it with
matplotlib, and refuses a drawing in which two things overlap or an arrow crosses a box.

    .venv/bin/python slides/diagrams.py              # rewrite every slides/img/diagram_*.svg
    .venv/bin/python slides/diagrams.py --out DIR    # write them to DIR instead
    .venv/bin/python slides/diagrams.py --png        # also a PNG preview next to each SVG

Re-running gives byte-identical files (fixed ``svg.hashsalt``, no date, text drawn as paths with the
DejaVu fonts that ship with matplotlib), so ``tests/test_slides.py`` checks that the committed SVGs are
this script's output. A deck shows a diagram at its natural size, ``![w:WIDTH](img/diagram_....svg)``
with the WIDTH this script prints, so the text of every diagram is the same size on the slides.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

HERE = Path(__file__).resolve().parent
PX_PER_PT = 4 / 3  # a browser shows 1 pt of an SVG as 4/3 px

RC = {
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "svg.fonttype": "path",  # glyphs as paths: the slides look the same whatever fonts a viewer has
    "svg.hashsalt": "llm-course-diagrams",  # fixed ids: re-running writes the same bytes
}

# Sizes in points (1/72 inch). A diagram is shown at 4/3 px per pt: 14 pt labels are ~19 px on a slide.
LABEL, CAPTION, TITLE, CELL = 14.0, 11.0, 12.0, 11.0
PAD_X, PAD_Y, MIN_H = 10.0, 7.0, 28.0  # inside a box
CAPTION_GAP = 3.0  # between a box and its caption
GROUP_PAD = 9.0  # between a group's frame and its boxes
MARGIN = 4.0  # around the whole drawing
INK, MUTED, ARROW = "#1f2328", "#57606a", "#57606a"


class Style(NamedTuple):
    face: str
    edge: str
    text: str = INK
    dashed: bool = False
    bold: bool = False


STYLES = {
    "step": Style("#e8f0fb", "#3d6fb4"),  # a stage, a function, a model
    "data": Style("#f3f4f6", "#8c959f"),  # what goes in
    "focus": Style("#fff1dc", "#d4801f", bold=True),  # this deck's topic
    "later": Style("#ffffff", "#8c959f", text=MUTED, dashed=True),  # another notebook's stage
    "warn": Style("#fdeaea", "#c93c37"),
    # cells of a token strip (three conversations, padding, "more")
    "c1": Style("#dbe9f8", "#3d6fb4"),
    "c2": Style("#dff3e4", "#2f8a4c"),
    "c3": Style("#efe3f7", "#8250df"),
    "pad": Style("#eeeeee", "#b4bac1", text=MUTED),
    "more": Style("#ffffff", "#b4bac1", text=MUTED, dashed=True),
}


# ----------------------------------------------------------------------------- the description


@dataclass(frozen=True)
class Cell:
    """One piece of a token strip: ``units`` cells wide, with an optional caption under it."""

    label: str
    units: float
    style: str
    caption: str = ""


@dataclass(frozen=True)
class Node:
    """A box at grid position ``at`` = (column, row); rows grow downwards. Integer positions size the
    grid; a fractional one sits between grid lines (e.g. row 0.5 is centred between rows 0 and 1)."""

    label: str  # may hold several lines and matplotlib mathtext ($\pi_\theta$)
    at: tuple[float, float]
    caption: str = ""  # small grey text under the box
    style: str = "step"
    span: int = 1  # columns the box stretches over
    mono: bool = False  # code: a monospaced font
    cells: tuple[Cell, ...] = ()  # a token strip instead of one box
    key: str = ""  # how edges name it; default: the label

    @property
    def id(self) -> str:
        return self.key or self.label


@dataclass(frozen=True)
class Group:
    """A frame around some nodes, with a title at its top and an optional caption under it."""

    key: str
    members: tuple[str, ...]
    title: str = ""
    caption: str = ""
    frame: bool = True  # False: only the title, no frame (where height is short)

    @property
    def pad(self) -> float:
        return GROUP_PAD if self.frame else 0.0


@dataclass(frozen=True)
class Edge:
    """An arrow from node (or group) ``src`` to ``dst``.

    ``route`` spells its segments: ``-`` one straight segment, ``hvh`` horizontal-vertical-horizontal
    (a branch), ``vhv``, ``hv``, ``vh``. ``via`` places the middle segment of ``hvh`` (a column) or
    ``vhv`` (a row) on the grid; by default it runs halfway between the two boxes.
    """

    src: str
    dst: str
    route: str = "-"
    via: float | None = None
    label: str = ""
    dashed: bool = False
    head: bool = True


@dataclass(frozen=True)
class Diagram:
    name: str  # the file is diagram_<name>.svg
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...] = ()
    groups: tuple[Group, ...] = ()
    gap_x: float = 30.0  # between columns, in points
    gap_y: float = 12.0  # between rows
    cell_w: float = 30.0  # one unit of a token strip


def flow(*ids: str, **kw) -> tuple[Edge, ...]:
    """Arrows along a chain: flow(a, b, c) = a -> b -> c."""
    return tuple(Edge(a, b, **kw) for a, b in zip(ids, ids[1:]))


# ----------------------------------------------------------------------------- geometry


class Rect(NamedTuple):
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2

    def grow(self, dx: float, dy: float | None = None) -> Rect:
        dy = dx if dy is None else dy
        return Rect(self.x0 - dx, self.y0 - dy, self.x1 + dx, self.y1 + dy)

    def overlaps(self, other: Rect) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def contains(self, x: float, y: float) -> bool:
        return self.x0 < x < self.x1 and self.y0 < y < self.y1

    @staticmethod
    def around(x: float, y: float, w: float, h: float) -> Rect:
        return Rect(x - w / 2, y - h / 2, x + w / 2, y + h / 2)

    @staticmethod
    def union(rects: list[Rect]) -> Rect:
        return Rect(min(r.x0 for r in rects), min(r.y0 for r in rects),
                    max(r.x1 for r in rects), max(r.y1 for r in rects))


def _grid(value: float, centres: dict[int, float]) -> float:
    """Coordinate of a (fractional) grid position: linear between the centres of the nearest integer
    positions, extended past the ends with the pitch of the last step (50 pt where there is one line)."""
    keys = sorted(centres)
    if len(keys) == 1:
        return centres[keys[0]] + (value - keys[0]) * 50.0
    lo = max([k for k in keys[:-1] if k <= value] or [keys[0]])
    hi = keys[keys.index(lo) + 1]
    return centres[lo] + (value - lo) * (centres[hi] - centres[lo]) / (hi - lo)


# ----------------------------------------------------------------------------- layout


class _Measure:
    """Text extents in points, from matplotlib's own layout (mathtext and several lines included)."""

    def __init__(self, fig: Figure):
        self.fig, self.renderer = fig, FigureCanvasAgg(fig).get_renderer()

    def __call__(self, text: str, size: float, mono: bool = False, bold: bool = False) -> tuple[float, float]:
        """Width and height of ``text``."""
        box = self._extent(text, size, mono, bold)
        return (box.width, box.height) if text else (0.0, 0.0)

    def _extent(self, text: str, size: float, mono: bool, bold: bool):
        t = self.fig.text(0, 0, text, va="baseline", **_font(size, mono, bold))
        box = t.get_window_extent(self.renderer)
        t.remove()
        return box

    def baseline(self, text: str, size: float, mono: bool = False, bold: bool = False) -> tuple[float, float]:
        """Where the baseline of ``text`` goes to centre it / to hang it from a top edge. Measured on a
        stand-in with as many lines ("Hg" each), so that every label of a row sits on the same baseline
        whether or not its letters reach below the line (matplotlib's own centring would lift them)."""
        box = self._extent("\n".join(["Hg"] * (text.count("\n") + 1)), size, mono, bold)
        return -(box.y0 + box.y1) / 2, -box.y1

    def text(self, ax, x: float, y: float, text: str, size: float, color: str, mono: bool = False,
             bold: bool = False, top: bool = False, **kw) -> None:
        """Draw ``text`` centred on (x, y), or hanging from y when ``top``."""
        centre, hang = self.baseline(text, size, mono, bold)
        ax.text(x, y + (hang if top else centre), text, ha="center", va="baseline", color=color,
                **_font(size, mono, bold), **kw)


def _font(size: float, mono: bool = False, bold: bool = False) -> dict:
    return {"fontsize": size, "family": "DejaVu Sans Mono" if mono else "DejaVu Sans",
            "fontweight": "bold" if bold else "normal", "linespacing": 1.25, "multialignment": "center"}


@dataclass
class _Placed:
    node: Node
    box: Rect
    caption: Rect | None


@dataclass
class _Layout:
    placed: dict[str, _Placed]  # node id -> its box and caption
    frames: dict[str, Rect]  # group key -> its frame
    titles: dict[str, Rect]  # group key -> its title
    xs: dict[int, float]  # column -> centre
    ys: dict[int, float]  # row -> centre


def _layout(d: Diagram, measure: _Measure) -> _Layout:
    """Where everything goes, in points: a column is as wide as its widest box, a row as tall as its
    tallest, plus room for captions and group titles where something would otherwise be in the way."""
    size: dict[str, tuple[float, float]] = {}
    below: dict[str, float] = {}  # caption height + gap
    for n in d.nodes:
        if n.cells:
            w = sum(c.units for c in n.cells) * d.cell_w
            h = max(MIN_H - 6, measure(n.cells[0].label, CELL)[1] + 2 * 4)
            cap = max(measure(c.caption, CAPTION)[1] for c in n.cells)
        else:
            tw, th = measure(n.label, LABEL, n.mono, STYLES[n.style].bold)
            w, h = tw + 2 * PAD_X, max(MIN_H, th + 2 * PAD_Y)
            cap = measure(n.caption, CAPTION)[1]
        size[n.id], below[n.id] = (w, h), (cap + CAPTION_GAP if cap else 0.0)

    # Extra room above / below a row for the title / caption of a group that starts / ends there, where
    # another box sits above / below the group (else the drawing simply grows).
    node_of = {n.id: n for n in d.nodes}
    above_row: dict[int, float] = {}
    below_row: dict[int, float] = {}
    for g in d.groups:
        cols = [node_of[m].at[0] for m in g.members]
        rows = [node_of[m].at[1] for m in g.members]
        top, bottom = int(min(rows)), int(max(rows))
        others = [n.at[1] for n in d.nodes if n.id not in g.members and min(cols) - 0.5 < n.at[0] < max(cols) + 0.5]
        title = measure(g.title, TITLE, bold=True)[1] + 4 if g.title else 0.0
        cap = measure(g.caption, CAPTION)[1] + CAPTION_GAP if g.caption else 0.0
        if any(r < top for r in others):
            above_row[top] = max(above_row.get(top, 0.0), g.pad + title)
        if any(r > bottom for r in others):
            below_row[bottom] = max(below_row.get(bottom, 0.0), g.pad + cap)

    col_w: dict[int, float] = {}
    row_h: dict[int, float] = {}
    row_below: dict[int, float] = {}  # room for captions, where a box sits under them
    for n in d.nodes:
        c, r = n.at
        if float(c).is_integer() and n.span == 1 and not n.cells:
            col_w[int(c)] = max(col_w.get(int(c), 0.0), size[n.id][0])
        if float(r).is_integer():
            row_h[int(r)] = max(row_h.get(int(r), 0.0), size[n.id][1])
            if any(m.at[1] > r and c - 0.5 < m.at[0] + m.span - 1 and m.at[0] < c + n.span - 0.5 for m in d.nodes):
                row_below[int(r)] = max(row_below.get(int(r), 0.0), below[n.id])
    for n in d.nodes:  # a column holding only strips is as wide as its widest strip
        if n.cells and float(n.at[0]).is_integer() and int(n.at[0]) not in col_w:
            col_w[int(n.at[0])] = size[n.id][0]

    cols = range(min(col_w), max(col_w) + 1) if col_w else range(0)
    xs: dict[int, float] = {}
    left: dict[int, float] = {}
    x = 0.0
    for c in cols:
        left[c], xs[c] = x, x + col_w.get(c, 0.0) / 2
        x += col_w.get(c, 0.0) + d.gap_x
    rows = range(min(row_h), max(row_h) + 1) if row_h else range(0)
    ys: dict[int, float] = {}
    y = 0.0
    for r in rows:
        y -= above_row.get(r, 0.0) + row_h.get(r, 0.0) / 2
        ys[r] = y
        y -= row_h.get(r, 0.0) / 2 + max(row_below.get(r, 0.0), below_row.get(r, 0.0)) + d.gap_y

    placed: dict[str, _Placed] = {}
    for n in d.nodes:
        c, r = n.at
        w, h = size[n.id]
        if n.span > 1:  # stretched over its columns
            x0, x1 = left[int(c)], left[int(c) + n.span - 1] + col_w.get(int(c) + n.span - 1, 0.0)
            cx, w = (x0 + x1) / 2, max(w, x1 - x0)
        else:
            cx = _grid(c, xs)
            if float(c).is_integer() and not n.cells:
                w = col_w[int(c)]
        cy = _grid(r, ys)
        if float(r).is_integer() and not n.cells:
            h = row_h[int(r)]
        box = Rect.around(cx, cy, w, h)
        cap = Rect(box.x0, box.y0 - below[n.id], box.x1, box.y0 - CAPTION_GAP) if below[n.id] else None
        if cap and not n.cells:  # a caption may be wider than its box
            cw = measure(n.caption, CAPTION)[0]
            cap = Rect(min(cap.x0, cx - cw / 2), cap.y0, max(cap.x1, cx + cw / 2), cap.y1)
        placed[n.id] = _Placed(n, box, cap)

    frames: dict[str, Rect] = {}
    titles: dict[str, Rect] = {}
    for g in d.groups:
        inner = Rect.union([r for m in g.members for r in (placed[m].box, placed[m].caption) if r])
        tw, th = measure(g.title, TITLE, bold=True) if g.title else (0.0, 0.0)
        frame = inner.grow(g.pad)
        if g.title:  # the title sits 4 pt above the boxes' padding, and 3 pt under the frame's top
            titles[g.key] = Rect.around(frame.cx, frame.y1 + 4 + th / 2, tw, th)
            frame = Rect(frame.x0, frame.y0, frame.x1, frame.y1 + 4 + th + (3 if g.frame else 0))
        frames[g.key] = frame
    return _Layout(placed, frames, titles, xs, ys)


def _route(e: Edge, a: Rect, b: Rect, xs: dict[int, float], ys: dict[int, float]) -> list[tuple[float, float]]:
    """The corners of an arrow from box ``a`` to box ``b``."""

    def h_side(r: Rect, toward: float) -> float:  # the left or right side of r that faces x = toward
        return r.x1 if toward > r.cx else r.x0

    def v_side(r: Rect, toward: float) -> float:
        return r.y1 if toward > r.cy else r.y0

    if e.route == "-":
        if a.y0 < b.y1 and b.y0 < a.y1:  # side by side: a horizontal arrow, level with the smaller box
            small, big = sorted((a, b), key=lambda r: r.y1 - r.y0)
            y = small.cy if big.y0 < small.cy < big.y1 else (max(a.y0, b.y0) + min(a.y1, b.y1)) / 2
            return [(h_side(a, b.cx), y), (h_side(b, a.cx), y)]
        if a.x0 < b.x1 and b.x0 < a.x1:  # one above the other: a vertical arrow
            small, big = sorted((a, b), key=lambda r: r.x1 - r.x0)
            x = small.cx if big.x0 < small.cx < big.x1 else (max(a.x0, b.x0) + min(a.x1, b.x1)) / 2
            return [(x, v_side(a, b.cy)), (x, v_side(b, a.cy))]
        return [(h_side(a, b.cx), a.cy), (h_side(b, a.cx), b.cy)]
    if e.route == "hvh":
        xa, xb = h_side(a, b.cx), h_side(b, a.cx)
        xm = _grid(e.via, xs) if e.via is not None else (xa + xb) / 2
        return [(xa, a.cy), (xm, a.cy), (xm, b.cy), (xb, b.cy)]
    if e.route == "vhv":
        ym = _grid(e.via, ys) if e.via is not None else (v_side(a, b.cy) + v_side(b, a.cy)) / 2
        return [(a.cx, v_side(a, ym)), (a.cx, ym), (b.cx, ym), (b.cx, v_side(b, ym))]
    if e.route == "hv":
        return [(h_side(a, b.cx), a.cy), (b.cx, a.cy), (b.cx, v_side(b, a.cy))]
    if e.route == "vh":
        return [(a.cx, v_side(a, b.cy)), (a.cx, b.cy), (h_side(b, a.cx), b.cy)]
    raise ValueError(f"unknown route {e.route!r} (want -, hvh, vhv, hv or vh)")


def _label_box(points: list[tuple[float, float]], w: float, h: float) -> Rect:
    """Where an edge's label goes: above the middle of its longest horizontal segment, else right of
    the middle of its longest segment."""
    segs = list(zip(points, points[1:]))
    flat = [s for s in segs if s[0][1] == s[1][1]]
    (x0, y0), (x1, y1) = max(flat or segs, key=lambda s: abs(s[1][0] - s[0][0]) + abs(s[1][1] - s[0][1]))
    if y0 == y1:
        return Rect.around((x0 + x1) / 2, y0 + 3 + h / 2, w, h)
    return Rect.around((x0 + x1) / 2 + 4 + w / 2, (y0 + y1) / 2, w, h)


def _check(d: Diagram, things: dict[str, Rect], owner: dict[str, set[str]],
           lines: list[tuple[Edge, list[tuple[float, float]]]]) -> None:
    """Refuse a drawing where two things overlap or an arrow runs through a box it does not join."""
    names = sorted(things)
    for i, p in enumerate(names):
        for q in names[i + 1:]:
            if q in owner[p] or p in owner[q]:
                continue
            if things[p].grow(1).overlaps(things[q]):
                raise ValueError(f"{d.name}: {p!r} overlaps {q!r}; move them apart")
    for e, pts in lines:
        ends = {e.src, e.dst}
        for name, rect in things.items():
            if ends & ({name} | owner[name]):
                continue
            for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                steps = max(2, int(abs(x1 - x0) + abs(y1 - y0)))
                if any(rect.grow(-1).contains(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
                       for k in range(steps + 1)):
                    raise ValueError(f"{d.name}: the arrow {e.src!r} -> {e.dst!r} crosses {name!r}")


# ----------------------------------------------------------------------------- drawing


def draw(d: Diagram) -> Figure:
    """Lay out and draw one diagram; the figure is exactly as large as the drawing."""
    fig = Figure(dpi=72)  # 1 px = 1 pt while measuring
    measure = _Measure(fig)
    lay = _layout(d, measure)
    placed, frames, titles = lay.placed, lay.frames, lay.titles
    rect_of = {k: p.box for k, p in placed.items()} | frames
    for e in d.edges:
        if e.src not in rect_of or e.dst not in rect_of:
            raise KeyError(f"{d.name}: an edge names {(e.src, e.dst)}; known: {sorted(rect_of)}")
    lines = [(e, _route(e, rect_of[e.src], rect_of[e.dst], lay.xs, lay.ys)) for e in d.edges]
    labels = {f"label of {e.src} -> {e.dst}": (e, _label_box(pts, *measure(e.label, CAPTION)))
              for e, pts in lines if e.label}

    # what must not overlap: boxes, captions, group frames and titles, edge labels
    things: dict[str, Rect] = {k: p.box for k, p in placed.items()}
    owner: dict[str, set[str]] = {k: set() for k in things}
    for k, p in placed.items():
        if p.caption:
            things[f"caption of {k}"], owner[f"caption of {k}"] = p.caption, {k}
            owner[k] = owner[k] | {f"caption of {k}"}
    for g in d.groups:
        inside = set(g.members) | {f"caption of {m}" for m in g.members if placed[m].caption}
        things[g.key], owner[g.key] = frames[g.key], inside
        for m in inside:
            owner[m] = owner[m] | {g.key}
        if g.key in titles:
            things[f"title of {g.key}"], owner[f"title of {g.key}"] = titles[g.key], {g.key}
    for k, (_, r) in labels.items():
        things[k], owner[k] = r, set()
    captions = {g.key: Rect(frames[g.key].x0, frames[g.key].y0 - CAPTION_GAP - measure(g.caption, CAPTION)[1],
                            frames[g.key].x1, frames[g.key].y0 - CAPTION_GAP) for g in d.groups if g.caption}
    for k, r in captions.items():
        things[f"caption of {k}"], owner[f"caption of {k}"] = r, {k}
    _check(d, things, owner, lines)

    # the figure is exactly the drawing plus a margin, 1 data unit = 1 pt
    corners = [Rect(x, y, x, y) for _, pts in lines for x, y in pts]
    extent = Rect.union(list(things.values()) + corners).grow(MARGIN)
    fig.set_size_inches((extent.x1 - extent.x0) / 72, (extent.y1 - extent.y0) / 72)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(extent.x0, extent.x1)
    ax.set_ylim(extent.y0, extent.y1)
    ax.set_axis_off()

    for g in d.groups:  # frames first, under everything
        f = frames[g.key]
        if g.frame:
            ax.add_patch(FancyBboxPatch((f.x0, f.y0), f.x1 - f.x0, f.y1 - f.y0, boxstyle="round,pad=0,rounding_size=8",
                                        facecolor="#fafbfc", edgecolor="#8c959f", linewidth=1.0,
                                        linestyle=(0, (4, 3))))
        if g.title:
            t = titles[g.key]
            measure.text(ax, t.cx, t.cy, g.title, TITLE, INK, bold=True)
        if g.caption:
            c = captions[g.key]
            measure.text(ax, c.cx, c.y1, g.caption, CAPTION, MUTED, top=True)
    for e, pts in lines:
        ax.add_patch(FancyArrowPatch(
            path=MplPath(pts), arrowstyle="-|>" if e.head else "-", mutation_scale=12, color=ARROW,
            linewidth=1.4, linestyle=(0, (4, 3)) if e.dashed else "-", joinstyle="miter", capstyle="butt",
            shrinkA=0, shrinkB=0))
    for e, r in labels.values():
        measure.text(ax, r.cx, r.cy, e.label, CAPTION, MUTED,
                     bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"})
    for p in placed.values():
        if p.node.cells:
            _draw_strip(ax, measure, p, d.cell_w)
        else:
            _draw_box(ax, measure, p.box, p.node.label, STYLES[p.node.style], LABEL, p.node.mono)
            if p.caption:
                measure.text(ax, p.box.cx, p.caption.y1, p.node.caption, CAPTION, MUTED, top=True)
    return fig


def _draw_box(ax, measure: _Measure, r: Rect, label: str, s: Style, size: float, mono: bool = False,
              rounding: float = 6) -> None:
    ax.add_patch(FancyBboxPatch((r.x0, r.y0), r.x1 - r.x0, r.y1 - r.y0,
                                boxstyle=f"round,pad=0,rounding_size={rounding}", facecolor=s.face,
                                edgecolor=s.edge, linewidth=1.3, linestyle=(0, (4, 2)) if s.dashed else "-"))
    measure.text(ax, r.cx, r.cy, label, size, s.text, mono, s.bold)


def _draw_strip(ax, measure: _Measure, p: _Placed, cell_w: float) -> None:
    """A row of tokens: its cells side by side, each with its own caption."""
    x = p.box.x0
    for c in p.node.cells:
        r = Rect(x + 1, p.box.y0, x + c.units * cell_w - 1, p.box.y1)
        _draw_box(ax, measure, r, c.label, STYLES[c.style], CELL, rounding=3)
        if c.caption:
            measure.text(ax, r.cx, p.box.y0 - CAPTION_GAP, c.caption, CAPTION, MUTED, top=True)
        x += c.units * cell_w


def write(d: Diagram, out: Path, png: bool = False) -> tuple[Path, int, int]:
    """Write ``out/diagram_<name>.svg`` (and a PNG preview); returns the path and the width and height in
    px at which a deck shows it at natural size."""
    with matplotlib.rc_context(RC):
        fig = draw(d)
        path = out / f"diagram_{d.name}.svg"
        fig.savefig(path, format="svg", metadata={"Date": None})
        if png:
            fig.savefig(path.with_suffix(".png"), format="png", dpi=144)
    return path, round(fig.get_figwidth() * 72 * PX_PER_PT), round(fig.get_figheight() * 72 * PX_PER_PT)


# ----------------------------------------------------------------------------- the diagrams

PIPELINE_00 = Diagram(  # 00: one model travels through the course
    "00_pipeline",
    nodes=(
        Node("world data", (0, 0), style="data"),
        Node("tokenizer", (1, 0), "01"),
        Node("base model", (2, 0), "02, 03"),
        Node("SFT model", (3, 0), "04"),
        Node("LoRA adapters", (4, 0), "05"),
        Node("DPO model", (4, 1), "06, reward model"),
        Node("world docs", (0, 2), style="data"),
        Node("clean chunks", (1, 2), "07"),
        Node("vector index", (2, 2), "08"),
        Node("RAG chain", (3, 2), "08"),
        Node("legal chain", (4, 2), "09"),
        Node("agents", (5, 2), "12"),
        Node("everything", (0, 3), style="data"),
        Node("evaluation report", (1, 3), "10"),
        Node("security suite", (2, 3), "11"),
        Node("serving", (3, 3), "13"),
    ),
    edges=(
        *flow("world data", "tokenizer", "base model", "SFT model", "LoRA adapters"),
        Edge("SFT model", "DPO model", route="hvh"),
        *flow("world docs", "clean chunks", "vector index", "RAG chain", "legal chain", "agents"),
        *flow("everything", "evaluation report", "security suite", "serving"),
    ),
    gap_y=16,
)

MODEL_02 = Diagram(  # 02: the model on one slide
    "02_model",
    nodes=(
        Node("ids", (0, 0.5), "(B, T)", style="data"),
        Node("embedding", (1, 0.5), "(B, T, C)"),
        Node("x = x + Attention(RMSNorm(x))", (2, 0), mono=True, key="attention"),
        Node("x = x + SwiGLU(RMSNorm(x))", (2, 1), mono=True, key="mlp"),
        Node("RMSNorm", (3, 0.5)),
        Node("head", (4, 0.5), "(B, T, V)"),
    ),
    groups=(Group("block", ("attention", "mlp"), title=r"n_layer $\times$ Block", caption="pre-norm residual"),),
    edges=(
        *flow("ids", "embedding", "block", "RMSNorm", "head"),
        Edge("attention", "mlp"),
        Edge("embedding", "head", route="vhv", via=-1.35, label="head tied to the embedding", dashed=True, head=False),
    ),
    gap_y=14,
)

PIPELINE_04 = Diagram(  # 04: where SFT sits in the pipeline
    "04_pipeline",
    nodes=(
        Node("world data", (0, 0), style="data"),
        Node("tokenizer", (1, 0), "01"),
        Node("base model", (2, 0), "02"),
        Node("SFT model", (3, 0), "04", style="focus"),
        Node("LoRA / DPO", (4, 0), "05 / 06"),
        Node("RAG", (5, 0), "08"),
        Node("evaluation", (6, 0), "10"),
    ),
    edges=flow("world data", "tokenizer", "base model", "SFT model", "LoRA / DPO", "RAG", "evaluation"),
    gap_x=26,
)


def _pads(n: int) -> tuple[Cell, ...]:
    return tuple(Cell("pad", 1, "pad") for _ in range(n))


PADDING_04 = Diagram(  # 04: the same three conversations, padded to a batch or packed into one row
    "04_padding_free",
    nodes=(
        Node("", (0, 0), key="row 1", cells=(Cell("conv 1", 4, "c1"), *_pads(4))),
        Node("", (0, 1), key="row 2", cells=(Cell("conv 2", 7, "c2"), *_pads(1))),
        Node("", (0, 2), key="row 3", cells=(Cell("conv 3", 3, "c3"), *_pads(5))),
        Node("", (1, 1), key="packed", cells=(
            Cell("conv 1", 4, "c1", "positions 0 1 2 …"), Cell("conv 2", 7, "c2", "0 1 2 …"),
            Cell("conv 3", 3, "c3", "0 1 …"), Cell("…", 1, "more"))),
    ),
    groups=(  # titles only: the slide has little height to spare
        Group("padded", ("row 1", "row 2", "row 3"), title="padded", frame=False),
        Group("padding-free", ("packed",), title="padding-free", frame=False),
    ),
    edges=(Edge("padded", "padding-free"),),
    gap_x=46, gap_y=4, cell_w=30,
)

STAGES_06 = Diagram(  # 06: where preference learning sits
    "06_stages",
    nodes=(
        Node("base model", (0, 1), "02"),
        Node("SFT model", (1, 1), "04"),
        Node("reward model", (2, 0), '06 · artifact "reward-model"', style="focus"),
        Node("DPO model", (2, 1), '06 · artifact "dpo-model":\nmerged + adapter/', style="focus"),
        Node("GRPO, run small", (2, 2), "06 · in the notebook", style="focus"),
        Node("evaluation report", (3, 1), "10"),
    ),
    edges=(
        Edge("base model", "SFT model"),
        *(Edge("SFT model", x, route="hvh") for x in ("reward model", "DPO model", "GRPO, run small")),
        *(Edge(x, "evaluation report", route="hvh") for x in ("reward model", "DPO model")),
    ),
    gap_x=40, gap_y=10,
)

RL_LOOP_06 = Diagram(  # 06: PPO and GRPO learn from the policy's own samples
    "06_rl_loop",
    nodes=(
        Node("prompts", (0, 0), style="data"),
        Node(r"policy $\pi_\theta$", (1, 0), key="policy"),
        Node("G sampled\nanswers", (2, 0), key="answers"),
        Node("reward\n(model or rule)", (3, 0), key="reward"),
        Node("advantage\n" r"PPO: $r - V(s)$ (value model)" "\n"
             r"GRPO: $(r - \mathrm{mean}_{group})\ /\ \mathrm{std}_{group}$", (4, 0), key="advantage"),
        Node(r"ratio $\pi_\theta / \pi_{old}$", (1, 1), key="ratio"),
        Node("clipped objective\n"
             r"$\min(\rho A,\ \mathrm{clip}(\rho, 1 \pm \epsilon) A) - \beta\, \mathrm{KL}(\pi_\theta \Vert \pi_{ref})$",
             (2, 1), span=3, key="objective"),
        Node("step", (5, 1)),
    ),
    edges=(
        *flow("prompts", "policy", "answers", "reward", "advantage"),
        Edge("policy", "ratio"),
        Edge("advantage", "objective"),
        *flow("ratio", "objective", "step"),
    ),
    gap_x=24, gap_y=26,
)

DATA_07 = Diagram(  # 07: the preparation pipeline in front of the index
    "07_data_pipeline",
    nodes=(
        Node("raw files", (0, 0), "HTML / MD / TXT", style="data"),
        Node("aggregate", (1, 0), "read, name\nbad files"),
        Node("cleanse", (2, 0), "text only\nNFKC, whitespace"),
        Node("deduplicate", (3, 0), "exact + near\nMinHash / LSH"),
        Node("chunk", (4, 0), "passages\n+ metadata"),
        Node("embed", (5, 0), "notebook 08", style="later"),
        Node("index", (6, 0), "notebook 08", style="later"),
    ),
    edges=flow("raw files", "aggregate", "cleanse", "deduplicate", "chunk", "embed", "index"),
    gap_x=26,
)

RAG_08 = Diagram(  # 08: retrieval-augmented generation
    "08_rag_flow",
    nodes=(
        Node("question", (0, 0.5), style="data"),
        Node("FAISS (dense)", (1, 0), key="faiss"),
        Node("BM25 (words)", (1, 1), key="bm25"),
        Node("top-k passages", (2, 0.5)),
        Node("prompt", (3, 0.5), "“Read the passage and answer the question.\nPassage: …  Question: …”"),
        Node("model", (4, 0.5)),
        Node("answer + cited ids", (5, 0.5), style="focus"),
    ),
    groups=(Group("retriever", ("faiss", "bm25"), title="retriever"),),
    edges=(
        *flow("question", "retriever", "top-k passages", "prompt", "model", "answer + cited ids"),
        Edge("question", "prompt", route="vhv", via=-1.5, dashed=True),
    ),
    gap_x=30, gap_y=6,
)

CHAIN_09 = Diagram(  # 09: the legal chain
    "09_chain",
    nodes=(
        Node("question", (0, 1), style="data"),
        Node("retrieve articles", (1, 1), "kind = article"),
        Node("retrieve precedents", (2, 1), "applying those articles"),
        Node("context", (3, 1), "fits 256 tokens"),
        Node("draft 1", (4, 0), "prompt 1", key="d1"),
        Node("draft 2", (4, 1), "prompt 2", key="d2"),
        Node("draft 3", (4, 2), "prompt 3", key="d3"),
        Node("reward model", (5, 0), key="rm"),
        Node("grounding", (5, 1), "names in passages?", key="gr"),
        Node("judge", (5, 2), "DPO model", key="jd"),
        Node("select", (6, 1)),
        Node("answer + citations", (7, 1), style="focus"),
    ),
    groups=(Group("drafts", ("d1", "d2", "d3"), title="in parallel"),
            Group("scores", ("rm", "gr", "jd"), title="in parallel")),
    edges=(*flow("question", "retrieve articles", "retrieve precedents", "context", "drafts", "scores", "select",
                 "answer + citations"),),
    gap_x=34, gap_y=6,
)

DEFENCE_11 = Diagram(  # 11: where each defence sits in the assistant, and where the attacks come in
    "11_defences",
    nodes=(
        Node("request", (0, 0), style="data"),
        Node("injection\nclassifier", (1, 0), "blocks what looks\nlike an attack", style="focus", key="clf"),
        Node("retrieve from\nthe index", (2, 0), key="retrieve"),
        Node("sanitise\npassages", (3, 0), "orders to a\nmodel removed", style="focus", key="clean"),
        Node("prompt", (4, 0), "escaped markers,\nfenced passages", style="focus"),
        Node("assistant", (5, 0), "trained: system >\nuser > documents", style="focus"),
        Node("output\nfilter", (6, 0), "secret withheld", style="focus", key="filter"),
        Node("reply", (7, 0), style="data"),
        Node("attacker's message", (0, 1), "injection · jailbreak ·\nforged chat markers", style="warn", key="a1"),
        Node("planted page", (2, 1), "indirect injection", style="warn", key="a2"),
    ),
    edges=(*flow("request", "clf", "retrieve", "clean", "prompt", "assistant", "filter", "reply"),
           Edge("a1", "request"), Edge("a2", "retrieve")),
    gap_x=22, gap_y=14,
)

EVAL_10 = Diagram(  # 10: one harness for every model and chain
    "10_eval_flow",
    nodes=(
        Node("questions", (0, 0), "load_eval, load_sft", style="data"),
        Node("evaluate_model(spec)", (1, 0), "base | sft | lora |\ndpo | rag | folder", mono=True),
        Node("per-example table", (2, 0), "reply, em, f1, contains, rouge,\nformat, grounded, …"),
        Node("summary + bootstrap CI", (3, 0), "mean [low, high]"),
        Node("report", (4, 0), "table + plot", style="focus"),
        Node("chains", (0, 1), style="data"),
        Node("evaluate_chain(chain)", (1, 1), mono=True),
    ),
    edges=(
        *flow("questions", "evaluate_model(spec)", "per-example table", "summary + bootstrap CI", "report"),
        Edge("chains", "evaluate_chain(chain)"),
        Edge("evaluate_chain(chain)", "per-example table", route="hvh"),
    ),
    gap_x=30, gap_y=4,
)

JUDGE_10 = Diagram(  # 10: a pairwise judge asked twice, the answers swapped
    "10_judge_swap",
    nodes=(
        Node("(a, b)", (0, 0), style="data", key="ab"),
        Node("judge", (1, 0), key="judge 1"),
        Node("“A”", (2, 0), key="A 1"),
        Node("a wins", (3, 0)),
        Node("(b, a)", (0, 1), style="data", key="ba"),
        Node("judge", (1, 1), key="judge 2"),
        Node("“A”", (2, 1), key="A 2"),
        Node("b wins", (3, 1)),
        Node("✗ inconsistent → counted as a tie", (4, 0.5), "consistent: the same winner both ways",
             style="warn", key="verdict"),
    ),
    edges=(
        *flow("ab", "judge 1", "A 1", "a wins"),
        *flow("ba", "judge 2", "A 2", "b wins"),
        Edge("a wins", "verdict", route="hvh"),
        Edge("b wins", "verdict", route="hvh"),
    ),
    gap_x=26, gap_y=8,
)

SERVE_13 = Diagram(  # 13: the chat service
    "13_service",
    nodes=(
        Node("clients", (0, 0), "openai · LangChain ·\nchat page · curl", style="data"),
        Node("FastAPI + uvicorn\n/v1/chat/completions", (1, 0), key="FastAPI + uvicorn"),
        Node("request queue", (2, 0), "chat template → token ids"),
        Node("BatchEngine", (3, 0), style="focus"),
        Node("feedback store", (1, 1), "/feedback → SQLite (notebook 10)", style="data"),
        Node("KV cache", (3, 1), "a row per sequence; sequences\njoin and leave after every step", style="data"),
    ),
    edges=(
        *flow("clients", "FastAPI + uvicorn", "request queue", "BatchEngine"),
        Edge("FastAPI + uvicorn", "feedback store"),
        Edge("BatchEngine", "KV cache"),
    ),
    gap_x=30, gap_y=18,
)

SPEC_13 = Diagram(  # 13: one round of speculative decoding
    "13_speculative",
    nodes=(
        Node("text so far", (0, 0), style="data"),
        Node("draft model", (1, 0), "proposes k tokens,\none at a time (cheap)"),
        Node("target model", (2, 0), "scores text + k tokens\nin one pass"),
        Node("keep the agreeing prefix\n+ the target's next token", (3, 0), "1 to k + 1 new tokens", style="focus",
             key="keep"),
    ),
    edges=(
        *flow("text so far", "draft model", "target model", "keep"),
        Edge("keep", "text so far", route="vhv", via=1.2, dashed=True, label="next round"),
    ),
    gap_x=30, gap_y=8,
)

REACT_12 = Diagram(  # 12: the step-wise ReAct loop of the course model
    "12_react",
    nodes=(
        Node("question", (0, 0), style="data"),
        Node("step prompt:\nquestion, notes,\nlatest observation", (1, 0), key="prompt"),
        Node("agent model", (2, 0), "writes Thought, then\nAction or Answer", style="focus", key="model"),
        Node("parse the step\n(unreadable, repeated:\nan error instead)", (3, 0), key="parse"),
        Node("run_tool\n(schema, time limit;\nno files or shell)", (4, 0), style="focus", key="run"),
        Node("answer", (3, 1), style="data"),
        Node("observation: a passage,\na number or an error", (4, 1), style="data", key="obs"),
    ),
    edges=(*flow("question", "prompt", "model", "parse", "run"), Edge("run", "obs"),
           Edge("obs", "prompt", route="vhv", via=1.8, label="next step"), Edge("parse", "answer")),
    gap_x=26, gap_y=18,
)

TEAM_12 = Diagram(  # 12: the multi-agent hand-off
    "12_team",
    nodes=(
        Node("question", (0, 0), style="data"),
        Node("planner", (1, 0), "Plan: one per line", style="focus"),
        Node("researcher:\nthe ReAct agent, one\nsub-question at a time", (2, 0), style="focus", key="researcher"),
        Node("writer", (3, 0), "the notes, no tools:\ncites the ids", style="focus"),
        Node("answer", (4, 0), style="data"),
        Node("tools", (2, 1), "lookup · calculator ·\ndates · legal code", style="data"),
    ),
    edges=(*flow("question", "planner", "researcher", "writer", "answer"), Edge("researcher", "tools")),
    gap_x=30, gap_y=14,
)

DIAGRAMS: tuple[Diagram, ...] = (PIPELINE_00, MODEL_02, PIPELINE_04, PADDING_04, STAGES_06, RL_LOOP_06, DATA_07,
                                 RAG_08, CHAIN_09, DEFENCE_11, EVAL_10, JUDGE_10, REACT_12, TEAM_12, SERVE_13,
                                 SPEC_13)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "img", help="folder for the SVGs (default: slides/img)")
    parser.add_argument("--png", action="store_true", help="also write a PNG preview of each (not committed)")
    parser.add_argument("names", nargs="*", help="only these diagrams (e.g. 08_rag_flow); default: all")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {d.name for d in DIAGRAMS}
    if unknown:
        parser.error(f"no diagram {sorted(unknown)}; there are {[d.name for d in DIAGRAMS]}")
    args.out.mkdir(parents=True, exist_ok=True)
    for d in DIAGRAMS:
        if not args.names or d.name in args.names:
            path, width, height = write(d, args.out, args.png)
            print(f"{path}  natural size w:{width} ({height} px high)")


if __name__ == "__main__":
    main()
