"""Scores of one answer, and of many: the metrics every notebook reports, with their intervals.

Taught in notebook 10 (evaluation). The harness (:mod:`course_utils.harness`) turns each reply into a
row of these numbers; every stage reports through it. Answers are scored by
:func:`course_utils.metrics.score_answer` (re-exported here), the same function behind the before/after
figures of notebooks 04, 05, 06 and 08. Every metric below is either a call into a well-kept library
or, where none can run here, written out once with its reference definition in the docstring.

=========================  ==============================================  =================
metric                     how                                             column(s)
=========================  ==============================================  =================
exact match, token F1      SQuAD v1.1 rules (:mod:`course_utils.metrics`)  ``em``, ``f1``
answer contained           a gold answer appears as whole words            ``contains``
ROUGE-1/2/L (F)            ``rouge-score``                                 ``rouge1`` ...
BLEU, chrF                 ``sacrebleu`` (sentence level; corpus level in  ``bleu``, ``chrf``
                           :func:`corpus_scores`)
perplexity                 exp(mean NLL of the reference answer's tokens)  ``nll``
context precision/recall,  Ragas' definitions, computed locally            ``context_*``,
faithfulness, answer                                                       ``faithfulness``,
relevancy                                                                  ``answer_relevancy``
ROC-AUC, PR curves         ``scikit-learn`` (:func:`classifier_curves`)
judge agreement            accuracy and Cohen's kappa (``scikit-learn``)
=========================  ==============================================  =================

Ragas itself is not installed in the course environment (its dependencies need a newer
langchain than the course pins, and its metrics call an LLM); the four RAG metrics below
follow its definitions with local, deterministic stand-ins for the LLM steps, each named.

Every summary figure comes with a percentile bootstrap confidence interval
(:func:`bootstrap_ci`): with 30 questions, a difference of 5 points is usually noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from course_utils.metrics import contains_answer, normalize_answer, score_answer
from course_utils.tokenizer import encode_chat

__all__ = [
    "SUMMARY_METRICS",
    "answer_nll",
    "answer_relevancy",
    "bootstrap_ci",
    "cite",
    "claims_of",
    "classifier_curves",
    "contains_answer",
    "context_precision",
    "context_recall",
    "corpus_scores",
    "faithfulness",
    "first_sentence",
    "format_scores",
    "grounded_scores",
    "paired_difference",
    "reference_answer",
    "rouge_scores",
    "score_answer",
    "score_replies",
    "text_scores",
]

#: The per-example columns that :func:`summarize` reports by default, in this order.
SUMMARY_METRICS = ("contains", "em", "f1", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "stopped", "answer_first",
                   "format", "grounded_correct", "grounded_faithful", "perplexity", "answer_relevancy",
                   "context_precision", "context_recall", "faithfulness", "in_context", "cited_gold")

_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")
_STOP = {"the", "a", "an", "of", "in", "on", "was", "were", "is", "are", "and", "to", "by", "at", "it", "its",
         "who", "which", "what", "when", "where", "did", "does", "do", "how", "many", "year", "passage", "not",
         "say", "for", "with", "as", "be", "has", "had", "have", "that", "this", "from", "their", "they", "he",
         "she", "his", "her", "there", "than"}
_NONCOMMITTAL = re.compile(r"\b(does not say|doesn't say|do not know|don't know|not sure|cannot answer|"
                           r"can't answer|no information|not mentioned|unknown)\b", re.I)


# ===================================================================== per-answer scores
def _golds(q: dict[str, Any]) -> list[str]:
    return [q["answer"], *q.get("aliases", [])]


def score_replies(questions: list[dict[str, Any]], replies: list[str]) -> list[dict[str, float]]:
    """:func:`score_answer` of each reply against its evaluation question's answer and aliases."""
    if len(questions) != len(replies):
        raise ValueError(f"{len(questions)} questions but {len(replies)} replies.")
    return [score_answer(r, _golds(q)) for q, r in zip(questions, replies)]


