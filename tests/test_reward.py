"""Reward model (notebook 06): scalar head, Bradley-Terry training with trl, accuracy by flaw, win rate."""

from __future__ import annotations

import pytest

from course_utils import dpo, reward
from course_utils.data import load_preferences


def _texts():
    from course_utils.data import load_preferences

    return [m["content"] for r in load_preferences("train")[:120] for k in ("prompt", "chosen", "rejected")
            for m in r[k]]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return dpo.tiny_chat_model(tmp_path_factory.mktemp("tiny") / "sft", texts=_texts())


def test_backbone_has_one_output(tiny_folder):
    model, tok, _ = reward.load_backbone(tiny_folder)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    r = reward.reward_scores(model, tok, [[{"role": "user", "content": "Hi?"}]] * 2, ["Hello.", "Go away."])
    assert len(r) == 2 and all(isinstance(x, float) for x in r)


def test_training_learns_the_clear_flaws_and_is_cached(tiny_folder):
    cfg = reward.RewardRunConfig(max_steps=12, batch_size=8, lr=3e-3, logging_steps=4, train_pairs=200)
    path = reward.load_or_build_reward_model(base_model=tiny_folder, config=cfg, progress=False)
    assert reward.training_record(path)["history"]
    model, tok = reward.load_reward_model(path)
    held = [r for r in load_preferences("test") if r["flaw"] in ("rambling", "rude")][::6]
    acc = reward.reward_accuracy(reward.pair_rewards(model, tok, held, progress=False))
    assert acc["accuracy"] >= 0.8, acc  # a random head is at 0.5
    assert set(acc["by_flaw"]) == {"rambling", "rude"}
    assert reward.load_or_build_reward_model(base_model=tiny_folder, config=cfg, progress=False) == path


def test_accuracy_and_win_rate_arithmetic(tiny_folder):
    rows = [{"flaw": "rude", "margin": 1.0}, {"flaw": "rude", "margin": 0.0}, {"flaw": "wrong_fact", "margin": -2.0}]
    acc = reward.reward_accuracy(rows)
    assert acc["accuracy"] == pytest.approx(0.5) and acc["by_flaw"]["rude"]["accuracy"] == 0.75
    model, tok, _ = reward.load_backbone(tiny_folder)
    prompts = [[{"role": "user", "content": "Where was Anna born?"}]] * 2
    same = reward.win_rate(model, tok, prompts, ["In Vessary.", "In Tolm."], ["In Vessary.", "In Tolm."])
    assert same["ties"] == 2 and same["win_rate"] == 0.5


def test_mistakes_get_sentences(tmp_path, tiny_folder):
    with pytest.raises(FileNotFoundError, match="not a transformers model folder"):
        reward.load_backbone(tmp_path)
    with pytest.raises(FileNotFoundError, match="load_or_build_reward_model"):
        reward.load_reward_model(tmp_path)
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_folder)
    with pytest.raises(ValueError, match="one output"):
        reward.train_reward_model(lm, None, load_preferences("train")[:4], reward.RewardRunConfig(max_steps=1))
