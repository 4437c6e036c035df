"""A minimal GRPO loop: reinforcement learning on a reward checked by a rule.

Taught in notebook 06 (section "PPO and GRPO, run small"). PPO (InstructGPT) samples
answers from the policy, scores them with a reward model, estimates an advantage with a
learned value model and takes clipped policy-gradient steps with a KL penalty towards the
reference. GRPO (DeepSeekMath) drops the value model: it samples a *group* of answers
per prompt and uses each answer's reward minus the group's mean, divided by the group's
standard deviation, as its advantage. Everything else is PPO's clipped objective.

The task here needs no reward model: the policy answers questions about facts of the
world, and :func:`rule_reward` checks the answer with a rule (the right values from
``world.json`` are in the reply, and the reply is short and closes its turn).

- :func:`two_fact_tasks`: two questions about one entity in one message (notebook 06's task: SFT
  taught each question alone, so the SFT model answers one and leaves room to learn);
  :func:`fact_tasks`: one question each (SFT fold A: facts the SFT model was taught);
- :func:`rule_reward`, :func:`group_advantages`, :func:`grpo_loss`: the three ideas;
- :func:`train_grpo`: the loop (sample a group, score, advantages, a few clipped steps);
- :func:`plot_grpo`: reward, correctness, length and KL over steps.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from course_utils.settings import Settings, get_settings
from course_utils.generation import end_ids
from course_utils.tokenizer import encode_chat
from course_utils.tracking import track

__all__ = [
    "GRPOConfig",
    "GRPORun",
    "default_config",
    "fact_tasks",
    "grpo_loss",
    "group_advantages",
    "plot_grpo",
    "rule_reward",
    "sample_group",
    "train_grpo",
    "two_fact_tasks",
]


@dataclass
class GRPOConfig:
    """One GRPO run (full fine-tuning of the policy; the reference is a frozen copy)."""

    steps: int = 90  # policy updates (each on a fresh batch of sampled answers)
    prompts_per_step: int = 8  # prompts per step
    group_size: int = 8  # answers sampled per prompt (the group that normalises the reward)
    inner_epochs: int = 2  # gradient steps on each batch of samples (the ratio moves from 1 after the first)
    max_new_tokens: int = 32  # longest sampled answer, in tokens (two facts fit)
    temperature: float = 1.0  # sampling temperature
    lr: float = 1e-4  # AdamW learning rate
    clip_eps: float = 0.2  # PPO clipping: the ratio pi/pi_old counts only within [1 - eps, 1 + eps]
    kl_coef: float = 0.1  # weight of the KL penalty towards the reference
    max_words: int = 20  # answers longer than this lose the length part of the reward (two facts in a sentence)
    seed: int = 1234  # prompt order and sampling


@dataclass
class GRPORun:
    """What :func:`train_grpo` returns."""

    model: Any  # the trained policy
    history: list[dict[str, float]]  # per step: reward, correct, short, words, kl, clipped, loss
    seconds: float  # wall time of the loop

    def summary(self) -> dict[str, Any]:
        """First and last quarters' mean reward, the KL of the last step and the last quarter's mean KL
        (a single step's KL is noisy), and the wall time."""
        h = self.history
        k = max(1, len(h) // 4)
        first = sum(r["reward"] for r in h[:k]) / k if h else float("nan")
        last = sum(r["reward"] for r in h[-k:]) / k if h else float("nan")
        kl_last = sum(r["kl"] for r in h[-k:]) / k if h else float("nan")
        return {"steps": len(h), "reward_first_quarter": first, "reward_last_quarter": last,
                "seconds": self.seconds, "final_kl": h[-1]["kl"] if h else None, "kl_last_quarter": kl_last}


# ---------------------------------------------------------------------- the task and its rule
def fact_tasks(settings: Settings | None = None, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Closed-book questions about fold-A facts (taught in SFT): ``{"prompt": [user message],
    "answer": value, "attribute"}``, shuffled with ``seed``; ``n`` keeps the first n."""
    from course_utils.corpus import QUESTIONS, ref
    from course_utils.data import world
    from course_utils.supervised import SetsConfig, split_seen_facts

    w = world(settings)
    fold_a, _ = split_seen_facts(w, SetsConfig())
    tasks = []
    for f in fold_a:
        e = w.get(f.entity_id)
        q = QUESTIONS[(e.kind, f.attribute)][0].format(s=ref(e))
        tasks.append({"prompt": [{"role": "user", "content": q}], "answer": f.value, "attribute": f.attribute})
    random.Random(seed).shuffle(tasks)
    return tasks[:n] if n else tasks


def two_fact_tasks(settings: Settings | None = None, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Two closed-book questions about the same fold-A entity in one message ("In which town was X
    born? And which guild did X belong to?"): ``{"prompt", "answer": [value, value], "attribute"}``.
    SFT taught each question alone, never a pair, so the SFT model often answers only one: room for
    GRPO to learn to answer the whole question (:func:`rule_reward` gives half credit for one)."""
    from course_utils.corpus import QUESTIONS, ref
    from course_utils.data import world
    from course_utils.supervised import SetsConfig, split_seen_facts

    w = world(settings)
    fold_a, _ = split_seen_facts(w, SetsConfig())
    by_entity: dict[str, list] = {}
    for f in fold_a:
        by_entity.setdefault(f.entity_id, []).append(f)
    rng = random.Random(seed)
    tasks = []
    for eid in sorted(by_entity):
        facts = sorted(by_entity[eid], key=lambda f: f.attribute)
        if len(facts) < 2:
            continue
        e = w.get(eid)
        a, b = rng.sample(facts, 2)
        qa = rng.choice(QUESTIONS[(e.kind, a.attribute)]).format(s=ref(e))
        qb = rng.choice(QUESTIONS[(e.kind, b.attribute)]).format(s=ref(e))
        tasks.append({"prompt": [{"role": "user", "content": f"{qa} And {qb[0].lower()}{qb[1:]}"}],
                      "answer": [a.value, b.value], "attribute": f"{a.attribute}+{b.attribute}"})
    rng.shuffle(tasks)
    return tasks[:n] if n else tasks


def rule_reward(reply: str, answer: str | list[str], stopped: bool = True, max_words: int = 12) -> dict[str, float]:
    """The rule: ``correct`` = 1 when the gold value is in the reply (whole words, any case);
    with several values (``answer`` a list), the share of them in the reply. ``short`` = 1 when
    the reply closed its turn within ``max_words`` words.
    ``reward = correct * (1 + 0.5 * short)``: brevity earns a bonus only on a right answer.
    (With ``correct + 0.5 * short`` a short *wrong* answer earns 0.5, and GRPO learns to be
    short rather than right: reward hacking, measured in notebook 06's first version.)"""
    from course_utils.metrics import contains_answer  # the harness's "answer contained" (notebook 10)

    golds = [answer] if isinstance(answer, str) else list(answer)
    correct = sum(contains_answer(reply, g) for g in golds) / len(golds)
    words = len(reply.split())
    short = float(stopped and words <= max_words)
    return {"reward": correct * (1.0 + 0.5 * short), "correct": correct, "short": short, "words": float(words)}


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage: each reward minus its group's mean, over the group's std.
    ``rewards`` is ``(P, G)`` (prompts x answers); a group where all rewards are equal
    gets advantage 0 (nothing to learn from it)."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, kl_coef: float = 0.04) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate with a KL penalty, per token, averaged per answer then over answers.

    ``logps``/``old_logps``/``ref_logps``: ``(N, C)`` log-probabilities of the sampled tokens
    under the policy now, when it sampled them, and under the reference; ``advantages``:
    ``(N,)``; ``mask``: ``(N, C)``, 1 on real answer tokens. The KL uses the unbiased,
    always-positive estimator ``exp(ref - logp) - (ref - logp) - 1``.
    """
    ratio = torch.exp(logps - old_logps)  # pi / pi_old per token
    adv = advantages.unsqueeze(1)  # (N, 1)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv
    surrogate = torch.minimum(unclipped, clipped)  # pessimistic: no credit for moving too far
    d = ref_logps - logps
    kl = torch.exp(d) - d - 1
    per_token = -(surrogate - kl_coef * kl)
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    with torch.no_grad():
        stats = {"kl": float(((kl * mask).sum(1) / lengths).mean()),
                 "clipped": float((((ratio - 1).abs() > clip_eps).float() * mask).sum() / mask.sum().clamp(min=1))}
    return loss, stats


# ---------------------------------------------------------------------- sampling and log-probs
@torch.no_grad()
def sample_group(model, tokenizer, prompts: list[list[dict[str, str]]], group_size: int, max_new_tokens: int = 24,
                 temperature: float = 1.0) -> dict[str, Any]:
    """Sample ``group_size`` answers to each prompt. Returns the token batch (prompt left-padded
    to ``P`` columns, answer after it), the answer ``mask`` (up to and including the end token)
    and the decoded ``replies`` with ``stopped`` flags, in prompt-major order."""
    model.eval()
    device = next(model.parameters()).device
    ends = end_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0]
    enc = [encode_chat(tokenizer, p, add_generation_prompt=True) for p in prompts]
    P = max(len(e) for e in enc)
    ids = torch.full((len(enc), P), pad, dtype=torch.long)
    att = torch.zeros((len(enc), P), dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, P - len(e):] = torch.tensor(e)
        att[i, P - len(e):] = 1
    ids, att = ids.repeat_interleave(group_size, 0), att.repeat_interleave(group_size, 0)
    out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                         temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                         eos_token_id=ends, pad_token_id=pad).cpu()
    answer = out[:, P:]
    mask = torch.zeros_like(answer)
    replies, stopped = [], []
    for i, row in enumerate(answer.tolist()):
        stop = next((j for j, t in enumerate(row) if t in ends), None)
        n = len(row) if stop is None else stop + 1
        mask[i, :n] = 1
        body = row if stop is None else row[:stop]
        replies.append(tokenizer.decode(body, skip_special_tokens=True).strip())
        stopped.append(stop is not None)
    full_att = torch.cat([att, mask], dim=1)
    return {"input_ids": out, "attention_mask": full_att, "mask": mask.float(), "prompt_len": P,
            "replies": replies, "stopped": stopped}


def answer_logps(model, batch: dict[str, Any], temperature: float = 1.0) -> torch.Tensor:
    """``(N, C)`` log-probabilities of the answer tokens of a :func:`sample_group` batch."""
    device = next(model.parameters()).device
    ids, att = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)  # positions that ignore the left padding, as generate does
    P = batch["prompt_len"]
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, ids[:, P:].unsqueeze(-1)).squeeze(-1)


# ---------------------------------------------------------------------- the loop
def train_grpo(model, tokenizer, tasks: list[dict[str, Any]], cfg: GRPOConfig, progress: bool = True,
               reward_fn=rule_reward) -> GRPORun:
    """GRPO on ``tasks`` (from :func:`fact_tasks`): full fine-tuning of ``model`` in place,
    against a frozen copy of it as the reference. ``reward_fn(reply, answer, stopped, max_words)``
    returns a dict with ``reward``, ``correct``, ``short``, ``words`` (default :func:`rule_reward`).
    Recorded as an MLflow run of stage ``grpo`` (:mod:`course_utils.tracking`): the config, and each
    step's row (reward, its parts, KL, clipped share, loss) as metrics."""
    from tqdm.auto import tqdm

    if not tasks:
        raise ValueError("GRPO needs at least one task (a prompt and its answer).")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    history: list[dict[str, float]] = []
    with track("grpo", cfg) as tracker:
        start = time.perf_counter()
        bar = tqdm(range(1, cfg.steps + 1), desc="GRPO", disable=not progress, unit="step")
        for step in bar:
            chosen = rng.sample(tasks, min(cfg.prompts_per_step, len(tasks)))
            batch = sample_group(model, tokenizer, [t["prompt"] for t in chosen], cfg.group_size, cfg.max_new_tokens,
                                 cfg.temperature)
            scores = [reward_fn(r, chosen[i // cfg.group_size]["answer"], s, cfg.max_words)
                      for i, (r, s) in enumerate(zip(batch["replies"], batch["stopped"]))]
            rewards = torch.tensor([s["reward"] for s in scores]).view(len(chosen), cfg.group_size)
            adv = group_advantages(rewards).view(-1)
            mask = batch["mask"]
            with torch.no_grad():
                ref_logps = answer_logps(reference, batch, cfg.temperature)
            model.train()
            old_logps = None
            for _ in range(cfg.inner_epochs):
                logps = answer_logps(model, batch, cfg.temperature)
                if old_logps is None:
                    old_logps = logps.detach()  # the policy that sampled: ratio 1 on the first pass
                loss, stats = grpo_loss(logps, old_logps, ref_logps, adv, mask, cfg.clip_eps, cfg.kl_coef)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            model.eval()
            row = {"step": step, "loss": loss.item(), **stats,
                   **{k: sum(s[k] for s in scores) / len(scores) for k in ("reward", "correct", "short", "words")}}
            history.append(row)
            bar.set_postfix(reward=f"{row['reward']:.2f}", kl=f"{row['kl']:.3f}")
            tracker.log_metrics(row, step=step)
        run = GRPORun(model=model, history=history, seconds=time.perf_counter() - start)
        tracker.log_metrics(run.summary(), step=len(history))
    return run


@torch.no_grad()
def greedy_reward(model, tokenizer, tasks: list[dict[str, Any]], max_new_tokens: int = 24, max_words: int = 12,
                  progress: bool = False) -> dict[str, float]:
    """Mean rule reward, correct share and short share of the model's greedy answers to ``tasks``."""
    from course_utils.generation import generate_answers

    outs = generate_answers(model, tokenizer, [t["prompt"] for t in tasks], max_new_tokens, progress=progress,
                            desc="greedy answers")
    scores = [rule_reward(o["reply"], t["answer"], o["stopped"], max_words) for o, t in zip(outs, tasks)]
    return {k: sum(s[k] for s in scores) / len(scores) for k in ("reward", "correct", "short", "words")}


def plot_grpo(run_or_history, window: int = 3):
    """Mean reward (and its two parts) and KL to the reference over GRPO steps."""
    import matplotlib.pyplot as plt

    h = run_or_history.history if isinstance(run_or_history, GRPORun) else run_or_history
    steps = [r["step"] for r in h]

    def smooth(v):
        return [sum(v[max(0, i - window + 1): i + 1]) / len(v[max(0, i - window + 1): i + 1]) for i in range(len(v))]

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6))
    for key, label in (("reward", "reward (correct x (1 + 0.5 short))"), ("correct", "share correct"),
                       ("short", "share short")):
        a.plot(steps, smooth([r[key] for r in h]), label=label)
    a.set_xlabel("GRPO step")
    a.set_ylabel(f"mean over sampled answers ({window}-step average)")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(steps, [r["kl"] for r in h], c="C3")
    b.set_xlabel("GRPO step")
    b.set_ylabel("KL(policy || reference), nats/token")
    b.grid(alpha=0.3)
    fig.suptitle("GRPO on a rule-checked reward")
    fig.tight_layout()
    return fig


def default_config(settings: Settings | None = None) -> GRPOConfig:
    """The GRPO budget of this mode (fast: proves it runs; learner: shows the reward rising)."""
    settings = settings or get_settings()
    if settings.fast:
        return GRPOConfig(steps=4, prompts_per_step=3, group_size=4, max_new_tokens=16, seed=settings.seed)
    return GRPOConfig(seed=settings.seed)
