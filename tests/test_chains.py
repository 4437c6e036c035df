"""The legal chain (course_utils/chains.py, notebook 09; `course chain ask`) and its reading data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from course_utils.chains import (
    SELECTORS,
    ChainModels,
    LegalChainConfig,
    StepTrace,
    article_labels,
    ask_legal,
    citation_scores,
    cost_table,
    draft_table,
    grounding_score,
    legal_chain,
    order_passages,
    pareto,
    plot_trace,
    retrieve_legal,
    select_draft,
    selector_table,
)
from course_utils.prep import Chunk
from course_utils.rag import IndexConfig, RagIndex

PAGES = [
    ("article-01", "article", "Article 1: False measures",
     "Article 1 (False measures). Under Article 1 of the legal code of Valdmark, every trader shall sell by the measures "
     "kept at the town hall. The leading case on Article 1 is Bostum v. Elaeliall."),
    ("article-02", "article", "Article 2: River tolls",
     "Article 2 (River tolls). Under Article 2 of the legal code of Valdmark, a boat passing a town shall pay the toll "
     "posted at its landing. The leading case on Article 2 is Gasmiath v. Stessi."),
    ("precedent-001", "precedent", "Gasmiath v. Stessi",
     "Gasmiath v. Stessi (1632). In Gasmiath v. Stessi, decided by the court of Kithka in 1632, Gasmiath claimed that "
     "Stessi, a boatwright, had passed a landing without paying the river toll. The court applied Article 2."),
    ("precedent-063", "precedent", "Bostum v. Elaeliall",
     "Bostum v. Elaeliall (1624). In Bostum v. Elaeliall, decided by the court of Kithka in 1624, Bostum claimed that "
     "Elaeliall, a weaver, had sold goods by a false measure. The court applied Article 1 and Article 2."),
    ("precedent-070", "precedent", "Wurela v. Woselirn",
     "Wurela v. Woselirn (1701). In Wurela v. Woselirn, decided by the court of Sheirmar in 1701, Wurela claimed that "
     "Woselirn, a weaver, had sold goods by a false measure. The court applied Article 9."),
]
SCENARIO = "A weaver of Sheirmar sold goods by a false measure. Which article of the legal code applies, and what is the leading case on it?"


@pytest.fixture(scope="module")
def index():
    from course_utils.embed import embed, load_embedder

    embedder = load_embedder(device="cpu")
    chunks = [Chunk(id=f"{d}#0", text=f"{title} {t}", doc_id=d, source=f"documents/{d}.html", position=0,
                    meta={"kind": kind, "title": title, "seen": True}) for d, kind, title, t in PAGES]
    return RagIndex(chunks, embed([c.text for c in chunks], embedder), IndexConfig(), {}, embedder=embedder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.conftest import make_tiny_llm

    out = tmp_path_factory.mktemp("tiny-drafter")
    return out, make_tiny_llm([t for *_, t in PAGES], out, max_new_tokens=8, batch_size=3, context=512)


def test_article_labels_and_grounding_score():
    assert article_labels("The court applied Article 1 and Article 36. Article 1 again; Article 12b no") == \
        ["Article 1", "Article 36"]
    passages = [PAGES[0][3], PAGES[3][3]]
    assert grounding_score("Article 1; Bostum v. Elaeliall.", SCENARIO, passages) == 1.0
    assert grounding_score("Article 15 (Spoiled goods) applies.", SCENARIO, passages) == 0.0  # 15, Spoiled, Goods absent
    assert grounding_score("Article 1; Tarrow v. Belin.", SCENARIO, passages) == pytest.approx(1 / 3)
    assert grounding_score("The passage does not say.", SCENARIO, passages) == 0.0  # nothing to ground: no credit
    assert grounding_score("", SCENARIO, passages) == 0.0


def test_select_draft_means_scores_in_unit_range_and_breaks_ties_to_the_first():
    scores = {"grounding": [1.0, 1.0, 0.0], "reward": [-2.0, 3.0, 9.0], "judge": [0.1, 0.2, 0.9]}
    assert select_draft(scores, "first") == 0
    assert select_draft(scores, "grounding") == 0  # a tie: the earlier draft
    assert select_draft(scores, "reward") == 2
    assert select_draft(scores, "grounding+reward") == 1  # (1 + sigmoid 3) / 2 beats (0 + sigmoid 9) / 2
    assert select_draft(scores, "judge") == 2
    assert set(SELECTORS) >= {"first", "reward", "grounding", "judge", "grounding+reward", "all three"}
    with pytest.raises(ValueError, match="needs the reward"):
        select_draft({"grounding": [1.0]}, "reward")
    with pytest.raises(ValueError, match="Unknown selector"):
        select_draft(scores, "vibes")


def test_citation_scores_pareto_and_costs():
    assert citation_scores(["article-01", "precedent-063"], ["article-01", "precedent-063"])["cite_f1"] == 1.0
    half = citation_scores(["article-01", "precedent-070"], ["article-01", "precedent-063"])
    assert half["cite_precision"] == half["cite_recall"] == half["cite_f1"] == 0.5
    assert citation_scores([], ["article-01"]) == {"cite_precision": 0.0, "cite_recall": 0.0, "cite_f1": 0.0}
    assert pareto([(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (0.5, 0.1)]) == [True, True, False, False, True]
    t = cost_table([{"name": "a", "cpu_seconds": 0.36, "tokens_in": 200, "tokens_out": 20}], cpu_hour_price=0.05,
                   api_prices=(0.5, 1.5))
    assert t.loc[0, "cpu_cost_per_1000"] == pytest.approx(1000 * 0.36 * 0.05 / 3600)
    assert t.loc[0, "api_cost_per_1000"] == pytest.approx(1000 * (200 * 0.5 + 20 * 1.5) / 1e6)


def test_retrieval_puts_the_reports_applying_the_article_first_and_a_named_report_before_all(index):
    cfg = LegalChainConfig(k_articles=1, k_precedents=2, depth=5)
    got = retrieve_legal(index, SCENARIO, cfg)
    assert [h["doc_id"] for h in got["articles"]] == ["article-01"]
    # Wurela v. Woselirn tells the same story (a weaver, a false measure) but applies Article 9: it comes after
    assert got["precedents"][0]["doc_id"] == "precedent-063" and "precedent-070" not in \
        [h["doc_id"] for h in got["precedents"][:1]]
    assert order_passages(got)[0]["doc_id"] == "article-01"
    named = retrieve_legal(index, "In what year was Gasmiath v. Stessi decided?", cfg)
    assert named["precedents"][0]["doc_id"] == "precedent-001"
    assert order_passages(named)[0]["doc_id"] == "precedent-001"  # the report the question names comes first


def test_legal_chain_runs_end_to_end_and_the_trace_names_every_step(index, tiny):
    _, llm = tiny
    models = ChainModels(llm)
    cfg = LegalChainConfig(selector="grounding", max_new_tokens=8)
    out = legal_chain(index, models, cfg).invoke(SCENARIO)
    assert len(out["drafts"]) == 3 and set(out["scores"]) == {"grounding"} and out["best"] in (0, 1, 2)
    assert out["answer"] == out["drafts"][out["best"]]
    assert out["passages"] and out["passages"][0]["doc_id"] == "article-01" and out["context"]
    assert all(d in [p["doc_id"] for p in out["passages"]] for d in out["cited_doc_ids"])
    batched = legal_chain(index, models, cfg).batch([SCENARIO, SCENARIO])
    assert [b["drafts"] for b in batched] == [out["drafts"]] * 2  # greedy: the same drafts
    result = ask_legal(SCENARIO, index, models, cfg)
    steps = ["retrieve articles", "retrieve precedents", "context", "drafts", "scores", "select"]
    assert all(s in result["timings"] for s in steps) and result["timings"]["total"] >= result["timings"]["context"]
    assert len(result["drafts"]) == 3 and set(result["drafts"][0]) == {"text", "grounding"}
    with pytest.raises(ValueError, match="needs the reward"):
        legal_chain(index, models, LegalChainConfig(max_new_tokens=8)).invoke(SCENARIO)  # grounding+reward, no RM
    with pytest.raises(ValueError, match="judge"):
        legal_chain(index, models, LegalChainConfig(judge=True))
    with pytest.raises(ValueError, match="empty"):
        ask_legal(" ", index, models, cfg)


def test_step_trace_records_nested_steps_with_depth_and_time():
    import matplotlib

    matplotlib.use("Agg")
    from langchain_core.runnables import RunnableLambda, RunnableParallel

    chain = (RunnableLambda(lambda x: x + 1, name="add")
             | RunnableParallel(a=RunnableLambda(lambda x: x * 2, name="double"),
                                b=RunnableLambda(lambda x: -x, name="negate")).with_config(run_name="both"))
    trace = StepTrace()
    assert chain.invoke(1, config={"callbacks": [trace]}) == {"a": 4, "b": -2}
    t = trace.table()
    depth = dict(zip(t["name"], t["depth"]))
    assert depth["add"] == 1 and depth["both"] == 1 and depth["double"] == 2 and depth["negate"] == 2
    assert (t["seconds"] >= 0).all() and t.loc[t["name"] == "add", "outputs"].item() == "2"
    assert plot_trace(t).get_title()


def test_draft_and_selector_tables_measure_what_each_selector_picks():
    qs = [{"id": "q1", "question": SCENARIO, "answer": "Article 1; Bostum v. Elaeliall", "aliases": [],
           "kind": "legal:scenario", "gold_doc_ids": ["article-01", "precedent-063"]},
          {"id": "q2", "question": "In what year was Gasmiath v. Stessi decided?", "answer": "1632", "aliases": [],
           "kind": "legal:year", "gold_doc_ids": ["precedent-001"]}]
    p = [{"id": f"{d}#0", "doc_id": d, "text": t} for d, _, _, t in PAGES]
    outs = [{"passages": p[:1] + p[3:4], "drafts": ["Article 15 applies.", "Article 1; Bostum v. Elaeliall.", ""],
             "scores": {"grounding": [0.0, 1.0, 0.0], "reward": [5.0, 1.0, 0.0]}},
            {"passages": p[2:3], "drafts": ["It was decided in 1632.", "In 1701.", "1632"],
             "scores": {"grounding": [1.0, 0.0, 1.0], "reward": [0.0, 2.0, 0.0]}}]
    d = draft_table(qs, outs)
    assert len(d) == 6 and d.loc[1, "contains"] == 1.0 and d.loc[1, "cite_f1"] == 1.0 and d.loc[0, "cite_f1"] == 0.0
    summary, picks = selector_table(d, n_boot=200)
    s = summary.set_index("selector")
    assert "judge" not in s.index  # no judge scores: that selector is left out
    assert s.loc["grounding", "contains"] == 1.0 and s.loc["reward", "contains"] == 0.0
    assert s.loc["first", "contains"] == 0.5 and s.loc["oracle", "contains"] == 1.0
    assert list(picks["reward"]["draft"]) == [0, 1]


def test_legal_reading_data_is_deterministic_fits_and_names_no_valdmark_entity():
    from course_utils import data
    from course_utils.supervised import LEGAL_QUESTIONS, legal_reading, reading_world

    world = data.world()
    other = reading_world(world, 777)
    a, b = legal_reading(other, 60, seed=3), legal_reading(other, 60, seed=3)
    assert a == b and len(a) == 60
    assert {r["task"] for r in a} == set(LEGAL_QUESTIONS)
    from collections import Counter

    every = Counter(w for e in world.entities for w in e.name.split())
    # the invented words of unseen names ("Kithka"), not the words of name templates ("Guild", "Night", "of")
    names = {w for name in world.unseen_names() for w in name.split() if every[w] < 5 and len(w) >= 4}
    assert len(names) > 50
    for r in a:
        user, reply = r["messages"][0]["content"], r["messages"][1]["content"]
        assert len(user) < 1000 and r["kind"] == "legal_reading"
        assert grounding_score(reply, "", [user]) == 1.0, reply  # every name and number of the answer is on the page
        assert not names & set(user.replace(".", " ").replace(",", " ").split())


def test_cli_chain_ask_json(tmp_path, capsys, index, tiny):
    from course_utils.cli import main

    folder, _ = tiny
    index.save(tmp_path / "idx")
    assert main(["chain", "ask", SCENARIO, "--index", str(tmp_path / "idx"), "--model", str(folder),
                 "--reward-model", "none", "--selector", "grounding", "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["question"] == SCENARIO and len(out["drafts"]) == 3 and isinstance(out["answer"], str)
    assert {"retrieve articles", "drafts", "total"} <= set(out["timings"])
    assert out["passages"][0]["doc_id"] == "article-01" and out["selector"] == "grounding"
    assert np.isfinite(out["timings"]["total"])
    assert main(["chain", "ask", " ", "--index", str(tmp_path / "idx"), "--model", str(folder),
                 "--reward-model", "none", "--json"]) != 0


def test_legal_reader_records_mix_legal_reading_with_replayed_sft_deterministically():
    from course_utils.lora import LegalReaderConfig, default_legal_reader_config, legal_reader_records
    from course_utils.settings import get_settings

    cfg = default_legal_reader_config(get_settings())  # fast mode in the tests
    assert cfg.max_steps < LegalReaderConfig().max_steps and cfg.examples < LegalReaderConfig().examples
    a, b = legal_reader_records(cfg), legal_reader_records(cfg)
    assert a == b and len(a) == cfg.examples + cfg.replay
    assert sum(r["kind"] == "legal_reading" for r in a) == cfg.examples
    assert a != sorted(a, key=lambda r: r["kind"]), "shuffled, not grouped by kind"


def test_an_endpoint_model_drafts_through_the_same_chain(index, tiny):
    from course_utils.chains import endpoint_llm
    from tests.conftest import fake_openai

    with fake_openai(lambda prompt: "Article 1; Bostum v. Elaeliall.") as (url, calls):
        llm = endpoint_llm(url, "fake-drafter", max_new_tokens=12)
        with pytest.raises(ValueError, match="tokenizer"):
            legal_chain(index, ChainModels(llm), LegalChainConfig(selector="grounding"))
        models = ChainModels(llm, tokenizer=tiny[1].pipeline.tokenizer, context=512)
        out = legal_chain(index, models, LegalChainConfig(selector="grounding")).invoke(SCENARIO)
    assert out["drafts"] == ["Article 1; Bostum v. Elaeliall."] * 3 and out["scores"]["grounding"] == [1.0] * 3
    assert out["cited_doc_ids"] == ["article-01", "precedent-063"]
    sent = calls[0][1]
    assert sent["model"] == "fake-drafter" and sent["temperature"] == 0 and sent["messages"][-1]["role"] == "user"
    assert "Bostum v. Elaeliall" in sent["messages"][-1]["content"] and SCENARIO in sent["messages"][-1]["content"]
