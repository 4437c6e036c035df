"""Supervised fine-tuning (SFT): turning the base model into an assistant.

Taught in notebook 04 (sections "The chat template" to "Before and after"), run from
the command line by ``course sft``, and used by notebooks 05, 06 and 08 through
:func:`load_or_build_sft_model`, which returns the fine-tuned transformers folder
(artifact ``"sft-model"``).

What is here, in the order the notebook uses it:

- :func:`load_base` loads the base model: the course's own (artifact ``"base-model"``)
  or any transformers causal LM id or folder (``BASE_MODEL``), through the same code;
  :func:`ensure_chat_template` gives a tokenizer without a ``{% generation %}`` chat
  template the course's one.
- :func:`assistant_mask_by_hand` and :func:`collate_by_hand`: the assistant-only loss
  mask written out (which tokens count and why), to compare with what trl computes.
- :func:`make_trainer` / :func:`train_sft`: trl's ``SFTTrainer`` configured for a CPU
  (``use_cpu=True, bf16=False``) or a GPU, with ``assistant_only_loss=True``; the loss
  history comes back for plotting. A ``peft_config`` turns it into LoRA (notebook 05).
  Batches are padding-free when every conversation fits the context (same loss, no time
  spent on padding).
- :func:`generate_answers`: greedy replies to held-out prompts, the one generation loop of
  the course; :func:`evaluate` scores them (exact match, token F1, format share, grounded
  answers) through the evaluation harness of notebook 10
  (:func:`course_utils.evaluation.evaluate_model`), where every metric lives.
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
from course_utils.generation import generate_answers, prompt_and_gold
from course_utils.tracking import guard_trainer, report_to, track

__all__ = [
    "SFTRunConfig",
    "SFTRun",
    "assistant_mask_by_hand",
    "collate_by_hand",
    "conversation_ids",
    "ensure_chat_template",
    "evaluate",
    "generate_answers",
    "held_out_sample",
    "load_base",
    "load_or_build_sft_model",
    "longest_conversation",
    "make_sft_config",
    "make_trainer",
    "prompt_and_gold",
    "run_sft",
    "train_sft",
]

END_OF_TURN = "<|end|>"
ASSISTANT = "<|assistant|>"
COURSE_SPECIAL = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


@dataclass
class SFTRunConfig:
    """One SFT run (full fine-tuning, or LoRA when a peft config is passed to :func:`train_sft`)."""

    max_steps: int = 450  # optimizer steps
    batch_size: int = 16  # conversations per step
    lr: float = 5e-4  # peak learning rate (linear warmup, then linear decay); 1e-3 forgets pretrained facts
    warmup_ratio: float = 0.05  # share of steps spent warming up
    weight_decay: float = 0.0  # AdamW weight decay
    max_length: int = 256  # tokens per conversation (cut at the model's context if smaller)
    train_examples: int | None = None  # use only the first N training conversations (None: all)
    logging_steps: int = 10  # steps between logged losses
    seed: int = 1234  # data order and initialisation


@dataclass
class SFTRun:
    """What :func:`train_sft` returns."""

    model: Any  # the trained model (a PeftModel when trained with LoRA)
    history: list[dict[str, float]]  # {"step", "loss", "lr"} per logged step
    seconds: float  # wall time of ``trainer.train()``
    step_seconds: float  # wall time per optimizer step
    trainable: int  # trainable parameters
    total: int  # all parameters
    state_mb: float  # training state: weights + gradients + optimizer moments (MB)
    peak_cuda_mb: float | None = None  # peak CUDA memory (None on a CPU)

    def summary(self) -> dict[str, Any]:
        """The JSON-able figures."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("model", "history")}
        out["trainable_share"] = self.trainable / self.total
        out["final_loss"] = self.history[-1]["loss"] if self.history else float("nan")
        return out


