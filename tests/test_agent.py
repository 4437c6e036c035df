"""Notebook 12: the step-wise ReAct loop, its compact call format and its SFT data (course_utils/agent.py).

Fast: the course world with the real calculator, date and legal tools; world lookups go to OracleIndex (no
embedder); the "models" are scripted functions, so the loop's guards are tested without generation."""

from __future__ import annotations

import pytest

from course_utils.agent import (MAX_NOTE_CHARS, AgentStep, agent_step_records, call_matches, format_compact_call,
                                format_step, note_from, parse_compact_call, parse_step, run_agents, step_messages)
from course_utils.agent_tasks import OracleIndex, build_agent_tasks, score_answer, split_plan
from course_utils.tools import ToolCall, calculator, date_calculator, legal_lookup, world_lookup


@pytest.fixture(scope="module")
def world():
    from course_utils.data import world as load_world

    return load_world()


@pytest.fixture(scope="module")
def tools(world):
    return [calculator(), world_lookup(OracleIndex(world), k=1), date_calculator(world), legal_lookup(world, k=1)]


@pytest.fixture(scope="module")
def tasks(world):
    return build_agent_tasks(world, 10, seed=0, split="eval")


# ----------------------------------------------------------------------------- the compact call format

def test_every_gold_call_survives_the_compact_format(tasks, tools):
    table = {t.name: t for t in tools}
    n = 0
    for task in tasks:
        for step in split_plan(task)[0]:
            text = format_compact_call(step["tool"], step["arguments"], table[step["tool"]])
            call = parse_compact_call(text, tools)
            assert call.ok and call.name == step["tool"] and call.arguments == step["arguments"], text
            n += 1
    assert n >= 2 * len(tasks) - 10


def test_a_single_required_argument_is_written_bare_and_others_as_key_value(tools):
    table = {t.name: t for t in tools}
    assert format_compact_call("calculator", {"expression": "2 + 3"}, table["calculator"]) == "calculator: 2 + 3"
    assert format_compact_call("legal_lookup", {"number": 14}, table["legal_lookup"]) == "legal_lookup: number 14"
    span = {"kind": "years_between", "start": 1700, "end": "Shurboll"}
    text = format_compact_call("dates", span, table["dates"])
    assert text == "dates: kind years between; start 1700; end Shurboll"  # words, no underscores
    assert parse_compact_call(text, tools).arguments == span  # the enum value and the integer come back typed
    call = parse_compact_call("dates: kind=age; person=Tialnel Nodrend; year=1790", tools)
    assert call.arguments == {"kind": "age", "person": "Tialnel Nodrend", "year": 1790}  # key=value is read too
    assert parse_compact_call("calculator: expression 2 + 3", tools).arguments == {"expression": "2 + 3"}
    assert parse_compact_call("world_lookup: query about Tumwa", tools).arguments == {"query": "about Tumwa"}


@pytest.mark.parametrize("text, why", [
    ("calculator 2 + 3", "tool: arguments"), ("", "tool: arguments"), ("what is: 2 + 3", "tool: arguments"),
    ("calculator:", "no arguments"), ("legal_lookup: 14", "'key value'"),
    ("dates: kind age; Tialnel", "'key value'"), ("legal_lookup: title River tolls", "'key value'")])
def test_unreadable_calls_come_back_with_an_error(tools, text, why):
    call = parse_compact_call(text, tools)
    assert not call.ok and why in call.error


def test_an_unknown_tool_is_read_and_left_to_run_tool(tools):
    call = parse_compact_call("shell: rm -rf /", tools)
    assert call.ok and call.name == "shell" and call.arguments == {"input": "rm -rf /"}
    assert call_matches(call, {"tool": "calculator", "arguments": {"expression": "1"}}, tools)["valid"] is False


# ----------------------------------------------------------------------------- steps

def test_parse_step_reads_thoughts_actions_and_answers(tools):
    s = parse_step("Thought: [town-001#0] Dunmere has 500 people.\nAction: calculator: 500 + 20", tools)
    assert s.thought == "[town-001#0] Dunmere has 500 people." and s.call.arguments == {"expression": "500 + 20"}
    assert s.error is None and s.answer is None
    s = parse_step("Answer: 520 people.", tools)
    assert s.answer == "520 people." and s.call is None and s.thought == ""
    assert parse_step("Dunmere has 500 people.", tools).error
    assert parse_step("Thought: hm\nAnswer:", tools).error == "an empty answer"
    assert parse_step("Action: legal_lookup: 14", tools).error  # a call that cannot be read is a step error


