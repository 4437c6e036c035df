"""Direct preference optimisation (DPO): aligning the SFT model with preference pairs.

Taught in notebook 06 (sections "DPO from scratch" to "What DPO changed"), run from the
command line by ``course dpo``, and used by notebook 10 through
:func:`load_or_build_dpo_model`, which returns a transformers folder (artifact
``"dpo-model"``: the merged model at the top, the LoRA adapter in ``adapter/``).

What is here, in the order the notebook uses it:

- :func:`pair_batch` tokenizes preference pairs exactly as trl does (prompt rendered
  with the chat template and ``add_generation_prompt=True``; the completion is what
  ``prompt + answer`` adds to it) into one batch ``[chosen..., rejected...]``.
- :func:`sequence_logps` sums the log-probabilities of the completion tokens;
  :func:`dpo_loss` is the DPO loss written out; :func:`train_dpo_by_hand` takes a few
  optimizer steps with it; :func:`trl_dpo_loss` computes trl's loss on the same pairs
  (they agree to 1e-4).
- :func:`train_dpo`: trl's ``DPOTrainer`` with LoRA adapters, so the frozen reference
  is the same network with its adapters switched off (no second copy in memory); the
  history holds loss, reward accuracy, margins and the per-token KL to the reference.
- :func:`preference_scores` / :func:`preference_accuracy`: which answer of each held-out
  pair a model prefers, by likelihood and by DPO's implicit reward, per kind of flaw.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from course_utils.artifacts import training_record
from course_utils.hf import context_length, trainer_device_flags
from course_utils.settings import Settings, get_settings
from course_utils.tokenizer import encode_chat
from course_utils.tracking import guard_trainer, report_to, track

__all__ = [
    "DPORun",
    "DPORunConfig",
    "completion_kl",
    "default_config",
    "dpo_loss",
    "fitting_pairs",
    "load_or_build_dpo_model",
    "load_policy",
    "pair_batch",
    "plot_dpo_curves",
    "preference_accuracy",
    "preference_scores",
    "run_dpo",
    "sequence_logps",
    "tiny_chat_model",
    "train_dpo",
    "train_dpo_by_hand",
    "trl_dpo_loss",
]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class DPORunConfig:
    """One DPO run with LoRA adapters (the reference is the model with adapters off)."""

    max_steps: int = 160  # optimizer steps
    batch_size: int = 8  # preference pairs per step
    lr: float = 2e-4  # peak learning rate of the adapters (linear warmup, then linear decay); 240 steps at
    # 5e-4 drifted to a KL of 1.5 nats/token and cost 5 points of recall on the evaluation set (measured)
    warmup_ratio: float = 0.05  # share of steps spent warming up
    beta: float = 0.1  # strength of the pull towards the reference (higher: stay closer)
    sft_weight: float = 1.0  # weight of an added NLL loss on the chosen answers (RPO; 0: plain DPO). Plain DPO
    # of the course SFT model lowered chosen and rejected answers alike where it cannot tell them apart: passage
    # answers fell apart, recall 0.347 -> 0.294, reward-model win rate 35%; with it 0.341 and 47% (measured)
    lora_r: int = 16  # rank of each adapter
    lora_alpha: int = 32  # adapter scale is lora_alpha / lora_r
    target_modules: tuple[str, ...] = LORA_TARGETS  # linear layers that get adapters
    max_length: int = 256  # tokens per prompt + answer (cut at the model's context if smaller)
    train_pairs: int | None = None  # use only the first N training pairs (None: all)
    logging_steps: int = 10  # steps between logged metrics
    kl_every: int = 20  # steps between measurements of the KL to the reference
    kl_pairs: int = 16  # held-out pairs the KL is measured on
    seed: int = 1234  # adapter initialisation and data order


@dataclass
class DPORun:
    """What :func:`train_dpo` returns."""

    model: Any  # the trained PeftModel (reference = adapters disabled)
    history: list[dict[str, float]]  # logged rows: step, loss, accuracy, margin, chosen, rejected
    kl: list[dict[str, float]]  # {"step", "kl"}: per-token KL(policy || reference), nats/token
    seconds: float  # wall time of training
    step_seconds: float  # wall time per optimizer step
    trainable: int  # trainable (adapter) parameters
    total: int  # all parameters
    sft_weight: float = 0.0  # weight of the chosen answers' NLL in the logged loss (0: plain DPO loss)

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "history", "kl")}
        last = self.history[-1] if self.history else {}
        out.update(final_loss=last.get("loss"), final_accuracy=last.get("accuracy"),
                   final_margin=last.get("margin"), final_kl=self.kl[-1]["kl"] if self.kl else None)
        return out


# ---------------------------------------------------------------------- models
def tiny_chat_model(folder: str | Path, tokenizer=None, texts: list[str] | None = None, *, vocab_size: int = 400,
                    d_model: int = 32, n_layer: int = 2, seed: int = 0) -> Path:
    """Save a tiny randomly initialised ``LlamaForCausalLM`` with a chat tokenizer in ``folder``.

    For tests and for trying the code in seconds: it has the course's chat template and
    special tokens; ``tokenizer=None`` trains a small BPE on ``texts`` (default: the
    course's preference pairs).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer

    folder = Path(folder)
    if tokenizer is None:
        if texts is None:
            from course_utils.data import load_preferences

            texts = [m["content"] for r in load_preferences("train")[:400] for k in ("prompt", "chosen", "rejected")
                     for m in r[k]]
        tokenizer = wrap_tokenizer(train_tokenizer(texts, vocab_size))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layer,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def load_policy(sft_model: str | Path | None = None, settings: Settings | None = None):
    """``(model, tokenizer, source)``: the SFT model in float32, eval mode.

    ``sft_model=None`` is the course SFT model (artifact ``"sft-model"``, built if needed);
    a local folder or a hub id (only then is a hub contacted) goes through the same code.
    """
    from course_utils.sft import load_base

    settings = settings or get_settings()
    if sft_model is None:
        from course_utils.sft import load_or_build_sft_model

        sft_model = load_or_build_sft_model(settings)
    return load_base(sft_model, settings)


# ---------------------------------------------------------------------- the loss, from scratch
def _render_ids(tokenizer, messages, add_generation_prompt: bool = False) -> list[int]:
    return encode_chat(tokenizer, messages, add_generation_prompt)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pair_batch(tokenizer, records: list[dict[str, Any]], max_length: int | None = None) -> dict[str, torch.Tensor]:
    """One right-padded batch of ``2 * len(records)`` rows: the chosen answers first, then
    the rejected ones (row ``i`` and row ``i + B`` are the two answers to prompt ``i``).

    ``completion_mask`` is 1 on the answer's tokens (its ``<|end|>`` and the newline after
    it included), the only tokens whose log-probabilities DPO compares. Sequences longer
    than ``max_length`` keep their start, as trl's default does.
    """
    if not records:
        raise ValueError("pair_batch needs at least one preference pair.")
    rows, masks = [[], []], [[], []]
    for r in records:
        for key in ("prompt", "chosen", "rejected"):
            if key not in r:
                raise ValueError(f"Preference record {r.get('id', '?')} has no {key!r}: expected prompt/chosen/rejected "
                                 "message lists (data.load_preferences).")
        prompt = _render_ids(tokenizer, r["prompt"], add_generation_prompt=True)
        full = [_render_ids(tokenizer, r["prompt"] + r[k]) for k in ("chosen", "rejected")]
        n = min(_common_prefix(prompt, f) for f in full)  # where the answer starts
        for side, ids in enumerate(full):
            ids = ids[:max_length] if max_length else ids
            rows[side].append(ids)
            masks[side].append([0] * min(n, len(ids)) + [1] * max(0, len(ids) - n))
    seqs, cmask = rows[0] + rows[1], masks[0] + masks[1]
    T = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(seqs), T), pad, dtype=torch.long)
    attention = torch.zeros((len(seqs), T), dtype=torch.long)
    completion = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, cmask)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
        completion[i, : len(s)] = torch.tensor(m)
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def fitting_pairs(tokenizer, records: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """The records whose prompt + chosen and prompt + rejected both fit in ``max_length`` tokens
    (trl drops or cuts the others, so comparisons with trl use these)."""
    return [r for r in records
            if max(len(_render_ids(tokenizer, r["prompt"] + r[k])) for k in ("chosen", "rejected")) <= max_length]


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``log pi(answer | prompt)`` per row: the sum over the answer's tokens of the
    log-probability the model gives each next token. Shape ``(N,)``."""
    device = next(model.parameters()).device
    ids = batch["input_ids"].to(device)
    logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits  # (N, T, V)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (N, T-1, V): prediction of token t+1
    token_logp = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (N, T-1)
    mask = batch["completion_mask"][:, 1:].to(device, token_logp.dtype)  # answer tokens only
    return (token_logp * mask).sum(dim=1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, chosen_rewards, rejected_rewards)`` of DPO (Rafailov et al., 2023).

    The implicit reward of an answer is ``beta * (log pi(y|x) - log pi_ref(y|x))``: how much
    more likely the policy makes it than the reference. The loss is the Bradley-Terry
    negative log-likelihood that the chosen answer has the larger reward:
    ``-log sigmoid(r_chosen - r_rejected)``, averaged over the pairs.
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()


def dpo_batch_loss(policy, reference, batch: dict[str, torch.Tensor], beta: float = 0.1):
    """:func:`dpo_loss` of ``policy`` against the frozen ``reference`` on a :func:`pair_batch`."""
    logps = sequence_logps(policy, batch)
    with torch.no_grad():
        ref = sequence_logps(reference, batch)
    B = logps.shape[0] // 2
    return dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta)


def train_dpo_by_hand(policy, reference, tokenizer, records: list[dict[str, Any]], steps: int = 10,
                      batch_size: int = 8, lr: float = 1e-4, beta: float = 0.1, seed: int = 0,
                      progress: bool = True) -> list[dict[str, float]]:
    """A few AdamW steps of full fine-tuning with :func:`dpo_loss`: the whole algorithm in a loop.
    Returns ``{"step", "loss", "accuracy", "margin"}`` per step."""
    import random

    from tqdm.auto import tqdm

    rng = random.Random(seed)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy.train()
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=lr)
    ctx = context_length(policy)
    out = []
    for step in tqdm(range(1, steps + 1), desc="DPO by hand", disable=not progress, unit="step"):
        batch = pair_batch(tokenizer, rng.sample(records, min(batch_size, len(records))), ctx)
        loss, rc, rr = dpo_batch_loss(policy, reference, batch, beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append({"step": step, "loss": loss.item(), "accuracy": (rc > rr).float().mean().item(),
                    "margin": (rc - rr).mean().item()})
    policy.eval()
    return out


# ---------------------------------------------------------------------- trl
def _pref_dataset(records: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records])


def trl_dpo_loss(policy, reference, tokenizer, records: list[dict[str, Any]], beta: float = 0.1) -> dict[str, Any]:
    """trl's DPO loss on ``records`` (one batch), for checking :func:`dpo_loss` against it.

    Copies of the two models go to a ``DPOTrainer`` (it patches the models it is given);
    the batch is made by trl's own tokenization and collator. Returns ``loss`` and trl's
    logged ``rewards/*`` metrics for that batch.
    """
    import tempfile

    from trl import DPOConfig, DPOTrainer

    pol, ref = copy.deepcopy(policy).eval(), copy.deepcopy(reference).eval()
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, beta=beta, per_device_train_batch_size=len(records), report_to="none",
                         max_length=context_length(policy), save_strategy="no", **trainer_device_flags())
        trainer = DPOTrainer(model=pol, ref_model=ref, args=args, train_dataset=_pref_dataset(records),
                             processing_class=tokenizer)
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch)
        metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items() if k.startswith("rewards/") and v}
    return {"loss": float(loss), **metrics, "input_ids": batch["input_ids"]}


def completion_kl(model, batch: dict[str, torch.Tensor], reference=None) -> float:
    """Mean per-token KL(policy || reference) over the answer tokens of ``batch``, in nats.

    At each answer position both models give a distribution over the next token; the KL
    between them, averaged over positions, says how far the policy has moved. ``reference``
    None means ``model`` is a PeftModel and the reference is the model with adapters off.
    """
    device = next(model.parameters()).device
    ids, att = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
        if reference is None:
            with model.disable_adapter():
                logq = torch.log_softmax(model(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
        else:
            logq = torch.log_softmax(reference(input_ids=ids, attention_mask=att).logits[:, :-1].float(), -1)
    model.train(was_training)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (N, T-1)
    mask = batch["completion_mask"][:, 1:].to(device, kl.dtype)
    return float((kl * mask).sum() / mask.sum().clamp(min=1))


def _kl_callback(batch: dict[str, torch.Tensor], every: int, sink: list[dict[str, float]]):
    from transformers import TrainerCallback

    class KLCallback(TrainerCallback):
        """Measures :func:`completion_kl` every ``every`` steps on a fixed held-out batch."""

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                sink.append({"step": state.global_step, "kl": completion_kl(model, batch)})

    return KLCallback()


def make_lora_config(cfg: DPORunConfig):
    """peft's ``LoraConfig`` for ``cfg`` (causal LM, no dropout: the reference must be exact)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")


def train_dpo(model, tokenizer, records: list[dict[str, Any]], cfg: DPORunConfig,
              kl_records: list[dict[str, Any]] | None = None, out_dir: str | Path | None = None,
              progress: bool = True) -> DPORun:
    """DPO of ``model`` on ``records`` with trl's ``DPOTrainer`` and LoRA adapters.

    ``kl_records`` (held-out pairs, default the last training pairs) are where the KL to
    the reference is measured every ``cfg.kl_every`` steps. Recorded as an MLflow run of stage
    ``dpo`` (:mod:`course_utils.tracking`): trl logs its losses and rewards, this the KL and the
    final figures.
    """
    import tempfile

    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    if cfg.train_pairs:
        records = records[: cfg.train_pairs]
    if not records:
        raise ValueError("DPO needs at least one preference pair.")
    set_seed(cfg.seed)
    max_length = min(cfg.max_length, context_length(model))
    kl_batch = pair_batch(tokenizer, (kl_records or records[-cfg.kl_pairs:])[: cfg.kl_pairs], max_length)
    kl_rows: list[dict[str, float]] = []
    with track("dpo", cfg) as tracker:
        with tempfile.TemporaryDirectory() as tmp:
            args = DPOConfig(
                output_dir=str(out_dir or tmp), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.lr, warmup_steps=max(1, round(cfg.warmup_ratio * cfg.max_steps)),
                lr_scheduler_type="linear", beta=cfg.beta, max_length=max_length, logging_steps=cfg.logging_steps,
                save_strategy="no", report_to=report_to(), seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
                disable_tqdm=not progress, **trainer_device_flags(),
                **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, cfg.sft_weight]} if cfg.sft_weight else {}),
            )
            trainer = DPOTrainer(model=model, args=args, train_dataset=_pref_dataset(records),
                                 processing_class=tokenizer, peft_config=make_lora_config(cfg),
                                 callbacks=[_kl_callback(kl_batch, cfg.kl_every, kl_rows)])
            guard_trainer(trainer, tracker)  # a failing tracking store never stops the training
            kl_rows.append({"step": 0, "kl": completion_kl(trainer.model, kl_batch)})
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        trained = trainer.model.eval()
        history = [
            {"step": int(r["step"]), "loss": float(r["loss"]), "accuracy": float(r["rewards/accuracies"]),
             "margin": float(r["rewards/margins"]), "chosen": float(r["rewards/chosen"]),
             "rejected": float(r["rewards/rejected"]), "lr": float(r.get("learning_rate", 0.0))}
            for r in trainer.state.log_history if "loss" in r and "rewards/accuracies" in r
        ]
        total = sum(p.numel() for p in trained.parameters())
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        run = DPORun(model=trained, history=history, kl=kl_rows, seconds=seconds,
                     step_seconds=seconds / max(1, trainer.state.global_step), trainable=trainable, total=total,
                     sft_weight=cfg.sft_weight)
        for row in kl_rows:  # the KL to the reference on held-out answers, measured by the callback
            tracker.log_metrics({"kl": row["kl"]}, step=row["step"])
        tracker.log_metrics(run.summary(), step=trainer.state.global_step)
    return run


# ---------------------------------------------------------------------- which answer a model prefers
@torch.no_grad()
def preference_scores(model, tokenizer, records: list[dict[str, Any]], reference=None, batch_size: int = 16,
                      progress: bool = True, desc: str = "scoring pairs") -> list[dict[str, Any]]:
    """Per pair: ``flaw``, ``chosen`` and ``rejected`` = ``log pi(answer | prompt)`` under
    ``model``, and with a ``reference`` model also ``ref_chosen`` / ``ref_rejected``."""
    from tqdm.auto import tqdm

    model.eval()
    ctx = context_length(model)
    out = []
    for start in tqdm(range(0, len(records), batch_size), desc=desc, disable=not progress, unit="batch"):
        chunk = records[start : start + batch_size]
        batch = pair_batch(tokenizer, chunk, ctx)
        B = len(chunk)
        lp = sequence_logps(model, batch).cpu()
        ref = sequence_logps(reference.eval(), batch).cpu() if reference is not None else None
        for i, r in enumerate(chunk):
            row = {"id": r.get("id"), "flaw": r.get("flaw", "?"), "chosen": lp[i].item(), "rejected": lp[B + i].item()}
            if ref is not None:
                row.update(ref_chosen=ref[i].item(), ref_rejected=ref[B + i].item())
            out.append(row)
    return out


def _share(flags: list[float]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def preference_accuracy(scores: list[dict[str, Any]], beta: float = 0.1) -> dict[str, Any]:
    """How often the model prefers the chosen answer, overall and per flaw.

    ``likelihood``: share of pairs with ``log pi(chosen) > log pi(rejected)`` (any model).
    ``implicit`` (when the scores have a reference): share with a positive DPO implicit
    reward margin ``beta * [(log pi - log pi_ref)(chosen) - (log pi - log pi_ref)(rejected)]``;
    a model scored against itself has margin 0 everywhere, counted as 0.5 (a coin toss).
    ``margin``: the mean implicit reward margin.
    """
    if not scores:
        raise ValueError("No scores: score some preference pairs with preference_scores first.")

    def flags(rows):
        like = [float(r["chosen"] > r["rejected"]) + 0.5 * float(r["chosen"] == r["rejected"]) for r in rows]
        res = {"n": len(rows), "likelihood": _share(like)}
        if "ref_chosen" in rows[0]:
            m = [beta * ((r["chosen"] - r["ref_chosen"]) - (r["rejected"] - r["ref_rejected"])) for r in rows]
            res["implicit"] = _share([float(x > 1e-6) + 0.5 * float(abs(x) <= 1e-6) for x in m])
            res["margin"] = _share(m)
        return res

    out = flags(scores)
    by: dict[str, list] = {}
    for r in scores:
        by.setdefault(r["flaw"], []).append(r)
    out["by_flaw"] = {k: {kk: round(vv, 4) for kk, vv in flags(v).items()} for k, v in sorted(by.items())}
    return out


# ---------------------------------------------------------------------- plots
def plot_dpo_curves(run_or_record, ax=None):
    """Four panels over training steps: loss, reward accuracy, reward margin, KL to the reference.
    Accepts a :class:`DPORun` or the ``training.json`` dict of a DPO artifact."""
    import matplotlib.pyplot as plt

    hist = run_or_record.history if isinstance(run_or_record, DPORun) else run_or_record["history"]
    kl = run_or_record.kl if isinstance(run_or_record, DPORun) else run_or_record["kl"]
    sft_weight = (run_or_record.sft_weight if isinstance(run_or_record, DPORun)
                  else run_or_record["summary"].get("sft_weight", 0.0))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    steps = [h["step"] for h in hist]
    loss_label = f"DPO loss + {sft_weight:g} x NLL of chosen (nats)" if sft_weight else "DPO loss (nats)"
    panels = [("loss", loss_label), ("accuracy", "reward accuracy (share of pairs)"),
              ("margin", "reward margin r_chosen - r_rejected")]
    for a, (key, label) in zip(axes, panels):
        a.plot(steps, [h[key] for h in hist], marker="o", ms=3)
        a.set_xlabel("optimizer step")
        a.set_ylabel(label)
        a.grid(alpha=0.3)
    if not sft_weight:  # the DPO part alone starts at log 2 (policy = reference)
        axes[0].axhline(0.6931, ls="--", c="gray", lw=1, label="log 2 (no preference)")
        axes[0].legend()
    axes[3].plot([k["step"] for k in kl], [k["kl"] for k in kl], marker="o", ms=3, c="C3")
    axes[3].set_xlabel("optimizer step")
    axes[3].set_ylabel("KL(policy || reference), nats/token")
    axes[3].grid(alpha=0.3)
    fig.suptitle("DPO training (batch metrics; KL on held-out answers)")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- the artifact
def default_config(settings: Settings | None = None) -> DPORunConfig:
    """The DPO budget of this mode (fast: proves it runs; learner: shows the effect)."""
    settings = settings or get_settings()
    if settings.fast:
        return DPORunConfig(max_steps=12, batch_size=4, lr=1e-3, logging_steps=3, kl_every=4, kl_pairs=8,
                            seed=settings.seed)
    return DPORunConfig(seed=settings.seed)


def load_or_build_dpo_model(settings: Settings | None = None, sft_model: str | Path | None = None,
                            config: DPORunConfig | None = None, rebuild: bool = False,
                            progress: bool = True) -> Path:
    """The DPO model (artifact ``"dpo-model"``): a transformers folder with the tokenizer.

    Built the first time by :func:`train_dpo` of ``sft_model`` (None: the course SFT model)
    on the course preference training pairs. The folder holds the merged model (load it
    with ``AutoModelForCausalLM.from_pretrained``), the LoRA adapter in ``adapter/`` (load
    it over the SFT model with peft) and ``training.json`` (history, KL, timings).
    """
    from course_utils.artifacts import built_from, config_dict, load_or_build
    from course_utils.data import load_preferences, preferences_sha
    from course_utils.hf import model_key

    settings = settings or get_settings()
    config = config or default_config(settings)
    if sft_model is None:
        from course_utils.sft import load_or_build_sft_model

        sft_path = load_or_build_sft_model(settings)
        sft_key = built_from(sft_path)
    else:
        sft_path, sft_key = sft_model, model_key(sft_model)
    key = {"sft": sft_key, "dpo": config_dict(config), "data": preferences_sha(settings)}

    def build(folder: Path) -> None:
        model, tok, source = load_policy(sft_path, settings)
        train = load_preferences("train", settings=settings)
        held = load_preferences("test", settings=settings)
        run = train_dpo(model, tok, train, config, kl_records=held, progress=progress)
        run.model.save_pretrained(folder / "adapter")
        merged = run.model.merge_and_unload()
        merged.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps(
            {"summary": run.summary(), "history": run.history, "kl": run.kl, "sft": str(source)}))

    return load_or_build("dpo-model", key, build, settings=settings, rebuild=rebuild, track="dpo")


def load_model(path: str | Path):
    """``(model, tokenizer)`` of a transformers folder, float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def run_dpo(settings: Settings | None = None, sft_model: str | Path | None = None, pairs: int | None = None,
            eval_limit: int | None = None, max_new_tokens: int = 48, progress: bool = True) -> dict[str, Any]:
    """What ``course dpo`` runs: build (or load) the DPO model, then compare it with the SFT
    model on held-out preference pairs (likelihood and implicit-reward accuracy) and on the
    evaluation set's seen fact questions (exact match, answer contained)."""
    from course_utils.data import load_eval, load_preferences
    from course_utils.harness import EvalConfig, evaluate_model

    settings = settings or get_settings()
    pairs = pairs or (40 if settings.fast else 300)
    eval_limit = eval_limit or (24 if settings.fast else 170)
    path = load_or_build_dpo_model(settings, sft_model, progress=progress)
    rec = training_record(path)
    sft, tok, _ = load_policy(sft_model if sft_model is not None else rec["sft"], settings)
    dpo, _ = load_model(path)
    held = load_preferences("test", settings=settings)[:pairs]
    beta = default_config(settings).beta
    acc_sft = preference_accuracy(preference_scores(sft, tok, held, progress=progress, desc="SFT pairs"), beta)
    acc_dpo = preference_accuracy(preference_scores(dpo, tok, held, reference=sft, progress=progress,
                                                    desc="DPO pairs"), beta)
    questions = load_eval(seen=True, kind="fact", settings=settings)[:eval_limit]
    cfg = EvalConfig(max_new_tokens=max_new_tokens, perplexity=False, relevancy=False, progress=progress,
                     seed=settings.seed)
    ev = {}
    for name, m in (("sft", sft), ("dpo", dpo)):
        s = evaluate_model(name, questions, settings=settings, config=cfg, model=m, tokenizer=tok).scores()
        ev[name] = {k: round(s[k], 4) for k in ("em", "f1", "contains", "stopped")}
    return {
        "dpo_model": str(path),
        "training": rec["summary"],
        "pairs": len(held),
        "preference_sft": {"likelihood": round(acc_sft["likelihood"], 4),
                           "by_flaw": {k: v["likelihood"] for k, v in acc_sft["by_flaw"].items()}},
        "preference_dpo": {"likelihood": round(acc_dpo["likelihood"], 4), "implicit": round(acc_dpo["implicit"], 4),
                           "by_flaw": {k: v["implicit"] for k, v in acc_dpo["by_flaw"].items()}},
        "eval_questions": len(questions),
        "eval": ev,
    }