# ---------------------------------------------------------------------- models and the chat template
def ensure_chat_template(tokenizer, model=None):
    """Give ``tokenizer`` the course's chat format if its own template cannot mark assistant
    tokens (no ``{% generation %}``), adding the role tokens and resizing ``model``'s embeddings."""
    from course_utils.tokenizer import CHAT_TEMPLATE

    template = tokenizer.chat_template or ""
    if "generation" in template and END_OF_TURN in template:
        return tokenizer
    missing = [t for t in COURSE_SPECIAL if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.bos_token is None:
        tokenizer.bos_token = "<|endoftext|>"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|pad|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    if model is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer


def load_base(base_model: str | Path | None = None, settings: Settings | None = None):
    """``(model, tokenizer, source)``: the base model in float32 on the CPU, eval mode.

    ``base_model=None`` is the course's base model (built with the current budget if not
    cached); a folder or a hub id (only then is a hub contacted) goes through the same code.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = settings or get_settings()
    if base_model is None:
        from course_utils.pretrain import load_or_build_base_model

        source = str(load_or_build_base_model(settings))
    else:
        source = resolve_model_source(base_model, "BASE_MODEL")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    ensure_chat_template(tokenizer, model)
    return model, tokenizer, source


# ---------------------------------------------------------------------- the mask, by hand
def assistant_mask_by_hand(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """``(ids, mask)`` of one conversation: ``mask[i] = 1`` when token ``i`` is part of an
    assistant reply or the ``<|end|>`` that closes it, the tokens SFT learns to produce.

    Written with character offsets: render the conversation with the chat template, find
    each ``<|assistant|>\\n ... <|end|>`` span in the text, then mark the tokens that start
    inside a span. The role tokens, the user's and system's words, and the newline after
    each turn are context only: the model reads them but is never asked to predict them.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    head = ASSISTANT + "\n"
    start = text.find(head)
    while start != -1:
        begin = start + len(head)
        end = text.find(END_OF_TURN, begin)
        if end == -1:
            raise ValueError("An assistant turn is not closed by <|end|>: is this the course chat template?")
        spans.append((begin, end + len(END_OF_TURN)))
        start = text.find(head, end)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(b <= s < e for b, e in spans)) for s, _ in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def collate_by_hand(tokenizer, conversations: list[list[dict[str, str]]]) -> dict[str, torch.Tensor]:
    """A padded batch with ``labels`` = the token where the mask is 1, ``-100`` elsewhere
    (cross-entropy ignores -100: padding and prompt tokens add nothing to the loss)."""
    rows = [assistant_mask_by_hand(tokenizer, m) for m in conversations]
    T = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), T), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids)
        attention[i, :n] = 1
        labels[i, :n] = torch.where(torch.tensor(mask) == 1, torch.tensor(ids), torch.tensor(-100))
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


# ---------------------------------------------------------------------- training with trl
def make_sft_config(cfg: SFTRunConfig, out_dir: str | Path, max_length: int | None = None,
                    padding_free: bool = False, **overrides: Any):
    """trl's ``SFTConfig`` for ``cfg``: CPU-safe flags, assistant-only loss, no checkpoints;
    ``padding_free`` batches (see :func:`make_trainer`) leave ``max_length`` unset, as trl requires."""
    from trl import SFTConfig

    kwargs: dict[str, Any] = dict(
        output_dir=str(out_dir),
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr,
        warmup_steps=max(1, round(cfg.warmup_ratio * cfg.max_steps)),
        lr_scheduler_type="linear",
        weight_decay=cfg.weight_decay,
        max_length=None if padding_free else max_length or cfg.max_length,
        padding_free=padding_free,
        assistant_only_loss=True,  # loss on assistant tokens only (needs {% generation %})
        packing=False,
        logging_steps=max(1, min(cfg.logging_steps, cfg.max_steps)),  # at least one logged loss
        save_strategy="no",
        report_to=report_to(),  # "mlflow" inside a tracked run: the trainer logs into it
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        dataset_num_proc=None,
        disable_tqdm=False,
        **trainer_device_flags(),
    )
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def _to_dataset(records: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{"messages": r["messages"]} for r in records])


def conversation_ids(tokenizer, records: list[dict[str, Any]]) -> list[list[int]]:
    """The token ids of each of ``records`` (each with ``messages``) once the chat template is
    applied, as trl tokenizes them for training."""
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def longest_conversation(tokenizer, records: list[dict[str, Any]]) -> int:
    """Tokens in the longest of ``records`` once the chat template is applied."""
    return max(map(len, conversation_ids(tokenizer, records)), default=0)