def test_format_step_is_what_parse_step_reads(tools):
    text = format_step("a note", call="calculator: 1 + 1")
    assert parse_step(text, tools).call.arguments == {"expression": "1 + 1"}
    assert parse_step(format_step("", answer="It is 2."), tools).answer == "It is 2."
    with pytest.raises(ValueError):
        format_step("x", call="calculator: 1", answer="2")


def test_step_messages_show_the_latest_observation_only_and_cut_it():
    m = step_messages("Q?", ["n1", "n2"], "x" * 1000)
    assert m[0]["role"] == "system" and m[1]["content"].startswith("Question: Q?\nNotes: n1 n2\nObservation: ")
    assert len(m[1]["content"]) < 400
    assert step_messages("Q?")[1]["content"] == "Question: Q?"


def test_note_from_keeps_the_sentence_with_the_fact_and_its_chunk_id():
    obs = ("[person-159#0] TREORI ALERALON Treori Aleralon was born in Stiataem in 1723. Treori Aleralon was a "
           "member of the Grelpa Guild. Facts Guild: Grelpa Guild")
    assert note_from(obs, ["Grelpa Guild"]) == "[person-159#0] Treori Aleralon was a member of the Grelpa Guild."
    assert note_from(obs) == "[person-159#0] Treori Aleralon was born in Stiataem in 1723."  # title dropped
    assert note_from("[river-012#0] Seistholl The Seistholl is 867 kilometres long.", ["867"]) == (
        "[river-012#0] The Seistholl is 867 kilometres long.")
    case = "Aluseisis v. Oriarmeipe, decided in 1735 by the court of Stolelath."
    assert note_from(case, ["1735"]) == case  # "v." does not end a sentence
    assert len(note_from("word " * 100)) <= MAX_NOTE_CHARS + 3
    assert note_from("") == ""


# ----------------------------------------------------------------------------- SFT data

def test_gold_steps_are_one_conversation_per_step_and_parse(tasks, tools):
    records, skipped = agent_step_records(tasks, tools)
    assert skipped == []  # OracleIndex finds every page
    by_task: dict[str, list] = {}
    for r in records:
        by_task.setdefault(r["id"].rsplit("-", 1)[0], []).append(r)
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        step = parse_step(r["messages"][-1]["content"], tools)
        assert step.error is None
    for task in tasks:
        steps = by_task[f"agent-{task['id']}"]
        calls, _ = split_plan(task)
        assert len(steps) == len(calls) + 1
        last = parse_step(steps[-1]["messages"][-1]["content"], tools)
        assert last.answer is not None and score_answer(last.answer, task), last.answer
        assert steps[0]["messages"][1]["content"] == f"Question: {task['question']}"  # nothing but the question
        if task["kind"] == "arithmetic":  # the calculator's note writes the sum out; lookups are cited
            assert " = " in last.thought and "[" in last.answer


def test_a_task_whose_lookup_misses_is_skipped(world, tasks):
    class Blind:
        def search(self, query, k=5, method="hybrid"):
            return []

    blind = [calculator(), world_lookup(Blind(), k=1, warm=False), date_calculator(world), legal_lookup(world)]
    lookups = [t for t in tasks if t["kind"] in ("arithmetic", "multi_hop")]
    records, skipped = agent_step_records(lookups, blind)
    assert records == [] and sorted(skipped) == sorted(t["id"] for t in lookups)


def test_call_matches_tells_valid_exact_and_useful_apart(tasks, tools):
    step = next(s for t in tasks if t["kind"] == "multi_hop" for s in split_plan(t)[0])
    gold = ToolCall(step["tool"], dict(step["arguments"]))
    assert call_matches(gold, step, tools) == {"valid": True, "exact": True, "useful": True}
    reworded = ToolCall(step["tool"], {"query": step["arguments"]["query"].rstrip("?") + " please"})
    assert call_matches(reworded, step, tools)["useful"]
    wrong = ToolCall("world_lookup", {"query": "Valdmark"})
    assert call_matches(wrong, step, tools) == {"valid": True, "exact": False, "useful": False}
    assert call_matches(ToolCall("calculator", {"expr": "1"}), step, tools)["valid"] is False
    assert call_matches(None, step, tools)["valid"] is False


