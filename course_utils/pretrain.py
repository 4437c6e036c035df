"""Pretraining: next-token training of the from-scratch model on the course corpus.

Taught in notebook 02 (sections "The training loop" to "Checkpoint and resume"), run
from the command line by ``course pretrain``, and used by every later notebook through
:func:`load_or_build_base_model`, which returns the exported transformers folder.

What :func:`train` does, step by step:

- draws batches of ``seq_len + 1`` token windows from the tokenized corpus, epoch by
  epoch in a seeded shuffled order (the position in that order is checkpointed), and adds
  ``drill_rows`` windows of reading drills (:mod:`course_utils.drills`) the same way;
- runs forward and backward under bf16 autocast where the device supports it, with
  gradient accumulation over ``grad_accum`` micro-batches;
- clips the gradient norm, steps AdamW (weight decay on matrices only) and a
  warmup-then-cosine or warmup-stable-decay learning-rate schedule;
- every ``eval_every`` steps measures the validation loss and logs tokens/s and model
  FLOPs utilisation (MFU) against a peak measured here with a big matmul
  (:func:`measure_peak_flops`), and calls an optional ``probe`` whose figures join the history;
- every ``checkpoint_every`` steps writes a checkpoint in safetensors (model, optimizer,
  scheduler, RNG, data position, history), so that a run stopped at any point resumes
  exactly where it stopped (same final loss, bit for bit, on the same machine);
- under ``torchrun``/``accelerate launch`` with several processes it trains with
  DistributedDataParallel, each rank on its own share of every batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from course_utils.checkpoint import (
    _check_resume_config,
    _load_checkpoint,
    _read_state,
    _recover_checkpoint,
    _save_checkpoint,
    load_checkpoint_model,
)
from course_utils.hardware import _sync, autocast_dtype, measure_peak_flops
from course_utils.model import GPT, GPTConfig
from course_utils.schedule import Schedule
from course_utils.settings import Settings, get_settings
from course_utils.sharding import (
    dist_info,
    from_rank0,
    gradient_sync,
    load_whole_optimizer,
    shard,
    state_bytes,
    weights_digest,
    whole,
)
from course_utils.tokenizer import encode_documents
from course_utils.tracking import Tracker, track

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "autocast_dtype", "build_model", "encode_documents", "get_preset",
           "load_checkpoint_model", "load_or_build_base_model", "load_token_data", "measure_peak_flops",
           "pretraining_tokens", "run_pretraining", "train", "unigram_baseline"]


@dataclass
class TrainConfig:
    """One training run: the model's shape and every knob of the loop."""

    model: GPTConfig = field(default_factory=GPTConfig)  # architecture (vocab_size set from the tokenizer)
    batch_size: int = 16  # corpus sequences per micro-batch (per process under DDP)
    drill_rows: int = 0  # reading-drill sequences added to each micro-batch (course_utils.drills; 0: none)
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 200  # optimizer steps in the whole run
    lr: float = 3e-3  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.1  # the schedule decays to lr * min_lr_ratio
    warmup_steps: int = 20  # linear warmup from ~0 to lr
    schedule: str = "cosine"  # "cosine": decay all the way; "wsd": constant lr, then a linear decay at the end
    decay_frac: float = 0.2  # with "wsd": the share of steps (at the end) spent decaying
    decay_drill_rows: int | None = None  # with "wsd": drill rows while decaying (the rest of the rows corpus); None: drill_rows
    # the share of the run (at its end) that uses decay_drill_rows; None: the whole decay
    decay_drill_frac: float | None = field(default=None, metadata={"key_if_set": True})
    # drill rows in the first early_frac of the steps (the rest corpus); None: drill_rows
    early_drill_rows: int | None = field(default=None, metadata={"key_if_set": True})
    early_frac: float = field(default=0.0, metadata={"key_if_set": True})  # the share of steps that use them
    # several processes: shard parameters, gradients and optimizer states (FSDP) instead of replicating (DDP)
    fsdp: bool = field(default=False, metadata={"key_if_set": True})
    # recompute each block's activations in backward instead of keeping them (less memory, more time)
    activation_checkpointing: bool = field(default=False, metadata={"key_if_set": True})
    # with "wsd": hold the stable rate until a validation's reading_gate reaches this, then decay (Schedule)
    gate: float | None = field(default=None, metadata={"key_if_set": True})
    weight_decay: float = 0.1  # AdamW decay, on weight matrices and embeddings only
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW moment decay rates
    grad_clip: float = 1.0  # clip the global gradient norm to this (0: no clipping)
    eval_every: int = 50  # steps between validation measurements
    eval_batches: int = 8  # micro-batches of validation data per measurement
    checkpoint_every: int = 100  # steps between checkpoints (when an output folder is given)
    precision: str = "auto"  # "auto" (bf16 autocast if supported), "bf16" or "fp32"
    compile: bool = False  # torch.compile the model (faster steps, ~20 s cold start)
    seed: int = 1234  # seeds initialisation and data order
    peak_matmul: int = 2048  # side of the square matmul that measures peak FLOP/s for MFU (0: no MFU)

    @property
    def seq_len(self) -> int:
        """Tokens per training sequence (the model's context)."""
        return self.model.max_seq_len

    def tokens_per_step(self, world_size: int = 1) -> int:
        """Tokens consumed by one optimizer step (corpus and drill rows)."""
        return (self.batch_size + self.drill_rows) * self.grad_accum * self.seq_len * world_size

    @property
    def decay_start(self) -> int:
        """The first step of the planned final decay of a "wsd" schedule (``max_steps`` for "cosine")."""
        return Schedule(self).decay_start

    @property
    def decay_drill_start(self) -> int:
        """The first step that uses ``decay_drill_rows`` (without a gate; see :class:`Schedule`)."""
        return Schedule(self).decay_drill_start

    def rows(self, step: int) -> tuple[int, int]:
        """``(corpus rows, drill rows)`` of each micro-batch at ``step`` without a gate (:meth:`Schedule.rows`)."""
        return Schedule(self).rows(step)

    def drill_tokens(self, world_size: int = 1) -> int:
        """Reading-drill tokens the whole run reads (windows of ``seq_len + 1``)."""
        rows = sum(self.rows(step)[1] for step in range(self.max_steps))
        return rows * self.grad_accum * (self.seq_len + 1) * world_size


