"""A reward model: the SFT model with a scalar head, trained on preference pairs.

Taught in notebook 06 (section "A reward model"), run from the command line by
``course reward-model``, and used by notebook 10 through
:func:`load_or_build_reward_model` (artifact ``"reward-model"``: a transformers
``AutoModelForSequenceClassification`` folder with ``num_labels=1``).

The model reads a whole conversation (prompt and answer, rendered with the chat
template) and returns one number, the reward, from its last token. It is trained with
the Bradley-Terry loss ``-log sigmoid(r(chosen) - r(rejected))`` by trl's
``RewardTrainer``: only the difference of two rewards is learned, so a reward means
something only next to another reward for the same prompt.

- :func:`train_reward_model`, :func:`load_or_build_reward_model`;
- :func:`reward_scores` (rewards of answers to prompts), :func:`pair_rewards` and
  :func:`reward_accuracy` (held-out accuracy per kind of flaw), :func:`plot_margins`;
- :func:`win_rate`: how often the reward model prefers one model's answers to another's.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from course_utils.artifacts import training_record
from course_utils.hf import context_length, resolve_model_source, trainer_device_flags
from course_utils.settings import Settings, get_settings
from course_utils.tracking import guard_trainer, report_to, track

__all__ = [
    "RewardRun",
    "RewardRunConfig",
    "default_config",
    "load_backbone",
    "load_or_build_reward_model",
    "load_reward_model",
    "pair_rewards",
    "plot_margins",
    "reward_accuracy",
    "reward_scores",
    "run_reward_model",
    "train_reward_model",
    "win_rate",
]


@dataclass
class RewardRunConfig:
    """One reward-model run (full fine-tuning of the backbone and the new scalar head)."""

    max_steps: int = 150  # optimizer steps (200 took 233 s for the same 100% on the clear flaws)
    batch_size: int = 16  # preference pairs per step
    lr: float = 5e-4  # peak learning rate (linear warmup, then linear decay)
    warmup_ratio: float = 0.05  # share of steps spent warming up
    weight_decay: float = 0.0  # AdamW weight decay
    max_length: int = 256  # pairs with a longer conversation are left out (cut at the model's context)
    center_rewards: float | None = 0.01  # pull rewards towards mean 0 (trl's center_rewards_coefficient)
    train_pairs: int | None = None  # use only the first N training pairs (None: all)
    logging_steps: int = 10  # steps between logged losses
    seed: int = 1234  # head initialisation and data order


@dataclass
class RewardRun:
    """What :func:`train_reward_model` returns."""

    model: Any  # the trained reward model (AutoModelForSequenceClassification, num_labels=1)
    history: list[dict[str, float]]  # {"step", "loss", "accuracy", "margin"} per logged step
    seconds: float  # wall time of training
    step_seconds: float  # wall time per optimizer step
    pairs_used: int  # training pairs that fit in max_length

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "history")}
        last = self.history[-1] if self.history else {}
        out.update(final_loss=last.get("loss"), final_accuracy=last.get("accuracy"))
        return out


# ---------------------------------------------------------------------- the model
def load_backbone(base_model: str | Path | None = None, settings: Settings | None = None):
    """``(model, tokenizer, source)``: ``base_model`` with a fresh scalar head (``num_labels=1``).

    ``base_model=None`` is the course SFT model (it already knows the chat format, as in
    InstructGPT); a local folder or a hub id goes through the same code.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from course_utils.sft import ensure_chat_template

    settings = settings or get_settings()
    if base_model is None:
        from course_utils.sft import load_or_build_sft_model

        base_model = load_or_build_sft_model(settings)
    source = resolve_model_source(base_model, "REWARD_BASE")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    ensure_chat_template(tokenizer, model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return model, tokenizer, source


def _pref_dataset(records: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records])


