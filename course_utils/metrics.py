"""Answer metrics shared by every stage: SQuAD-style exact match, token F1, answer contained.

Used from notebook 04 on (before/after SFT) and taught in notebook 10 (evaluation),
which adds ROUGE, BLEU/chrF, ROC-AUC and the RAG metrics through their libraries.
These two are written out because no offline, well-kept library ships them: the
definitions are those of the official SQuAD v1.1 evaluation script (lower-case,
strip punctuation and the articles a/an/the, collapse white space; F1 over the bag of
remaining tokens), and ``tests/test_metrics.py`` checks them against that script's
worked cases.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["best_over_golds", "contains_answer", "exact_match", "normalize_answer", "score_answer", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
_WORD = re.compile(r"\w+")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse white space (SQuAD v1.1)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised prediction equals the normalised gold answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (SQuAD v1.1).

    Two empty answers score 1.0; one empty answer scores 0.0.
    """
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(metric, prediction: str, golds: str | Sequence[str] | Iterable[str]) -> float:
    """The best score of ``prediction`` against any accepted gold answer (answer and aliases)."""
    if isinstance(golds, str):
        golds = [golds]
    scores = [metric(prediction, g) for g in golds]
    if not scores:
        raise ValueError("best_over_golds needs at least one gold answer.")
    return max(scores)


def contains_answer(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 when a gold answer (or alias) appears in ``prediction`` as whole words (case-insensitive).

    The fair closed-book measure for an assistant that answers in a sentence: "The festival
    takes place in Mestomgo." contains "Mestomgo" while its exact match is 0."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    norm = " " + " ".join(_WORD.findall(prediction.lower())) + " "
    return float(any(" " + " ".join(_WORD.findall(g.lower())) + " " in norm for g in golds if g.strip()))


def score_answer(prediction: str, golds: str | Sequence[str]) -> dict[str, float]:
    """``em``, ``f1`` (best over the gold answer and its aliases) and ``contains`` of one reply.

    The one function that scores a reply against short gold answers: the evaluation harness
    (notebook 10, :mod:`course_utils.evaluation`) and the SFT, LoRA, DPO and RAG stages'
    before/after figures all call it."""
    golds = [golds] if isinstance(golds, str) else list(golds)
    return {"em": best_over_golds(exact_match, prediction, golds),
            "f1": best_over_golds(token_f1, prediction, golds),
            "contains": contains_answer(prediction, golds)}
