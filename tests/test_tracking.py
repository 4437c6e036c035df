"""Experiment tracking (course_utils.tracking, notebook 10): every training stage records an MLflow run
with its config, its curves, its final figures and its artifact; ``COURSE_TRACKING=0`` records nothing.

The runs go to the session's temporary store (tests/conftest.py sets ``MLFLOW_TRACKING_URI``), except
where a test checks the default store in the artifact cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from course_utils import tracking
from course_utils.data import load_preferences, load_sft
from course_utils.settings import get_settings


def _last_run():
    """The run the last tracked stage ended (MLflow remembers it per process)."""
    import mlflow

    run = mlflow.last_active_run()
    assert run is not None, "no run was recorded"
    return run


def _run(run_id):
    import mlflow

    return mlflow.MlflowClient(tracking.tracking_uri()).get_run(run_id)


def _steps(run, key):
    return [step for step, _ in tracking.metric_history(run.info.run_id, key)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from tests.test_sft import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory):
    from course_utils import dpo

    texts = [m["content"] for r in load_preferences("train")[:120] for k in ("prompt", "chosen", "rejected")
             for m in r[k]]
    return dpo.tiny_chat_model(tmp_path_factory.mktemp("chat") / "sft", texts=texts)


def _sft_records(n=8):
    return [r for r in load_sft("train") if r["kind"] == "closed_book"][:n]


# ---------------------------------------------------------------------- the setting and the store
def test_tracking_is_on_by_default_and_one_setting_turns_it_off(monkeypatch):
    assert get_settings().tracking
    for value in ("0", "false", "No", "off"):
        monkeypatch.setenv("COURSE_TRACKING", value)
        assert not get_settings().tracking, value
    monkeypatch.setenv("COURSE_TRACKING", "1")
    assert get_settings().tracking


def test_the_store_is_in_the_artifact_cache_unless_MLFLOW_TRACKING_URI_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri() == f"sqlite:///{get_settings().cache_dir / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri() == "http://mlflow.example:5000"
    assert tracking.experiment_name("sft") == "llm-course/sft"


def test_importing_the_helper_imports_no_mlflow_and_course_env_says_where_runs_go(monkeypatch):
    import json
    import subprocess
    import sys

    code = "import sys, course_utils.tracking, course_utils.sft; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    for value, expected in (("1", tracking.tracking_uri()), ("0", "off")):
        monkeypatch.setenv("COURSE_TRACKING", value)
        proc = subprocess.run([sys.executable, "-m", "course_utils.cli", "env", "--json"], capture_output=True,
                              text=True, timeout=300)
        assert json.loads(proc.stdout.strip().splitlines()[-1])["tracking"] == expected


def test_flatten_joins_nested_fields_with_dots():
    @dataclasses.dataclass
    class Inner:
        n_layer: int = 2

    @dataclasses.dataclass
    class Outer:
        lr: float = 1e-3
        model: Inner = dataclasses.field(default_factory=Inner)
        targets: tuple = ("q_proj", "v_proj")
        cap: int | None = None

    assert tracking.flatten(Outer(), "config.") == {"config.lr": "0.001", "config.model.n_layer": "2",
                                                    "config.targets": '["q_proj", "v_proj"]', "config.cap": "None"}
    assert tracking.flatten(None) == {}
    with pytest.raises(TypeError, match="dataclass instance or a dict"):
        tracking.flatten(3)


def test_a_run_has_its_params_metrics_and_artifact_in_the_cache_store(monkeypatch):
    """The default store (no MLFLOW_TRACKING_URI): SQLite in the cache, run files beside it, never in
    the working directory; a stage inside a run joins it; a failure ends the run FAILED."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    settings = get_settings()
    with tracking.track("demo", {"lr": 0.1, "model": {"d": 8}}, artifact="demo-model/0123456789ab") as tracker:
        assert tracker.active and tracking.report_to() == "mlflow"
        for step in range(1, 4):
            tracker.log_metrics({"step": step, "loss": 1.0 / step, "note": "text is skipped"}, step=step)
        with tracking.track("inner", {"lr": 0.5, "beta": 0.1}) as inner:  # joins: same run, new params only
            assert inner.run_id == tracker.run_id
    assert tracking.report_to() == "none"
    assert (settings.cache_dir / "mlflow" / "mlflow.db").exists()
    runs = tracking.find_runs("demo")
    assert len(runs) == 1 and runs.loc[0, "run_id"] == tracker.run_id and runs.loc[0, "status"] == "FINISHED"
    row = runs.loc[0]
    assert row["params.config.lr"] == "0.1" and row["params.config.model.d"] == "8"
    assert row["params.config.beta"] == "0.1"  # the inner stage's new parameter joined the run
    assert row["tags.course.artifact"] == "demo-model/0123456789ab" and row["tags.course.mode"] == "fast"
    assert row["artifact_uri"].startswith((settings.cache_dir / "mlflow" / "artifacts").as_uri())
    assert tracking.metric_history(tracker.run_id, "loss") == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert "metrics.step" not in runs and "metrics.note" not in runs
    found = tracking.artifact_run(settings.cache_dir / "demo-model" / "0123456789ab")
    assert found["run_id"] == tracker.run_id and found["experiment"] == "llm-course/demo"
    assert tracking.artifact_run(settings.cache_dir / "demo-model" / "ffffffffffff") is None
    assert tracking.find_runs("never-run").empty

    with pytest.raises(RuntimeError), tracking.track("demo") as failed:
        raise RuntimeError("boom")
    assert tracking.find_runs("demo", status="FAILED").loc[0, "run_id"] == failed.run_id
    assert len(tracking.find_runs("demo")) == 1  # FINISHED runs only, by default