def _preset(model: GPTConfig, **train: Any) -> TrainConfig:
    return TrainConfig(model=model, **train)


#: Named configurations. ``learner`` (2,000-2,800 steps on a 2-core CPU with bf16): half of every batch
#: reading drills, so that the model learns to read a passage, at a stable rate until a validation's gate
#: probe copies half the facts of its passages (the phase change), then a 700-step decay with 12 corpus + 4
#: drill rows, for recall (benchmarks/base_models.py measured the recipe, ``gated_8heads``);
#: ``fast`` only proves the code runs; ``gpu`` is for a learner with a GPU.
PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "tiny": lambda: _preset(
        GPTConfig(vocab_size=512, max_seq_len=32, n_layer=2, n_head=2, d_model=32, ffn_hidden=96),
        batch_size=4, max_steps=12, warmup_steps=2, eval_every=4, eval_batches=2, checkpoint_every=4,
        lr=3e-3, peak_matmul=256,
    ),
    "fast": lambda: _preset(
        GPTConfig(max_seq_len=128, n_layer=2, n_head=4, d_model=128, ffn_hidden=352),
        batch_size=12, drill_rows=4, max_steps=60, warmup_steps=10, eval_every=20, eval_batches=4,
        checkpoint_every=30, lr=3e-3,
    ),
    "learner": lambda: _preset(
        GPTConfig(max_seq_len=256, n_layer=4, n_head=8, d_model=256, ffn_hidden=688),
        batch_size=8, drill_rows=8, max_steps=2800, warmup_steps=30, eval_every=100, eval_batches=16,
        checkpoint_every=100, lr=3e-3, schedule="wsd", decay_frac=0.25, decay_drill_rows=4, gate=0.5, compile=True,
    ),
    "gpu": lambda: _preset(
        GPTConfig(max_seq_len=512, n_layer=8, n_head=8, d_model=512, ffn_hidden=1376),
        batch_size=24, drill_rows=8, max_steps=4000, warmup_steps=200, eval_every=250, eval_batches=20,
        checkpoint_every=500, lr=1e-3, schedule="wsd", compile=True,
    ),
}