# ----------------------------------------------------------------------------- the loop

def _replay(records):
    """A scripted model: the gold step for each prompt (keyed by its user text)."""
    by_prompt = {(r["messages"][0]["content"], r["messages"][1]["content"]): r["messages"][2]["content"]
                 for r in records}
    return lambda prompts: [by_prompt.get((p[0]["content"], p[1]["content"]), "I do not know.") for p in prompts]


def test_the_loop_with_gold_steps_answers_every_task(tasks, tools):
    records, _ = agent_step_records(tasks, tools)
    traces = run_agents(_replay(records), [t["question"] for t in tasks], tools)
    for task, tr in zip(tasks, traces):
        assert tr.stopped == "answer" and score_answer(tr.answer, task), (task["question"], tr.steps)
        assert tr.calls == len(split_plan(task)[0]) and tr.errors == {}
        assert all(s["observation"] for s in tr.steps if s["call"])


def test_the_loop_guards_malformed_and_repeated_calls_and_stops(tools):
    def model(prompts):
        out = []
        for p in prompts:
            text = p[1]["content"]
            if "Question: loop" in text:
                out.append("Action: calculator: 1 + 1")
            elif "Question: babble" in text:
                out.append("The answer is probably four.")
            else:  # an unknown tool, then an answer once it has seen the error
                out.append("Answer: done." if "Error" in text else "Action: shell: ls")
        return out

    loop, babble, unknown = run_agents(model, ["loop", "babble", "other"], tools, max_steps=4)
    assert loop.stopped == "max_steps" and loop.errors == {"repeated": 3} and loop.calls == 4
    assert loop.steps[0]["observation"] == "2" and "already" in loop.steps[1]["observation"]
    assert babble.stopped == "max_steps" and babble.errors == {"malformed": 4} and babble.calls == 0
    assert unknown.answer == "done." and unknown.errors == {"unknown_tool": 1} and len(unknown.steps) == 2
    assert isinstance(AgentStep().thought, str) and loop.to_dict()["errors"] == {"repeated": 3}


# ----------------------------------------------------------------------------- measuring (course_utils/agent_eval.py)

def test_step_scores_tell_the_gold_model_from_a_babbling_one(tasks, tools):
    from course_utils.agent_eval import step_scores

    records, _ = agent_step_records(tasks, tools)
    gold = step_scores(_replay(records), records, tasks, tools)
    calls = gold[gold["part"] == "call"]
    assert len(gold) == len(records) and not gold["malformed"].any()
    assert calls[["valid", "exact", "useful"]].all().all() and gold[gold["part"] == "answer"]["right"].all()
    babble = step_scores(lambda ps: ["I think it is 12."] * len(ps), records, tasks, tools)
    assert babble["malformed"].all() and not babble[babble["part"] == "call"]["valid"].any()


def test_answer_tasks_success_table_and_failure_modes(tasks, tools):
    from course_utils.agent_eval import answer_tasks, failure_modes, success_table

    records, _ = agent_step_records(tasks, tools)
    agent = answer_tasks(tasks, "agent", _replay(records), tools=tools)
    assert agent["right"].all() and (agent["calls"] >= 1).all() and (agent["errors"] == 0).all()
    closed = answer_tasks(tasks, "closed-book", lambda ps: ["I do not know."] * len(ps))
    assert not closed["right"].any() and (closed["steps"] == 1).all()
    table = success_table([closed, agent])
    whole = table[table["kind"] == "all"].set_index("system")
    assert whole.loc["agent", "success"] == 1.0 and whole.loc["closed-book", "success"] == 0.0
    assert whole.loc["agent", "n"] == len(tasks) and whole.loc["agent", "low"] <= 1.0
    assert set(table["kind"]) == {"arithmetic", "multi_hop", "date", "legal", "all"}
    with pytest.raises(ValueError):
        answer_tasks(tasks, "rag", _replay(records))

    def lost(prompts):  # looks up the wrong thing, then answers anyway
        return ["Answer: no idea." if "Observation" in p[1]["content"] else "Action: world_lookup: Valdmark"
                for p in prompts]

    failed = answer_tasks(tasks, "agent", lost, tools=tools)
    modes = failure_modes(failed, tasks)
    assert modes.sum() == (~failed["right"]).sum() and modes["missed the fact"] >= 1
    looping = answer_tasks(tasks[:3], "agent", lambda ps: ["Action: calculator: 1 + 1"] * len(ps), tools=tools,
                           max_steps=3)
    assert failure_modes(looping, tasks)["no answer"] == 3


