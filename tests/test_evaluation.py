"""The evaluation harness: hand-written metrics agree with reference libraries, judges, the harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_utils import evaluation as ev


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from course_utils.dpo import tiny_chat_model

    folder = tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    return folder


# ---------------------------------------------------------------------- per-answer scores
def test_score_answer_em_f1_contains():
    s = ev.score_answer("The festival takes place in Mestomgo.", ["Mestomgo"])
    assert s["em"] == 0.0 and s["contains"] == 1.0 and 0 < s["f1"] < 1
    assert ev.score_answer("the Mestomgo", ["Mestomgo"])["em"] == 1.0
    assert ev.score_answer("Mestomgoville", ["Mestomgo"])["contains"] == 0.0  # whole words only
    assert ev.score_answer("It was in Nendrolhei.", ["Nendrolhei Guild", "Nendrolhei"])["contains"] == 1.0
    with pytest.raises(ValueError):
        ev.score_replies([{"answer": "x"}], [])


def test_text_scores_come_from_the_libraries():
    import sacrebleu
    from rouge_score import rouge_scorer

    pred, ref = "The cat sat on the mat today.", "The cat sat on the mat."
    s = ev.text_scores(pred, ref)
    r = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].fmeasure
    assert s["rougeL"] == pytest.approx(r)
    assert s["bleu"] == pytest.approx(sacrebleu.sentence_bleu(pred, [ref]).score / 100)
    assert 0 < s["chrf"] <= 1
    c = ev.corpus_scores([pred, "a b c"], [ref, "a b d"])
    assert 0 <= c["bleu"] <= 1 and 0 <= c["chrf"] <= 1


# ---------------------------------------------------------------------- hand-written vs reference libraries
def test_bootstrap_ci_agrees_with_scipy_on_random_inputs():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)
    for trial in range(5):
        x = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2), size=int(rng.integers(40, 120)))
        est, lo, hi = ev.bootstrap_ci(x, n_boot=4000, seed=trial)
        ref = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=trial).confidence_interval
        width = ref.high - ref.low
        assert est == pytest.approx(x.mean())
        assert lo == pytest.approx(ref.low, abs=0.08 * width) and hi == pytest.approx(ref.high, abs=0.08 * width)
    assert np.isnan(ev.bootstrap_ci([])[0])


def test_context_precision_is_sklearn_average_precision_on_random_rankings():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    for _ in range(200):
        k = int(rng.integers(1, 12))
        rel = rng.random(k) < rng.uniform(0.1, 0.9)
        if not rel.any():
            assert ev.context_precision(rel) == 0.0
            continue
        ref = average_precision_score(rel.astype(int), -np.arange(k))  # rank 1 has the highest score
        assert ev.context_precision(rel) == pytest.approx(ref)


def test_answer_nll_agrees_with_the_transformers_loss(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rng = np.random.default_rng(2)
    words = "river town guild born year the of in Mestomgo Alegrei 1831 was a tanner".split()
    convs, answers = [], []
    for _ in range(5):
        convs.append([{"role": "user", "content": " ".join(rng.choice(words, int(rng.integers(3, 9))))}])
        answers.append(" ".join(rng.choice(words, int(rng.integers(1, 7)))))
    ours = ev.answer_nll(model, tok, convs, answers, batch_size=3)  # padding in play
    for conv, ans, nll in zip(convs, answers, ours):
        prompt = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(conv + [{"role": "assistant", "content": ans}], tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([tok(full, add_special_tokens=False)["input_ids"]])
        labels = ids.clone()
        labels[0, : len(p_ids)] = -100
        with torch.no_grad():
            ref = model(input_ids=ids, labels=labels).loss.item()
        assert nll == pytest.approx(ref, rel=1e-4, abs=1e-5)


def test_classifier_curves_and_judge_agreement_match_sklearn():
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = y + rng.normal(0, 1, 200)
    c = ev.classifier_curves(y, s)
    assert c["auc"] == pytest.approx(roc_auc_score(y, s)) and 0.5 < c["auc"] < 1
    assert len(c["fpr"]) == len(c["tpr"]) and 0.5 < c["accuracy"] <= 1
    with pytest.raises(ValueError, match="both"):
        ev.classifier_curves([1, 1], [0.1, 0.2])
    j = np.where(rng.random(200) < 0.8, y, 1 - y).astype(float)
    a = ev.judge_agreement(j, y)
    assert a["accuracy"] == pytest.approx((j == y).mean())
    assert a["kappa"] == pytest.approx(cohen_kappa_score(y, j.astype(int)))
    j[:10] = np.nan
    assert ev.judge_agreement(j, y)["coverage"] == pytest.approx(0.95)


# ---------------------------------------------------------------------- RAG metrics (Ragas definitions)
def test_faithfulness_and_context_recall():
    ctx = ["Celle Alomgesta belonged to the Nendrolhei Guild. Celle was born in 1831 in Mestomgo."]
    assert ev.faithfulness("Celle Alomgesta belonged to the Nendrolhei Guild.", ctx) == 1.0
    assert ev.faithfulness("Celle Alomgesta belonged to the Alegrei Guild.", ctx) == 0.0  # made-up name
    assert ev.faithfulness("Celle belonged to the Nendrolhei Guild. Celle was born in 1840.", ctx) == 0.5
    assert np.isnan(ev.faithfulness("", ctx))
    assert ev.context_recall("Nendrolhei Guild", ctx) == 1.0
    assert ev.context_recall("Alegrei Guild", ctx) == 0.0
    assert ev.context_precision([0, 1, 1]) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_answer_relevancy_uses_embeddings_and_noncommittal_flag():
    q = ["Which guild did Celle Alomgesta belong to?"] * 3
    a = ["Celle Alomgesta belonged to the Nendrolhei Guild.", "The river is 40 km long.",
         "The passage does not say which guild."]
    r = ev.answer_relevancy(q, a)
    assert r[0] > r[1] and r[2] == 0.0
    gen = ev.answer_relevancy(q[:1], a[:1], question_generator=lambda ans: ["Which guild did Celle belong to?"])
    assert gen[0] > r[0]


# ---------------------------------------------------------------------- judges
@pytest.fixture
def fake_server():
    """An endpoint that always answers the first slot ("A" / "GOOD"): yields ``(base_url, calls)``."""
    from tests.conftest import fake_openai

    with fake_openai(lambda prompt: "A." if "Answer A" in prompt else "good") as served:
        yield served


def test_endpoint_judge_and_position_bias_check(fake_server):
    url, calls = fake_server
    judge = ev.make_judge(url, model="fake-judge", api_key="k")
    q, a, b = ["Q1?", "Q2?"], ["right", "right"], ["wrong", "wrong"]
    df = ev.judge_pairwise(judge, q, a, b)
    # Always picking slot A: the first verdict says "a", the swapped one says "b": inconsistent everywhere.
    assert list(df["first"]) == ["a", "a"] and list(df["swapped"]) == ["b", "b"]
    assert not df["consistent"].any() and set(df["winner"]) == {"tie"}
    assert df.attrs["picked_first_slot"] == 1.0
    assert ev.judge_single(judge, q, a, ["right", "other"]) == [1.0, 1.0]
    path, body, auth = calls[0]
    assert path == "/v1/chat/completions" and body["model"] == "fake-judge" and body["temperature"] == 0
    assert auth == "Bearer k"
    with pytest.raises(ValueError, match="model name"):
        ev.make_judge(url)


def test_endpoint_judge_that_is_down_gets_a_sentence():
    judge = ev.EndpointJudge("http://127.0.0.1:9", "x", timeout=2)
    with pytest.raises(ValueError, match="did not answer"):
        judge.choose(["hi"], ["A", "B"])


def test_local_judge_picks_an_option_by_likelihood(tiny_model):
    judge = ev.make_judge(str(tiny_model))
    out = judge.choose(["Is this good?", "Pick one."], ["GOOD", "BAD"])
    assert len(out) == 2 and set(out) <= {"GOOD", "BAD"}
    df = ev.judge_pairwise(judge, ["Q?"], ["x"], ["y"], references=["x"])
    assert set(df.columns) >= {"first", "swapped", "consistent", "winner", "margin", "calibrated"}
    s = judge.scores(["Pick one."], ["A", "B"])
    assert s.shape == (1, 2) and (s < 0).all()  # log-likelihoods


class _SlotBiasedJudge:
    """Scores its options with a strong preference for slot B (+3 nats) and a weak one (+0.5) for the answer
    containing "right": its raw verdicts always say B, its calibrated ones find the right answer."""

    def scores(self, prompts, options):
        out = []
        for p in prompts:
            a, b = p.split("Answer A: ")[1].split("\nAnswer B: ")
            b = b.split("\n")[0]
            out.append([0.5 * ("right" in a), 3.0 + 0.5 * ("right" in b)])
        return np.array(out)


def test_balanced_position_calibration_cancels_a_slot_preference():
    q, a, b = ["Q1?", "Q2?", "Q3?"], ["right", "wrong", "right"], ["wrong", "right", "right too"]
    df = ev.judge_pairwise(_SlotBiasedJudge(), q, a, b)
    assert df.attrs["picked_first_slot"] == 0.0 and not df["consistent"].any()  # raw: always slot B
    assert list(df["calibrated"]) == ["a", "b", "tie"]  # calibrated: the right one, a tie when both are
    assert np.allclose(df["margin"], [1.0, -1.0, 0.0])
    endpoint_like = type("J", (), {"choose": lambda self, prompts, options: ["A"] * len(prompts)})()
    assert "calibrated" not in ev.judge_pairwise(endpoint_like, q, a, b)  # no scores, no calibration


# ---------------------------------------------------------------------- the harness
QUESTIONS = [
    {"id": "q1", "question": "Which guild did Celle Alomgesta belong to?", "answer": "Nendrolhei Guild",
     "aliases": ["Nendrolhei"], "gold_doc_ids": ["person-176"], "seen": True, "kind": "fact:guild",
     "subset": "seen"},
    {"id": "q2", "question": "In which town does the Grangebae Festival take place?", "answer": "Mestomgo",
     "aliases": [], "gold_doc_ids": ["festival-007"], "seen": True, "kind": "fact:town", "subset": "seen"},
]


class _FakeIndex:
    duplicates: dict = {}

    def search(self, queries, k, method="hybrid"):
        texts = {"q1": "Celle Alomgesta belonged to the Nendrolhei Guild.", "q2": "The festival is held in Mestomgo."}
        out = []
        for qi, q in enumerate(queries):
            key = "q1" if "guild" in q else "q2"
            out.append([{"id": "other#0", "doc_id": "other", "text": "Nothing here."},
                        {"id": f"{QUESTIONS[qi]['gold_doc_ids'][0]}#0", "doc_id": QUESTIONS[qi]["gold_doc_ids"][0],
                         "text": texts[key]}][:k])
        return out


def test_evaluate_model_on_a_local_folder(tiny_model):
    cfg = ev.EvalConfig(max_new_tokens=6, n_boot=100, progress=False)
    res = ev.evaluate_model(str(tiny_model), QUESTIONS, config=cfg)
    t = res.table
    for col in ("reply", "em", "f1", "contains", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "nll",
                "answer_relevancy", "subset", "reference"):
        assert col in t.columns
    assert len(t) == 2 and (t["nll"] > 0).all()
    s = res.summary.set_index("metric")
    assert (s["low"] <= s["mean"] + 1e-9).all() and (s["mean"] <= s["high"] + 1e-9).all()
    assert s.loc["perplexity", "mean"] == pytest.approx(np.exp(t["nll"].mean()))
    d = res.as_dict()
    json.dumps(d)
    assert d["n"] == 2 and "contains" in d["metrics"]
    with pytest.raises(ValueError, match="No questions"):
        ev.evaluate_model(str(tiny_model), [], config=cfg)


def test_evaluate_model_on_conversations(tiny_model):
    """SFT conversations go through the same harness: prompt = the turns before the gold reply."""
    grounded = {"id": "g1", "kind": "grounded", "messages": [
        {"role": "user", "content": "Passage: Quix was born in 1801.\n\nQuestion: When was Quix born?"},
        {"role": "assistant", "content": "Quix was born in 1801."}]}
    chat = {"id": "c1", "kind": "closed_book", "messages": [
        {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Who is Quix?"},
        {"role": "assistant", "content": "A scholar."}]}
    cfg = ev.EvalConfig(max_new_tokens=4, n_boot=50, progress=False, relevancy=False)
    res = ev.evaluate_model(str(tiny_model), [grounded, chat], config=cfg)
    t = res.table.set_index("id")
    assert t.loc["g1", "answer"] == "Quix was born in 1801." and t.loc["c1", "question"] == "Who is Quix?"
    assert t.loc["c1", "reference"] == "A scholar."
    assert t.loc["g1", "grounded_correct"] in (0.0, 1.0) and np.isnan(t.loc["c1", "grounded_correct"])
    s = res.summary.set_index("metric")
    assert s.loc["grounded_correct", "n"] == 1 and s.loc["format", "n"] == 2
    assert res.scores()["n"] == 2 and len(res.outputs) == 2
    with pytest.raises(ValueError, match="assistant turn"):
        ev.evaluate_model(str(tiny_model), [{"messages": [{"role": "user", "content": "hi"}]}], config=cfg)


def test_evaluate_rag_scores_contexts(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cfg = ev.EvalConfig(max_new_tokens=6, n_boot=100, progress=False, k=2, relevancy=False)
    res = ev.evaluate_model("rag", QUESTIONS, config=cfg, model=model, tokenizer=tok, index=_FakeIndex())
    t = res.table
    assert list(t["context_precision"]) == [0.5, 0.5]  # the gold passage at rank 2 of 2
    assert list(t["context_recall"]) == [1.0, 1.0]
    assert "faithfulness" in t.columns and len(t["contexts"][0]) == 2
    r = ev.report([res], metrics=("contains", "context_precision"), by="subset", n_boot=50)
    assert r.loc[0, "context_precision"] == 0.5 and r.loc[0, "n"] == 2


def test_paired_difference_and_report_plot():
    import matplotlib

    matplotlib.use("Agg")
    d = ev.paired_difference([1, 1, 1, 0], [0, 0, 1, 0], n_boot=200)
    assert d["diff"] == pytest.approx(0.5) and d["low"] <= d["diff"] <= d["high"] and d["n"] == 4
    import pandas as pd

    table = pd.DataFrame({"model": ["a", "b"], "contains": [0.5, 0.7], "contains_low": [0.3, 0.5],
                          "contains_high": [0.7, 0.9]})
    ax = ev.plot_report(table, "contains")
    assert ax.get_ylabel().startswith("contains")


def test_course_eval_json_on_a_folder(tiny_model, capsys):
    from course_utils.cli import main

    assert main(["eval", "--model", str(tiny_model), "--limit", "2", "--max-new-tokens", "4", "--json",
                 "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 2 and set(out["metrics"]) >= {"em", "f1", "contains", "rougeL", "chrf", "perplexity"}
    assert out["by_subset"]
    assert main(["eval", "--model", "./no/such/folder", "--json"]) == 2
