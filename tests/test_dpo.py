"""DPO (notebook 06): pair batches, sequence log-probs, the loss from scratch vs trl, LoRA training."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from course_utils import dpo
from course_utils.data import load_preferences


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [m["content"] for r in load_preferences("train")[:120] for k in ("prompt", "chosen", "rejected")
             for m in r[k]]
    folder = dpo.tiny_chat_model(tmp_path_factory.mktemp("tiny") / "sft", texts=texts)
    model, tok, _ = dpo.load_policy(folder)
    return folder, model, tok


@pytest.fixture(scope="module")
def pairs():
    return load_preferences("train")[:64], load_preferences("test")[:20]


def test_pair_batch_marks_exactly_the_answers(tiny, pairs):
    _, _, tok = tiny
    recs = pairs[0][:4]
    batch = dpo.pair_batch(tok, recs)
    B = len(recs)
    assert batch["input_ids"].shape[0] == 2 * B
    for i, r in enumerate(recs):
        for row, key in ((i, "chosen"), (B + i, "rejected")):
            ids = batch["input_ids"][row][batch["completion_mask"][row] == 1].tolist()
            assert tok.decode(ids) == r[key][0]["content"] + "<|end|>\n"
            # the unmasked part is the prompt ending with the generation prompt
            n = int(batch["attention_mask"][row].sum())
            prompt = batch["input_ids"][row][:n][batch["completion_mask"][row][:n] == 0].tolist()
            assert tok.decode(prompt).endswith("<|assistant|>\n")


def test_sequence_logps_equal_the_cross_entropy(tiny, pairs):
    _, model, tok = tiny
    batch = dpo.pair_batch(tok, pairs[0][:3])
    with torch.no_grad():
        ours = dpo.sequence_logps(model, batch)
        for row in range(batch["input_ids"].shape[0]):
            ids = batch["input_ids"][row : row + 1]
            labels = ids.masked_fill(batch["completion_mask"][row : row + 1] == 0, -100)
            out = model(input_ids=ids, attention_mask=batch["attention_mask"][row : row + 1], labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            assert ours[row].item() == pytest.approx(-out.loss.item() * n, abs=1e-3)


def test_dpo_loss_known_values():
    z = torch.zeros(3)
    loss, rc, rr = dpo.dpo_loss(z, z, z, z, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))  # no preference yet
    loss, rc, rr = dpo.dpo_loss(torch.tensor([-1.0]), torch.tensor([-5.0]), torch.tensor([-2.0]),
                                torch.tensor([-4.0]), beta=0.5)
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


def test_loss_from_scratch_equals_trl(tiny, pairs):
    _, model, tok = tiny
    policy, reference = copy.deepcopy(model), copy.deepcopy(model)
    hist = dpo.train_dpo_by_hand(policy, reference, tok, pairs[0], steps=3, batch_size=4, lr=3e-3, progress=False)
    assert len(hist) == 3 and hist[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    batch_records = pairs[1][:6]
    batch = dpo.pair_batch(tok, batch_records)
    with torch.no_grad():
        ours = dpo.dpo_batch_loss(policy, reference, batch, beta=0.1)[0].item()
    theirs = dpo.trl_dpo_loss(policy, reference, tok, batch_records, beta=0.1)
    assert torch.equal(theirs["input_ids"], batch["input_ids"])  # same tokens
    assert abs(ours - math.log(2)) > 1e-3  # the policy has moved: a real check
    assert abs(ours - theirs["loss"]) < 1e-4


def test_train_dpo_with_lora_and_artifact(tiny, pairs):
    from peft import PeftModel

    folder, model, tok = tiny
    cfg = dpo.DPORunConfig(max_steps=3, batch_size=4, lr=5e-3, logging_steps=1, kl_every=1, kl_pairs=4, lora_r=4,
                           lora_alpha=8, train_pairs=24)
    path = dpo.load_or_build_dpo_model(sft_model=folder, config=cfg, progress=False)
    assert (path / "config.json").exists() and (path / "adapter" / "adapter_config.json").exists()
    record = dpo.training_record(path)
    assert {"loss", "accuracy", "margin", "chosen", "rejected"} <= set(record["history"][0])
    assert record["kl"][0] == {"step": 0, "kl": 0.0} and record["kl"][-1]["kl"] > 0
    assert 0 < record["summary"]["trainable"] < record["summary"]["total"]
    # the reference is the same network with its adapters switched off
    policy = PeftModel.from_pretrained(copy.deepcopy(model), path / "adapter").eval()
    batch = dpo.pair_batch(tok, pairs[1][:2])
    with torch.no_grad():
        with policy.disable_adapter():
            ref = dpo.sequence_logps(policy, batch)
        assert torch.allclose(ref, dpo.sequence_logps(model, batch), atol=1e-4)
        moved = dpo.sequence_logps(policy, batch)
        assert not torch.allclose(moved, ref, atol=1e-4)
        merged, _ = dpo.load_model(path)  # the merged folder is the same policy
        assert torch.allclose(dpo.sequence_logps(merged, batch), moved, atol=1e-3)
    scores = dpo.preference_scores(merged, tok, pairs[1][:8], reference=model, progress=False)
    acc = dpo.preference_accuracy(scores)
    assert 0 <= acc["implicit"] <= 1 and set(acc["by_flaw"]) <= {r["flaw"] for r in pairs[1]}
    assert dpo.load_or_build_dpo_model(sft_model=folder, config=cfg, progress=False) == path  # cached


def test_sft_weight_adds_the_nll_of_the_chosen_answers(tiny, pairs):
    """RPO: DPO's loss starts at log 2 (policy = reference); the NLL term adds the chosen answers' NLL."""
    _, model, tok = tiny
    first = {}
    for w in (0.0, 1.0):
        cfg = dpo.DPORunConfig(max_steps=1, batch_size=4, lr=1e-3, logging_steps=1, kl_every=10, kl_pairs=2,
                               lora_r=4, lora_alpha=8, train_pairs=8, sft_weight=w)
        first[w] = dpo.train_dpo(copy.deepcopy(model), tok, pairs[0], cfg, progress=False).history[0]["loss"]
    assert first[0.0] == pytest.approx(math.log(2), abs=1e-4)
    assert first[1.0] - first[0.0] > 3.0  # a random 400-token model: several nats per chosen token


def test_preference_accuracy_counts_ties_half():
    rows = [{"flaw": "rude", "chosen": -1.0, "rejected": -2.0, "ref_chosen": -1.0, "ref_rejected": -2.0},
            {"flaw": "rude", "chosen": -3.0, "rejected": -2.0, "ref_chosen": -4.0, "ref_rejected": -2.0}]
    acc = dpo.preference_accuracy(rows)
    assert acc["likelihood"] == 0.5
    assert acc["implicit"] == pytest.approx(0.75)  # one tie (0.5), one positive margin
    with pytest.raises(ValueError, match="No scores"):
        dpo.preference_accuracy([])


def test_cli_dpo_missing_model_is_a_sentence(capsys):
    from course_utils.cli import main

    assert main(["dpo", "--sft-model", "./no/such/model", "--json", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "No model folder" in err and "Traceback" not in err
