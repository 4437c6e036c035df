"""Human feedback: rate answers in the notebook, keep the ratings, turn them into training data.

Taught in notebook 10 (section "Human feedback"). :class:`FeedbackStore` keeps ratings in a
SQLite file (one row per rating: when, who rated, model, prompt, answer, thumbs up or down, an
optional correction); :class:`FeedbackPanel` is the ipywidgets panel that writes them. The
ratings feed back two ways: :meth:`FeedbackStore.summary` (approval per model, with a bootstrap
CI, next to the automatic metrics of the report) and :meth:`FeedbackStore.preference_pairs`
(preference pairs in :func:`course_utils.data.load_preferences`' format, for notebook 06's
reward model and DPO). Both use the ratings of people (``rater="human"``) unless asked for
another rater (a script standing in for a person, an LLM judge) or for all.

The default file lives in the artifact cache (``<cache>/feedback/ratings.sqlite``), so ratings
survive a restart; pass a path to keep them elsewhere. The file carries a schema version
(SQLite's ``user_version``); a file of an older version is migrated when opened.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from course_utils.settings import Settings, get_settings

__all__ = ["SCHEMA_VERSION", "FeedbackPanel", "FeedbackStore", "default_feedback_path"]

#: Version of the ratings table; 2 added the ``rater`` column.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created     TEXT NOT NULL,     -- ISO time of the rating
    model       TEXT NOT NULL,     -- which model answered ("sft", "dpo", a folder...)
    prompt      TEXT NOT NULL,     -- what the user asked
    answer      TEXT NOT NULL,     -- what the model replied
    rating      INTEGER NOT NULL,  -- +1 thumbs up, -1 thumbs down
    correction  TEXT,              -- the answer the rater would have wanted (optional)
    question_id TEXT,              -- evaluation-set id, when the prompt came from it
    rater       TEXT NOT NULL DEFAULT 'human'  -- who rated: "human", or a script / judge's name
)"""


def default_feedback_path(settings: Settings | None = None) -> Path:
    """Where ratings are kept unless you say otherwise: the artifact cache's ``feedback/ratings.sqlite``."""
    return (settings or get_settings()).cache_dir / "feedback" / "ratings.sqlite"


