"""The evaluation harness: run a model (or a chain) over questions and score every answer.

Taught in notebook 10. :func:`evaluate_model` runs a loaded causal LM over evaluation questions or
conversation records and scores each reply with :mod:`course_utils.scores`; :func:`evaluate_chain`
does the same for a LangChain runnable; :func:`summarize` and :func:`report` put bootstrap intervals
on the means. Every stage (SFT, LoRA, DPO, the RAG chain) scores through here, and this module imports
none of them: :mod:`course_utils.evaluation`, above the stages, loads a course model by its name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course_utils.generation import fit_passages, generate_answers, prompt_and_gold
from course_utils.scores import (
    SUMMARY_METRICS,
    _golds,
    answer_nll,
    answer_relevancy,
    bootstrap_ci,
    cite,
    contains_answer,
    context_precision,
    context_recall,
    faithfulness,
    format_scores,
    grounded_scores,
    reference_answer,
    score_answer,
    text_scores,
)
from course_utils.settings import Settings, get_settings
from course_utils.supervised import READ_PROMPT

__all__ = ["EvalConfig", "EvalResult", "evaluate_chain", "evaluate_model", "plot_report", "report", "summarize"]


def _record_prompt(q: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """``(conversation, question text, gold reply)`` of an evaluation question (asked as one user
    turn) or of a conversation record (``messages`` ending with the gold assistant turn)."""
    if "messages" in q:
        conv, gold = prompt_and_gold(q)
        return conv, conv[-1]["content"] if conv else "", gold
    return [{"role": "user", "content": q["question"]}], q["question"], q["answer"]


@dataclass
class EvalConfig:
    """How :func:`evaluate_model` runs and scores a model."""

    max_new_tokens: int = 48  # tokens generated per answer (greedy)
    batch_size: int = 16  # prompts generated together
    k: int = 3  # passages retrieved per question ("rag")
    method: str = "hybrid"  # retrieval: dense | bm25 | hybrid ("rag")
    n_boot: int = 1000  # bootstrap resamples per confidence interval
    confidence: float = 0.95  # confidence level of the intervals
    seed: int = 1234  # bootstrap seed
    perplexity: bool = True  # score the reference answer's perplexity under the model
    relevancy: bool = True  # answer relevancy (loads the embedding model)
    progress: bool = True  # progress bars


@dataclass
class EvalResult:
    """What :func:`evaluate_model` returns: a tidy per-example table and the summary."""

    model: str  # the spec evaluated ("sft", a folder, ...)
    source: str  # where the model was loaded from
    table: Any  # pandas DataFrame, one row per question (see evaluate_model)
    summary: Any  # pandas DataFrame: metric, mean, low, high, n
    seconds: float  # wall time of generation and scoring
    config: dict[str, Any] = field(default_factory=dict)  # the EvalConfig used
    outputs: list[dict[str, Any]] = field(default_factory=list)  # generate_answers' raw outputs, in order

    def scores(self) -> dict[str, float]:
        """``{metric: mean}`` of the summary, plus ``n`` (the number of records)."""
        return {"n": int(len(self.table)), **{r["metric"]: float(r["mean"]) for _, r in self.summary.iterrows()}}

    def by(self, column: str = "kind", metrics: Sequence[str] = ("em", "f1", "contains", "format")):
        """Mean of ``metrics`` per value of ``column`` (e.g. per kind of conversation), with ``n``."""
        cols = [m for m in metrics if m in self.table.columns]
        out = self.table.groupby(column)[cols].mean()
        out.insert(0, "n", self.table.groupby(column).size())
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the summary as ``{metric: {mean, low, high, n}}`` plus model and timing."""
        metrics = {r["metric"]: {k: (None if isinstance(r[k], float) and np.isnan(r[k]) else round(float(r[k]), 4))
                                 for k in ("mean", "low", "high")} | {"n": int(r["n"])}
                   for _, r in self.summary.iterrows()}
        return {"model": self.model, "source": self.source, "n": int(len(self.table)),
                "seconds": round(self.seconds, 2), "metrics": metrics}


