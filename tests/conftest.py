"""Shared fixtures: every test gets its own empty artifact cache and clean course env vars."""

from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, which keeps a
# shared 2-core machine from thrashing (notebook 02, "Your machine's peak").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory) -> str:
    """One MLflow store for the session's runs (a new SQLite store costs seconds of schema set-up)."""
    return f"sqlite:///{tmp_path_factory.getbasetemp() / 'mlflow' / 'mlflow.db'}"


@pytest.fixture(scope="module")
def text_data(tmp_path_factory):
    """``(train_ids, val_ids, tokenizer)`` of a small generated text with a 512-id tokenizer, for loop tests."""
    from course_utils.pretrain import _text_file_data
    from tests.test_pretrain import _write_text

    return _text_file_data(_write_text(tmp_path_factory.mktemp("t") / "docs.txt"), 512)


@pytest.fixture(autouse=True)
def _isolated_course_env(tmp_path, monkeypatch, tracking_store):
    """Point COURSE_CACHE at a fresh folder; tests never touch the learner's cache. Experiment tracking
    stays on (course_utils.tracking), into the session's temporary store."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    monkeypatch.delenv("COURSE_TRACKING", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
