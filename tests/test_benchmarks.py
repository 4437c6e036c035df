"""The measurement helpers of benchmarks/ that the notes quote: the reading recipes are what they say;
the SFT budget and DPO scripts read their runs right."""

from __future__ import annotations

import argparse

import pytest

from benchmarks import dpo_nll
from benchmarks.sft_budget import DEFAULT_RUNS, parse_run


def test_reading_recipes_start_from_the_old_learner_preset():
    from benchmarks.reading_recipe import OLD_LEARNER, RECIPES, recipe_config, table

    old = recipe_config("old")
    assert (old.seq_len, old.batch_size, old.drill_rows, old.max_steps, old.lr) == (256, 16, 0, 500, 2e-3)
    for name in RECIPES:
        cfg = recipe_config(name)
        for key, value in {**OLD_LEARNER, **RECIPES[name]}.items():
            got = getattr(cfg.model, key[6:]) if key.startswith("model.") else getattr(cfg, key)
            assert got == value, (name, key)
    row = {"context": 512, "steps": 700, "val_loss_256": 0.61, "reading_fresh": 0.7, "reading_world": 0.65,
           "birthplace": 0.62, "tokens_per_s": 5000.0, "train_s": 780}
    assert "| x | 512 | 700 | 0.610 | 70% / 65% | 62% | 5,000 | 13.0 min |" in table({"x": row})
    with pytest.raises(SystemExit, match="Unknown recipe"):
        recipe_config("nope")


def test_sft_budget_reads_lr_steps_pairs():
    assert parse_run("5e-4:450") == (5e-4, 450)
    assert [parse_run(r) for r in DEFAULT_RUNS][-1] == (5e-4, 450)
    for bad in ("5e-4", "x:3", "0:10", "1e-3:-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_run(bad)


def test_dpo_nll_reads_its_runs():
    assert dpo_nll.parse_run("0.1:2e-4:160:1") == (0.1, 2e-4, 160, 1.0)
    assert [dpo_nll.parse_run(r)[3] for r in dpo_nll.DEFAULT_RUNS] == [0.0, 0.0, 0.0, 1.0]
    for bad in ("0.1:2e-4:160", "0:2e-4:160:1", "0.1:2e-4:160:-1", "a:b:c:d"):
        with pytest.raises(argparse.ArgumentTypeError):
            dpo_nll.parse_run(bad)


def test_base_models_table_reads_its_rows():
    import math

    from benchmarks.base_models import table

    row = {"year_tokens": ["Ġ183", "8"], "birthplace": 0.8, "val_loss": 0.52, "val_nats_per_byte": 0.1 * math.log(2),
           "train_s": 900.0, "fresh": {"share_correct": 0.65, "share_correct_numbers": 0.25, "share_correct_words": 0.9,
                                       "n": 60, "n_numbers": 24},
           "world": {"share_correct": 0.5, "share_correct_numbers": 0.2, "share_correct_words": 0.8, "n": 60,
                     "n_numbers": 24}}
    assert ("| m | 'Ġ183' '8' | 65% / 50% | 25% / 20% (of 24) | 90% / 80% | 80% | 0.520 | 0.1000 | 15.0 min |"
            in table({"m": row}))


def test_embed_throughput_rows(tmp_path):
    from benchmarks.embed_throughput import run

    for i, text in enumerate(["Kithka lies on the Bemfal.", "The Brukolore Guild gathers the tanners.",
                              "Article 1: every trader shall sell by the measures of the town hall."]):
        (tmp_path / f"d{i}.md").write_text(f"# d{i}\n\n{text}\n")
    rows = run(["fp32-2", "bf16-2"], folder=str(tmp_path))
    assert [r["setting"] for r in rows] == ["fp32-2", "bf16-2"] and rows[0]["speedup"] == 1.0
    assert all(r["chunks"] == 3 and r["chunks_per_s"] > 0 and "recall@5" not in r for r in rows)


def test_bench_vectorstores_compares_faiss_and_qdrant_on_a_tiny_index(tmp_path):
    from benchmarks.bench_vectorstores import compare
    from course_utils.rag import IndexConfig, build_index

    docs = {"json.html": "The json module: dumps(obj, indent=4) pretty-prints a dictionary.",
            "asyncio-task.html": "asyncio.gather runs coroutines concurrently and waits for all of them.",
            "csv.html": "csv.writer(f).writerow(values) writes one row of a CSV file."}
    for name, text in docs.items():
        (tmp_path / name).write_text(f"<html><body><main><h1>{name}</h1><p>{text}</p></main></body></html>")
    index = build_index(tmp_path, IndexConfig(folder=str(tmp_path)), progress=False)
    questions = [{"question": "How do I pretty-print JSON?", "gold_doc_ids": ["json.html"], "scope": "json"},
                 {"question": "How do I write a CSV row?", "gold_doc_ids": ["csv.html"], "scope": "csv"}]
    result = compare(index, questions, name="tiny", repeats=1, depth=5)
    stores = {r["store"]: r for r in result["stores"]}
    assert set(stores) == {"FAISS flat", "Qdrant local"}
    assert stores["Qdrant local"]["recall@5 vs flat"] == 1.0 and stores["FAISS flat"]["gold recall@5"] == 1.0
    assert all(r["recall@1 with"] == 1.0 for r in result["filter"])
    assert len(result["hybrid"]) == 6 and all(0 <= r["gold recall@5"] <= 1 for r in result["hybrid"])