@dataclass
class TrainResult:
    """What a run produced and measured."""

    model: GPT  # the trained model (unwrapped, on the training device)
    history: list[dict[str, float]]  # one row per logged step: step, tokens, train_loss, val_loss, lr, ...
    val_loss: float  # final validation loss (nats per token)
    tokens_seen: int  # training tokens consumed by the whole run (all processes)
    tokens_per_s: float  # training throughput of this process's session, all processes together
    mfu: float  # model FLOPs utilisation: achieved FLOP/s / measured peak FLOP/s
    peak_flops: float  # the peak it is measured against (FLOP/s, all processes)
    precision: str  # "bf16" or "fp32": what the matmuls ran in
    params: int  # parameters (a tied head counted once)
    wall_s: float  # wall time of this session (s)
    steps: int  # optimizer steps done in total
    resumed_from: int  # step the session started from (0: fresh)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. DDP rank checksums

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures (what ``course pretrain --json`` prints)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "history")}
        out.update(self.extra)
        out.pop("extra", None)
        return out


# ---------------------------------------------------------------------- data
def load_token_data(settings: Settings | None = None, tokenizer_config=None):
    """``(train_ids, val_ids, tokenizer)``: the course corpus tokenized with the course
    tokenizer, cached as an artifact ("tokens")."""
    from safetensors.torch import load_file, save_file

    from course_utils.artifacts import config_dict, load_or_build
    from course_utils.tokenizer import TokenizerConfig, corpus_key, load_or_build_tokenizer

    settings = settings or get_settings()
    tokenizer_config = tokenizer_config or TokenizerConfig()
    tokenizer = load_or_build_tokenizer(settings, tokenizer_config)

    def build(folder: Path) -> None:
        from course_utils.data import load_corpus

        tensors = {
            split: encode_documents(tokenizer, load_corpus(split, settings=settings, source=tokenizer_config.source))
            for split in ("train", "validation")
        }
        save_file(tensors, folder / "tokens.safetensors")

    key = {"tokenizer": config_dict(tokenizer_config), "corpus": corpus_key(settings, tokenizer_config.source)}
    path = load_or_build("tokens", key, build, settings=settings)
    data = load_file(path / "tokens.safetensors")
    return data["train"], data["validation"], tokenizer


def pretraining_tokens(settings: Settings | None = None, preset: str | None = None) -> torch.Tensor:
    """Every token id the base model of ``preset`` (default: the mode's) trains on: the corpus's
    training split and, if the preset mixes them in, its reading drills. Token ids absent from it
    are ones pretraining never showed the model (``lora.never_seen_rows``)."""
    settings = settings or get_settings()
    cfg = get_preset(preset or ("fast" if settings.fast else "learner"), seed=settings.seed)
    train_ids, _, tok = load_token_data(settings)
    if not cfg.drill_rows:
        return train_ids
    from course_utils.drills import load_drill_tokens

    return torch.cat([train_ids, load_drill_tokens(cfg.drill_tokens(), settings, tokenizer=tok,
                                                    seq_len=cfg.seq_len)])