def test_tracking_off_records_nothing(monkeypatch, tiny_llama):
    from course_utils import sft
    from course_utils.pretrain import _text_file_data, get_preset, train
    from tests.test_pretrain import _write_text

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("COURSE_TRACKING", "0")
    cache = get_settings().cache_dir
    with tracking.track("demo", {"lr": 1}) as tracker:
        assert not tracker.active and tracking.report_to() == "none"
        tracker.log_metrics({"loss": 1.0}, step=1)  # does nothing
    train_ids, val_ids, tok = _text_file_data(_write_text(cache.parent / "docs.txt", n=200), 256)
    cfg = get_preset("tiny", max_steps=2)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    train(cfg, train_ids, val_ids, progress=False)
    model, tok, _ = sft.load_base(tiny_llama)
    trained = sft.train_sft(model, tok, _sft_records(4), sft.SFTRunConfig(max_steps=1, batch_size=2))
    assert trained.history
    assert not (cache / "mlflow").exists()
    assert tracking.find_runs("pretrain").empty and tracking.artifact_run(cache / "x" / "y") is None


# ---------------------------------------------------------------------- every stage records its run
def test_pretraining_logs_its_config_and_every_row_at_its_step():
    from course_utils.pretrain import _text_file_data, get_preset, train
    from tests.test_pretrain import _write_text

    train_ids, val_ids, tok = _text_file_data(_write_text(get_settings().cache_dir.parent / "docs.txt", n=200), 256)
    cfg = get_preset("tiny", max_steps=4, eval_every=2)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    result = train(cfg, train_ids, val_ids, progress=False)
    run = _last_run()
    assert run.data.tags["course.stage"] == "pretrain" and run.info.status == "FINISHED"
    assert run.data.params["config.max_steps"] == "4" and run.data.params["config.model.n_layer"] == str(cfg.model.n_layer)
    assert _steps(run, "train_loss") == [1, 2, 3, 4] and _steps(run, "val_loss") == [2, 4]
    assert {"lr", "tokens_per_s", "mfu", "tokens", "params", "wall_s"} <= set(run.data.metrics)
    assert run.data.metrics["val_loss"] == pytest.approx(result.val_loss)


def test_a_store_that_breaks_mid_run_never_stops_the_training(monkeypatch, capsys):
    """A locked SQLite store (a busy machine) killed a 40-minute pretraining run once: now tracking says so
    once and the run goes on untracked."""
    import mlflow

    from course_utils.pretrain import _text_file_data, get_preset, train
    from tests.test_pretrain import _write_text

    train_ids, val_ids, tok = _text_file_data(_write_text(get_settings().cache_dir.parent / "docs.txt", n=200), 256)
    cfg = get_preset("tiny", max_steps=6, eval_every=2)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    calls = []
    real = mlflow.log_metrics

    def locked(*args, **kwargs):
        calls.append(kwargs.get("step"))
        if len(calls) > 2:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", locked)
    result = train(cfg, train_ids, val_ids, progress=False)
    assert result.steps == 6 and len(calls) == 3  # trained to the end; no write tried after the failure
    err = capsys.readouterr().err
    assert err.count("[tracking] MlflowException: (sqlite3.OperationalError) database is locked") == 1
    assert "goes on without experiment tracking" in err
    assert _last_run().info.status == "FINISHED"  # the run still ends, with what it had


def test_a_store_that_breaks_under_a_trainer_never_stops_its_training(monkeypatch, capsys, tiny_llama):
    """The trl/transformers trainers log through MLflow's own callback (report_to="mlflow"): a locked store
    there is said once and the training goes on (course_utils.tracking.guard_trainer)."""
    import mlflow

    from course_utils import sft

    calls = []
    real = mlflow.log_metrics

    def locked(*args, **kwargs):
        calls.append(kwargs.get("step"))
        if len(calls) > 1:
            raise mlflow.exceptions.MlflowException("(sqlite3.OperationalError) database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_metrics", locked)
    model, tok, _ = sft.load_base(tiny_llama)
    trained = sft.train_sft(model, tok, _sft_records(), sft.SFTRunConfig(max_steps=6, batch_size=2, logging_steps=1))
    assert [r["step"] for r in trained.history if "loss" in r][-1] == 6  # trained to the end
    err = capsys.readouterr().err
    assert err.count("[tracking] MlflowException: (sqlite3.OperationalError) database is locked") == 1
    assert _last_run().info.status == "FINISHED"


