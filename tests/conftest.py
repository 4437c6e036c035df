"""Shared fixtures: every test gets its own empty artifact cache and clean course env vars."""

from __future__ import annotations

import os

# Before torch loads: idle OpenMP threads sleep instead of spinning, which keeps a
# shared 2-core machine from thrashing (notebook 02, "Your machine's peak").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_course_env(tmp_path, monkeypatch):
    """Point COURSE_CACHE at a fresh folder; tests never touch the learner's cache."""
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.delenv("COURSE_SEED", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