# ----------------------------------------------------------------------------- the same agent in LangGraph

def test_the_langgraph_agent_gives_the_loops_answers_and_calls(tasks, tools):
    from course_utils.agent_graph import course_model_node, graph_answer, langchain_tools, react_graph

    records, _ = agent_step_records(tasks, tools)
    graph = react_graph(course_model_node(_replay(records), tools), tools)
    loop = run_agents(_replay(records), [t["question"] for t in tasks], tools)
    for task, tr in zip(tasks[:12], loop):
        out = graph_answer(graph, task["question"])
        assert out["answer"] == tr.answer and out["stopped"] == "answer"
        assert [s["call"] for s in out["steps"] if s["call"]] == [s["call"] for s in tr.steps if s["call"]]
        assert [s["observation"] for s in out["steps"] if s["call"]] == [s["observation"] for s in tr.steps
                                                                         if s["call"]]
    calc = langchain_tools(tools)[0]
    assert calc.name == "calculator" and calc.invoke({"expression": "2 ** 10"}) == "1024"
    assert calc.invoke({"expression": "__import__('os')"}).startswith("Error (")  # refused, not raised


def test_the_langgraph_agent_keeps_the_guards(tools):
    from course_utils.agent_graph import course_model_node, graph_answer, react_graph

    def model(prompts):
        text = prompts[0][1]["content"]
        if "Question: loop" in text:
            return ["Action: calculator: 1 + 1"]
        if "Question: babble" in text:
            return ["Four, I think."]
        return ["Answer: done." if "Error" in text else "Action: shell: ls"]

    graph = react_graph(course_model_node(model, tools, max_steps=4), tools)
    for question in ("loop", "babble", "other"):  # the same steps, errors and observations as run_agents
        g, loop = graph_answer(graph, question, max_steps=4), run_agents(model, [question], tools, max_steps=4)[0]
        assert (g["answer"], g["stopped"], g["errors"]) == (loop.answer, loop.stopped, loop.errors)
        assert [(s["call"], s["observation"]) for s in g["steps"]] == [(s["call"], s["observation"])
                                                                       for s in loop.steps]
    assert graph_answer(graph, "loop", 4)["errors"] == {"repeated": 3}
    assert graph_answer(graph, "other")["errors"] == {"unknown_tool": 1}


# ----------------------------------------------------------------------------- the hand-off (course_utils/agent_team.py)

def test_sub_questions_refer_to_earlier_findings(tasks):
    from course_utils.agent_team import sub_questions

    for task in tasks:
        subs, calls = sub_questions(task), split_plan(task)[0]
        if len(calls) < 2:
            assert subs == [task["question"]]
            continue
        assert len(subs) == len(calls) and subs[0] == calls[0]["arguments"].get("query")
        assert "[1]" in subs[1] or task["kind"] == "arithmetic"
        if task["kind"] == "arithmetic":
            assert subs[2].startswith("Compute [1]") and "[2]" in subs[2]


def test_parse_plan_falls_back_to_the_question():
    from course_utils.agent_team import parse_plan

    assert parse_plan("Plan: a? | b [1]? |", "q") == (["a?", "b [1]?"], True)
    assert parse_plan("Plan:\na?\nCompute [1] + 2.\n", "q") == (["a?", "Compute [1] + 2."], True)
    assert parse_plan("I will look it up.", "q") == (["q"], False)
    assert len(parse_plan("Plan: " + " | ".join("abcdefg"), "q")[0]) == 4