def summarize(table, metrics: Sequence[str] | None = None, n_boot: int = 1000, confidence: float = 0.95,
              seed: int = 0):
    """Mean of each metric column with its bootstrap interval: a DataFrame ``metric, mean, low,
    high, n``. ``perplexity`` is ``exp`` of the mean per-token NLL (interval mapped through exp)."""
    import pandas as pd

    rows = []
    for m in metrics or SUMMARY_METRICS:
        col = "nll" if m == "perplexity" else m
        if col not in table.columns:
            continue
        vals = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        if np.isnan(vals).all():
            continue
        est, lo, hi = bootstrap_ci(vals, n_boot, confidence, seed)
        if m == "perplexity":
            est, lo, hi = float(np.exp(est)), float(np.exp(lo)), float(np.exp(hi))
        rows.append({"metric": m, "mean": est, "low": lo, "high": hi, "n": int((~np.isnan(vals)).sum())})
    return pd.DataFrame(rows, columns=["metric", "mean", "low", "high", "n"])


def _rag_prompts(questions, tokenizer, model, config: EvalConfig, index):
    """Retrieve for each question from ``index`` and fill the RAG chain's prompt (``supervised.READ_PROMPT``,
    which is ``rag_chain.PROMPT_TEMPLATE``; as many passages as fit, :func:`generation.fit_passages`), so that
    the RAG answer is made exactly as notebook 08's chain makes it, by the same generation loop as every model."""
    ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    hits = index.search([q["question"] for q in questions], config.k, method=config.method)
    convs, extra = [], []
    for q, hs in zip(questions, hits):
        kept = fit_passages([h["text"] for h in hs], q["question"], tokenizer, ctx, config.max_new_tokens)
        convs.append([{"role": "user", "content": READ_PROMPT.format(context=" ".join(kept), question=q["question"])}])
        extra.append(_retrieval(q, hs, index.duplicates, " ".join(kept)))
    return convs, extra, index


def _retrieval(q: dict[str, Any], passages: list[dict[str, Any]], duplicates: dict[str, str], context: str,
               cited_ids: list[str] | None = None) -> dict[str, Any]:
    """What RAG scoring needs about one question's retrieval: the passages (``id``, ``doc_id``,
    ``text``, in rank order), which of them come from a gold document (mirrors mapped to their
    originals by ``duplicates``), the ``context`` the model was given and, if the runner made
    them, its citations (else :func:`_score_rows` attributes them with ``rag_chain.cite``)."""
    golds = {duplicates.get(g, g) for g in q.get("gold_doc_ids", [])}
    return {"contexts": [p["text"] for p in passages], "context_ids": [p["id"] for p in passages],
            "relevant": [duplicates.get(p["doc_id"], p["doc_id"]) in golds for p in passages],
            "passages": passages, "context": context, "gold_docs": golds, "cited_ids": cited_ids}


def _score_rows(questions, prompts, outs, extra, label: str, settings: Settings) -> list[dict[str, Any]]:
    """One scored row per record: the single place where a reply becomes numbers (used by
    :func:`evaluate_model` and :func:`evaluate_chain`)."""
    from course_utils.data import world as load_world

    try:
        w = load_world(settings)
    except Exception:  # a custom data folder without a world: references fall back to the answers
        w = None
    rows = []
    for q, (conv, question, gold), o, x in zip(questions, prompts, outs, extra):
        is_conv = "messages" in q
        ref = gold if is_conv else reference_answer(q, w)
        stopped = o.get("stopped")
        row = {"model": label, "id": q.get("id"), "question": question, "answer": gold,
               "reference": ref, "seen": q.get("seen"), "kind": q.get("kind"), "subset": q.get("subset"),
               "reply": o["reply"], "stopped": float("nan") if stopped is None else float(stopped),
               "new_tokens": o.get("new_tokens", float("nan")),
               **score_answer(o["reply"], [gold] if is_conv else _golds(q)), **text_scores(o["reply"], ref),
               **format_scores(o["reply"], stopped, ref)}
        if is_conv and q.get("kind") in ("grounded", "grounded_rag"):
            passage = "\n".join(m["content"] for m in conv if m["role"] == "user")
            row.update(grounded_scores(o["reply"], gold, passage, passage.rsplit("\n\n", 1)[-1]))
        if x:
            cited = x["cited_ids"] if x["cited_ids"] is not None else cite(o["reply"], q["question"], x["passages"])
            row.update(context_ids=x["context_ids"], contexts=x["contexts"], cited_ids=cited,
                       context_precision=context_precision(x["relevant"]),
                       context_recall=context_recall(q["answer"], x["contexts"]),
                       faithfulness=faithfulness(o["reply"], x["contexts"]),
                       in_context=contains_answer(x["context"], _golds(q)),  # the text the model was given
                       cited_gold=float(any(c.split("#")[0] in x["gold_docs"] for c in cited)))
        rows.append(row)
    return rows