class _Batches:
    """Non-overlapping windows of ``T + 1`` tokens, visited in a seeded shuffled order per epoch.

    The position (epoch, index) is all that is needed to continue exactly.
    """

    def __init__(self, ids: torch.Tensor, T: int, seed: int):
        n = (len(ids) - 1) // T
        if n < 1:
            raise ValueError(f"The corpus has {len(ids)} tokens, fewer than one sequence of {T + 1}.")
        self.ids, self.T, self.n, self.seed = ids, T, n, seed
        self.epoch, self.index = 0, 0
        self._order = self._perm(0)

    def _perm(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        for _ in range(rows):
            if self.index >= self.n:
                self.epoch, self.index = self.epoch + 1, 0
                self._order = self._perm(self.epoch)
            picks.append(int(self._order[self.index]))
            self.index += 1
        starts = torch.tensor(picks) * self.T
        offsets = torch.arange(self.T + 1)
        chunk = self.ids[(starts[:, None] + offsets[None, :])].long()  # (rows, T+1)
        return chunk[:, :-1], chunk[:, 1:]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.index = state["epoch"], state["index"]
        self._order = self._perm(self.epoch)


def unigram_baseline(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) on ``val_ids`` of the best model that ignores context:
    token frequencies of ``train_ids`` (add-one smoothed). A trained LM must beat it."""
    counts = torch.bincount(train_ids.long(), minlength=vocab_size).double() + 1
    logp = (counts / counts.sum()).log()
    return float(-logp[val_ids.long()].mean())


# ---------------------------------------------------------------------- model + optimizer
def build_model(cfg: TrainConfig) -> GPT:
    """A freshly initialised model for ``cfg`` (seeded by ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    return GPT(cfg.model)


def _optimizer(model: GPT, cfg: TrainConfig, device: str, fused: bool = True) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = fused and device in ("cpu", "cuda")  # (sharded parameters take the unfused kernels)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused)


def _lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor by step of a run without a gate (:meth:`Schedule.lr_factor`)."""
    return Schedule(cfg).lr_factor


# ---------------------------------------------------------------------- the loop

@torch.no_grad()
def _val_loss(model, val: torch.Tensor, cfg: TrainConfig, device: str, amp) -> float:
    model.eval()
    batches = _Batches(val, cfg.seq_len, seed=0)
    batches._order = torch.arange(batches.n)  # always the same first windows
    losses = []
    for _ in range(min(cfg.eval_batches, max(1, batches.n // cfg.batch_size))):
        x, y = batches.next(min(cfg.batch_size, batches.n))
        with amp():
            _, loss = model(x.to(device), y.to(device))
        losses.append(float(loss))
    model.train()
    return sum(losses) / len(losses)


def train(
    cfg: TrainConfig,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    stop_after_steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    on_eval: Callable[[list[dict[str, float]]], None] | None = None,
    drill_ids: torch.Tensor | None = None,
    probe: Callable[[GPT], dict[str, float]] | None = None,
) -> TrainResult:
    """Train a model for ``cfg.max_steps`` optimizer steps; see the module docstring.

    ``out_dir``: where ``checkpoint/`` and ``history.json`` go; with ``resume=True`` an
    existing checkpoint there is continued. ``stop_after_steps``: stop this session after
    that many steps (as if interrupted; the last checkpoint is written first).
    ``on_eval(history)`` is called after every validation (e.g. to redraw a plot).
    ``drill_ids``: the reading-drill token stream (:func:`course_utils.drills.load_drill_tokens`),
    needed when ``cfg.drill_rows > 0``. ``probe(model)``: figures measured at every
    validation (e.g. :func:`course_utils.probes.reading_and_recall`), stored in that history row.

    Recorded as an MLflow run of stage ``pretrain`` (:mod:`course_utils.tracking`, rank 0 only): the
    config, every history row (loss, validation loss, lr, tokens/s, MFU, probes) at its step, the
    final figures.
    """
    rank, _ = dist_info()
    with track("pretrain", cfg) if rank == 0 else contextlib.nullcontext(Tracker()) as tracker:
        return _train(cfg, train_ids, val_ids, out_dir=out_dir, resume=resume, stop_after_steps=stop_after_steps,
                      device=device, progress=progress, on_eval=on_eval, drill_ids=drill_ids, probe=probe,
                      tracker=tracker)


def _train(cfg: TrainConfig, train_ids: torch.Tensor, val_ids: torch.Tensor, *, out_dir: str | Path | None,
           resume: bool, stop_after_steps: int | None, device: str | None, progress: bool,
           on_eval: Callable[[list[dict[str, float]]], None] | None, drill_ids: torch.Tensor | None,
           probe: Callable[[GPT], dict[str, float]] | None, tracker: Tracker) -> TrainResult:
    """:func:`train`, logging into ``tracker``."""
    if cfg.drill_rows and drill_ids is None:
        raise ValueError("cfg.drill_rows > 0 needs drill_ids: pass course_utils.drills.load_drill_tokens(...).")
    if cfg.gate is not None and probe is None:
        raise ValueError("cfg.gate needs a probe that measures reading_gate (course_utils.probes.gate_probe).")
    from tqdm.auto import tqdm

    rank, world = dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo" if (device or "cpu") == "cpu" else "nccl")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = Path(out_dir) / "checkpoint" if out_dir is not None else None
    if ckpt is not None and resume:
        _recover_checkpoint(ckpt)
    saved = _read_state(ckpt) if ckpt is not None and resume and (ckpt / "state.json").exists() else {}
    # precision="auto" is measured per process (autocast_dtype): a resumed run keeps the checkpoint's,
    # so a busy machine during the measurement cannot switch a bf16 run to fp32 half-way.
    dtype = autocast_dtype(device, saved.get("precision", cfg.precision) if cfg.precision == "auto" else cfg.precision)
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"

    def amp():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device, dtype=dtype)

    model = build_model(cfg).to(device)
    opt = _optimizer(model, cfg, device)
    schedule = Schedule(cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule.lr_factor)
    batches = _Batches(train_ids, cfg.seq_len, cfg.seed)
    drills = _Batches(drill_ids, cfg.seq_len, cfg.seed + 1) if cfg.drill_rows else None
    step, history = 0, []
    if saved:
        _check_resume_config(ckpt, saved["config"], cfg)
        schedule.load(saved.get("schedule"))
        step, history = _load_checkpoint(ckpt, model, opt, sched, batches, drills)
    resumed_from = step
    tracker.set_tags({"course.resumed_from": resumed_from})

    fwd = model
    sharded = distributed and (cfg.fsdp or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true")
    if sharded:  # FSDP: shard the (resumed) weights, then an optimizer over the shards, with its state
        plain = opt.state_dict()
        fwd = shard(model)
        opt = _optimizer(model, cfg, device, fused=False)
        load_whole_optimizer(model, opt, plain)
        old, sched = sched.state_dict(), torch.optim.lr_scheduler.LambdaLR(opt, schedule.lr_factor)
        sched.load_state_dict(old)
        for group, lr in zip(opt.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    elif distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model)
    model.activation_checkpointing = cfg.activation_checkpointing
    if cfg.compile:
        import torch._dynamo as dynamo

        # Where no C++ compiler is at hand, run the same model eagerly instead of failing.
        dynamo.config.suppress_errors = True
        fwd = torch.compile(fwd)

    flops_tok = model.flops_per_token(cfg.seq_len)
    peak = measure_peak_flops(dtype, device, n=cfg.peak_matmul) * world if cfg.peak_matmul else 0.0
    tokens_step = cfg.tokens_per_step(world)
    stop_at = cfg.max_steps if stop_after_steps is None else step + stop_after_steps
    bar = tqdm(total=schedule.end, initial=step, desc="pretraining", unit="step", disable=not progress or rank != 0)
    start = time.perf_counter()
    train_time, train_tokens = 0.0, 0
    extra: dict[str, Any] = {}
    model.train()
    while step < min(schedule.end, stop_at):
        t0 = time.perf_counter()
        step_loss = 0.0
        for micro in range(cfg.grad_accum):
            corpus_rows, drill_rows = schedule.rows(step)
            x, y = batches.next(corpus_rows * world)
            if drills is not None and drill_rows:
                dx, dy = drills.next(drill_rows * world)
                x, y = torch.cat([x, dx]), torch.cat([y, dy])
            x, y = x[rank::world].to(device), y[rank::world].to(device)  # this rank's share
            sync = (not distributed) or micro == cfg.grad_accum - 1
            with gradient_sync(fwd, sync):
                with amp():
                    _, loss = fwd(x, y)
                (loss / cfg.grad_accum).backward()
            step_loss += float(loss.detach()) / cfg.grad_accum
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if step == resumed_from:  # what this rank holds, gradients and optimizer moments included
            extra["state_bytes"] = state_bytes(model, opt)
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        _sync(device)
        dt = time.perf_counter() - t0
        if step > resumed_from + 1 or cfg.max_steps - resumed_from <= 1 or not cfg.compile:
            train_time += dt  # the first step of a compiled run is mostly compilation
            train_tokens += tokens_step
        tps = train_tokens / train_time if train_time else 0.0
        row = {
            "step": step,
            "tokens": step * tokens_step,
            "train_loss": step_loss,
            "lr": sched.get_last_lr()[0],
            "tokens_per_s": tps,
            "mfu": tps * flops_tok / peak if peak else 0.0,
            **model.moe_stats(),  # a mixture of experts: balancing loss, expert load ratio, dropped share
        }
        if step % cfg.eval_every == 0 or step == schedule.end:
            row["val_loss"] = _val_loss(model, val_ids, cfg, device, amp)
            if probe is not None and (rank == 0 or sharded):  # a sharded forward needs every rank
                model.eval()
                row.update(probe(model))
                model.train()
            if cfg.gate is not None and schedule.open_gate(step, from_rank0(row.get("reading_gate"), distributed)):
                row["decay_start"] = step  # the gate opened: decay from here, end decay_len steps later
                tracker.set_tags({"course.gate_step": step})
                bar.total = schedule.end
                bar.refresh()
        history.append(row)
        tracker.log_metrics(row, step=step)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tps:,.0f}", mfu=f"{row['mfu']:.0%}")
        if "val_loss" in row and on_eval is not None and rank == 0:
            on_eval(history)
        if ckpt is not None and (step % cfg.checkpoint_every == 0 or step >= min(schedule.end, stop_at)):
            saving = whole(model, opt) if sharded else (model, opt)  # a sharded run is gathered first
            if rank == 0:
                _save_checkpoint(ckpt, *saving, sched, batches, step, history, cfg, drills, precision,
                                 schedule.state())
    bar.close()
    wall = time.perf_counter() - start
    if out_dir is not None and rank == 0:
        Path(out_dir, "history.json").write_text(json.dumps(history))
    val = next((r["val_loss"] for r in reversed(history) if "val_loss" in r), float("nan"))
    if step == schedule.end and "val_loss" not in history[-1]:
        val = _val_loss(model, val_ids, cfg, device, amp)
    tps = train_tokens / train_time if train_time else 0.0
    extra.update({"world_size": world, "decay_start": schedule.decay_start, "gate_step": schedule.gate_step,
                  "fsdp": sharded})
    if distributed:
        import torch.distributed as dist

        if sharded:  # each rank holds its shards: the whole model, on rank 0, is what the run returns
            weights = whole(model, opt)[0].state_dict()
            model = build_model(cfg)
            if rank == 0:
                model.load_state_dict(weights)
        else:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, weights_digest(model))
            extra["rank_weight_digests"] = gathered
            extra["weights_identical_across_ranks"] = len(set(gathered)) == 1
        dist.barrier()
    result = TrainResult(
        model=model,
        history=history,
        val_loss=val,
        tokens_seen=step * tokens_step,
        tokens_per_s=tps,
        mfu=tps * flops_tok / peak if peak else 0.0,
        peak_flops=peak,
        precision=precision,
        params=model.num_params(),
        wall_s=wall,
        steps=step,
        resumed_from=resumed_from,
        extra=extra,
    )
    final = {k: v for k, v in result.summary().items() if not history or k not in history[-1]}
    tracker.log_metrics(final, step=step)  # the final figures, at the last step
    return result




# ---------------------------------------------------------------------- entry points
def _text_file_data(path: Path, vocab_size: int):
    """Documents from a plain text file (separated by blank lines), a tokenizer trained on them."""
    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer

    from course_utils.data import _read_text_corpus

    if not path.exists():
        raise FileNotFoundError(f"No such text file: {path}")
    docs = _read_text_corpus(path)  # names the file and line of bytes that are not UTF-8
    if len(docs) < 2:
        raise ValueError(f"{path} needs at least two documents separated by blank lines.")
    val_docs, train_docs = docs[::10], [d for i, d in enumerate(docs) if i % 10]
    tok = wrap_tokenizer(train_tokenizer(train_docs, vocab_size))
    return encode_documents(tok, train_docs), encode_documents(tok, val_docs), tok


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of preset ``name`` with top-level fields replaced (``max_steps=...``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.")
    cfg = PRESETS[name]()
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def run_pretraining(
    preset: str = "fast",
    *,
    out: str | Path | None = None,
    resume: bool = True,
    text_file: str | Path | None = None,
    settings: Settings | None = None,
    progress: bool = True,
    probe: Callable[[GPT], dict[str, float]] | None = None,
    **overrides: Any,
) -> tuple[TrainResult, Any]:
    """Train preset ``preset`` on the course corpus (or ``text_file``); ``(result, tokenizer)``.

    This is what ``course pretrain`` runs. Checkpoints go to ``out`` (resumed if present).
    A preset with ``drill_rows`` mixes in reading drills (:mod:`course_utils.drills`), tokenized
    with the same tokenizer. ``probe``: see :func:`train`.
    """
    from course_utils.drills import drill_documents, load_drill_tokens, pack_drills

    settings = settings or get_settings()
    cfg = get_preset(preset, seed=settings.seed, **overrides)
    drill_ids = None
    if text_file is not None:
        train_ids, val_ids, tok = _text_file_data(Path(text_file), cfg.model.vocab_size)
        if cfg.drill_rows:  # the learner's own tokenizer: drills encoded with it, not cached
            eos = torch.tensor([tok.eos_token_id], dtype=torch.int32)  # the last row's last target
            drill_ids = torch.cat([pack_drills(tok, drill_documents(cfg.drill_tokens() // 60 + 100), cfg.seq_len), eos])
    else:
        train_ids, val_ids, tok = load_token_data(settings)
        if cfg.drill_rows:
            drill_ids = load_drill_tokens(cfg.drill_tokens(), settings, tokenizer=tok, seq_len=cfg.seq_len)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    if out is not None:  # the run's own tokenizer beside its checkpoints from the start (export-hf --run)
        tok.save_pretrained(out)
    result = train(cfg, train_ids, val_ids, out_dir=out, resume=resume, progress=progress,
                   drill_ids=drill_ids, probe=probe)
    result.extra["unigram_baseline"] = unigram_baseline(train_ids, val_ids, len(tok))
    result.extra["preset"] = preset
    return result, tok


def load_or_build_base_model(settings: Settings | None = None, preset: str | None = None, *,
                             rebuild: bool = False, **overrides: Any) -> Path:
    """The course's base model: a transformers folder (``LlamaForCausalLM`` + tokenizer).

    Trained with ``preset`` (default: ``fast`` in fast mode, ``learner`` otherwise) on the
    course corpus and its reading drills the first time, then cached ("base-model"). Load it
    with ``AutoModelForCausalLM.from_pretrained(path)``. An interrupted build resumes from
    its last checkpoint. ``training.json`` in the folder holds the run's figures and its
    history: losses, and at every validation the reading and birthplace probes
    (:func:`course_utils.probes.reading_and_recall`, quick). ``rebuild=True`` trains again. ``overrides``
    replace preset fields (``drill_rows=0``); such a model is cached apart, and later
    notebooks keep using the preset's.
    """
    from course_utils.artifacts import config_dict, load_or_build
    from course_utils.drills import DrillConfig
    from course_utils.hf import export_hf
    from course_utils.tokenizer import TokenizerConfig, corpus_key

    settings = settings or get_settings()
    preset = preset or ("fast" if settings.fast else "learner")
    cfg = get_preset(preset, seed=settings.seed, **overrides)
    key = {
        "preset": preset,
        "train": config_dict(cfg),
        "tokenizer": config_dict(TokenizerConfig()),
        "corpus": corpus_key(settings),
        "drills": config_dict(DrillConfig()) if cfg.drill_rows else None,
        "version": 2,  # 2: probes logged in the history
    }
    n_reading, n_birth = (12, 24) if settings.fast else (60, 120)

    def build(folder: Path) -> None:
        from course_utils.tokenizer import load_or_build_tokenizer

        tokenizer = load_or_build_tokenizer(settings)

        from course_utils.probes import gate_probe, reading_and_recall

        def probe(model: GPT) -> dict[str, float]:
            out = reading_and_recall(model, tokenizer, settings, n_reading=n_reading, n_birthplace=n_birth, quick=True)
            return {**out, **gate_probe(model, tokenizer, settings)} if cfg.gate is not None else out

        result, tok = run_pretraining(preset, out=folder / "run", settings=settings, probe=probe, **overrides)
        export_hf(result.model.float().cpu(), folder, tok)
        (folder / "training.json").write_text(json.dumps({"summary": result.summary(), "history": result.history}))
        shutil.rmtree(folder / "run", ignore_errors=True)

    return load_or_build("base-model", key, build, settings=settings, rebuild=rebuild, track="pretrain")