def make_trainer(model, tokenizer, records, cfg: SFTRunConfig, out_dir: str | Path, peft_config=None,
                 padding_free: bool | None = None, **overrides):
    """An ``SFTTrainer`` over ``records`` (each with ``messages``).

    ``padding_free`` (None: whenever every conversation fits in the context) puts each batch
    in one row, conversations one after another, instead of padding them to the longest:
    the position ids restart at each conversation and transformers builds an attention mask
    from them that keeps conversations apart, so the loss is the same and no time goes to
    padding (on the course SFT set, where half of a padded batch is padding: 1.14 -> 0.68
    s/step for full fine-tuning, 1.15 -> 0.63 for LoRA; ``python -m benchmarks.sft_padding``).
    trl enforces no ``max_length`` then, so a set with longer conversations is padded and cut
    at ``max_length`` as usual.
    """
    from trl import SFTTrainer

    if cfg.train_examples:
        records = records[: cfg.train_examples]
    max_length = min(cfg.max_length, context_length(model))
    longest = longest_conversation(tokenizer, records)
    fits = longest <= max_length
    if padding_free and not fits:
        raise ValueError(f"padding_free=True needs every conversation within {max_length} tokens "
                         f"(longest: {longest}); use padding_free=None to pad and cut instead.")
    if padding_free is None:
        padding_free = fits
    args = make_sft_config(cfg, out_dir, max_length=max_length, padding_free=padding_free, **overrides)
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=_to_dataset(records),
        processing_class=tokenizer,
        peft_config=peft_config,
    )


def training_state_mb(model, optimizer=None) -> float:
    """Weights + gradients of trainable parameters + the optimizer's state tensors (MB).

    On a CPU this is the memory training needs besides activations, computed from the
    actual tensors (``torch.cuda.max_memory_allocated`` gives the true peak on a GPU)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    opt = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            opt += sum(t.numel() * t.element_size() for t in state.values() if torch.is_tensor(t) and t.dim() > 0)
    return (weights + grads + opt) / 2**20


def count_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def train_sft(model, tokenizer, records, cfg: SFTRunConfig, out_dir: str | Path | None = None,
              peft_config=None, **overrides) -> SFTRun:
    """Fine-tune ``model`` on ``records`` with trl (full, or LoRA with ``peft_config``);
    ``overrides`` go to :func:`make_trainer` (``padding_free``) and trl's ``SFTConfig``.

    Recorded as an MLflow run of stage ``sft`` (``lora`` with a ``peft_config``), or into the run
    already open (:mod:`course_utils.tracking`): trl logs the losses, this the final figures."""
    import tempfile

    from transformers import set_seed

    set_seed(cfg.seed)
    with track("lora" if peft_config is not None else "sft", cfg) as tracker:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trainer(model, tokenizer, records, cfg, out_dir or tmp, peft_config=peft_config,
                                   **overrides)
            guard_trainer(trainer, tracker)  # a failing tracking store never stops the training
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
        trained = trainer.model.eval()
        history = [
            {"step": int(r["step"]), "loss": float(r["loss"]), "lr": float(r.get("learning_rate", 0.0))}
            for r in trainer.state.log_history
            if "loss" in r
        ]
        trainable, total = count_parameters(trained)
        run = SFTRun(
            model=trained,
            history=history,
            seconds=seconds,
            step_seconds=seconds / max(1, trainer.state.global_step),
            trainable=trainable,
            total=total,
            state_mb=training_state_mb(trained, trainer.optimizer),
            peak_cuda_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        )
        tracker.log_metrics(run.summary(), step=trainer.state.global_step)  # final figures (trl logged the curves)
    return run


# ---------------------------------------------------------------------- generation and scoring
def held_out_sample(records: list[dict[str, Any]], per_kind: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Up to ``per_kind`` records of each kind (all when None), in a stable order."""
    import random

    if per_kind is None:
        return list(records)
    by_kind: dict[str, list] = {}
    for r in records:
        by_kind.setdefault(r.get("kind", "?"), []).append(r)
    rng = random.Random(seed)
    out = []
    for kind in sorted(by_kind):
        rs = list(by_kind[kind])
        rng.shuffle(rs)
        out.extend(rs[:per_kind])
    return out


def evaluate(model, tokenizer, sft_records, eval_questions, max_new_tokens: int = 48, batch_size: int = 16,
             progress: bool = True, label: str = "", seed: int = 0):
    """Score a model on held-out SFT conversations and on evaluation questions with the course's
    one harness (:func:`course_utils.evaluation.evaluate_model`): ``(sft_result, eval_result)``,
    two :class:`~course_utils.evaluation.EvalResult` (``None`` for an empty list).

    ``result.scores()`` gives the means (``em``, ``f1``, ``contains``, ``stopped``,
    ``answer_first``, ``format``, ``grounded_correct``, ``grounded_faithful``, ROUGE, ...),
    ``result.summary`` their bootstrap intervals, ``result.table`` every reply and its scores.
    Perplexity and answer relevancy are left to notebook 10 (they cost a model pass each)."""
    from course_utils.harness import EvalConfig, evaluate_model

    cfg = EvalConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, perplexity=False, relevancy=False,
                     progress=progress, seed=seed)
    name = label or "model"
    out = []
    for records, what in ((sft_records, "SFT test"), (eval_questions, "eval questions")):
        out.append(evaluate_model(name, list(records), config=cfg, model=model, tokenizer=tokenizer,
                                  label=f"{name} {what}") if records else None)
    return out[0], out[1]


