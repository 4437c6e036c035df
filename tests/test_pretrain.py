"""Pretraining loop, checkpoints, resume, CLI and DDP (course_utils.pretrain, notebook 02)."""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from course_utils.pretrain import (
    PRESETS,
    _text_file_data,
    get_preset,
    measure_peak_flops,
    run_pretraining,
    train,
    unigram_baseline,
)

REPO = Path(__file__).resolve().parent.parent


def _write_text(path: Path, n=600, seed=0) -> Path:
    rng = random.Random(seed)
    names = ["Alda", "Borin", "Cela", "Doran", "Elsa", "Fenn", "Garo"]
    towns = ["Marrow", "Tessel", "Quillby", "Ostrand"]
    docs = []
    for _ in range(n):
        who = rng.choice(names)
        docs.append(f"{who} was born in {rng.choice(towns)}. {who} walked to {rng.choice(towns)} today.")
    path.write_text("\n\n".join(docs))
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    return _write_text(tmp_path_factory.mktemp("text") / "docs.txt")


@pytest.fixture(scope="module")
def data(text_file):
    return _text_file_data(text_file, 512)


def _cfg(data, **kw):
    cfg = get_preset("tiny", **kw)
    cfg.model.vocab_size = len(data[2])
    return cfg


def test_presets_are_valid():
    for name, make in PRESETS.items():
        cfg = make()
        assert cfg.max_steps > cfg.warmup_steps, name
    learner = get_preset("learner")
    assert learner.tokens_per_step() == (learner.batch_size + learner.drill_rows) * learner.seq_len
    assert learner.drill_rows > 0 and get_preset("fast").drill_rows > 0  # the course model reads
    with pytest.raises(ValueError, match="Unknown preset"):
        get_preset("huge")