_NAME = re.compile(r"[A-Za-z][a-z]+|\d+")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (``.``, ``!``, ``?`` or ``;``)."""
    return _SENTENCE.split(text.strip(), maxsplit=1)[0] if text.strip() else ""


def format_scores(reply: str, stopped: bool | None, reference: str) -> dict[str, float]:
    """Does the reply have the assistant's shape?

    - ``answer_first``: its first sentence has the shape of the reference's first sentence
      (token F1 >= 0.5): the answer comes first, not a preamble or an echo of the question;
    - ``format``: that, and the model closed its turn with the end-of-turn token (``stopped``;
      NaN when the runner cannot tell, as for a LangChain chain).
    """
    from course_utils.metrics import token_f1

    first = float(token_f1(first_sentence(reply), first_sentence(reference)) >= 0.5)
    fmt = float("nan") if stopped is None else float(bool(stopped) and bool(first))
    return {"answer_first": first, "format": fmt}


def grounded_scores(reply: str, gold: str, passage: str, question: str) -> dict[str, float]:
    """For a question about a passage in the prompt:

    - ``grounded_correct``: the answer words of the gold reply (names and numbers that are in
      the passage and not in the question) are all in the reply;
    - ``grounded_faithful``: every name and number in the reply occurs in the passage or the
      question (nothing made up).
    """
    prompt = f"{passage}\n{question}"
    q_words = set(_NAME.findall(question))
    words = {w for w in _NAME.findall(gold) if w in prompt and w not in q_words and (w[0].isupper() or w.isdigit())}
    names = [w for w in _NAME.findall(reply) if w[0].isupper() or w.isdigit()]
    return {"grounded_correct": float(bool(words) and all(w in reply for w in words)),
            "grounded_faithful": float(bool(names) and all(w in prompt for w in names))}


_ROUGE = None


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F-measures from Google's ``rouge-score`` (Porter stemmer)."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    s = _ROUGE.score(reference, prediction)
    return {k: float(v.fmeasure) for k, v in s.items()}


def text_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L plus sentence BLEU and chrF (``sacrebleu``, rescaled to 0-1) against one reference."""
    import sacrebleu

    out = rouge_scores(prediction, reference)
    out["bleu"] = sacrebleu.sentence_bleu(prediction, [reference]).score / 100
    out["chrf"] = sacrebleu.sentence_chrf(prediction, [reference]).score / 100
    return out


def corpus_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus-level BLEU and chrF (``sacrebleu``, 0-1): n-gram counts pooled over all answers,
    the way machine-translation papers report them (not the mean of sentence scores)."""
    import sacrebleu

    refs = [list(references)]
    return {"bleu": sacrebleu.corpus_bleu(list(predictions), refs).score / 100,
            "chrf": sacrebleu.corpus_chrf(list(predictions), refs).score / 100}


def reference_answer(question: dict[str, Any], world=None) -> str:
    """A reference *sentence* for ROUGE/BLEU: the world's canonical sentence for a fact question
    (``fact_sentence``, the phrasing the SFT set answers with), else the short gold answer."""
    kind = question.get("kind", "")
    if world is not None and kind.startswith("fact:") and question.get("entity_id"):
        from course_utils.corpus import fact_sentence

        try:
            return fact_sentence(world, world.get(question["entity_id"]), kind.split(":", 1)[1], canonical=True)
        except (KeyError, AttributeError, ValueError):
            pass
    return question["answer"]


# ===================================================================== confidence intervals
def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                 statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """``(estimate, low, high)``: the statistic (default: the mean) of ``values`` and its
    percentile bootstrap interval (resample the examples with replacement ``n_boot`` times,
    take the ``(1-confidence)/2`` and ``(1+confidence)/2`` quantiles). NaNs are dropped."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    if statistic is None:
        est, boots = float(x.mean()), x[idx].mean(axis=1)
    else:
        est, boots = float(statistic(x)), np.array([statistic(x[i]) for i in idx])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return est, float(lo), float(hi)


def paired_difference(a: Sequence[float], b: Sequence[float], n_boot: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over the same examples, with its bootstrap interval and the share of
    resamples in which ``a`` wins (a paired comparison: far tighter than two separate CIs)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    est, lo, hi = bootstrap_ci(d, n_boot, confidence, seed)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1) if d.size else np.array([np.nan])
    return {"diff": est, "low": lo, "high": hi, "p_a_better": float((boots > 0).mean()), "n": int(d.size)}


