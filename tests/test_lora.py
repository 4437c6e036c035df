"""LoRA (course_utils.lora): the from-scratch wrapper starts at the base model, matches
peft with the same A and B, merges exactly; peft adapters train, save, reload and switch."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from course_utils import lora
from course_utils.lora import LoRALinear


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    return LlamaForCausalLM(cfg).eval()


def test_lora_linear_starts_at_the_base_and_only_a_b_train():
    base = nn.Linear(16, 24)
    layer = LoRALinear(copy.deepcopy(base), r=4, alpha=8)
    x = torch.randn(3, 5, 16)
    assert torch.equal(layer(x), base(x))  # B = 0
    assert layer.scaling == 2.0
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    layer(x).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0 and layer.base.weight.grad is None


def test_apply_lora_wraps_attention_and_mlp(tiny_llama):
    model = copy.deepcopy(tiny_llama)
    names = lora.apply_lora(model, r=2, alpha=4)
    assert len(names) == 2 * 7
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = sum(2 * (m.base.in_features + m.base.out_features) for m in model.modules() if isinstance(m, LoRALinear))
    assert trainable == expected
    with pytest.raises(ValueError, match="No linear layer"):
        lora.apply_lora(copy.deepcopy(tiny_llama), targets=("nope",))


def test_scratch_equals_peft_and_merge_is_exact(tiny_llama):
    from peft import get_peft_model

    ours = copy.deepcopy(tiny_llama)
    lora.apply_lora(ours, r=4, alpha=8)
    for m in ours.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.lora_B, std=0.1)
    theirs = get_peft_model(copy.deepcopy(tiny_llama), lora.lora_config(4, 8))
    assert lora.copy_lora_to_peft(ours, theirs) == 14
    ids = torch.randint(0, 64, (2, 12))
    assert lora.max_logit_diff(ours, theirs, ids) < 1e-5
    assert lora.max_logit_diff(ours, tiny_llama, ids) > 1e-3  # the adapters do change the output
    before = ours(input_ids=ids).logits
    lora.merge_lora(ours)
    assert not any(isinstance(m, LoRALinear) for m in ours.modules())
    assert (ours(input_ids=ids).logits - before).abs().max() < 1e-5


def test_peft_adapters_save_reload_and_switch(tiny_llama, tmp_path):
    from peft import PeftModel, get_peft_model

    ids = torch.randint(0, 64, (1, 10))
    logits = {}
    for name, seed in (("one", 1), ("two", 2)):
        torch.manual_seed(seed)
        pm = get_peft_model(copy.deepcopy(tiny_llama), lora.lora_config(2))
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                nn.init.normal_(p, std=0.1)
        pm.save_pretrained(tmp_path / name)
        logits[name] = pm(input_ids=ids).logits.detach()
    model = PeftModel.from_pretrained(copy.deepcopy(tiny_llama), tmp_path / "one", adapter_name="one")
    model.load_adapter(tmp_path / "two", adapter_name="two")
    for name in ("one", "two"):
        model.set_adapter(name)
        assert (model(input_ids=ids).logits - logits[name]).abs().max() < 1e-5
    with model.disable_adapter():
        assert (model(input_ids=ids).logits - tiny_llama(input_ids=ids).logits).abs().max() < 1e-5


def test_facts_records_teach_with_other_phrasings():
    cfg = lora.LoRAFactsConfig(max_facts=200)  # every taught fact, single-phrasing attributes included
    taught, untaught = lora.split_unseen_facts(cfg)
    assert len(taught) >= 10 and not {q["id"] for q in taught} & {q["id"] for q in untaught}
    records = lora.facts_training_records(taught)
    assert len(records) >= len(taught)
    for q in taught:
        mine = [r for r in records if r["id"] == f"facts-{q['id']}"]
        assert mine and all(q["answer"] in r["messages"][1]["content"] for r in mine)
        users = {r["messages"][0]["content"] for r in mine}
        assert q["question"] not in users  # the evaluation phrasing is never trained on


def test_course_lora_passes_its_options_to_run_lora_and_prints_json(monkeypatch, capsys):
    import json

    from course_utils.cli import main

    calls = []
    monkeypatch.setattr(lora, "run_lora", lambda settings, **kw: calls.append(kw) or {"rank": kw["rank"]})
    assert main(["lora", "--json", "--rank", "4", "--steps", "3", "--no-progress"]) == 0
    assert calls == [{"base_model": None, "rank": 4, "steps": 3, "eval_limit": None, "progress": False}]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"rank": 4}


def test_default_lora_config_is_the_sft_budget_with_a_larger_step(monkeypatch):
    from course_utils import sft
    from course_utils.settings import get_settings

    for fast in ("1", "0"):
        monkeypatch.setenv("COURSE_FAST", fast)
        S = get_settings()
        full, adapters = sft.default_config(S), lora.default_lora_config(S)
        assert adapters.lr > full.lr and adapters.max_steps < full.max_steps
        assert (adapters.batch_size, adapters.max_length, adapters.seed) == (full.batch_size, full.max_length, full.seed)


def test_never_seen_rows_are_the_used_ids_pretraining_lacks(tmp_path):
    from course_utils import sft
    from course_utils.data import load_sft
    from tests.test_sft import tiny_model_folder

    _, tok, _ = sft.load_base(tiny_model_folder(tmp_path / "m"))
    records = load_sft("train")[:20]
    text = tok.apply_chat_template(records[0]["messages"], tokenize=False)
    first = tok(text, add_special_tokens=False)["input_ids"]
    pretraining = torch.tensor(first)  # pretend pretraining saw exactly the first conversation
    rows = lora.never_seen_rows(tok, records, pretraining_ids=pretraining)
    assert rows == sorted(rows) and not set(rows) & set(first)
    used = {i for r in records for i in tok(tok.apply_chat_template(r["messages"], tokenize=False),
                                            add_special_tokens=False)["input_ids"]}
    assert set(rows) == used - set(first)
    assert lora.never_seen_rows(tok, records, pretraining_ids=torch.tensor(sorted(used))) == []


def test_train_lora_with_rows_trains_only_those_rows_and_saves_as_peft(tmp_path):
    from peft import PeftModel

    from course_utils import sft
    from course_utils.data import load_sft
    from tests.test_sft import tiny_model_folder

    base, tok, _ = sft.load_base(tiny_model_folder(tmp_path / "m"))
    before = base.get_input_embeddings().weight.detach().clone()
    records = [r for r in load_sft("train") if r["kind"] == "closed_book"][:16]
    rows = [7, 8, 9, 30]
    cfg = sft.SFTRunConfig(max_steps=6, batch_size=4, lr=1e-2, logging_steps=2)
    run = lora.train_lora(base, tok, records, cfg, r=2, token_rows=rows)
    assert torch.equal(base.get_input_embeddings().weight, before)  # the base is untouched
    plain = lora.train_lora(base, tok, records, cfg, r=2)
    assert run.trainable == plain.trainable + len(rows) * before.shape[1]
    assert run.total == plain.total
    assert run.model.peft_config["default"].lora_alpha == 4  # 2 * r unless given
    halved = lora.train_lora(base, tok, records, dataclasses.replace(cfg, max_steps=1), r=2, token_rows=rows, alpha=2)
    assert halved.model.peft_config["default"].lora_alpha == 2
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    layer = next(m for m in run.model.modules() if isinstance(m, TrainableTokensLayer))
    W = layer.get_merged_weights(["default"])
    other = torch.ones(before.shape[0], dtype=torch.bool)
    other[rows] = False
    assert torch.equal(W[other], before[other]) and not torch.equal(W[rows], before[rows])
    ids = torch.tensor([[1, 7, 8, 30, 9, 12]])
    run.model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(sft.load_base(tiny_model_folder(tmp_path / "m2"))[0],
                                         tmp_path / "adapter").eval()
    assert lora.max_logit_diff(reloaded, run.model, ids) < 1e-5
    merged_model = run.model.merge_and_unload()
    assert lora.max_logit_diff(merged_model, reloaded, ids) < 1e-4
    with pytest.raises(ValueError, match="token_rows"):
        lora.train_lora(base, tok, records, cfg, r=2, token_rows=[10_000])


def test_adapter_training_mix_drops_the_too_long_adds_replay_and_is_deterministic(tmp_path):
    from course_utils import sft
    from tests.test_sft import tiny_model_folder

    _, tok, _ = sft.load_base(tiny_model_folder(tmp_path / "m"))
    short = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
             for i in range(6)]
    long = [{"messages": [{"role": "user", "content": "word " * 400}, {"role": "assistant", "content": "a"}]}]
    mix = lora.adapter_training_mix(short + long, tok, replay=3, seed=5, max_tokens=64)
    assert len(mix) == 9 and long[0] not in mix and all(r in mix for r in short)
    assert mix == lora.adapter_training_mix(short + long, tok, replay=3, seed=5, max_tokens=64)
    assert mix != lora.adapter_training_mix(short + long, tok, replay=3, seed=6, max_tokens=64)
