import json
from dataclasses import dataclass

import pytest

from course_utils.artifacts import config_key, list_artifacts, load_or_build
from course_utils.settings import get_settings


@dataclass
class Cfg:
    size: int = 3  # a knob
    name: str = "x"  # another


def test_builds_once_then_loads_from_cache(capsys):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "value.txt").write_text("42")

    first = load_or_build("thing", Cfg(), build)
    second = load_or_build("thing", Cfg(), build)
    assert first == second and len(calls) == 1
    assert (first / "value.txt").read_text() == "42"
    record = json.loads((first / "artifact.json").read_text())
    assert record["config"] == {"size": 3, "name": "x"} and record["key"] == config_key(Cfg())
    out = capsys.readouterr()
    text = out.out + out.err
    assert "building thing" in text and "using cached thing" in text


def test_a_changed_knob_builds_a_new_artifact():
    load_or_build("thing", Cfg(size=3), lambda f: None)
    load_or_build("thing", Cfg(size=4), lambda f: None)
    assert config_key(Cfg(size=3)) != config_key(Cfg(size=4))
    assert config_key({"size": 3, "name": "x"}) == config_key(Cfg())
    assert len([r for r in list_artifacts() if r.name == "thing"]) == 2


def test_an_interrupted_build_is_never_used_and_resumes():
    def interrupted(folder):
        (folder / "checkpoint.txt").write_text("step 5")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_or_build("trained", Cfg(), interrupted)
    assert list_artifacts() == []  # nothing finished is recorded

    seen = {}

    def resume(folder):
        seen["checkpoint"] = (folder / "checkpoint.txt").read_text()
        (folder / "model.txt").write_text("done")

    path = load_or_build("trained", Cfg(), resume)
    assert seen["checkpoint"] == "step 5"
    assert (path / "model.txt").read_text() == "done"
    assert not path.with_name(path.name + ".partial").exists()


def test_rebuild_replaces_the_cached_copy_only_once_the_new_one_is_complete():
    counter = {"n": 0}

    def build(folder):
        counter["n"] += 1
        (folder / "n.txt").write_text(str(counter["n"]))

    first = load_or_build("thing", Cfg(), build)

    def interrupted(folder):
        assert (first / "n.txt").read_text() == "1"  # the good copy is still there while rebuilding
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_or_build("thing", Cfg(), interrupted, rebuild=True)
    assert load_or_build("thing", Cfg(), build) == first and (first / "n.txt").read_text() == "1"
    path = load_or_build("thing", Cfg(), build, rebuild=True)
    assert path == first and (path / "n.txt").read_text() == "2"
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == [path.name]
    assert len(list_artifacts()) == 1


def test_a_rebuild_killed_during_its_swap_keeps_the_old_copy():
    path = load_or_build("thing", Cfg(), lambda f: (f / "v.txt").write_text("good"))
    path.rename(path.with_name(path.name + ".old"))  # as if killed between the two renames
    assert list_artifacts() == []
    again = load_or_build("thing", Cfg(), lambda f: (f / "v.txt").write_text("rebuilt"))
    assert again == path and (path / "v.txt").read_text() == "good"


def test_bad_names_and_configs_are_explained():
    with pytest.raises(ValueError, match="plain folder names"):
        load_or_build("a/b", Cfg(), lambda f: None)
    with pytest.raises(TypeError, match="dataclass instance or a dict"):
        load_or_build("thing", 3, lambda f: None)


def test_cache_lives_where_course_cache_says(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "elsewhere"))
    path = load_or_build("thing", Cfg(), lambda f: None, verbose=False)
    assert path.parent.parent == (tmp_path / "elsewhere").resolve()
    assert get_settings().cache_dir in path.parents