# ---------------------------------------------------------------------- the artifact
def default_config(settings: Settings | None = None) -> SFTRunConfig:
    """The SFT budget of this mode (fast: proves it runs; learner: shows the effect).

    Notebooks 04, 05, 06 and 08 all use it, so they share one "sft-model" artifact."""
    settings = settings or get_settings()
    if settings.fast:
        return SFTRunConfig(max_steps=30, batch_size=8, lr=2e-3, logging_steps=5, train_examples=600,
                            seed=settings.seed)
    return SFTRunConfig(seed=settings.seed)


def load_or_build_sft_model(settings: Settings | None = None, base_model: str | Path | None = None,
                            config: SFTRunConfig | None = None, rebuild: bool = False) -> Path:
    """The SFT model (artifact ``"sft-model"``): a transformers folder with the tokenizer.

    Built the first time by full fine-tuning of ``base_model`` (None: the course base model)
    on the course SFT training set with :func:`train_sft`; ``training.json`` in the folder
    holds the loss history and timings. Load it with ``AutoModelForCausalLM.from_pretrained``.
    """
    from course_utils.artifacts import built_from, config_dict, load_or_build
    from course_utils.data import load_sft, sft_sha

    settings = settings or get_settings()
    config = config or default_config(settings)
    if base_model is None:
        from course_utils.pretrain import load_or_build_base_model

        base_key = built_from(load_or_build_base_model(settings))
    else:
        from course_utils.hf import model_key

        base_key = model_key(base_model)
    key = {"base": base_key, "sft": config_dict(config), "data": sft_sha(settings)}

    def build(folder: Path) -> None:
        model, tok, source = load_base(base_model, settings)
        run = train_sft(model, tok, load_sft("train", settings=settings), config)
        run.model.save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps({"summary": run.summary(), "history": run.history,
                                                          "base": source}))

    return load_or_build("sft-model", key, build, settings=settings, rebuild=rebuild, track="sft")


def run_sft(settings: Settings | None = None, base_model: str | Path | None = None, per_kind: int | None = None,
            eval_limit: int | None = None, max_new_tokens: int = 48, progress: bool = True) -> dict[str, Any]:
    """What ``course sft`` runs: build (or load) the SFT model, then score base and SFT model
    on the held-out SFT split and the evaluation set's seen fact questions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.data import load_eval, load_sft

    settings = settings or get_settings()
    if per_kind is None:
        per_kind = 6 if settings.fast else 25
    if eval_limit is None:
        eval_limit = 24 if settings.fast else 170
    test = held_out_sample(load_sft("test", settings=settings), per_kind, seed=settings.seed)
    questions = load_eval(seen=True, kind="fact", settings=settings)[:eval_limit]
    base, tok, source = load_base(base_model, settings)
    before = evaluate(base, tok, test, questions, max_new_tokens, progress=progress, label="base")
    path = load_or_build_sft_model(settings, base_model)
    sft_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    sft_tok = AutoTokenizer.from_pretrained(path)
    after = evaluate(sft_model, sft_tok, test, questions, max_new_tokens, progress=progress, label="sft")
    rec = training_record(path)

    def brief(result, keys):
        s = result.summary.set_index("metric")
        return {k: {"mean": round(float(s.loc[k, "mean"]), 4), "low": round(float(s.loc[k, "low"]), 4),
                    "high": round(float(s.loc[k, "high"]), 4)} for k in keys if k in s.index}

    conv_keys = ("em", "f1", "stopped", "answer_first", "format", "grounded_correct", "grounded_faithful", "rougeL")
    eval_keys = ("contains", "em", "f1", "stopped", "format", "rougeL")
    return {
        "base": source,
        "sft_model": str(path),
        "training": rec["summary"],
        "sft_test": {"before": brief(before[0], conv_keys), "after": brief(after[0], conv_keys),
                     "n": len(before[0].table)},
        "eval_seen": {"before": brief(before[1], eval_keys), "after": brief(after[1], eval_keys),
                      "n": len(before[1].table)},
    }
