"""The evaluation harness: one function that runs any course model over questions and scores it.

Taught in notebook 10 (evaluation); ``course eval`` runs :func:`evaluate_model` from the
command line. Answers are scored by :func:`course_utils.metrics.score_answer` (re-exported
here), the same function behind the before/after figures of notebooks 04, 05, 06 and 08. This module is the one place that scores an
answer: every metric below is either a call into a well-kept library or, where none can run
here, written out once with its reference definition in the docstring.

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

import json
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course_utils.metrics import contains_answer, normalize_answer, score_answer
from course_utils.settings import Settings, get_settings
from course_utils.tokenizer import encode_chat

__all__ = [
    "MODEL_SPECS",
    "EndpointJudge",
    "EvalConfig",
    "EvalResult",
    "LocalJudge",
    "answer_nll",
    "answer_relevancy",
    "bootstrap_ci",
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
]

#: The course's models by name; anything else is a local folder or a hub id.
MODEL_SPECS = ("base", "sft", "lora", "dpo", "rag")
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


def _record_prompt(q: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """``(conversation, question text, gold reply)`` of an evaluation question (asked as one user
    turn) or of a conversation record (``messages`` ending with the gold assistant turn)."""
    if "messages" in q:
        from course_utils.sft import prompt_and_gold

        conv, gold = prompt_and_gold(q)
        return conv, conv[-1]["content"] if conv else "", gold
    return [{"role": "user", "content": q["question"]}], q["question"], q["answer"]


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


# ===================================================================== LLM-as-judge
RUBRIC_SINGLE = """You grade an answer to a question{ref_clause}.
Rubric: GOOD if the answer is correct{ref_clause2} (the wording may differ); BAD if it states a wrong fact, adds something made up, or does not answer.

Question: {question}{reference_line}
Answer to grade: {answer}

Reply with one word, GOOD or BAD."""

RUBRIC_PAIRWISE = """You compare two answers to the same question.
Rubric: the better answer is the one that is correct{ref_clause}, answers the question asked, and adds nothing made up. Ignore which answer comes first and how long it is.

Question: {question}{reference_line}
Answer A: {a}
Answer B: {b}