def test_no_store_at_all_means_an_untracked_stage(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no/such/place.db")
    with tracking.track("pretrain", {"x": 1}) as t:
        t.log_metrics({"loss": 1.0}, step=1)
        assert not t.active
    assert "goes on without experiment tracking" in capsys.readouterr().err


def test_sft_logs_through_the_trainers_own_mlflow_integration(tiny_llama):
    from course_utils import sft

    model, tok, _ = sft.load_base(tiny_llama)
    cfg = sft.SFTRunConfig(max_steps=4, batch_size=2, logging_steps=2)
    trained = sft.train_sft(model, tok, _sft_records(), cfg)
    run = _last_run()
    assert run.data.tags["course.stage"] == "sft" and run.info.experiment_id
    assert run.data.params["config.max_steps"] == "4"  # the course's config
    assert run.data.params["learning_rate"] == str(cfg.lr)  # logged by transformers' MLflowCallback
    assert _steps(run, "loss") == [2, 4]  # trl's logged losses, at their steps
    assert run.data.metrics["final_loss"] == pytest.approx(trained.history[-1]["loss"])
    assert {"trainable", "step_seconds"} <= set(run.data.metrics)


def test_an_artifact_build_is_one_run_tagged_with_its_key(tiny_llama):
    from course_utils import sft

    cfg = sft.SFTRunConfig(max_steps=2, batch_size=2, logging_steps=1, train_examples=8)
    path = sft.load_or_build_sft_model(base_model=tiny_llama, config=cfg)
    found = tracking.artifact_run(path)
    assert found is not None and found["stage"] == "sft" and found["run_name"] == "sft-model"
    runs = tracking.find_runs("sft", with_artifact=True)
    mine = runs[runs["tags.course.artifact"] == f"sft-model/{Path(path).name}"]
    assert len(mine) == 1  # the build and its training are one run, not two
    row = mine.iloc[0]
    assert row["params.artifact.sft.max_steps"] == "2" and row["params.config.max_steps"] == "2"
    assert row["params.artifact.base"] and row["params.artifact.data"]  # what the model was built from
    assert _steps(_run(found["run_id"]), "loss") == [1, 2]
    tracking.log_to_run(found["run_id"], {"report.f1": 0.25, "skipped": float("nan")})
    assert _run(found["run_id"]).data.metrics["report.f1"] == 0.25
    assert sft.load_or_build_sft_model(base_model=tiny_llama, config=cfg) == path  # cached: no new run
    again = tracking.find_runs("sft", with_artifact=True)
    assert (again["tags.course.artifact"] == row["tags.course.artifact"]).sum() == 1


def test_a_lora_rank_sweep_is_found_apart_from_the_artifacts(tiny_llama):
    from course_utils import lora, sft

    base, tok, _ = sft.load_base(tiny_llama)
    cfg = sft.SFTRunConfig(max_steps=2, batch_size=2, logging_steps=1)
    runs = {r: lora.train_lora(base, tok, _sft_records(), cfg, r=r) for r in (1, 2)}
    sweep = tracking.find_runs("lora", with_artifact=False)
    latest = sweep.drop_duplicates("params.config.r").set_index("params.config.r")
    assert {"1", "2"} <= set(latest.index)
    assert latest.loc["2", "tags.mlflow.runName"] == "lora-r2" and latest.loc["2", "params.config.alpha"] == "4"
    assert latest.loc["1", "metrics.trainable"] == runs[1].trainable < latest.loc["2", "metrics.trainable"]


def test_reward_dpo_and_grpo_record_their_curves(tiny_chat):
    from course_utils import dpo, grpo, reward

    model, tok, _ = reward.load_backbone(tiny_chat)
    reward.train_reward_model(model, tok, load_preferences("train")[:16],
                              reward.RewardRunConfig(max_steps=2, batch_size=4, logging_steps=1), progress=False)
    run = _last_run()
    assert run.data.tags["course.stage"] == "reward" and _steps(run, "loss") == [1, 2]
    assert "accuracy" in run.data.metrics and run.data.params["config.max_steps"] == "2"

    policy, tok, _ = dpo.load_policy(tiny_chat)
    cfg = dpo.DPORunConfig(max_steps=2, batch_size=2, logging_steps=1, kl_every=1, kl_pairs=2)
    dpo.train_dpo(policy, tok, load_preferences("train")[:8], cfg, progress=False)
    run = _last_run()
    assert run.data.tags["course.stage"] == "dpo" and run.data.params["config.beta"] == str(cfg.beta)
    assert _steps(run, "loss") == [1, 2] and _steps(run, "kl") == [0, 1, 2]
    assert "rewards/accuracies" in run.data.metrics  # trl's DPO figures, through report_to

    policy, tok, _ = dpo.load_policy(tiny_chat)
    gcfg = grpo.GRPOConfig(steps=2, prompts_per_step=2, group_size=2, max_new_tokens=6)
    grpo.train_grpo(policy, tok, grpo.fact_tasks(n=4), gcfg, progress=False)
    run = _last_run()
    assert run.data.tags["course.stage"] == "grpo" and run.data.params["config.group_size"] == "2"
    assert _steps(run, "reward") == [1, 2] and _steps(run, "kl") == [1, 2]
    assert "reward_last_quarter" in run.data.metrics
