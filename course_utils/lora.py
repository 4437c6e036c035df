"""LoRA: low-rank adapters, written from scratch, checked against peft, then used with peft.

Taught in notebook 05 (sections "LoRA from scratch" to "Teaching new facts"), run from
the command line by ``course lora``; notebook 08 loads the unseen-facts adapter
(artifact ``"lora-facts"``, :func:`load_or_build_lora_facts`) to compare fine-tuning
with retrieval.

LoRA keeps a pretrained weight ``W`` (out x in) frozen and learns a low-rank update::

    y = x W^T + (alpha / r) * x A^T B^T        A: (r x in), B: (out x r), r << in, out

``B`` starts at zero, so the adapted model starts exactly at the pretrained one;
``A`` starts random (Kaiming-uniform, as in peft). Only ``A`` and ``B`` train:
``r * (in + out)`` numbers per matrix instead of ``in * out``. After training the update
can be merged into ``W`` (``W + (alpha/r) B A``), so inference costs nothing extra.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from course_utils.settings import Settings, get_settings

if TYPE_CHECKING:
    from course_utils.sft import SFTRun, SFTRunConfig

__all__ = [
    "TARGET_MODULES",
    "LoRALinear",
    "LoRAFactsConfig",
    "LegalReaderConfig",
    "adapter_training_mix",
    "apply_lora",
    "copy_lora_to_peft",
    "default_legal_reader_config",
    "default_lora_config",
    "facts_training_records",
    "legal_reader_records",
    "lora_config",
    "load_or_build_legal_reader",
    "load_or_build_lora_facts",
    "load_or_build_merged_adapter",
    "max_logit_diff",
    "merge_lora",
    "never_seen_rows",
    "run_lora",
    "split_unseen_facts",
    "train_lora",
]

#: The attention (q, k, v, o) and MLP (gate, up, down) projections of a Llama block.
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha/r) * B @ A``."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be at least 1, got {r}.")
        self.base = base
        self.base.weight.requires_grad_(False)  # the pretrained weight never changes
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scaling = alpha / r  # keeps the update's size comparable across ranks
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))  # (out, r): zero, so we start at W
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's initialisation of A
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, in)
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T  # (B, T, r) -> (B, T, out)
        return self.base(x) + self.scaling * update

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha/r) B A``: the weight of a plain linear layer computing the same function."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}"


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, targets=TARGET_MODULES, dropout: float = 0.0) -> list[str]:
    """Freeze every parameter of ``model``, then wrap each linear layer whose name ends in
    one of ``targets`` in a :class:`LoRALinear` (in place). Returns the wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"No linear layer named one of {targets} in this model: pass targets= with its names.")
    return wrapped


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` holding the merged weight."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                lin = child.base
                lin.weight.copy_(child.merged_weight())
                setattr(module, child_name, lin)
    return model


def lora_config(r: int = 8, alpha: float | None = None, targets=TARGET_MODULES, dropout: float = 0.0,
                token_rows: Sequence[int] = ()):
    """peft's ``LoraConfig`` for a causal LM with the same meaning as :func:`apply_lora`
    (``alpha`` defaults to ``2 * r``). ``token_rows``: embedding rows that train too (peft's
    *trainable tokens*; with tied weights the same rows of the output head)."""
    from peft import LoraConfig

    extra = {"trainable_token_indices": {"embed_tokens": sorted(int(i) for i in token_rows)}} if token_rows else {}
    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r, target_modules=list(targets),
                      lora_dropout=dropout, bias="none", task_type="CAUSAL_LM", **extra)


def never_seen_rows(tokenizer, records: list[dict[str, Any]], settings: Settings | None = None,
                    pretraining_ids: torch.Tensor | None = None) -> list[int]:
    """Token ids that the chat ``records`` use (any turn, chat tokens included) and that never
    occur in the pretraining tokens (default: the course corpus and the reading drills the course
    base model trained on, :func:`pretrain.pretraining_tokens`).

    Pretraining never shows such a token as an input or a target: with tied weights its row only
    ever gets pushed down as a wrong answer of the output head, the same way for all of them, so
    the rows end up nearly one vector (mean cosine 0.98, ``benchmarks/diagnose_copying.py``). No
    layer can then tell these tokens apart, and LoRA, which leaves the embedding alone, cannot
    learn to read or write them (notebook 05 measures it). Meaningful only for a model
    pretrained on ``pretraining_ids``: for another base model, pass its own or train no rows.
    """
    from course_utils.sft import conversation_ids

    if pretraining_ids is None:
        from course_utils.pretrain import pretraining_tokens

        pretraining_ids = pretraining_tokens(settings)
    vocab = len(tokenizer)
    seen = torch.bincount(pretraining_ids.long(), minlength=vocab)[:vocab] > 0
    used = {i for ids in conversation_ids(tokenizer, records) for i in ids}
    return sorted(i for i in used if i < vocab and not seen[i])


def default_lora_config(settings: Settings | None = None):
    """The LoRA budget of notebook 05 and ``course lora``: :func:`course_utils.sft.default_config`
    with a higher learning rate (adapters start at zero and train few weights) and fewer steps
    (notebook 05 trains three ranks in the time of one full fine-tuning)."""
    from course_utils.sft import default_config

    settings = settings or get_settings()
    return dataclasses.replace(default_config(settings), lr=settings.budget(fast=5e-3, learner=4e-3),
                               max_steps=settings.budget(fast=4, learner=170))


def train_lora(base, tokenizer, records: list[dict[str, Any]], cfg: SFTRunConfig, r: int = 8,
               token_rows: Sequence[int] = (), targets=TARGET_MODULES, alpha: float | None = None,
               **overrides: Any) -> SFTRun:
    """LoRA at rank ``r`` (on the ``targets`` projections, ``alpha`` default ``2 * r``) on ``records``
    with trl, plus the embedding rows ``token_rows``.

    Returns :class:`course_utils.sft.SFTRun` whose ``model`` is a peft model in peft's own
    format (LoRA layers and, with rows, *trainable tokens*), so saving, reloading, switching
    and merging work as for any adapter; ``base`` is not modified. ``overrides`` go to
    :func:`course_utils.sft.train_sft` (``padding_free``, trl ``SFTConfig`` fields).

    trl 1.16's SFT trainer computes the loss through a fused output head that reads the head's
    weight directly, bypassing peft's trainable-tokens layer, so rows are trained as the
    embedding itself with every other row's gradient zeroed (and no weight decay), then
    copied into a trainable-tokens adapter: the same numbers, in the format peft saves.

    Recorded as an MLflow run ``lora-r<r>`` of stage ``lora`` (:mod:`course_utils.tracking`): the
    SFT config, ``r``, ``alpha``, the targets and the number of token rows as parameters, trl's
    losses and the trainable parameters as metrics (notebook 10 compares a rank sweep's runs).
    """
    from course_utils.tracking import track

    alpha = alpha if alpha is not None else 2 * r
    params = {**dataclasses.asdict(cfg), "r": r, "alpha": alpha, "targets": list(targets),
              "token_rows": len({int(i) for i in token_rows})}
    with track("lora", params, run_name=f"lora-r{r}") as tracker:
        run = _train_lora(base, tokenizer, records, cfg, r, token_rows, targets, alpha, **overrides)
        tracker.log_metrics({"trainable": run.trainable, "trainable_share": run.trainable / run.total},
                            step=cfg.max_steps)  # with the token rows: replaces the SFT figure
    return run


def _train_lora(base, tokenizer, records: list[dict[str, Any]], cfg: SFTRunConfig, r: int, token_rows: Sequence[int],
                targets, alpha: float, **overrides: Any) -> SFTRun:
    """:func:`train_lora` without its tracked run."""
    import copy

    from peft import get_peft_model
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from course_utils.sft import count_parameters, train_sft

    rows = sorted({int(i) for i in token_rows})
    if not rows:
        return train_sft(copy.deepcopy(base), tokenizer, records, cfg,
                         peft_config=lora_config(r, alpha, targets=targets), **overrides)
    vocab = base.get_input_embeddings().weight.shape[0]
    if rows[0] < 0 or rows[-1] >= vocab:
        raise ValueError(f"token_rows must lie in [0, {vocab}); got {rows[0]}..{rows[-1]}.")
    work = get_peft_model(copy.deepcopy(base), lora_config(r, alpha, targets=targets))
    emb = work.get_input_embeddings().weight
    emb.requires_grad_(True)
    keep = torch.zeros(vocab, 1, dtype=emb.dtype)
    keep[rows] = 1
    hook = emb.register_hook(lambda g: g * keep)
    try:
        run = train_sft(work, tokenizer, records, dataclasses.replace(cfg, weight_decay=0.0), **overrides)
    finally:
        hook.remove()
    native = get_peft_model(copy.deepcopy(base), lora_config(r, alpha, targets=targets, token_rows=rows))
    trained = dict(work.named_parameters())
    with torch.no_grad():
        for name, p in native.named_parameters():
            if "lora_" in name:
                p.copy_(trained[name])
        for m in native.modules():
            if isinstance(m, TrainableTokensLayer):
                m.trainable_tokens_delta["default"].copy_(emb.detach()[rows])
    run.model = native.eval()
    run.trainable = count_parameters(native)[0]  # LoRA + the rows (run.total: base + LoRA, as without rows)
    return run


@torch.no_grad()
def copy_lora_to_peft(ours: nn.Module, peft_model, adapter: str = "default") -> int:
    """Copy the A and B of every :class:`LoRALinear` in ``ours`` into the matching peft
    layer of ``peft_model`` (same module names). Returns how many layers were copied."""
    theirs = dict(peft_model.base_model.model.named_modules())
    n = 0
    for name, module in ours.named_modules():
        if isinstance(module, LoRALinear):
            target = theirs.get(name)
            if target is None or not hasattr(target, "lora_A"):
                raise KeyError(f"peft model has no LoRA layer named {name}")
            target.lora_A[adapter].weight.copy_(module.lora_A)
            target.lora_B[adapter].weight.copy_(module.lora_B)
            n += 1
    return n


@torch.no_grad()
def max_logit_diff(model_a, model_b, input_ids: torch.Tensor) -> float:
    """Largest absolute difference between two models' logits on ``input_ids`` (B, T)."""
    a = model_a(input_ids=input_ids).logits
    b = model_b(input_ids=input_ids).logits
    return float((a.float() - b.float()).abs().max())


# ---------------------------------------------------------------------- teaching new facts
@dataclass
class LoRAFactsConfig:
    """LoRA training that teaches the model facts about unseen entities (notebook 05)."""

    taught_share: float = 0.5  # share of the unseen fact questions whose facts are taught
    max_facts: int | None = None  # cap on taught facts (None: no cap)
    r: int = 16  # LoRA rank
    alpha: float = 32.0  # LoRA alpha
    max_steps: int = 200  # optimizer steps
    batch_size: int = 16  # conversations per step
    lr: float = 3e-3  # learning rate
    replay: int = 200  # SFT training conversations mixed in, so the format is not forgotten
    seed: int = 1234  # which facts are taught, data order


def split_unseen_facts(cfg: LoRAFactsConfig, settings: Settings | None = None) -> tuple[list[dict], list[dict]]:
    """``(taught, untaught)``: the evaluation set's unseen fact questions, split at random."""
    from course_utils.data import load_eval

    questions = load_eval(seen=False, kind="fact", settings=settings)
    rng = random.Random(cfg.seed)
    order = list(range(len(questions)))
    rng.shuffle(order)
    k = round(cfg.taught_share * len(questions))
    if cfg.max_facts is not None:
        k = min(k, cfg.max_facts)
    taught = sorted(order[:k])
    rest = sorted(order[k:])
    return [questions[i] for i in taught], [questions[i] for i in rest]


#: How a teaching prompt names an attribute whose question has a single phrasing (the evaluation's).
_ATTR_WORDS = {"region": "province", "craft": "craft", "founded": "founding year", "founder": "founder",
               "month": "month", "first_held": "first year", "town": "town", "leader": "leader"}


def facts_training_records(taught: list[dict], settings: Settings | None = None) -> list[dict]:
    """Chat conversations that teach each question's fact: the other question phrasings
    answered with the fact's canonical sentence. The evaluation phrasing is never trained on, so
    the test asks in words the adapter never saw; where the attribute has no other question
    phrasing, the prompt asks for the attribute by name ("Tell me the founder of the Rendcu Guild.")."""
    from course_utils.corpus import QUESTIONS, fact_sentence, ref
    from course_utils.data import world

    w = world(settings)
    records = []
    for q in taught:
        e = w.get(q["entity_id"])
        attr = q["kind"].split(":", 1)[1]
        answer = fact_sentence(w, e, attr, canonical=True)
        forms = [f.format(s=ref(e)) for f in QUESTIONS[(e.kind, attr)]]
        others = [f for f in forms if f != q["question"]]
        if not others:
            others = [f"Tell me the {_ATTR_WORDS.get(attr, attr.replace('_', ' '))} of {ref(e)}."]
        for p in others:
            records.append({"id": f"facts-{q['id']}", "kind": "facts",
                            "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": answer}]})
    return records


def _facts_dataset(cfg: LoRAFactsConfig, settings: Settings | None) -> tuple[list[dict], list[dict], list[dict]]:
    from course_utils.data import load_sft

    taught, untaught = split_unseen_facts(cfg, settings)
    records = facts_training_records(taught, settings)
    if cfg.replay:
        sft_train = load_sft("train", settings=settings)
        rng = random.Random(cfg.seed + 1)
        records = records + rng.sample(sft_train, min(cfg.replay, len(sft_train)))
    random.Random(cfg.seed).shuffle(records)
    return records, taught, untaught


def default_facts_config(settings: Settings | None = None) -> LoRAFactsConfig:
    """The budget of this mode."""
    settings = settings or get_settings()
    if settings.fast:
        return LoRAFactsConfig(max_facts=12, max_steps=10, batch_size=8, replay=16, seed=settings.seed)
    return LoRAFactsConfig(seed=settings.seed)


def train_lora_facts(model, tokenizer, cfg: LoRAFactsConfig, settings: Settings | None = None):
    """LoRA-train ``model`` (an SFT model) on the taught facts: ``(run, taught, untaught)``."""
    from course_utils.sft import SFTRunConfig, train_sft

    records, taught, untaught = _facts_dataset(cfg, settings)
    run_cfg = SFTRunConfig(max_steps=cfg.max_steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                           logging_steps=max(1, cfg.max_steps // 20))
    run = train_sft(model, tokenizer, records, run_cfg, peft_config=lora_config(cfg.r, cfg.alpha))
    return run, taught, untaught


def load_or_build_lora_facts(settings: Settings | None = None, base_model: str | Path | None = None,
                             config: LoRAFactsConfig | None = None, rebuild: bool = False) -> Path:
    """The unseen-facts adapter (artifact ``"lora-facts"``): a peft adapter folder trained on
    top of the SFT model, with ``facts.json`` listing the ids of the taught and untaught
    evaluation questions. Load it with :func:`load_lora_facts_model`."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.artifacts import built_from, config_dict, load_or_build
    from course_utils.sft import load_or_build_sft_model

    settings = settings or get_settings()
    config = config or default_facts_config(settings)
    sft_path = load_or_build_sft_model(settings, base_model)
    import hashlib

    taught, _ = split_unseen_facts(config, settings)
    records_sha = hashlib.sha256(json.dumps(facts_training_records(taught, settings)).encode()).hexdigest()[:12]
    key = {"sft_model": built_from(sft_path), "lora": config_dict(config), "records": records_sha}

    def build(folder: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(sft_path, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(sft_path)
        run, taught, untaught = train_lora_facts(model, tok, config, settings)
        run.model.save_pretrained(folder)
        (folder / "facts.json").write_text(json.dumps({
            "sft_model": str(sft_path),
            "taught": [q["id"] for q in taught],
            "untaught": [q["id"] for q in untaught],
        }))
        (folder / "training.json").write_text(json.dumps({"summary": run.summary(), "history": run.history}))

    return load_or_build("lora-facts", key, build, settings=settings, rebuild=rebuild, track="lora")


def load_lora_facts_model(path: str | Path):
    """``(model, tokenizer, facts)``: the SFT model with the facts adapter, its tokenizer,
    and the ``facts.json`` record (``taught`` / ``untaught`` question ids)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    facts = json.loads((path / "facts.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(facts["sft_model"], dtype=torch.float32)
    model = PeftModel.from_pretrained(base, path).eval()
    return model, AutoTokenizer.from_pretrained(facts["sft_model"]), facts


# ---------------------------------------------------------------------- the legal reader (notebook 09)
@dataclass
class LegalReaderConfig:
    """LoRA training that teaches the SFT model to read the legal code: notebook 09's drafting model.

    The SFT set teaches reading facts about people and places, not court reports; these conversations
    (:func:`course_utils.supervised.legal_reading`) ask the evaluation set's three kinds of legal
    question over pages of a second made-up country, so no Valdmark article or case is ever trained on."""

    examples: int = 4000  # legal reading conversations
    world_seed: int = 777001  # the reading world they are drawn from (not Valdmark)
    r: int = 16  # LoRA rank
    alpha: float = 32.0  # LoRA alpha
    max_steps: int = 700  # optimizer steps
    batch_size: int = 16  # conversations per step
    lr: float = 3e-3  # learning rate
    replay: int = 200  # SFT training conversations mixed in, so the other skills are kept
    seed: int = 5  # data order and which conversations


def default_legal_reader_config(settings: Settings | None = None) -> LegalReaderConfig:
    """The budget of this mode."""
    settings = settings or get_settings()
    if settings.fast:
        return LegalReaderConfig(examples=64, max_steps=6, batch_size=8, replay=16, seed=settings.seed)
    return LegalReaderConfig()


def legal_reader_records(config: LegalReaderConfig, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The training conversations of the legal reader: legal reading plus replayed SFT conversations, shuffled."""
    from course_utils.data import load_sft, world
    from course_utils.supervised import legal_reading, reading_world

    records = legal_reading(reading_world(world(settings), config.world_seed), config.examples, config.seed)
    if config.replay:
        sft_train = load_sft("train", settings=settings)
        records += random.Random(config.seed + 1).sample(sft_train, min(config.replay, len(sft_train)))
    random.Random(config.seed).shuffle(records)
    return records


def load_or_build_legal_reader(settings: Settings | None = None, config: LegalReaderConfig | None = None,
                               rebuild: bool = False) -> Path:
    """The legal reader (artifact ``"legal-reader"``): the SFT model with a LoRA adapter trained on
    :func:`legal_reader_records`, merged into a plain transformers folder (load it like any model:
    :func:`course_utils.rag_chain.load_llm`). ``training.json`` holds trl's losses."""
    settings = settings or get_settings()
    config = config or default_legal_reader_config(settings)
    return load_or_build_merged_adapter("legal-reader", config, legal_reader_records(config, settings), settings, rebuild)


def adapter_training_mix(records: list[dict[str, Any]], tokenizer, replay: int, seed: int,
                         settings: Settings | None = None, max_tokens: int = 256) -> list[dict[str, Any]]:
    """The training set of an adapter on the SFT model: ``records`` that fit ``max_tokens`` in ``tokenizer``'s
    chat template (trl would cut a longer reply off), plus ``replay`` SFT training conversations so the other
    skills are kept, shuffled with ``seed`` (the replay drawn with ``seed + 1``)."""
    import random

    from course_utils.data import load_sft

    out = [r for r in records
           if len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False)) <= max_tokens]
    if replay:
        sft_train = load_sft("train", settings=settings)
        out += random.Random(seed + 1).sample(sft_train, min(replay, len(sft_train)))
    random.Random(seed).shuffle(out)
    return out


def load_or_build_merged_adapter(name: str, config: Any, records: list[dict[str, Any]], settings: Settings,
                                 rebuild: bool = False, new_tokens: bool = False) -> Path:
    """Artifact ``name``: the SFT model with a LoRA adapter trained with trl on ``records``, merged into a plain
    transformers folder. ``config`` carries the training fields ``r, alpha, max_steps, batch_size, lr, seed``
    (:class:`LegalReaderConfig`, :class:`course_utils.security.AssistantConfig`); the cache key is the SFT model,
    ``config``, a hash of ``records`` and, with ``new_tokens``, the embedding rows that train too: those of the
    tokens ``records`` use that pretraining never showed (:func:`never_seen_rows`, :func:`train_lora`).
    ``training.json`` holds trl's losses."""
    import hashlib
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.artifacts import built_from, config_dict, load_or_build
    from course_utils.sft import SFTRunConfig, load_or_build_sft_model

    sft_path = load_or_build_sft_model(settings)
    key = {"sft_model": built_from(sft_path), "lora": config_dict(config),
           "records": hashlib.sha256(json.dumps(records).encode()).hexdigest()[:12]}
    tok = AutoTokenizer.from_pretrained(sft_path)
    rows = never_seen_rows(tok, records, settings) if new_tokens else []
    if rows:  # only then: the keys of adapters built without rows stay as they were
        key["token_rows"] = rows

    def build(folder: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(sft_path, dtype=torch.float32)
        run_cfg = SFTRunConfig(max_steps=config.max_steps, batch_size=config.batch_size, lr=config.lr,
                               seed=config.seed, logging_steps=max(1, config.max_steps // 20))
        run = _train_lora(model, tok, records, run_cfg, config.r, rows, TARGET_MODULES, config.alpha)
        run.model.merge_and_unload().save_pretrained(folder)
        tok.save_pretrained(folder)
        (folder / "training.json").write_text(json.dumps({"sft_model": str(sft_path), "summary": run.summary(),
                                                          "history": run.history}))

    return load_or_build(name, key, build, settings=settings, rebuild=rebuild, track="lora")


# ---------------------------------------------------------------------- the command line
def run_lora(settings: Settings | None = None, base_model: str | Path | None = None, rank: int = 8,
             steps: int | None = None, eval_limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """What ``course lora`` runs: from-scratch LoRA checked against peft; peft LoRA (plus the
    embedding rows pretraining never trained, :func:`never_seen_rows`, for the course base model)
    on the SFT task from the base model, scored against the full fine-tuning (the SFT artifact);
    merge equivalence; the unseen-facts adapter, learned and forgotten."""
    import copy

    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from course_utils.data import load_eval, load_sft
    from course_utils.sft import evaluate, held_out_sample, load_base, load_or_build_sft_model, training_record

    settings = settings or get_settings()
    eval_limit = eval_limit or (16 if settings.fast else 100)
    base, tok, source = load_base(base_model, settings)

    # 1. from scratch == peft
    ours = copy.deepcopy(base)
    apply_lora(ours, r=rank, alpha=2 * rank)
    for m in ours.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.lora_B, std=0.02)  # non-zero B so the check means something
    theirs = get_peft_model(copy.deepcopy(base), lora_config(rank))
    copy_lora_to_peft(ours, theirs)
    ids = torch.randint(0, len(tok), (2, 16))
    scratch_vs_peft = max_logit_diff(ours, theirs, ids)

    # 2. peft LoRA on the SFT task vs full fine-tuning
    lora_cfg = default_lora_config(settings)
    if steps:
        lora_cfg = dataclasses.replace(lora_cfg, max_steps=steps)
    train = load_sft("train", settings=settings)
    rows = never_seen_rows(tok, train, settings) if base_model is None else []  # only the course corpus is known
    lora_run = train_lora(base, tok, train, lora_cfg, r=rank, token_rows=rows)
    sft_path = load_or_build_sft_model(settings, base_model)
    full_model = AutoModelForCausalLM.from_pretrained(sft_path, dtype=torch.float32).eval()
    test = held_out_sample(load_sft("test", settings=settings), 4 if settings.fast else 12, seed=settings.seed)
    questions = load_eval(seen=True, kind="fact", settings=settings)[:eval_limit]
    scores = {}
    for name, model in (("base", base), ("full", full_model), (f"lora_r{rank}", lora_run.model)):
        s, e = (r.scores() for r in evaluate(model, tok, test, questions, progress=progress, label=name))
        scores[name] = {"f1": round(s["f1"], 4), "em": round(s["em"], 4), "format": round(s["format"], 4),
                        "eval_contains": round(e["contains"], 4)}
    merged_diff = None
    adapter_logits = lora_run.model(input_ids=ids).logits.detach()
    merged = lora_run.model.merge_and_unload()
    merged_diff = float((merged(input_ids=ids).logits - adapter_logits).abs().max())

    # 3. unseen facts
    facts_path = load_or_build_lora_facts(settings, base_model)
    facts_model, facts_tok, facts = load_lora_facts_model(facts_path)
    by_id = {q["id"]: q for q in load_eval(seen=False, kind="fact", settings=settings)}
    taught = [by_id[i] for i in facts["taught"]][:eval_limit]
    untaught = [by_id[i] for i in facts["untaught"]][:eval_limit]
    facts_scores = {}
    for name, model in (("before", full_model), ("after", facts_model)):
        row = {}
        for label, qs in (("taught", taught), ("untaught", untaught), ("seen", questions)):
            _, e = evaluate(model, facts_tok, [], qs, progress=progress, label=f"{name} {label}")
            row[label] = round(e.scores()["contains"], 4)
        facts_scores[name] = row
    return {
        "base": source,
        "rank": rank,
        "token_rows": len(rows),
        "scratch_vs_peft_max_diff": scratch_vs_peft,
        "merge_max_diff": merged_diff,
        "full": training_record(sft_path)["summary"],
        "lora": lora_run.summary(),
        "scores": scores,
        "facts": facts_scores,
        "facts_adapter": str(facts_path),
    }
