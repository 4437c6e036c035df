"""EM and F1 follow the official SQuAD v1.1 script (its normalisation and its F1)."""

import random
import re
import string
from collections import Counter

import pytest

from course_utils.metrics import best_over_golds, exact_match, normalize_answer, token_f1


# The reference: the official SQuAD v1.1 evaluation functions, verbatim in logic.
def _squad_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _squad_f1(prediction, ground_truth):
    prediction_tokens = _squad_normalize(prediction).split()
    ground_truth_tokens = _squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def test_worked_cases():
    assert normalize_answer("  The  Oskaru, river! ") == "oskaru river"
    assert exact_match("the Oskaru.", "Oskaru") == 1.0
    assert exact_match("Oskaru river", "Oskaru") == 0.0
    assert token_f1("Oskaru river", "Oskaru") == pytest.approx(2 / 3)
    assert token_f1("born in 1421", "1421") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0
    assert best_over_golds(exact_match, "Amsel", ["Port Amsel", "Amsel"]) == 1.0
    with pytest.raises(ValueError):
        best_over_golds(exact_match, "x", [])


def test_agrees_with_the_squad_script_on_random_answers():
    rng = random.Random(0)
    words = ["the", "a", "Oskaru", "river", "1421", "Port", "Amsel", "born", "in", "Vellmarsh,", "guild."]
    for _ in range(2000):
        pred = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        gold = " ".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        assert normalize_answer(pred) == _squad_normalize(pred)
        assert exact_match(pred, gold) == float(_squad_normalize(pred) == _squad_normalize(gold))
        if _squad_normalize(pred) and _squad_normalize(gold):
            assert token_f1(pred, gold) == pytest.approx(_squad_f1(pred, gold))
