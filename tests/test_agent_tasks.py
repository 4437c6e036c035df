"""Notebook 12: the tool-use tasks, their gold traces and scores (course_utils/agent_tasks.py).

Fast: the course world with the real calculator, date and legal tools; world lookups go to OracleIndex (no
retrieval index, no embedder). The tokenizer test reads the learner's SFT model folder, and skips without one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from course_utils.agent_tasks import (KINDS, OracleIndex, build_agent_tasks, entity_split, gold_conversation,
                                      render_gold, score_answer, split_plan)
from course_utils.metrics import contains_answer
from course_utils.settings import repo_root
from course_utils.tools import (Observation, calculator, date_calculator, format_tool_call, legal_lookup,
                                parse_tool_calls, tools_system_prompt, world_lookup)

# Read before conftest points COURSE_CACHE at an empty folder: the learner's cache, only read here.
LEARNER_CACHE = Path(os.environ.get("COURSE_CACHE") or repo_root() / "artifacts")


@pytest.fixture(scope="module")
def world():
    from course_utils.data import world as load_world

    return load_world()


@pytest.fixture(scope="module")
def tools(world):
    return [calculator(), world_lookup(OracleIndex(world), k=1), date_calculator(world), legal_lookup(world)]


@pytest.fixture(scope="module")
def eval_tasks(world):
    return build_agent_tasks(world, 40, seed=0, split="eval")


def ids_by_name(world) -> dict[str, str]:
    names = {e.name: e.id for e in world.entities}
    names.update({a.label: a.id for a in world.articles})
    names.update({p.name: p.id for p in world.precedents})
    return names


def test_tasks_are_deterministic_and_complete(world, eval_tasks):
    assert build_agent_tasks(world, 40, seed=0, split="eval") == eval_tasks
    other = build_agent_tasks(world, 40, seed=1, split="eval")
    assert [t["question"] for t in other] != [t["question"] for t in eval_tasks]
    assert len(eval_tasks) >= 150 and len({t["id"] for t in eval_tasks}) == len(eval_tasks)
    for kind in KINDS:
        assert sum(t["kind"] == kind for t in eval_tasks) == 40, kind
    assert len({t["question"] for t in eval_tasks}) == len(eval_tasks)
    keys = {"id", "kind", "template", "question", "answers", "entities", "seen", "split", "plan"}
    for t in eval_tasks:
        assert set(t) == keys and t["split"] == "eval" and t["answers"] and t["entities"]
    json.loads(json.dumps(eval_tasks))  # plain JSON: a task set can be written as JSONL


def test_both_splits_hold_every_kind_seen_and_unseen(world):
    for split in ("train", "eval"):
        tasks = build_agent_tasks(world, 40, seed=3, split=split)
        for kind in KINDS:
            seen = {t["seen"] for t in tasks if t["kind"] == kind}
            assert seen == {True, False}, (split, kind, seen)


def test_train_and_eval_share_no_entity(world):
    everything = 10 ** 6  # all candidates of each kind
    train = build_agent_tasks(world, everything, seed=0, split="train")
    evals = build_agent_tasks(world, everything, seed=0, split="eval")
    names = ids_by_name(world)
    for split, tasks in (("train", train), ("eval", evals)):
        for t in tasks:
            assert all(entity_split(names[n]) == split for n in t["entities"]), t
    assert not {n for t in train for n in t["entities"]} & {n for t in evals for n in t["entities"]}
    assert not {t["question"] for t in train} & {t["question"] for t in evals}
    share = sum(entity_split(e.id) == "eval" for e in world.entities) / len(world.entities)
    assert 0.12 < share < 0.28  # about 20% of the world is kept for evaluation


def test_seen_means_every_touched_entity_is_seen(world, eval_tasks):
    unseen = set(world.unseen_names())
    for t in eval_tasks:
        if t["seen"]:
            assert not unseen & set(t["entities"]), t
            assert not any(name in t["question"] for name in unseen), t
    assert any(set(t["entities"]) & unseen for t in eval_tasks if not t["seen"])


def test_every_eval_plan_leads_to_its_gold_answer(world, tools, eval_tasks):
    for t in eval_tasks:
        calls, answer = split_plan(t)
        conv = gold_conversation(t, tools)  # strict: each observation holds what the plan expects
        assert conv[0] == {"role": "system", "content": tools_system_prompt(tools, brief=True)}
        assert conv[1] == {"role": "user", "content": t["question"]}
        turns = conv[2:-1]
        assert len(turns) == 2 * len(calls) >= 2
        for step, call, obs in zip(calls, turns[::2], turns[1::2]):
            assert call["role"] == "assistant" and call["tool_calls"] == [
                {"type": "function", "function": {"name": step["tool"], "arguments": step["arguments"]}}]
            assert obs["role"] == "tool" and obs["name"] == step["tool"] and not obs["content"].startswith("Error")
        last = turns[-1]["content"]
        assert contains_answer(last, t["answers"]) or score_answer(last, t), (t, last)
        if t["template"] == "scenario":  # the article that applies is the first the keyword search gives
            assert last.startswith(t["answers"][0] + " ("), last
        assert score_answer(conv[-1]["content"], t) and conv[-1]["content"].startswith(answer.rstrip("."))
        lookups = [s for s in calls if s["tool"] == "world_lookup"]
        assert conv[-1]["content"].count("#0]") == len({s["arguments"]["query"] for s in lookups}), conv[-1]
        if t["kind"] in ("arithmetic", "multi_hop"):
            assert len(lookups) == 2 and t["plan"][-2]["tool"] == ("calculator" if t["kind"] == "arithmetic"
                                                                   else "world_lookup")


def test_plans_of_train_tasks_run_too(world, tools):
    for t in build_agent_tasks(world, 60, seed=5, split="train"):
        assert score_answer(gold_conversation(t, tools)[-1]["content"], t), t


def test_lookups_cite_the_passage_that_holds_the_fact(world, eval_tasks):
    hop = next(t for t in eval_tasks if t["kind"] == "multi_hop")
    first = hop["plan"][0]["arguments"]["query"]
    subject = OracleIndex(world).search(first, k=1)[0]["id"]
    conv = gold_conversation(hop, [calculator(), world_lookup(OracleIndex(world), k=1)])
    assert f"[{subject}]" in conv[-1]["content"] and conv[-1]["content"].endswith("].")


def test_a_run_callable_replaces_the_tools_and_strict_catches_a_missed_fact(world, eval_tasks):
    task = next(t for t in eval_tasks if t["kind"] == "arithmetic")
    seen_calls = []

    def fake(call):  # a retriever that answers every query with the same unrelated page
        seen_calls.append(call.name)
        if call.name == "world_lookup":
            return Observation(True, "[town-999#0] Nothing to see here.", "world_lookup")
        return Observation(True, "42", call.name)

    with pytest.raises(ValueError, match=rf"Task {task['id']}, step 1 \(world_lookup\): it lacks"):
        gold_conversation(task, [calculator()], run=fake)
    loose = gold_conversation(task, [calculator()], run=fake, strict=False)
    assert loose[3]["content"].startswith("[town-999#0]") and "[town-999#0]" in loose[-1]["content"]
    assert seen_calls.count("world_lookup") == 3 and seen_calls[-1] == "calculator"
    with pytest.raises(ValueError, match="plan ends with"):
        split_plan({"id": "x", "plan": [{"tool": "calculator", "arguments": {"expression": "1"}}]})


@pytest.mark.parametrize("reply, answers, ok", [
    ("They have 70010 people together.", ["70010"], True),
    ("They have 70,010 people together.", ["70010"], True),
    ("The result is 70010.0", ["70010"], True),
    ("The result is 700100.", ["70010"], False),
    ("In 1850 he was 39 years old.", ["39"], True),
    ("He was born in 1811.", ["39"], False),
    ("Article 17 applies.", ["Article 1"], False),
    ("article 1 (False measures) applies", ["Article 1"], True),
    ("He belonged to the Grelpa guild.", ["Grelpa Guild", "Grelpa"], True),
    ("It lies in the province of sindcian", ["Sindcian"], True),
    ("", ["Sindcian"], False),
    (None, ["39"], False)])
def test_score_answer(reply, answers, ok):
    assert score_answer(reply, {"answers": answers}) is ok


def test_oracle_index_finds_the_named_entity(world):
    index = OracleIndex(world)
    person = world.of_kind("person")[0]
    guild = world.get(person.attrs["guild_id"])
    hit = index.search(f"Which guild did {person.name} belong to?", k=3)
    assert [h["id"] for h in hit] == [f"{person.id}#0"] and guild.name in hit[0]["text"]
    assert index.search(f"Who founded the {guild.name}?")[0]["id"] == f"{guild.id}#0"  # not the alias alone
    assert index.search("What is the weather like?") == []
    chunks = [{"id": f"{person.id}#0", "entity_id": person.id, "text": "one"},
              {"id": f"{person.id}#1", "entity_id": person.id, "text": "two"}]
    assert [h["text"] for h in OracleIndex(world, chunks).search(person.aliases[0], k=5)] == ["one", "two"]
    tool = world_lookup(index, k=1)
    assert tool.fn(query=f"Where was {person.name} born?").startswith(f"[{person.id}#0] {person.name} was born in")


def test_bad_arguments_get_a_sentence(world):
    with pytest.raises(ValueError, match="split must be one of"):
        build_agent_tasks(world, 4, seed=0, split="test")
    with pytest.raises(ValueError, match="n_per_kind"):
        build_agent_tasks(world, -1, seed=0, split="train")
    assert build_agent_tasks(world, 0, seed=0, split="train") == []


def sft_folder() -> Path | None:
    """The cached SFT model with the longest context (its tokenizer is the course tokenizer), if any."""
    best = None
    for config in sorted((LEARNER_CACHE / "sft-model").glob("*/config.json")):
        positions = json.loads(config.read_text()).get("max_position_embeddings", 0)
        if (config.parent / "tokenizer.json").exists() and (best is None or positions > best[0]):
            best = (positions, config.parent)
    return best[1] if best else None


def test_gold_conversations_render_through_the_course_tokenizer(world, tools, eval_tasks):
    folder = sft_folder()
    if folder is None:
        pytest.skip("no SFT model in the course cache: `course prebuild sft-model` makes one (CI has none)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    for t in eval_tasks[::4]:
        conv = gold_conversation(t, tools)
        text = render_gold(tok, conv, tools)
        assert text.count("\nTools: ") == 1 and text.count("<tool_call>") == len(split_plan(t)[0])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text, "the course tokenizer must write the call format back unchanged"
        calls = parse_tool_calls(text)
        assert [(c.name, c.arguments) for c in calls] == [(s["tool"], s["arguments"]) for s in split_plan(t)[0]]
        assert format_tool_call(calls[0].name, calls[0].arguments) in text