def evaluate_model(model_spec: str | Path, questions: list[dict[str, Any]], *, settings: Settings | None = None,
                   config: EvalConfig | None = None, model=None, tokenizer=None, index=None, embedder=None,
                   label: str | None = None, source: str | None = None) -> EvalResult:
    """Run one model over evaluation questions (or conversations) and score every answer.

    ``model`` and ``tokenizer``: the model to run (any causal LM with a chat template);
    ``model_spec`` is its label, and ``"rag"`` retrieves passages from ``index`` (a
    :class:`course_utils.rag.RagIndex`, required) and fills the RAG chain's prompt. :func:`course_utils.evaluation.evaluate_model`
    takes a course model's name (``base``, ``sft``, ``lora``, ``dpo``, ``rag``), a folder or a hub id
    instead and loads it; this one imports no stage module, so every stage can score through it.

    ``questions`` are :func:`course_utils.data.load_eval` records (asked as one user turn,
    scored against the answer and its aliases, with the world's canonical sentence as the
    reference for ROUGE/BLEU/chrF and the format check) or conversation records such as
    :func:`course_utils.data.load_sft` gives (``messages`` ending with the gold assistant turn:
    the model answers the turns before it and is scored against that reply). Notebooks 04, 05,
    06, 08 and 10 all score through here.

    The table has one row per record: ``model, id, question, answer, reference, seen, kind,
    reply, stopped, new_tokens, em, f1, contains, rouge1, rouge2, rougeL, bleu, chrf,
    answer_first, format`` (:func:`format_scores`), for ``grounded`` conversations
    ``grounded_correct, grounded_faithful`` (:func:`grounded_scores`), ``nll`` and
    ``answer_relevancy`` (if the config asks for them) and, for ``rag``, ``context_ids,
    contexts, cited_ids, context_precision, context_recall, faithfulness``. The summary has
    every metric with its bootstrap CI.
    """
    import pandas as pd

    if not questions:
        raise ValueError("No questions to evaluate: pass load_eval(...) or load_sft(...) records (at least one).")
    settings = settings or get_settings()
    config = config or EvalConfig(seed=settings.seed)
    spec = str(model_spec)
    if model is None or tokenizer is None:
        raise ValueError("harness.evaluate_model scores a loaded model: pass model= and tokenizer= "
                         "(course_utils.evaluation.evaluate_model loads one by name).")
    source = source or getattr(model, "name_or_path", "") or spec
    start = time.perf_counter()
    prompts = [_record_prompt(q) for q in questions]
    extra: list[dict[str, Any]] = [{} for _ in questions]
    if spec == "rag":
        if any("messages" in q for q in questions):
            raise ValueError("'rag' answers evaluation questions (load_eval records), not conversations.")
        if index is None:
            raise ValueError("harness.evaluate_model('rag', ...) retrieves from index=: pass a RagIndex "
                             "(course_utils.evaluation.evaluate_model loads the course index).")
        convs, extra, index = _rag_prompts(questions, tokenizer, model, config, index)
    else:
        convs = [conv for conv, _, _ in prompts]
    outs = generate_answers(model, tokenizer, convs, config.max_new_tokens, config.batch_size, config.progress,
                            desc=f"{label or spec} answers")
    rows = _score_rows(questions, prompts, outs, extra, label or spec, settings)
    table = pd.DataFrame(rows)
    if config.perplexity:
        table["nll"] = answer_nll(model, tokenizer, convs, list(table["reference"]), config.batch_size)
    if config.relevancy:
        table["answer_relevancy"] = answer_relevancy(list(table["question"]), list(table["reply"]), embedder)
    seconds = time.perf_counter() - start
    summary = summarize(table, n_boot=config.n_boot, confidence=config.confidence, seed=config.seed)
    return EvalResult(label or spec, str(source), table, summary, seconds, asdict(config), outs)