def test_fingerprint_follows_what_files_hold(tmp_path):
    from course_utils.artifacts import fingerprint

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights v1")
    first = fingerprint(folder)
    assert fingerprint(folder) == first and len(first) == 12
    (folder / "model.safetensors").write_bytes(b"weights v2")  # retrained in place, same size
    second = fingerprint(folder)
    assert second != first
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x").write_text("scratch")  # hidden files do not count
    assert fingerprint(folder) == second
    (folder / "extra.txt").write_text("new file")
    assert fingerprint(folder) != second
    assert fingerprint(folder / "config.json") != fingerprint(folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing there"):
        fingerprint(tmp_path / "missing")


def test_a_local_model_retrained_in_place_gets_a_new_key(tmp_path):
    from course_utils.hf import model_key

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a")
    before = model_key(folder)
    (folder / "model.safetensors").write_bytes(b"b")
    assert model_key(folder) != before and model_key("owner/name") == "owner/name"


def test_a_knob_added_later_keeps_old_keys_until_it_is_set():
    import dataclasses as dc

    @dc.dataclass
    class Old:
        size: int = 3

    @dc.dataclass
    class New:
        size: int = 3
        extra: float = dc.field(default=0.0, metadata={"key_if_set": True})

    assert config_key(New()) == config_key(Old())  # artifacts built before the knob stay cached
    assert config_key(New(extra=0.5)) != config_key(Old())


def test_a_knob_whose_default_changes_joins_the_key_with_its_new_default():
    import dataclasses as dc

    @dc.dataclass
    class Before:
        size: int = 3
        extra: float = dc.field(default=0.0, metadata={"key_unless": 0.0})

    @dc.dataclass
    class After:  # the same knob, its default changed: artifacts built before must not be reused
        size: int = 3
        extra: float = dc.field(default=0.7, metadata={"key_unless": 0.0})

    @dc.dataclass
    class Older:
        size: int = 3

    assert config_key(Before()) == config_key(Older())
    assert config_key(After()) != config_key(Before())
    assert config_key(After(extra=0.0)) == config_key(Before())


def test_artifacts_built_on_a_rebuilt_input_are_not_stale(monkeypatch, tmp_path):
    """SFT, reward, DPO and LoRA artifacts name the course artifact they are built from by its files, not
    only its key: rebuilt in place (``rebuild=True`` keeps the key), everything on it gets a new key."""
    import course_utils.artifacts as artifacts
    import course_utils.pretrain as pretrain
    import course_utils.sft as sft
    from course_utils import dpo, lora, reward

    settings = get_settings()
    base = settings.cache_dir / "base-model" / "abc123"
    sft_folder = settings.cache_dir / "sft-model" / "def456"
    for folder in (base, sft_folder):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights v1")
    monkeypatch.setattr(pretrain, "load_or_build_base_model", lambda *a, **k: base)
    keys: dict[str, list] = {}

    def fake_load_or_build(name, key, build, **kw):
        keys.setdefault(name, []).append(json.dumps(key, sort_keys=True))
        return sft_folder if name == "sft-model" else tmp_path

    monkeypatch.setattr(artifacts, "load_or_build", fake_load_or_build)
    monkeypatch.setattr(lora, "split_unseen_facts", lambda config, settings: ([], []))
    monkeypatch.setattr(lora, "facts_training_records", lambda taught, settings: [])

    def build_all():
        sft.load_or_build_sft_model(settings)
        reward.load_or_build_reward_model(settings)
        dpo.load_or_build_dpo_model(settings)
        lora.load_or_build_lora_facts(settings)

    build_all()
    build_all()
    assert all(len(set(k)) == 1 for k in keys.values()), "the same inputs, the same keys"
    assert "base-model/abc123:" in keys["sft-model"][0] and "sft-model/def456:" in keys["dpo-model"][0]
    (base / "model.safetensors").write_bytes(b"weights v2")  # the base model rebuilt in place
    (sft_folder / "model.safetensors").write_bytes(b"weights v2")  # and the SFT model on it
    build_all()
    assert {name: len(set(k)) for name, k in keys.items()} == {
        "sft-model": 2, "reward-model": 2, "dpo-model": 2, "lora-facts": 2}
    assert str(settings.cache_dir) not in keys["sft-model"][0], "a copied cache keeps its keys"
