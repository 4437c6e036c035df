"""GRPO (notebook 06): rule reward, group advantages, the clipped loss with KL, the loop."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils import dpo, grpo


def _texts():
    from course_utils.data import load_preferences

    return [m["content"] for r in load_preferences("train")[:120] for k in ("prompt", "chosen", "rejected")
            for m in r[k]]


def test_rule_reward():
    assert grpo.rule_reward("Anna was born in Vessary.", "Vessary")["reward"] == 1.5
    assert grpo.rule_reward("Anna was born in vessary", "Vessary", stopped=False)["reward"] == 1.0
    long = "Well " * 20 + "Vessary"
    assert grpo.rule_reward(long, "Vessary", max_words=12) == {"reward": 1.0, "correct": 1.0, "short": 0.0,
                                                               "words": 21.0}
    assert grpo.rule_reward("Born in Vessaryton.", "Vessary")["correct"] == 0.0  # whole words only
    short_wrong = grpo.rule_reward("Anna was born in Orlen.", "Vessary")
    assert short_wrong["short"] == 1.0 and short_wrong["reward"] == 0.0  # no bonus for a short wrong answer


def test_rule_reward_with_two_answers_gives_half_credit_for_one():
    both = grpo.rule_reward("Anna was born in Vessary and was a baker.", ["Vessary", "baker"], max_words=20)
    one = grpo.rule_reward("Anna was born in Vessary.", ["Vessary", "baker"], max_words=20)
    assert both["correct"] == 1.0 and both["reward"] == 1.5
    assert one["correct"] == 0.5 and one["reward"] == 0.75


def test_two_fact_tasks_ask_two_facts_of_one_entity_taught_in_sft():
    from course_utils.corpus import ref
    from course_utils.data import world
    from course_utils.supervised import SetsConfig, split_seen_facts

    w = world()
    fold_a, _ = split_seen_facts(w, SetsConfig())
    taught: dict[str, dict[str, str]] = {}
    for f in fold_a:
        taught.setdefault(f.entity_id, {})[f.attribute] = f.value
    tasks = grpo.two_fact_tasks(n=12, seed=3)
    assert len(tasks) == 12 and tasks == grpo.two_fact_tasks(n=12, seed=3)  # deterministic
    for t in tasks:
        q = t["prompt"][0]["content"]
        assert len(t["answer"]) == 2 and q.count("?") == 2 and " And " in q
        attrs = t["attribute"].split("+")
        owners = [eid for eid, facts in taught.items() if ref(w.get(eid)) in q
                  and all(facts.get(a) == v for a, v in zip(attrs, t["answer"]))]
        assert owners, t  # one entity named in the question, both answers its fold-A (SFT-taught) facts


def test_group_advantages():
    r = torch.tensor([[0.0, 1.0, 1.0, 2.0], [1.5, 1.5, 1.5, 1.5]])
    a = grpo.group_advantages(r)
    assert torch.allclose(a[0].mean(), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(a[0].std(unbiased=False), torch.tensor(1.0), atol=1e-3)
    assert torch.equal(a[1], torch.zeros(4))  # all equal: nothing to learn


def test_grpo_loss_clips_and_penalises_kl():
    logps = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo.grpo_loss(logps, logps.detach(), logps.detach(), adv, mask)
    assert loss.item() == pytest.approx(0.0) and stats["kl"] == pytest.approx(0.0)
    # ratio 2 with a positive advantage: clipped at 1.2, so no gradient pushes it further
    moved = torch.full((1, 2), math.log(2.0), requires_grad=True)
    loss, stats = grpo.grpo_loss(moved, torch.zeros(1, 2), moved.detach(), torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    assert loss.item() == pytest.approx(-1.2) and torch.all(moved.grad == 0) and stats["clipped"] == 1.0
    # the KL term is positive when the policy leaves the reference
    _, stats = grpo.grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.full((1, 2), -1.0), torch.tensor([0.0]),
                              torch.ones(1, 2))
    assert stats["kl"] == pytest.approx(math.exp(-1) + 1 - 1)


def test_fact_tasks_come_from_the_world():
    tasks = grpo.fact_tasks(n=5)
    assert len(tasks) == 5
    for t in tasks:
        assert t["prompt"][0]["role"] == "user" and t["answer"]


def test_loop_runs_and_keeps_the_reference(tmp_path):
    folder = dpo.tiny_chat_model(tmp_path / "tiny", texts=_texts())
    model, tok, _ = dpo.load_policy(folder)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = grpo.GRPOConfig(steps=2, prompts_per_step=2, group_size=3, max_new_tokens=8, lr=1e-3)
    def flat(reply, answer, stopped, max_words):  # every sample equal: all advantages 0
        return {"reward": 0.0, "correct": 0.0, "short": 0.0, "words": len(reply.split())}

    run = grpo.train_grpo(model, tok, grpo.fact_tasks(n=6), cfg, progress=False, reward_fn=flat)
    assert [h["step"] for h in run.history] == [1, 2]
    assert {"reward", "correct", "short", "kl", "clipped", "loss"} <= set(run.history[0])
    # no advantage and the policy at the reference (KL 0): nothing moves
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

    def by_length(reply, answer, stopped, max_words):  # samples differ: non-zero advantages
        return {"reward": float(len(reply)), "correct": 0.0, "short": 0.0, "words": len(reply.split())}

    run = grpo.train_grpo(model, tok, grpo.fact_tasks(n=6), cfg, progress=False, reward_fn=by_length)
    assert any(h["reward"] > 0 for h in run.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the policy moved
    batch = grpo.sample_group(model, tok, [[{"role": "user", "content": "Hi?"}]], group_size=2, max_new_tokens=5)
    assert batch["mask"].shape == (2, batch["input_ids"].shape[1] - batch["prompt_len"])
    assert grpo.answer_logps(model, batch).shape == batch["mask"].shape