def train_reward_model(model, tokenizer, records: list[dict[str, Any]], cfg: RewardRunConfig,
                       out_dir: str | Path | None = None, progress: bool = True) -> RewardRun:
    """Train ``model`` (a scalar-head model from :func:`load_backbone`) with trl's ``RewardTrainer``,
    recorded as an MLflow run of stage ``reward`` (:mod:`course_utils.tracking`)."""
    import tempfile

    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    if cfg.train_pairs:
        records = records[: cfg.train_pairs]
    if not records:
        raise ValueError("The reward model needs at least one preference pair.")
    if getattr(model.config, "num_labels", None) != 1:
        raise ValueError("A reward model has one output: load it with load_backbone (num_labels=1).")
    set_seed(cfg.seed)
    with track("reward", cfg) as tracker:  # trl logs loss, accuracy and margin into this run
        with tempfile.TemporaryDirectory() as tmp:
            args = RewardConfig(
                output_dir=str(out_dir or tmp), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.lr, warmup_steps=max(1, round(cfg.warmup_ratio * cfg.max_steps)),
                lr_scheduler_type="linear", weight_decay=cfg.weight_decay,
                max_length=min(cfg.max_length, context_length(model)), center_rewards_coefficient=cfg.center_rewards,
                logging_steps=cfg.logging_steps, save_strategy="no", report_to=report_to(), seed=cfg.seed,
                data_seed=cfg.seed, dataloader_num_workers=0, disable_tqdm=not progress, **trainer_device_flags(),
            )
            trainer = RewardTrainer(model=model, args=args, train_dataset=_pref_dataset(records),
                                    processing_class=tokenizer)
            guard_trainer(trainer, tracker)  # a failing tracking store never stops the training
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        history = [
            {"step": int(r["step"]), "loss": float(r["loss"]), "accuracy": float(r.get("accuracy", float("nan"))),
             "margin": float(r.get("margin", float("nan")))}
            for r in trainer.state.log_history if "loss" in r
        ]
        run = RewardRun(model=trainer.model.eval(), history=history, seconds=seconds,
                        step_seconds=seconds / max(1, trainer.state.global_step), pairs_used=len(trainer.train_dataset))
        tracker.log_metrics(run.summary(), step=trainer.state.global_step)
    return run


# ---------------------------------------------------------------------- scoring
@torch.no_grad()
def reward_scores(model, tokenizer, prompts: list[list[dict[str, str]]], answers: list[str], batch_size: int = 32,
                  progress: bool = False, desc: str = "rewards") -> list[float]:
    """The reward of each ``answers[i]`` (assistant text) to ``prompts[i]`` (a list of messages)."""
    from tqdm.auto import tqdm

    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers.")
    model.eval()
    device = next(model.parameters()).device
    ctx = context_length(model)
    texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": a}], tokenize=False)
             for p, a in zip(prompts, answers)]
    pad = tokenizer.pad_token_id
    out: list[float] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, unit="batch"):
        enc = [tokenizer(t, add_special_tokens=False)["input_ids"][-ctx:] for t in texts[start : start + batch_size]]
        T = max(len(e) for e in enc)
        ids = torch.full((len(enc), T), pad, dtype=torch.long)
        att = torch.zeros((len(enc), T), dtype=torch.long)
        for i, e in enumerate(enc):  # right padding: the head reads the last real token
            ids[i, : len(e)] = torch.tensor(e)
            att[i, : len(e)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits  # (B, 1)
        out.extend(logits[:, 0].float().cpu().tolist())
    return out


def pair_rewards(model, tokenizer, records: list[dict[str, Any]], batch_size: int = 32,
                 progress: bool = True) -> list[dict[str, Any]]:
    """Per pair: ``id``, ``flaw``, ``chosen`` and ``rejected`` rewards, ``margin`` = their difference."""
    prompts = [r["prompt"] for r in records]
    chosen = reward_scores(model, tokenizer, prompts, [r["chosen"][-1]["content"] for r in records], batch_size,
                           progress, "rewards of chosen")
    rejected = reward_scores(model, tokenizer, prompts, [r["rejected"][-1]["content"] for r in records], batch_size,
                             progress, "rewards of rejected")
    return [{"id": r.get("id"), "flaw": r.get("flaw", "?"), "chosen": c, "rejected": j, "margin": c - j}
            for r, c, j in zip(records, chosen, rejected)]


def reward_accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of pairs whose chosen answer gets the higher reward, overall and ``by_flaw``
    (ties count half), with the mean margin."""
    if not rows:
        raise ValueError("No pairs scored: run pair_rewards on some preference pairs first.")

    def acc(rs):
        wins = [float(r["margin"] > 0) + 0.5 * float(r["margin"] == 0) for r in rs]
        return {"n": len(rs), "accuracy": round(sum(wins) / len(rs), 4),
                "mean_margin": round(sum(r["margin"] for r in rs) / len(rs), 4)}

    out = acc(rows)
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["flaw"], []).append(r)
    out["by_flaw"] = {k: acc(v) for k, v in sorted(by.items())}
    return out


def win_rate(model, tokenizer, prompts: list[list[dict[str, str]]], answers_a: list[str], answers_b: list[str],
             batch_size: int = 32) -> dict[str, Any]:
    """How often the reward model scores ``answers_a[i]`` above ``answers_b[i]`` (ties count half).

    Identical answers are ties. Returns ``win_rate``, ``wins``, ``ties``, ``losses``, ``n`` and the
    mean reward of each side."""
    ra = reward_scores(model, tokenizer, prompts, answers_a, batch_size)
    rb = reward_scores(model, tokenizer, prompts, answers_b, batch_size)
    wins = ties = 0
    for a, b, x, y in zip(answers_a, answers_b, ra, rb):
        if a.strip() == b.strip() or abs(x - y) < 1e-6:
            ties += 1
        elif x > y:
            wins += 1
    n = len(prompts)
    return {"n": n, "win_rate": (wins + 0.5 * ties) / n if n else float("nan"), "wins": wins, "ties": ties,
            "losses": n - wins - ties, "mean_reward_a": sum(ra) / max(1, n), "mean_reward_b": sum(rb) / max(1, n)}


def plot_margins(rows: list[dict[str, Any]], ax=None, bins: int = 30):
    """Histogram of reward margins r(chosen) - r(rejected) per kind of flaw (right of 0: correct)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.6))
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["flaw"], []).append(r["margin"])
    lo = min(r["margin"] for r in rows)
    hi = max(r["margin"] for r in rows)
    edges = torch.linspace(min(lo, -1.0), max(hi, 1.0), bins + 1).tolist()
    ax.hist(list(by.values()), bins=edges, stacked=True, label=list(by.keys()))
    ax.axvline(0, c="k", lw=1, ls="--")
    ax.set_xlabel("reward margin r(chosen) - r(rejected)")
    ax.set_ylabel("held-out pairs")
    ax.set_title("Reward margins on held-out pairs (right of the dashed line: chosen preferred)")
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------------- the artifact
def default_config(settings: Settings | None = None) -> RewardRunConfig:
    """The reward-model budget of this mode (fast: proves it runs; learner: shows the effect)."""
    settings = settings or get_settings()
    if settings.fast:
        return RewardRunConfig(max_steps=15, batch_size=8, lr=1e-3, logging_steps=5, seed=settings.seed)
    return RewardRunConfig(seed=settings.seed)