def test_the_team_with_gold_roles_answers_and_cites(tasks, tools):
    from course_utils.agent_eval import answer_tasks, failure_modes
    from course_utils.agent_team import run_team, team_records

    records, _ = agent_step_records(tasks, tools)
    team, skipped = team_records(tasks, tools)
    assert skipped == [] and {r["task"].split(":")[1] for r in team} == {"plan", "research", "write"}
    for r in team:
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    model = _replay(records + team)
    outs = run_team(model, [t["question"] for t in tasks], tools)
    for task, out in zip(tasks, outs):
        assert out["plan_ok"] and score_answer(out["answer"], task), (task["question"], out)
        assert out["calls"] == len(split_plan(task)[0]) and out["errors"] == {}
        if out["calls"] > 1:
            assert "[" in out["answer"] or task["kind"] in ("date", "legal")
    rows = answer_tasks(tasks, "team", model, tools=tools)
    assert rows["right"].all() and (rows["steps"] >= 3).all()
    lost = answer_tasks(tasks[:4], "team", lambda ps: ["No plan."] * len(ps), tools=tools)
    assert failure_modes(lost, tasks)["unreadable plan"] == 4


# ----------------------------------------------------------------------------- hub models: the JSON convention

@pytest.fixture(scope="module")
def hub_tokenizer():
    """A tokenizer whose chat template reads ``tools`` (the convention of hub models), trained on a few lines."""
    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer
    from tests.test_tools import TOOLS_TEMPLATE

    tok = wrap_tokenizer(train_tokenizer(["What is 40 + 2?", "It is 42."] * 5, 300, min_frequency=1))
    tok.chat_template = TOOLS_TEMPLATE
    return tok


def test_the_json_agent_sends_results_back_as_tool_turns_with_the_same_guards(hub_tokenizer, tools):
    from course_utils.agent import run_json_agent
    from course_utils.tools import format_tool_call

    call = format_tool_call("calculator", {"expression": "40 + 2"})
    script = iter(["Let me compute. " + call, call, '<tool_call>{"name": "calculator", "arguments": </tool_call>',
                   "It is 42."])
    prompts: list[str] = []

    def complete(batch: list[str]) -> list[str]:
        prompts.extend(batch)
        return [next(script) for _ in batch]

    tr = run_json_agent(complete, hub_tokenizer, ["What is 40 + 2?"], tools, max_steps=6)[0]
    assert (tr.answer, tr.stopped, len(prompts)) == ("It is 42.", "answer", 4)
    assert [s["error"] for s in tr.steps] == [None, "repeated", "malformed", None]
    assert tr.steps[0]["observation"] == "42" and tr.steps[0]["thought"] == "Let me compute."
    assert tr.steps[0]["call"] == {"name": "calculator", "arguments": {"expression": "40 + 2"}}
    assert all(f'"name": "{t.name}"' in prompts[0] for t in tools)  # the schemas, through the template
    assert "<|tool|>\n42<|end|>" in prompts[1] and prompts[1].startswith(prompts[0][:-len("<|assistant|>\n")])
    assert "already" in prompts[2].split("<|tool|>")[-1] and "write each call" in prompts[3].split("<|tool|>")[-1]
    assert tr.to_dict()["errors"] == {"repeated": 1, "malformed": 1}

    loop = run_json_agent(lambda batch: [call] * len(batch), hub_tokenizer, ["a", "b"], tools, max_steps=2)
    assert all(t.stopped == "max_steps" and t.answer is None and t.calls == 2 for t in loop)
    assert [s["error"] for s in loop[0].steps] == [None, "repeated"]


def test_course_agent_ask_gives_a_model_whose_template_reads_tools_the_json_convention(tmp_path, capsys):
    import json

    from transformers import AutoTokenizer

    from course_utils.cli import main
    from tests.test_sft import tiny_model_folder
    from tests.test_tools import TOOLS_TEMPLATE

    folder = tiny_model_folder(tmp_path / "hub")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TOOLS_TEMPLATE
    tok.save_pretrained(folder)
    assert main(["agent", "ask", "What is 40 + 2?", "--model", str(folder), "--max-new-tokens", "4",
                 "--max-steps", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # artifact lines come first
    assert out["convention"] == "json" and out["model"] == str(folder) and 1 <= len(out["steps"]) <= 2
    assert out["stopped"] in ("answer", "max_steps") and set(out["timings"]) >= {"load_s", "answer_s", "steps"}
