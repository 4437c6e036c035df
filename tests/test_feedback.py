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