class FeedbackStore:
    """Ratings in a SQLite file (created if missing; default :func:`default_feedback_path`).
    Safe to open from several notebooks: every call opens, commits and closes its connection."""

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None):
        self.path = Path(path).expanduser() if path is not None else default_feedback_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            version = int(con.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path} holds ratings of schema version {version}; this course_utils "
                                 f"reads up to {SCHEMA_VERSION}: update the course.")
            con.execute(_SCHEMA)
            columns = {row[1] for row in con.execute("PRAGMA table_info(ratings)")}
            if "rater" not in columns:  # version 1: every rating was a person's
                con.execute("ALTER TABLE ratings ADD COLUMN rater TEXT NOT NULL DEFAULT 'human'")
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10)
        try:
            with con:  # commits, or rolls back on an error
                yield con
        finally:
            con.close()

    def add(self, model: str, prompt: str, answer: str, rating: int | bool, correction: str | None = None,
            question_id: str | None = None, rater: str = "human") -> int:
        """Store one rating (``rating``: +1/True thumbs up, -1/False thumbs down) by ``rater``; its row id."""
        if isinstance(rating, bool):
            rating = 1 if rating else -1
        if rating not in (1, -1):
            raise ValueError(f"A rating is +1 (thumbs up) or -1 (thumbs down), got {rating!r}.")
        if not str(rater).strip():
            raise ValueError("Say who rated: rater='human', or the name of the script or judge.")
        correction = (correction or "").strip() or None
        with self._connect() as con:
            cur = con.execute(
                "INSERT INTO ratings (created, model, prompt, answer, rating, correction, question_id, rater) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%S"), str(model), prompt, answer, int(rating), correction,
                 question_id, str(rater)))
            return int(cur.lastrowid)

    def ratings(self, rater: str | None = None):
        """The ratings as a pandas DataFrame (oldest first): by ``rater``, or all (None)."""
        import pandas as pd

        with self._connect() as con:
            if rater is None:
                return pd.read_sql_query("SELECT * FROM ratings ORDER BY id", con)
            return pd.read_sql_query("SELECT * FROM ratings WHERE rater = ? ORDER BY id", con, params=(rater,))

    def __len__(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM ratings").fetchone()[0])

    def summary(self, n_boot: int = 1000, seed: int = 0, rater: str | None = "human"):
        """Per model: ``n``, ``up``, ``down``, ``corrections`` and ``approval`` (share of thumbs
        up) with its bootstrap interval ``approval_low``/``approval_high``: the human column of
        the evaluation report. ``rater``: whose ratings count (default people's; None: all)."""
        import pandas as pd

        from course_utils.scores import bootstrap_ci

        df = self.ratings(rater)
        rows = []
        for model, t in df.groupby("model", sort=True):
            est, lo, hi = bootstrap_ci((t["rating"] > 0).astype(float), n_boot=n_boot, seed=seed)
            rows.append({"model": model, "n": len(t), "up": int((t["rating"] > 0).sum()),
                         "down": int((t["rating"] < 0).sum()), "corrections": int(t["correction"].notna().sum()),
                         "approval": est, "approval_low": lo, "approval_high": hi})
        return pd.DataFrame(rows, columns=["model", "n", "up", "down", "corrections", "approval",
                                           "approval_low", "approval_high"])

    def preference_pairs(self, rater: str | None = "human") -> list[dict[str, Any]]:
        """Preference pairs in :func:`course_utils.data.load_preferences`' format (``id``,
        ``flaw``, ``prompt`` as a user message, ``chosen``/``rejected`` as assistant messages),
        from ``rater``'s ratings (default people's; None: all):

        - a thumbs-down answer with a correction: chosen = the correction, rejected = the answer
          (``flaw`` = ``"human_correction"``);
        - for the same prompt, each thumbs-up answer against each thumbs-down answer
          (``flaw`` = ``"human_rating"``), skipping identical texts.
        """
        df = self.ratings(rater)
        pairs: list[dict[str, Any]] = []

        def pair(prompt, chosen, rejected, flaw, tag):
            pairs.append({"id": f"feedback-{tag}", "flaw": flaw, "prompt": [{"role": "user", "content": prompt}],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})

        for _, r in df[(df["rating"] < 0) & df["correction"].notna()].iterrows():
            if r["correction"].strip() != r["answer"].strip():
                pair(r["prompt"], r["correction"], r["answer"], "human_correction", f"{r['id']}")
        for prompt, t in df.groupby("prompt", sort=False):
            ups, downs = t[t["rating"] > 0], t[t["rating"] < 0]
            for _, u in ups.iterrows():
                for _, d in downs.iterrows():
                    if u["answer"].strip() != d["answer"].strip():
                        pair(prompt, u["answer"], d["answer"], "human_rating", f"{u['id']}-{d['id']}")
        return pairs

    def export_preferences(self, path: str | Path, rater: str | None = "human") -> Path:
        """Write :meth:`preference_pairs` (of ``rater``'s ratings) as JSONL; read it back with
        ``load_preferences(source=path)`` (notebook 06's ``PREFERENCES`` parameter)."""
        path = Path(path).expanduser()
        pairs = self.preference_pairs(rater)
        if not pairs:
            raise ValueError(f"No preference pairs from {rater or 'any'} ratings yet: rate an answer thumbs down "
                             "with a correction, or rate two answers to the same prompt one up and one down.")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
        return path


class FeedbackPanel:
    """An ipywidgets panel that shows one answer at a time: 👍 / 👎, a correction box, Skip.

    ``items``: dicts with ``model``, ``prompt``, ``answer`` and optionally ``question_id`` and
    ``gold`` (shown to the rater). Clicking a thumb stores the rating (with the correction,
    if typed) in ``store`` as ``rater``'s and moves to the next item. Display it with ``panel.widget``; in a
    script or test, drive it the same way: ``panel.correction.value = "..."``,
    ``panel.down_button.click()``.
    """

    def __init__(self, items: Sequence[dict[str, Any]], store: FeedbackStore,
                 on_done: Callable[[FeedbackStore], None] | None = None, rater: str = "human"):
        import ipywidgets as widgets

        self.items, self.store, self.on_done, self.rater = list(items), store, on_done, rater
        self.position = 0
        self.header = widgets.HTML()
        self.body = widgets.HTML()
        self.correction = widgets.Textarea(placeholder="Correction (optional): the answer you would want",
                                           layout=widgets.Layout(width="95%", height="60px"))
        self.up_button = widgets.Button(description="👍 good", button_style="success")
        self.down_button = widgets.Button(description="👎 bad", button_style="danger")
        self.skip_button = widgets.Button(description="skip")
        self.status = widgets.HTML()
        self.up_button.on_click(lambda _b: self._rate(1))
        self.down_button.on_click(lambda _b: self._rate(-1))
        self.skip_button.on_click(lambda _b: self._advance())
        self.widget = widgets.VBox([self.header, self.body, self.correction,
                                    widgets.HBox([self.up_button, self.down_button, self.skip_button]), self.status])
        self._show()

    @property
    def done(self) -> bool:
        """Every item has been rated or skipped."""
        return self.position >= len(self.items)

    def _show(self) -> None:
        import html

        if self.done:
            self.header.value = f"<b>All {len(self.items)} answers seen.</b> Ratings stored: {len(self.store)}"
            self.body.value = ""
            for b in (self.up_button, self.down_button, self.skip_button):
                b.disabled = True
            return
        it = self.items[self.position]
        gold = f"<br><i>gold answer:</i> {html.escape(str(it['gold']))}" if it.get("gold") else ""
        self.header.value = f"<b>{self.position + 1} / {len(self.items)}</b> · model <code>{html.escape(str(it['model']))}</code>"
        self.body.value = (f"<p><i>prompt:</i> {html.escape(it['prompt'])}</p>"
                           f"<p><i>answer:</i> <b>{html.escape(it['answer'])}</b>{gold}</p>")

    def _rate(self, rating: int) -> None:
        if self.done:
            return
        it = self.items[self.position]
        self.store.add(it["model"], it["prompt"], it["answer"], rating, self.correction.value,
                       it.get("question_id"), rater=self.rater)
        self.status.value = f"saved {'👍' if rating > 0 else '👎'} for item {self.position + 1}"
        self._advance()

    def _advance(self) -> None:
        self.position += 1
        self.correction.value = ""
        self._show()
        if self.done and self.on_done is not None:
            self.on_done(self.store)
