"""Human feedback: the SQLite store, the summary, preference-pair export, the panel driven by clicks."""

from __future__ import annotations

import pytest

from course_utils.data import load_preferences
from course_utils.feedback import FeedbackPanel, FeedbackStore


def test_store_adds_lists_and_summarises(tmp_path):
    store = FeedbackStore(tmp_path / "sub" / "ratings.sqlite")
    store.add("sft", "Where is X?", "In Y.", True)
    store.add("sft", "Where is X?", "In Z.", -1, correction="In Y.")
    store.add("dpo", "Where is X?", "In Y.", 1, correction="   ")
    assert len(store) == 3
    df = store.ratings()
    assert list(df["rating"]) == [1, -1, 1] and df["correction"].isna().tolist() == [True, False, True]
    s = store.summary(n_boot=100).set_index("model")
    assert s.loc["sft", "approval"] == 0.5 and s.loc["sft", "corrections"] == 1
    assert s.loc["dpo", "approval"] == 1.0 and s.loc["dpo", "approval_low"] <= 1.0
    assert len(FeedbackStore(tmp_path / "sub" / "ratings.sqlite")) == 3  # persisted
    with pytest.raises(ValueError, match="thumbs"):
        store.add("sft", "q", "a", 0)


def test_preference_pairs_export_in_load_preferences_format(tmp_path):
    store = FeedbackStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="No preference pairs"):
        store.export_preferences(tmp_path / "none.jsonl")
    store.add("sft", "Where is X?", "In Z.", -1, correction="In Y.")
    store.add("dpo", "Where is X?", "In Y.", 1)
    store.add("dpo", "Who?", "Anna.", 1)
    pairs = store.preference_pairs()
    flaws = sorted(p["flaw"] for p in pairs)
    assert flaws == ["human_correction", "human_rating"]
    path = store.export_preferences(tmp_path / "pairs.jsonl")
    loaded = load_preferences(source=str(path))  # validated by the course loader
    assert len(loaded) == 2
    for r in loaded:
        assert r["prompt"][0]["role"] == "user" and r["chosen"][0]["content"] == "In Y."
        assert r["rejected"][0]["content"] == "In Z."


def test_panel_driven_programmatically(tmp_path):
    store = FeedbackStore(tmp_path / "r.sqlite")
    done = []
    items = [{"model": "sft", "prompt": f"Q{i}?", "answer": f"A{i}.", "question_id": f"eval-{i}", "gold": "A"}
             for i in range(3)]
    panel = FeedbackPanel(items, store, on_done=lambda s: done.append(len(s)))
    assert "1 / 3" in panel.header.value and "Q0?" in panel.body.value
    panel.up_button.click()
    panel.correction.value = "A1 is wrong; the answer is A."
    panel.down_button.click()
    assert panel.correction.value == ""  # cleared for the next item
    panel.skip_button.click()
    assert panel.done and done == [2] and panel.up_button.disabled
    panel.up_button.click()  # after the end: nothing more is stored
    df = store.ratings()
    assert list(df["rating"]) == [1, -1] and df.loc[1, "correction"].startswith("A1 is wrong")
    assert list(df["question_id"]) == ["eval-0", "eval-1"]


def test_summaries_and_pairs_use_human_ratings_unless_asked(tmp_path):
    store = FeedbackStore(tmp_path / "r.sqlite")
    store.add("sft", "Where is X?", "In Y.", 1)
    store.add("sft", "Where is X?", "In Z.", -1, rater="gold-script")
    store.add("sft", "Where is X?", "In W.", -1, correction="In Y.", rater="gold-script")
    assert store.summary(n_boot=50).set_index("model").loc["sft", "n"] == 1
    assert store.summary(n_boot=50, rater=None).set_index("model").loc["sft", "n"] == 3
    assert store.summary(n_boot=50, rater="gold-script").set_index("model").loc["sft", "approval"] == 0.0
    assert store.preference_pairs() == []  # one human rating makes no pair
    assert len(store.preference_pairs(rater=None)) == 3  # a correction and two up-vs-down pairs
    assert list(store.ratings("human")["rater"]) == ["human"] and len(store.ratings()) == 3
    with pytest.raises(ValueError, match="No preference pairs from human ratings"):
        store.export_preferences(tmp_path / "p.jsonl")
    panel = FeedbackPanel([{"model": "dpo", "prompt": "Q?", "answer": "A."}], store, rater="gold-script")
    panel.up_button.click()
    assert store.ratings("gold-script")["model"].tolist()[-1] == "dpo"


def test_the_default_store_is_in_the_cache_and_old_files_are_migrated(tmp_path):
    import sqlite3

    from course_utils.feedback import SCHEMA_VERSION, default_feedback_path
    from course_utils.settings import get_settings

    store = FeedbackStore()
    assert store.path == default_feedback_path() and store.path.is_relative_to(get_settings().cache_dir)
    old = tmp_path / "v1.sqlite"  # a file written before the rater column existed
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE ratings (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, model TEXT "
                "NOT NULL, prompt TEXT NOT NULL, answer TEXT NOT NULL, rating INTEGER NOT NULL, correction TEXT, "
                "question_id TEXT)")
    con.execute("INSERT INTO ratings (created, model, prompt, answer, rating) VALUES ('t', 'sft', 'Q', 'A', 1)")
    con.commit()
    con.close()
    migrated = FeedbackStore(old)
    assert migrated.ratings()["rater"].tolist() == ["human"]
    con = sqlite3.connect(old)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(ValueError, match="schema version"):
        FeedbackStore(old)


def test_every_connection_is_closed(tmp_path, monkeypatch):
    import sqlite3

    opened = []
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    store = FeedbackStore(tmp_path / "r.sqlite")
    store.add("sft", "Q", "A", 1)
    len(store), store.ratings(), store.summary(n_boot=10)
    assert len(opened) >= 4
    for con in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            con.execute("SELECT 1")