Reply with one letter, A or B."""


class LocalJudge:
    """A causal LM (a course model, a local folder or a hub id) used as a judge.

    Small models rarely follow a format, so the verdict is *constrained*: the judge reads
    the rubric prompt (in its chat template) and the option with the highest log-likelihood
    as the start of its reply wins (as multiple-choice benchmarks score models)."""

    def __init__(self, model, tokenizer, name: str = "local"):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name

    def choose(self, prompts: list[str], options: Sequence[str]) -> list[str]:
        """For each prompt, the option the judge finds most likely."""
        convs = [[{"role": "user", "content": p}] for p in prompts]
        scores = [answer_nll(self.model, self.tokenizer, convs, [o] * len(prompts)) for o in options]
        best = np.argmin(np.array(scores), axis=0)  # lowest NLL = most likely
        return [options[i] for i in best]


class EndpointJudge:
    """A judge behind an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
    server, Ollama, a hosted API). Only contacted when the learner configures one.

    ``base_url`` like ``http://127.0.0.1:8000/v1``; ``api_key`` is sent as a bearer token
    if given. The reply's first option word (case-insensitive) is the verdict; a reply with
    none counts as ``None`` (invalid) and is reported, not guessed."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_tokens: int = 4):
        self.base_url, self.model, self.api_key = base_url.rstrip("/"), model, api_key
        self.timeout, self.max_tokens, self.name = timeout, max_tokens, f"endpoint:{model}"

    def complete(self, prompt: str) -> str:
        """The endpoint's reply to one user message (temperature 0)."""
        body = json.dumps({"model": self.model, "temperature": 0, "max_tokens": self.max_tokens,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read().decode())
        except OSError as exc:
            raise ValueError(f"The judge endpoint {self.base_url} did not answer ({exc}). Check the URL "
                             f"and that the server runs, or use a course model as the judge.") from None
        return data["choices"][0]["message"]["content"]

    def choose(self, prompts: list[str], options: Sequence[str]) -> list[str | None]:
        """For each prompt, the first option named in the endpoint's reply (or None)."""
        out = []
        for p in prompts:
            words = _WORD.findall(self.complete(p).upper())
            out.append(next((w for w in words if w in {o.upper() for o in options}), None))
        return out


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


def judge_single(judge, questions: Sequence[str], answers: Sequence[str],
                 references: Sequence[str] | None = None) -> list[float]:
    """Single-answer grading with :data:`RUBRIC_SINGLE` (reference-guided when ``references``
    are given): 1.0 (GOOD), 0.0 (BAD), NaN (the judge gave no verdict)."""
    prompts = []
    for i, (q, a) in enumerate(zip(questions, answers)):
        ref = references[i] if references is not None else None
        prompts.append(RUBRIC_SINGLE.format(
            question=q, answer=a, ref_clause=" against a reference answer" if ref else "",
            ref_clause2=" and states the same fact as the reference" if ref else "",
            reference_line=f"\nReference answer: {ref}" if ref else ""))
    verdicts = judge.choose(prompts, ["GOOD", "BAD"])
    return [float("nan") if v is None else float(v.upper() == "GOOD") for v in verdicts]


def judge_pairwise(judge, questions: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                   references: Sequence[str] | None = None):
    """Pairwise grading with :data:`RUBRIC_PAIRWISE`, asked twice: once in the order (a, b) and
    once swapped (b, a), the position-bias check. A per-pair DataFrame: ``first`` (verdict in
    order, "a"/"b"), ``swapped`` (verdict with the order swapped, mapped back to "a"/"b"),
    ``consistent`` (both agree), ``winner`` ("a", "b" or "tie" when the two disagree: a
    position-biased verdict is not counted), ``picked_first_slot`` (how often slot A won)."""
    import pandas as pd

    def prompts(xs, ys):
        out = []
        for i, (q, x, y) in enumerate(zip(questions, xs, ys)):
            ref = references[i] if references is not None else None
            out.append(RUBRIC_PAIRWISE.format(
                question=q, a=x, b=y, ref_clause=" (agrees with the reference)" if ref else "",
                reference_line=f"\nReference answer: {ref}" if ref else ""))
        return out

    v1 = judge.choose(prompts(answers_a, answers_b), ["A", "B"])
    v2 = judge.choose(prompts(answers_b, answers_a), ["A", "B"])
    first = [None if v is None else {"A": "a", "B": "b"}[v.upper()] for v in v1]
    swapped = [None if v is None else {"A": "b", "B": "a"}[v.upper()] for v in v2]
    df = pd.DataFrame({"first": first, "swapped": swapped})
    df["consistent"] = [x is not None and x == y for x, y in zip(first, swapped)]
    df["winner"] = [x if c else "tie" for x, c in zip(first, df["consistent"])]
    slot_a = [float(v is not None and v.upper() == "A") for v in v1 + v2]
    df.attrs["picked_first_slot"] = float(np.mean(slot_a)) if slot_a else float("nan")
    return df


def judge_agreement(judge_labels: Sequence[float], gold_labels: Sequence[float]) -> dict[str, float]:
    """How far to trust a judge: ``accuracy`` against gold labels, Cohen's ``kappa`` (agreement
    beyond chance, scikit-learn), ``coverage`` (share with a verdict) and ``n``."""
    from sklearn.metrics import cohen_kappa_score

    j, g = np.asarray(judge_labels, dtype=float), np.asarray(gold_labels, dtype=float)
    ok = ~np.isnan(j)
    if not ok.any():
        return {"accuracy": float("nan"), "kappa": float("nan"), "coverage": 0.0, "n": int(j.size)}
    with np.errstate(all="ignore"):
        kappa = float(cohen_kappa_score(g[ok].astype(int), j[ok].astype(int)))
    kappa = 0.0 if np.isnan(kappa) else kappa  # one class only on both sides: no agreement beyond chance
    return {"accuracy": float((j[ok] == g[ok]).mean()), "kappa": float(kappa), "coverage": float(ok.mean()),
            "n": int(j.size)}


# ===================================================================== models
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


def _rag_prompts(questions, tokenizer, model, settings, config: EvalConfig, index=None):
    """Retrieve for each question and fill the RAG chain's prompt (``rag_chain.PROMPT_TEMPLATE``,
    as many passages as fit, :func:`rag_chain.fit_passages`), so that the RAG answer is made
    exactly as notebook 08's chain makes it, by the same generation loop as every model."""
    from course_utils.rag import load_or_build_index
    from course_utils.rag_chain import PROMPT_TEMPLATE, fit_passages

    index = index or load_or_build_index(settings=settings)
    ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
    hits = index.search([q["question"] for q in questions], config.k, method=config.method)
    convs, extra = [], []
    for q, hs in zip(questions, hits):
        kept = fit_passages([h["text"] for h in hs], q["question"], tokenizer, ctx, config.max_new_tokens)
        convs.append([{"role": "user", "content": PROMPT_TEMPLATE.format(context=" ".join(kept), question=q["question"])}])
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


# ===================================================================== the harness
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
            from course_utils.rag_chain import cite

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
                   label: str | None = None) -> EvalResult:
    """Run one model over evaluation questions (or conversations) and score every answer.

    ``model_spec``: ``"base" | "sft" | "lora" | "dpo" | "rag"`` (built if not cached), a local
    transformers folder or a hub id; or pass an already loaded ``model`` and ``tokenizer``
    (``model_spec`` is then only the label, except ``"rag"`` which still retrieves).

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

    from course_utils.sft import generate_answers

    if not questions:
        raise ValueError("No questions to evaluate: pass load_eval(...) or load_sft(...) records (at least one).")
    settings = settings or get_settings()
    config = config or EvalConfig(seed=settings.seed)
    spec = str(model_spec)
    if model is None:
        model, tokenizer, source = load_for_eval(spec, settings)
    else:
        if tokenizer is None:
            raise ValueError("Pass the tokenizer with a loaded model: evaluate_model(..., model=m, tokenizer=tok).")
        source = getattr(model, "name_or_path", "") or spec
    start = time.perf_counter()
    prompts = [_record_prompt(q) for q in questions]
    extra: list[dict[str, Any]] = [{} for _ in questions]
    if spec == "rag":
        if any("messages" in q for q in questions):
            raise ValueError("'rag' answers evaluation questions (load_eval records), not conversations.")
        convs, extra, index = _rag_prompts(questions, tokenizer, model, settings, config, index)
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