def test_training_beats_the_unigram_baseline(data):
    train_ids, val_ids, tok = data
    cfg = _cfg(data, max_steps=60, eval_every=30)
    result = train(cfg, train_ids, val_ids, progress=False)
    base = unigram_baseline(train_ids, val_ids, len(tok))
    assert result.val_loss < base - 0.3, (result.val_loss, base)
    assert result.tokens_seen == 60 * cfg.tokens_per_step()
    assert result.tokens_per_s > 0 and 0 < result.mfu < 1.5 and result.peak_flops > 0
    assert [r["step"] for r in result.history] == list(range(1, 61))
    lrs = [r["lr"] for r in result.history]
    assert max(lrs) == pytest.approx(cfg.lr) and lrs[-1] == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_grad_accumulation_matches_a_bigger_batch(data):
    train_ids, val_ids, _ = data
    big = train(_cfg(data, batch_size=8, max_steps=3, precision="fp32"), train_ids, val_ids, progress=False)
    acc = train(_cfg(data, batch_size=4, grad_accum=2, max_steps=3, precision="fp32"), train_ids, val_ids, progress=False)
    for a, b in zip(big.model.parameters(), acc.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_interrupted_run_resumes_exactly(data, tmp_path):
    train_ids, val_ids, _ = data
    cfg = _cfg(data, max_steps=12, checkpoint_every=3)
    full = train(cfg, train_ids, val_ids, out_dir=tmp_path / "full", progress=False)
    part = train(cfg, train_ids, val_ids, out_dir=tmp_path / "cut", stop_after_steps=7, progress=False)
    assert part.steps == 7
    assert (tmp_path / "cut" / "checkpoint" / "model.safetensors").exists()
    rest = train(cfg, train_ids, val_ids, out_dir=tmp_path / "cut", progress=False)
    assert rest.resumed_from == 7 and rest.steps == 12
    assert rest.val_loss == full.val_loss
    assert [r["train_loss"] for r in rest.history] == [r["train_loss"] for r in full.history]
    for a, b in zip(full.model.state_dict().values(), rest.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def _cli(*args, env=None):
    return [sys.executable, "-m", "course_utils.cli", *args]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@pytest.mark.slow
def test_killed_process_resumes_to_the_same_final_loss(text_file, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", "--text-file", str(text_file), "--steps", "30",
            "--out", str(out), "--no-progress", "--json"]
    proc = subprocess.Popen(_cli(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 60
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = json.loads(state.read_text())["step"]
    assert 0 < killed_at < 30
    done = subprocess.run(_cli(*args, "--resume"), env=_env(), capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    assert resumed["resumed_from"] >= killed_at and resumed["steps"] == 30
    # the same run, uninterrupted, in this process
    reference, _ = run_pretraining("tiny", text_file=text_file, max_steps=30, progress=False,
                                   precision=resumed["precision"])  # "auto" is measured per process
    assert resumed["val_loss"] == pytest.approx(reference.val_loss, abs=1e-6)
    assert (out / "config.json").exists()  # exported as a transformers folder too
    # `course export-hf --run` exports the checkpoint again: same logits as the run's own export
    from course_utils.cli import main
    from course_utils.hf import load_hf

    assert main(["export-hf", "--run", str(out), "--out", str(tmp_path / "hf")]) == 0
    a, tok = load_hf(out)
    b, _ = load_hf(tmp_path / "hf")
    ids = torch.tensor([tok("Alda was born in")["input_ids"]])
    assert float((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max()) < 1e-4


def test_resumed_run_keeps_the_precision_of_its_checkpoint(text_file, tmp_path, monkeypatch):
    import course_utils.pretrain as pretrain

    measured = []

    def fake_auto(device, precision="auto"):  # "auto" measures bf16 against fp32: fake a busy machine
        measured.append(precision)
        return torch.float32 if precision in ("auto", "fp32") else torch.bfloat16

    monkeypatch.setattr(pretrain, "autocast_dtype", fake_auto)
    cfg = pretrain.get_preset("tiny", max_steps=8, checkpoint_every=2)
    train_ids, val_ids, tok = pretrain._text_file_data(text_file, cfg.model.vocab_size)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    run = tmp_path / "run"
    first = pretrain.train(cfg, train_ids, val_ids, out_dir=run, stop_after_steps=4, progress=False)
    assert first.precision == "fp32" and first.steps == 4 and measured == ["auto"]
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["precision"] == "fp32"
    state["precision"] = "bf16"  # as if the first session had measured bf16
    (run / "checkpoint" / "state.json").write_text(json.dumps(state))
    resumed = pretrain.train(cfg, train_ids, val_ids, out_dir=run, progress=False)
    assert resumed.resumed_from == 4 and resumed.precision == "bf16" and measured[-1] == "bf16"


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical(text_file, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "course_utils.cli", "pretrain", "--preset", "tiny", "--text-file", str(text_file),
           "--steps", "2", "--no-progress", "--json"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, cwd=REPO, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1  # rank 0 reports for both
    r = results[0]
    assert r["world_size"] == 2 and r["steps"] == 2
    assert len(r["rank_weight_digests"]) == 2  # each rank hashed its own weights
    assert r["weights_identical_across_ranks"] is True
    assert r["rank_weight_digests"][0] == r["rank_weight_digests"][1]
    # both ranks together consumed twice the tokens of one
    assert r["tokens_seen"] == 2 * 2 * get_preset("tiny").tokens_per_step()


def test_peak_flops_is_measured():
    assert measure_peak_flops(torch.float32, n=256, repeats=1) > 1e8


class _CharTokenizer:
    """Characters as token ids (0 = bos/pad): enough for the probes' bookkeeping."""

    bos_token_id = pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids if int(i) != 0)


class _ReplayModel(torch.nn.Module):
    """A "model" that answers each probe prompt with the next of ``answers`` (or nothing)."""

    def __init__(self, answers=()):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.answers = list(answers)

    def generate(self, ids, max_new_tokens=8, **kw):
        extra = [ord(c) for c in " " + self.answers.pop(0)] if self.answers else []
        return torch.cat([ids, torch.tensor([extra], dtype=ids.dtype).reshape(1, -1)], dim=1)


def test_reading_probe_asks_for_facts_in_the_passage_and_scores_copies():
    from course_utils.probes import reading_probe

    tok = _CharTokenizer()
    silent = reading_probe(_ReplayModel(), tok, n=12, seed=3)
    assert silent["n"] == 12 and silent["share_correct"] == 0.0
    for row in silent["rows"]:
        passage, prefix = row["prompt"].split("\n\n")
        assert row["expected"] in passage and row["expected"] not in prefix  # answerable only by reading
        assert any(q in row["expected"] for q in "qxzQXZ") or row["expected"].isdigit()  # one-off names
    expected = [r["expected"] for r in silent["rows"]]
    copier = reading_probe(_ReplayModel(expected), tok, n=12, seed=3)  # same seed: same prompts
    assert copier["share_correct"] == 1.0
    numbers = [e for e in expected if e.isdigit()]
    assert 0 < len(numbers) < len(expected) and copier["n_numbers"] == len(numbers)
    only_words = reading_probe(_ReplayModel([("" if e.isdigit() else e) for e in expected]), tok, n=12, seed=3)
    assert only_words["share_correct_numbers"] == 0.0 and only_words["share_correct_words"] == 1.0
    assert abs(only_words["share_correct"] - (1 - len(numbers) / len(expected))) < 1e-9
    wrong = reading_probe(_ReplayModel(expected[1:] + expected[:1]), tok, n=12, seed=3)
    assert wrong["share_correct"] == 0.0


def test_pretrain_refuses_to_overwrite_a_run_without_resume_or_overwrite(text_file, tmp_path, capsys):
    from course_utils.cli import main

    out = tmp_path / "run"
    args = ["pretrain", "--preset", "tiny", "--text-file", str(text_file), "--steps", "4", "--out", str(out),
            "--no-progress", "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 2  # a second run would silently start again at step 0
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "Traceback" not in err
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 4  # untouched
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["resumed_from"] == 4
    assert main(args + ["--overwrite"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["resumed_from"] == 0 and again["val_loss"] == pytest.approx(first["val_loss"], abs=1e-5)
    assert main(["pretrain", "--preset", "tiny", "--text-file", str(text_file), "--steps", "0"]) == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_resume_refuses_another_recipe_and_a_checkpoint_that_does_not_fit(data, tmp_path):
    cfg = _cfg(data, max_steps=6, checkpoint_every=2)
    train_ids, val_ids, _ = data
    run = tmp_path / "run"
    train(cfg, train_ids, val_ids, out_dir=run, stop_after_steps=2, progress=False)
    other = dataclasses.replace(cfg, lr=3e-4)
    with pytest.raises(ValueError, match=r"trained with other settings \(lr: 0\.003 -> 0\.0003\)"):
        train(other, train_ids, val_ids, out_dir=run, progress=False)
    wider = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=48, ffn_hidden=128))
    with pytest.raises(ValueError, match="model.d_model: 32 -> 48"):
        train(wider, train_ids, val_ids, out_dir=run, progress=False)
    longer = dataclasses.replace(cfg, max_steps=8, eval_every=2)  # running longer is allowed
    assert train(longer, train_ids, val_ids, out_dir=run, progress=False).resumed_from == 2


def test_a_killed_run_can_still_be_exported_with_its_own_tokenizer(text_file, tmp_path):
    from course_utils.cli import main

    out = tmp_path / "run"
    run_pretraining("tiny", out=out, text_file=text_file, max_steps=4, progress=False)
    assert not (out / "config.json").exists()  # as if killed before the CLI's final export
    assert (out / "tokenizer.json").exists() and (out / "checkpoint" / "state.json").exists()
    assert main(["export-hf", "--run", str(out), "--out", str(tmp_path / "hf")]) == 0
    (out / "tokenizer.json").unlink()
    assert main(["export-hf", "--run", str(out), "--out", str(tmp_path / "hf2")]) == 2


def _torchrun(*args: str, port: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           "-m", "course_utils.cli", "pretrain", *args, "--no-progress", "--json"]
    done = subprocess.run(cmd, env={**_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_fsdp_holds_half_of_ddp_per_rank_on_two_processes_with_the_same_losses_and_resumes(text_file, tmp_path):
    base = ["--preset", "tiny", "--text-file", str(text_file), "--steps", "4"]
    ddp = _torchrun(*base, "--out", str(tmp_path / "ddp"), port=29534)
    fsdp = _torchrun(*base, "--out", str(tmp_path / "fsdp"), "--fsdp", port=29535)
    assert (ddp["fsdp"], fsdp["fsdp"]) == (False, True)
    ratio = fsdp["state_bytes"]["total"] / ddp["state_bytes"]["total"]
    assert ratio <= 0.6, ratio  # parameters, gradients and AdamW moments: each rank holds its half
    for part in ("params", "grads", "optimizer"):
        assert fsdp["state_bytes"][part] * 2 == pytest.approx(ddp["state_bytes"][part], rel=0.02)
    # both resume from their (whole) checkpoints for two more steps, the sharded run following the DDP run
    more = [*base[:-1], "6", "--resume"]
    _torchrun(*more, "--out", str(tmp_path / "ddp"), port=29536)
    resumed = _torchrun(*more, "--out", str(tmp_path / "fsdp"), "--fsdp", port=29537)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    losses = {name: [r["train_loss"] for r in json.loads((tmp_path / name / "history.json").read_text())]
              for name in ("ddp", "fsdp")}
    assert len(losses["fsdp"]) == 6
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=2e-3)  # bf16 autocast: reduction order differs
    # its checkpoint is an unsharded run's: one process loads it and ends near the DDP weights
    from course_utils.pretrain import load_checkpoint_model

    a, b = load_checkpoint_model(tmp_path / "fsdp"), load_checkpoint_model(tmp_path / "ddp")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=2e-3), name
