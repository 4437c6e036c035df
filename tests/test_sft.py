"""Supervised fine-tuning (course_utils.sft) on a tiny exported model: the hand-written
assistant mask equals the chat template's, trl trains with it, scoring is right."""

from __future__ import annotations

import pytest
import torch

from course_utils import sft
from course_utils.data import load_eval, load_sft


def tiny_model_folder(folder):
    """A tiny randomly initialised Llama (our GPT exported) with a small course-style tokenizer."""
    from course_utils.hf import export_hf
    from course_utils.model import GPT, GPTConfig
    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer

    texts = [m["content"] for r in load_sft("train")[:400] for m in r["messages"]]
    tok = wrap_tokenizer(train_tokenizer(texts, vocab_size=400))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), max_seq_len=128, n_layer=1, n_head=2, d_model=32, ffn_hidden=64))
    return export_hf(model, folder, tok)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


def test_hand_mask_equals_the_templates_generation_mask(tiny):
    _, tok, _ = sft.load_base(tiny)
    for record in load_sft("train")[:30]:
        ids, mask = sft.assistant_mask_by_hand(tok, record["messages"])
        enc = tok.apply_chat_template(record["messages"], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        assert ids == list(enc["input_ids"])
        assert mask == list(enc["assistant_masks"])
        # the masked tokens decode to the assistant replies, each closed by <|end|>
        replies = [m["content"] + "<|end|>" for m in record["messages"] if m["role"] == "assistant"]
        assert tok.decode([i for i, m in zip(ids, mask) if m]) == "".join(replies)


def test_collate_by_hand_ignores_prompt_and_padding(tiny):
    _, tok, _ = sft.load_base(tiny)
    batch = sft.collate_by_hand(tok, [r["messages"] for r in load_sft("train")[:3]])
    assert batch["input_ids"].shape == batch["labels"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    counted = batch["labels"] != -100
    assert 0 < counted.sum() < batch["attention_mask"].sum()


def test_trl_labels_equal_hand_labels(tiny, tmp_path):
    model, tok, _ = sft.load_base(tiny)
    records = [r for r in load_sft("train") if r["kind"] == "closed_book"][:4]
    trainer = sft.make_trainer(model, tok, records, sft.SFTRunConfig(max_steps=1, batch_size=2), tmp_path,
                               padding_free=False)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
    hand = sft.collate_by_hand(tok, [r["messages"] for r in records])
    T = hand["labels"].shape[1]
    assert torch.equal(trl_batch["labels"][:, :T], hand["labels"])


def test_padding_free_batches_give_the_padded_loss(tiny, tmp_path):
    """One row per batch, position ids restarting per conversation: the same loss as padding."""
    model, tok, _ = sft.load_base(tiny)
    records = [r for r in load_sft("train") if r["kind"] == "closed_book"][:4]
    assert sft.longest_conversation(tok, records) <= sft.context_length(model)
    cfg = sft.SFTRunConfig(max_steps=1, batch_size=4)
    free = sft.make_trainer(model, tok, records, cfg, tmp_path / "free")  # auto: everything fits
    padded = sft.make_trainer(model, tok, records, cfg, tmp_path / "pad", padding_free=False)
    assert free.args.padding_free and not padded.args.padding_free
    losses = []
    for trainer in (free, padded):
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
        keys = ("input_ids", "labels", "position_ids") if trainer.args.padding_free else \
            ("input_ids", "labels", "attention_mask")
        with torch.no_grad():
            losses.append(model(**{k: batch[k] for k in keys}).loss.item())
        rows = batch["input_ids"].shape[0]
        assert rows == (1 if trainer.args.padding_free else len(records))
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_padding_free_needs_conversations_that_fit(tiny, tmp_path):
    model, tok, _ = sft.load_base(tiny)
    records = load_sft("train")[:200]
    longest = sft.longest_conversation(tok, records)
    assert longest > sft.context_length(model)  # the tiny model's context is 128 tokens
    auto = sft.make_trainer(model, tok, records, sft.SFTRunConfig(max_steps=1), tmp_path / "auto")
    assert not auto.args.padding_free and auto.args.max_length == sft.context_length(model)  # padded and cut
    with pytest.raises(ValueError, match="padding_free=True needs"):
        sft.make_trainer(model, tok, records, sft.SFTRunConfig(max_steps=1), tmp_path / "x", padding_free=True)


def test_training_lowers_the_loss_and_the_artifact_reloads(tiny, monkeypatch):
    from transformers import AutoModelForCausalLM

    cfg = sft.SFTRunConfig(max_steps=12, batch_size=8, lr=3e-3, logging_steps=2, train_examples=200)
    path = sft.load_or_build_sft_model(base_model=tiny, config=cfg)
    rec = sft.training_record(path)
    losses = [h["loss"] for h in rec["history"]]
    assert losses[-1] < losses[0]
    assert rec["summary"]["trainable_share"] == 1.0
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size >= 400
    assert sft.load_or_build_sft_model(base_model=tiny, config=cfg) == path  # cached


def test_generate_and_score(tiny):
    model, tok, _ = sft.load_base(tiny)
    test = sft.held_out_sample(load_sft("test"), per_kind=1)
    questions = load_eval(seen=True, kind="fact")[:3]
    conv, ev = sft.evaluate(model, tok, test, questions, max_new_tokens=4, progress=False)
    assert len(conv.table) == len(test) and len(ev.table) == 3 and len(conv.outputs) == len(test)
    assert all(o["new_tokens"] <= 4 for o in conv.outputs)
    s = conv.scores()
    for key in ("em", "f1", "format", "stopped", "answer_first", "grounded_correct", "rougeL"):
        assert 0.0 <= s[key] <= 1.0, key
    assert set(conv.by("kind").index) == {r["kind"] for r in test}
    assert "contains" in ev.scores() and "grounded_correct" not in ev.table.columns
    assert sft.evaluate(model, tok, [], questions[:1], max_new_tokens=2, progress=False)[0] is None


def test_scoring_rules_of_a_conversation():
    """The format and grounded checks of the harness on a hand-made grounded conversation."""
    from course_utils.evaluation import format_scores, grounded_scores

    passage = "Passage: Quix was born in 1801 in Zembla.\n\nQuestion: When was Quix born?"
    gold = "Quix was born in the year 1801."
    question = passage.rsplit("\n\n", 1)[-1]
    assert format_scores(gold, True, gold) == {"answer_first": 1.0, "format": 1.0}
    assert grounded_scores(gold, gold, passage, question) == {"grounded_correct": 1.0, "grounded_faithful": 1.0}
    made_up = "Quix was born in the year 1777."
    assert format_scores(made_up, False, gold) == {"answer_first": 1.0, "format": 0.0}
    assert grounded_scores(made_up, gold, passage, question) == {"grounded_correct": 0.0, "grounded_faithful": 0.0}
    preamble = "Let me look at the passage first. Quix was born in 1801."
    assert format_scores(preamble, True, gold)["answer_first"] == 0.0


def test_missing_folder_gets_a_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match="BASE_MODEL"):
        sft.load_base("./no/such/model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        sft.load_base(tmp_path / "empty")


def test_course_sft_passes_its_options_to_run_sft_and_prints_json(tmp_path, monkeypatch, capsys):
    import json

    from course_utils.cli import main

    calls = []
    monkeypatch.setattr(sft, "run_sft", lambda settings, **kw: calls.append(kw) or {"model": "x", "format_rate": 1.0})
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["sft", "--json", "--base-model", str(model), "--per-kind", "2", "--no-progress"]) == 0
    assert calls == [{"base_model": str(model), "per_kind": 2, "eval_limit": None, "progress": False}]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"model": "x", "format_rate": 1.0}


def test_cpu_training_runs_without_activation_checkpointing(tmp_path):
    """trl turns activation checkpointing on by default; on a CPU it only costs a second forward."""
    args = sft.make_sft_config(sft.SFTRunConfig(max_steps=1), tmp_path)
    if not torch.cuda.is_available():
        assert args.activation_checkpointing is False and args.gradient_checkpointing is False
