from pathlib import Path

import pytest

from course_utils.settings import Settings, detect_device, get_settings, repo_root, seed_everything


def test_fast_mode_is_read_from_the_environment(monkeypatch):
    for value, fast in [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]:
        monkeypatch.setenv("COURSE_FAST", value)
        assert get_settings().fast is fast
    monkeypatch.delenv("COURSE_FAST")
    s = get_settings()
    assert not s.fast and s.mode == "learner"
    assert s.budget(fast=3, learner=300) == 300


def test_fast_budget_and_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("COURSE_SEED", "7")
    s = get_settings()
    assert s.mode == "fast" and s.budget(fast=3, learner=300) == 3
    assert s.cache_dir == (tmp_path / "c").resolve()
    assert s.data_dir == (tmp_path / "d").resolve()
    assert s.seed == 7


def test_defaults_live_in_the_repository(monkeypatch):
    monkeypatch.delenv("COURSE_CACHE")
    s = get_settings()
    assert s.cache_dir == repo_root() / "artifacts"
    assert s.data_dir == repo_root() / "data"
    assert (repo_root() / "course_utils" / "settings.py").exists()


def test_bad_seed_says_what_is_wrong(monkeypatch):
    monkeypatch.setenv("COURSE_SEED", "abc")
    with pytest.raises(ValueError, match="COURSE_SEED must be an integer"):
        get_settings()


def test_device_detection_and_forcing():
    import torch

    auto = detect_device()
    assert auto in {"cpu", "cuda", "mps"}
    assert detect_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="Unknown device"):
        detect_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot use it"):
            detect_device("cuda")


def test_seeding_repeats_random_draws():
    import random

    import numpy as np
    import torch

    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b


def test_settings_is_immutable():
    s = Settings(cache_dir=Path("/tmp/x"))
    with pytest.raises(AttributeError):
        s.fast = True  # type: ignore[misc]