def evaluate_chain(chain, questions: list[dict[str, Any]], *, label: str = "chain", index=None,
                   settings: Settings | None = None, config: EvalConfig | None = None) -> EvalResult:
    """Run a LangChain runnable over evaluation questions and score it like :func:`evaluate_model`.

    ``chain`` maps a question string to a reply string (a closed-book chain) or to a dict with
    ``answer`` and, for a RAG chain (:func:`course_utils.rag_chain.rag_chain`), the retrieved
    ``docs`` (LangChain Documents with ``id``/``doc_id`` metadata), the ``context`` the model was
    given and ``cited_ids``. ``index`` (the :class:`~course_utils.rag.RagIndex` behind the
    retriever) maps mirrored documents to their originals when judging retrieved passages
    against the questions' gold documents. Besides the columns of :func:`evaluate_model`, RAG
    rows get ``in_context`` (a gold answer is in the prompt: the most RAG can reach) and
    ``cited_gold`` (a cited passage comes from a gold document). ``stopped`` and ``format`` are
    NaN (a chain returns text only); perplexity needs the model, so it is not computed here.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if not questions:
        raise ValueError("No questions to evaluate: pass load_eval(...) records (at least one).")
    if any("messages" in q for q in questions):
        raise ValueError("evaluate_chain asks evaluation questions (load_eval records), not conversations.")
    settings = settings or get_settings()
    config = config or EvalConfig(seed=settings.seed)
    dup = getattr(index, "duplicates", {}) or {}
    start = time.perf_counter()
    outs: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    bar = tqdm(total=len(questions), desc=f"{label} answers", unit="q", disable=not config.progress)
    for i in range(0, len(questions), max(1, config.batch_size)):
        batch = questions[i:i + max(1, config.batch_size)]
        for q, out in zip(batch, chain.batch([q["question"] for q in batch])):
            if isinstance(out, str):
                outs.append({"reply": out})
                extra.append({})
                continue
            outs.append({"reply": out["answer"]})
            passages = [{"id": d.metadata.get("id"), "doc_id": d.metadata.get("doc_id"), "text": d.page_content}
                        for d in out.get("docs") or []]
            extra.append(_retrieval(q, passages, dup, out.get("context", " ".join(p["text"] for p in passages)),
                                    list(out.get("cited_ids", []))))
        bar.update(len(batch))
    bar.close()
    prompts = [_record_prompt(q) for q in questions]
    table = pd.DataFrame(_score_rows(questions, prompts, outs, extra, label, settings))
    if config.relevancy:
        table["answer_relevancy"] = answer_relevancy(list(table["question"]), list(table["reply"]))
    seconds = time.perf_counter() - start
    summary = summarize(table, n_boot=config.n_boot, confidence=config.confidence, seed=config.seed)
    return EvalResult(label, type(chain).__name__, table, summary, seconds, asdict(config), outs)


def report(results: Sequence[EvalResult], metrics: Sequence[str] = ("contains", "em", "f1", "rougeL", "chrf"),
           by: str | None = None, n_boot: int = 1000, seed: int = 0):
    """One table across models: a row per model (and per ``by`` group, e.g. ``subset``), a
    ``metric`` and ``metric_low``/``metric_high`` column per metric (bootstrap CIs)."""
    import pandas as pd

    rows = []
    for r in results:
        groups = [(None, r.table)] if by is None else list(r.table.groupby(by, sort=False))
        for g, t in groups:
            row: dict[str, Any] = {"model": r.model}
            if by is not None:
                row[by] = g
            row["n"] = len(t)
            s = summarize(t, metrics, n_boot=n_boot, seed=seed).set_index("metric")
            for m in metrics:
                if m in s.index:
                    row[m], row[f"{m}_low"], row[f"{m}_high"] = s.loc[m, "mean"], s.loc[m, "low"], s.loc[m, "high"]
            rows.append(row)
    return pd.DataFrame(rows)


def plot_report(table, metric: str = "contains", by: str | None = None, ax=None, title: str | None = None):
    """Bars of ``metric`` per model (grouped by ``by`` if given) with their CI as error bars."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    groups = [None] if by is None else list(dict.fromkeys(table[by]))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / len(groups)
    for j, g in enumerate(groups):
        t = table if g is None else table[table[by] == g]
        t = t.set_index("model").reindex(models)
        x = np.arange(len(models)) + (j - (len(groups) - 1) / 2) * width
        err = np.vstack([t[metric] - t[f"{metric}_low"], t[f"{metric}_high"] - t[metric]]).clip(min=0)
        ax.bar(x, t[metric], width, yerr=err, capsize=3, label=g)
    ax.set_xticks(np.arange(len(models)), models)
    ax.set_ylabel(f"{metric} (share of questions)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title or f"{metric} per model, 95% bootstrap CI")
    if by is not None:
        ax.legend(title=by, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return ax
