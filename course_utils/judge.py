"""The course model (or an OpenAI-compatible endpoint) as a judge: single grades, pairwise verdicts
in both orders, and the judge's agreement with gold labels. Taught in notebook 10;
:func:`course_utils.evaluation.make_judge` makes one from a course model's name."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence

import numpy as np

from course_utils.scores import _WORD, answer_nll

__all__ = ["EndpointJudge", "LocalJudge", "RUBRIC_PAIRWISE", "RUBRIC_SINGLE", "judge_agreement", "judge_pairwise",
           "judge_single"]


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

    def scores(self, prompts: list[str], options: Sequence[str]) -> np.ndarray:
        """The log-likelihood of each option as the start of the reply, ``(len(prompts), len(options))``."""
        convs = [[{"role": "user", "content": p}] for p in prompts]
        return -np.array([answer_nll(self.model, self.tokenizer, convs, [o] * len(prompts)) for o in options]).T

    def choose(self, prompts: list[str], options: Sequence[str]) -> list[str]:
        """For each prompt, the option the judge finds most likely."""
        best = np.argmax(self.scores(prompts, options), axis=1)
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
    position-biased verdict is not counted), ``picked_first_slot`` (how often slot A won).

    A judge that scores its options (:meth:`LocalJudge.scores`) also gets a *position-calibrated*
    verdict: ``margin``, the evidence for ``a`` summed over both orders (log P(A) - log P(B) with ``a`` in
    slot A, plus log P(B) - log P(A) with ``a`` in slot B), so that a constant preference for one slot
    cancels, and ``calibrated``, "a" or "b" by its sign ("tie" at zero): balanced position calibration
    (Wang et al., 2023, *Large Language Models are not Fair Evaluators*)."""
    import pandas as pd

    def prompts(xs, ys):
        out = []
        for i, (q, x, y) in enumerate(zip(questions, xs, ys)):
            ref = references[i] if references is not None else None
            out.append(RUBRIC_PAIRWISE.format(
                question=q, a=x, b=y, ref_clause=" (agrees with the reference)" if ref else "",
                reference_line=f"\nReference answer: {ref}" if ref else ""))
        return out

    margin = None
    if hasattr(judge, "scores"):
        s1 = judge.scores(prompts(answers_a, answers_b), ["A", "B"])
        s2 = judge.scores(prompts(answers_b, answers_a), ["A", "B"])
        v1, v2 = (["AB"[i] for i in np.argmax(s, axis=1)] for s in (s1, s2))  # as choose() picks
        margin = (s1[:, 0] - s1[:, 1]) + (s2[:, 1] - s2[:, 0])
    else:
        v1 = judge.choose(prompts(answers_a, answers_b), ["A", "B"])
        v2 = judge.choose(prompts(answers_b, answers_a), ["A", "B"])
    first = [None if v is None else {"A": "a", "B": "b"}[v.upper()] for v in v1]
    swapped = [None if v is None else {"A": "b", "B": "a"}[v.upper()] for v in v2]
    df = pd.DataFrame({"first": first, "swapped": swapped})
    df["consistent"] = [x is not None and x == y for x, y in zip(first, swapped)]
    df["winner"] = [x if c else "tie" for x, c in zip(first, df["consistent"])]
    if margin is not None:
        df["margin"] = margin
        df["calibrated"] = np.where(margin > 0, "a", np.where(margin < 0, "b", "tie"))
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