def load_reward_model(path: str | Path):
    """``(model, tokenizer)`` of a reward-model folder, float32, eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} is not a reward-model folder (no config.json): "
                                "build one with load_or_build_reward_model().")
    model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def load_or_build_reward_model(settings: Settings | None = None, base_model: str | Path | None = None,
                               config: RewardRunConfig | None = None, rebuild: bool = False,
                               progress: bool = True) -> Path:
    """The reward model (artifact ``"reward-model"``): a sequence-classification folder with
    ``num_labels=1`` and the tokenizer; ``training.json`` holds the history and timings.

    Built the first time from ``base_model`` (None: the course SFT model) on the course
    preference training pairs. Load it with :func:`load_reward_model`."""
    from course_utils.artifacts import built_from, config_dict, load_or_build
    from course_utils.data import load_preferences, preferences_sha
    from course_utils.hf import model_key

    settings = settings or get_settings()
    config = config or default_config(settings)
    if base_model is None:
        from course_utils.sft import load_or_build_sft_model

        base_path = load_or_build_sft_model(settings)
        base_key = built_from(base_path)
    else:
        base_path, base_key = base_model, model_key(base_model)
    key = {"base": base_key, "reward": config_dict(config), "data": preferences_sha(settings)}

    def build(folder: Path) -> None:
        model, tok, source = load_backbone(base_path, settings)
        run = train_reward_model(model, tok, load_preferences("train", settings=settings), config, progress=progress)
        run.model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps({"summary": run.summary(), "history": run.history,
                                                          "base": source}))

    return load_or_build("reward-model", key, build, settings=settings, rebuild=rebuild, track="reward")


def run_reward_model(settings: Settings | None = None, base_model: str | Path | None = None,
                     pairs: int | None = None, with_win_rate: bool = False, prompts: int | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """What ``course reward-model`` runs: build (or load) the reward model and measure its
    accuracy on held-out pairs per flaw; with ``with_win_rate`` also the win rate of the DPO
    model's answers over the SFT model's on ``prompts`` held-out preference prompts."""
    from course_utils.data import load_preferences

    settings = settings or get_settings()
    path = load_or_build_reward_model(settings, base_model, progress=progress)
    rm, tok = load_reward_model(path)
    held = load_preferences("test", settings=settings)
    if pairs:
        held = held[:pairs]
    acc = reward_accuracy(pair_rewards(rm, tok, held, progress=progress))
    out: dict[str, Any] = {"reward_model": str(path), "training": training_record(path)["summary"],
                           "held_out": acc}
    if with_win_rate:
        from course_utils.dpo import load_model, load_or_build_dpo_model, load_policy
        from course_utils.generation import generate_answers

        n = prompts or (16 if settings.fast else 100)
        sample = held[:: max(1, len(held) // n)][:n]
        convs = [r["prompt"] for r in sample]
        sft, sft_tok, _ = load_policy(None, settings)
        dpo, dpo_tok = load_model(load_or_build_dpo_model(settings, progress=progress))
        a = generate_answers(dpo, dpo_tok, convs, progress=progress, desc="DPO answers")
        b = generate_answers(sft, sft_tok, convs, progress=progress, desc="SFT answers")
        out["win_rate_dpo_over_sft"] = win_rate(rm, tok, convs, [x["reply"] for x in a], [x["reply"] for x in b])
    return out