# ===================================================================== perplexity
def _chat_ids(tokenizer, messages, add_generation_prompt=False) -> list[int]:
    return encode_chat(tokenizer, messages, add_generation_prompt)


def answer_nll(model, tokenizer, conversations: list[list[dict[str, str]]], answers: list[str],
               batch_size: int = 16) -> list[float]:
    """Mean negative log-likelihood (nats per token) of each ``answers[i]`` as the assistant's
    reply to ``conversations[i]``; ``exp`` of it is the answer's perplexity.

    Only the answer's tokens (and the end-of-turn token) count, the prompt is context. The
    same number as ``model(input_ids, labels=...).loss`` with the prompt's labels set to
    -100 (``tests/test_evaluation.py`` checks it)."""
    import torch

    ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    rows = []
    for conv, ans in zip(conversations, answers):
        prompt = _chat_ids(tokenizer, conv, add_generation_prompt=True)
        full = _chat_ids(tokenizer, conv + [{"role": "assistant", "content": ans}])
        n_prompt = len(prompt) if full[: len(prompt)] == prompt else len(full) - 1
        cut = max(0, len(full) - ctx)
        rows.append((full[cut:], max(1, n_prompt - cut)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            T = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), T), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), T), dtype=torch.long)
            labels = torch.full((len(chunk), T), -100, dtype=torch.long)
            for i, (seq, n_prompt) in enumerate(chunk):  # right padding
                ids[i, : len(seq)] = torch.tensor(seq)
                att[i, : len(seq)] = 1
                labels[i, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()  # (B, T, V)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tgt = labels[:, 1:].to(device)
            mask = tgt != -100
            tok = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            nll = -(tok * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.extend(nll.cpu().tolist())
    return out


# ===================================================================== RAG metrics (Ragas' definitions)
def _content_words(text: str) -> list[str]:
    return [w for w in normalize_answer(text).split() if w not in _STOP]


def _supported(claim: str, context: str, threshold: float = 0.75) -> bool:
    """A claim is supported by a context when every name and number in it (capitalised words,
    digits) occurs in the context and at least ``threshold`` of its other content words do."""
    ctx_words = set(normalize_answer(context).split())
    key = {w.lower() for w in _WORD.findall(claim) if (w[0].isupper() or w.isdigit())}
    key = {normalize_answer(w) for w in key} - _STOP - {""}
    if any(k not in ctx_words for k in key):
        return False
    rest = [w for w in _content_words(claim) if w not in key]
    return not rest or sum(w in ctx_words for w in rest) / len(rest) >= threshold


def claims_of(text: str) -> list[str]:
    """The claims of a text: its sentences (Ragas asks an LLM to split a text into atomic
    statements; a sentence of a short factual answer is one statement)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if _content_words(s)]


def context_precision(relevant: Sequence[bool | int]) -> float:
    """Ragas' context precision of one ranked list of retrieved contexts.

    ``Context Precision@K = sum_k (Precision@k * v_k) / (number of relevant items in the top K)``,
    where ``v_k`` is 1 when the context at rank ``k`` is relevant. Ragas judges ``v_k`` with an
    LLM (or against reference contexts); here a context is relevant when it comes from one of
    the question's gold documents. 0 when nothing relevant was retrieved. This is the
    average precision of the ranking restricted to what was retrieved (the test checks it
    against ``sklearn.metrics.average_precision_score``)."""
    v = [int(bool(x)) for x in relevant]
    hits, total = 0, 0.0
    for k, vk in enumerate(v, start=1):
        hits += vk
        total += (hits / k) * vk
    return total / hits if hits else 0.0


def context_recall(reference: str, contexts: Sequence[str]) -> float:
    """Ragas' context recall: ``|claims of the reference answer attributable to the retrieved
    contexts| / |claims of the reference answer|``.

    Ragas asks an LLM whether each reference claim can be attributed to the context; here a
    claim is attributed when it is supported (:func:`_supported`: its names and numbers, and
    most of its content words, occur) by the retrieved contexts joined together. A short gold
    answer ("Mestomgo") is one claim."""
    claims = claims_of(reference) or [reference]
    joined = " ".join(contexts)
    return sum(_supported(c, joined) for c in claims) / len(claims)


def faithfulness(answer: str, contexts: Sequence[str]) -> float:
    """Ragas' faithfulness: ``|claims of the answer supported by the retrieved contexts| /
    |claims of the answer|``.

    Ragas splits the answer into statements and asks an LLM whether each can be inferred from
    the context; here each sentence is a claim and support is :func:`_supported` (every name
    and number of the claim occurs in the contexts, and at least 75% of its other content
    words). An answer with no claim (empty, or only stop words) scores NaN, as in Ragas."""
    claims = claims_of(answer)
    if not claims:
        return float("nan")
    joined = " ".join(contexts)
    return sum(_supported(c, joined) for c in claims) / len(claims)


def answer_relevancy(questions: Sequence[str], answers: Sequence[str], embedder=None,
                     question_generator: Callable[[str], list[str]] | None = None) -> list[float]:
    """Ragas' answer relevancy: ``(1 - noncommittal) * mean_i cos(E(question), E(q_i))``, where
    the ``q_i`` are questions generated *from the answer* and ``E`` an embedding model.

    Ragas asks an LLM to write ``q_i`` and to flag a noncommittal answer ("I don't know");
    here ``question_generator(answer)`` writes them if given, else the answer itself stands
    in for its one generated question (cosine of question and answer embeddings), and an
    answer is noncommittal when it says so in words (:data:`_NONCOMMITTAL`). ``E`` is the
    course embedder (:func:`course_utils.embed.load_embedder`, all-MiniLM-L6-v2)."""
    from course_utils.embed import embed, load_embedder

    embedder = embedder or load_embedder()
    gen = question_generator or (lambda a: [a])
    generated = [gen(a) or [a] for a in answers]
    flat = [g for gs in generated for g in gs]
    qv = embed(list(questions), embedder, progress=False)
    gv = embed(flat, embedder, progress=False) if flat else np.zeros((0, qv.shape[1]), np.float32)
    out, i = [], 0
    for q, a, gs in zip(qv, answers, generated):
        sims = gv[i : i + len(gs)] @ q
        i += len(gs)
        score = float(sims.mean()) if a.strip() else 0.0
        out.append(0.0 if _NONCOMMITTAL.search(a) else score)
    return out


# ===================================================================== classifiers (reward model)
def classifier_curves(labels: Sequence[int], scores: Sequence[float]) -> dict[str, Any]:
    """ROC and precision-recall curves of scores meant to rank positives (label 1) first,
    all from scikit-learn: ``auc``, ``fpr``, ``tpr``, ``precision``, ``recall``,
    ``average_precision``, ``best_threshold`` (Youden's J) and the ``accuracy`` there."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    if len(set(y.tolist())) < 2:
        raise ValueError("ROC needs both good (1) and flawed (0) examples among the labels.")
    fpr, tpr, thr = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    j = int(np.argmax(tpr - fpr))
    best = float(thr[j]) if np.isfinite(thr[j]) else float(s.max())
    return {"auc": float(roc_auc_score(y, s)), "fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall,
            "average_precision": float(average_precision_score(y, s)), "best_threshold": best,
            "accuracy": float(((s >= best).astype(int) == y).mean()), "n": int(y.size)}


# ===================================================================== citations
_CITE_STOP = {"the", "a", "an", "of", "in", "on", "was", "is", "and", "to", "by", "at", "it", "its", "who", "which",
              "what", "when", "where", "did", "does", "how", "many", "year", "passage", "not", "say"}


def cite(answer: str, question: str, passages: list[dict[str, Any]]) -> list[str]:
    """Ids of the passages that support ``answer``: those containing every word of the answer
    that carries information (a name or a number) and that the question does not already
    contain. Empty when the answer has no such word or no passage has them all (an answer
    the model made up, or "The passage does not say ...")."""
    q = {w.lower() for w in _WORD.findall(question)}
    key = [w.lower() for w in _WORD.findall(answer)
           if (w[0].isupper() or w.isdigit()) and w.lower() not in q and w.lower() not in _CITE_STOP]
    if not key:
        return []
    out = []
    for p in passages:
        words = {w.lower() for w in _WORD.findall(p["text"])}
        if all(k in words for k in key):
            out.append(p["id"])
    return out
