"""Evaluation across the course: any course model by name, the five-model report, ``course eval``.

Taught in notebook 10 (evaluation); ``course eval`` runs :func:`run_eval`. This module sits above the
stages: it loads a course model by its name (``base``, ``sft``, ``lora``, ``dpo``, ``rag``; built if not
cached), a folder or a hub id (:func:`load_for_eval`) and scores it with the harness
(:mod:`course_utils.harness`), whose metrics live in :mod:`course_utils.scores` and whose LLM judges live
in :mod:`course_utils.judge`. Their names are re-exported here, so a notebook imports everything about
evaluation from one place.

The layers, lowest first (each imports only from the ones before it):

- :mod:`course_utils.scores`: per-answer metrics, RAG metrics, bootstrap intervals, perplexity;
- :mod:`course_utils.generation`: batched replies from any causal LM in its chat template;
- :mod:`course_utils.harness` and :mod:`course_utils.judge`: a model or chain over questions, scored;
- the stages (:mod:`~course_utils.sft`, :mod:`~course_utils.lora`, :mod:`~course_utils.dpo`,
  :mod:`~course_utils.rag_chain`, ...), which score through the harness;
- this module and the command line, which load every stage's model and compare them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from course_utils.harness import (
    EvalConfig,
    EvalResult,
    evaluate_chain,
    plot_report,
    report,
    summarize,
)
from course_utils.harness import evaluate_model as _evaluate_loaded
from course_utils.judge import (
    RUBRIC_PAIRWISE,
    RUBRIC_SINGLE,
    EndpointJudge,
    LocalJudge,
    judge_agreement,
    judge_pairwise,
    judge_single,
)
from course_utils.scores import (
    SUMMARY_METRICS,
    answer_nll,
    answer_relevancy,
    bootstrap_ci,
    claims_of,
    classifier_curves,
    contains_answer,
    context_precision,
    context_recall,
    corpus_scores,
    faithfulness,
    first_sentence,
    format_scores,
    grounded_scores,
    paired_difference,
    reference_answer,
    rouge_scores,
    score_answer,
    score_replies,
    text_scores,
)
from course_utils.settings import Settings, get_settings

__all__ = [
    "MODEL_SPECS",
    "RUBRIC_PAIRWISE",
    "RUBRIC_SINGLE",
    "SUMMARY_METRICS",
    "EndpointJudge",
    "EvalConfig",
    "EvalResult",
    "LocalJudge",
    "answer_nll",
    "answer_relevancy",
    "bootstrap_ci",
    "claims_of",
    "classifier_curves",
    "context_precision",
    "context_recall",
    "contains_answer",
    "corpus_scores",
    "evaluate_chain",
    "evaluate_model",
    "faithfulness",
    "first_sentence",
    "format_scores",
    "grounded_scores",
    "judge_agreement",
    "judge_pairwise",
    "judge_single",
    "load_for_eval",
    "make_judge",
    "paired_difference",
    "plot_report",
    "reference_answer",
    "report",
    "rouge_scores",
    "run_eval",
    "score_answer",
    "score_replies",
    "select_questions",
    "summarize",
    "text_scores",
]

#: The course's models by name; anything else is a local folder or a hub id.
MODEL_SPECS = ("base", "sft", "lora", "dpo", "rag")


def load_for_eval(model_spec: str | Path, settings: Settings | None = None):
    """``(model, tokenizer, source)`` for a spec: ``base``, ``sft``, ``lora`` (the SFT model with
    notebook 05's unseen-facts adapter), ``dpo`` (``rag`` uses the SFT model), each loaded
    from the cache or built; or a transformers folder / hub id (a hub is contacted only then)."""
    settings = settings or get_settings()
    spec = str(model_spec)
    if spec == "base":
        from course_utils.sft import load_base

        return load_base(None, settings)
    if spec in ("sft", "rag"):
        from course_utils.dpo import load_model
        from course_utils.sft import load_or_build_sft_model

        path = load_or_build_sft_model(settings)
        return (*load_model(path), str(path))
    if spec == "lora":
        from course_utils.lora import load_lora_facts_model, load_or_build_lora_facts

        path = load_or_build_lora_facts(settings)
        model, tok, _ = load_lora_facts_model(path)
        return model, tok, str(path)
    if spec == "dpo":
        from course_utils.dpo import load_model, load_or_build_dpo_model

        path = load_or_build_dpo_model(settings)
        return (*load_model(path), str(path))
    from course_utils.sft import load_base

    return load_base(spec, settings)


def evaluate_model(model_spec: str | Path, questions: list[dict[str, Any]], *, settings: Settings | None = None,
                   config: EvalConfig | None = None, model=None, tokenizer=None, index=None, embedder=None,
                   label: str | None = None) -> EvalResult:
    """:func:`course_utils.harness.evaluate_model` for a model given by its name: ``"base" | "sft" |
    "lora" | "dpo" | "rag"`` (built if not cached), a local transformers folder or a hub id; or pass an
    already loaded ``model`` and ``tokenizer`` (``model_spec`` is then only the label, except
    ``"rag"`` which still retrieves). See the harness for the table's columns."""
    settings = settings or get_settings()
    source = None
    if model is None:
        model, tokenizer, source = load_for_eval(str(model_spec), settings)
    elif tokenizer is None:
        raise ValueError("Pass the tokenizer with a loaded model: evaluate_model(..., model=m, tokenizer=tok).")
    if str(model_spec) == "rag" and index is None:
        from course_utils.rag import load_or_build_index

        index = load_or_build_index(settings=settings)
    return _evaluate_loaded(model_spec, questions, settings=settings, config=config, model=model,
                            tokenizer=tokenizer, index=index, embedder=embedder, label=label,
                            source=str(source) if source is not None else None)


def make_judge(spec: str, settings: Settings | None = None, *, model: str | None = None,
               api_key: str | None = None):
    """A judge from a spec: a course model name (``sft``, ``dpo``, ``base``), a local folder or
    hub id (:class:`LocalJudge`), or an ``http(s)://`` OpenAI-compatible base URL with
    ``model`` (:class:`EndpointJudge`)."""
    if spec.startswith(("http://", "https://")):
        if not model:
            raise ValueError("An endpoint judge needs the model name served there: make_judge(url, model=...).")
        return EndpointJudge(spec, model, api_key)
    if spec == "rag" or spec == "lora":
        raise ValueError("Use sft, dpo, base, a folder or a hub id as the judge (not rag or lora).")
    m, tok, source = load_for_eval(spec, settings)
    return LocalJudge(m, tok, name=spec)


def select_questions(settings: Settings | None = None, n_seen: int = 30, n_unseen: int = 30,
                     seed: int = 0) -> list[dict[str, Any]]:
    """A report sample: ``n_seen`` seen fact questions and ``n_unseen`` unseen fact questions,
    half of them among the facts notebook 05's LoRA adapter was taught (column ``subset``:
    ``seen``, ``unseen-taught``, ``unseen-untaught``), drawn in a stable random order."""
    import random

    from course_utils.data import load_eval

    settings = settings or get_settings()
    rng = random.Random(seed)
    seen = load_eval(seen=True, kind="fact", settings=settings)
    rng.shuffle(seen)
    out = [{**q, "subset": "seen"} for q in seen[:n_seen]]
    taught_ids: set[str] = set()
    try:
        from course_utils.lora import default_facts_config, split_unseen_facts

        taught, _ = split_unseen_facts(default_facts_config(settings), settings)
        taught_ids = {q["id"] for q in taught}
    except Exception:  # pragma: no cover - a custom data set without the world
        pass
    unseen = load_eval(seen=False, kind="fact", settings=settings)
    rng.shuffle(unseen)
    taught = [q for q in unseen if q["id"] in taught_ids]
    untaught = [q for q in unseen if q["id"] not in taught_ids]
    n_taught = min(len(taught), (n_unseen + 1) // 2)
    n_untaught = min(len(untaught), n_unseen - n_taught)
    n_taught = min(len(taught), n_unseen - n_untaught)  # fewer untaught than asked: more taught
    out += [{**q, "subset": "unseen-taught"} for q in taught[:n_taught]]
    out += [{**q, "subset": "unseen-untaught"} for q in untaught[:n_untaught]]
    return out


# ===================================================================== the command line
def run_eval(model: str = "sft", limit: int | None = None, settings: Settings | None = None,
             progress: bool = True, max_new_tokens: int = 48) -> dict[str, Any]:
    """What ``course eval`` runs: :func:`evaluate_model` on ``limit`` questions of
    :func:`select_questions` (default by mode), returned as :meth:`EvalResult.as_dict` plus
    the score per subset."""
    settings = settings or get_settings()
    n = limit or (8 if settings.fast else 60)
    questions = select_questions(settings, n_seen=(n + 1) // 2, n_unseen=n // 2, seed=settings.seed)[:n]
    cfg = EvalConfig(seed=settings.seed, progress=progress, n_boot=200 if settings.fast else 1000,
                     max_new_tokens=max_new_tokens)
    result = evaluate_model(model, questions, settings=settings, config=cfg)
    out = result.as_dict()
    out["by_subset"] = {s: {"n": int(len(t)), "contains": round(float(t["contains"].mean()), 4)}
                        for s, t in result.table.groupby("subset")}
    return out
