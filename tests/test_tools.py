"""Notebook 12: the agent's tools, the tool-call format and the prompts that offer tools (course_utils/tools.py).

Fast: a hand-made world and a fake index; no model is loaded (the tokenizers are trained on a few lines)."""

from __future__ import annotations

import builtins
import copy
import io
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from course_utils.tools import (ERROR_KINDS, BadArguments, Observation, Tool, ToolCall, ToolError, assistant_message,
                                calculator, course_messages, course_tools, date_calculator, evaluate_arithmetic,
                                format_tool_call, legal_lookup, parse_tool_calls, render_prompt, run_tool,
                                supports_tools, tools_system_prompt, validate_arguments, world_lookup)
from course_utils.world import Article, Entity, Precedent, World, WorldConfig


def tiny_world() -> World:
    ents = [
        Entity("region-000", "region", "Maethwe", True),
        Entity("town-000", "town", "Dunmere", True, {"founded": 950, "region_id": "region-000"}),
        Entity("guild-000", "guild", "Brenhal Guild", True, {"founded": 1500, "craft": "weaver"}, ["Brenhal"]),
        Entity("person-000", "person", "Orin Tallow", True, {"birth_year": 1780, "guild_id": "guild-000"}, ["Tallow"]),
        Entity("person-001", "person", "Mira Sendal", False, {"birth_year": 1801}, ["Sendal"]),
        Entity("event-000", "event", "Flood of Arnholt", True, {"year": 1812, "town_id": "town-000"}, ["Arnholt"]),
        Entity("festival-000", "festival", "Lantern Fair", True, {"first_held": 1600}, ["Lantern"]),
    ]
    arts = [Article(1, "False measures", "every trader shall sell by the measures kept at the town hall",
                    "sold goods by a false measure"),
            Article(2, "River tolls", "a boat passing a town shall pay the toll posted at its landing",
                    "passed a landing without paying the river toll"),
            Article(3, "Public wells", "no one may foul a public well", "fouled a public well")]
    cases = [Precedent("precedent-000", "Tarrow v. Belin", 1700, "town-000", "Tarrow", "Belin", "miller", [1, 3],
                       True, True),
             Precedent("precedent-001", "Keel v. Polnend", 1650, "town-000", "Keel", "Polnend", "dyer", [2], False,
                       True)]
    return World(WorldConfig(), ents, arts, cases)


class FakeIndex:
    """What world_lookup needs of a RagIndex: search(query, k, method) -> hits with id and text."""

    def __init__(self):
        self.chunks = [("town-000#0", "Dunmere is a town on the river Sell, founded in 950."),
                       ("person-000#0", "Orin Tallow was born in Dunmere in 1780. " + "He wove cloth. " * 60),
                       ("event-000#0", "The Flood of Arnholt struck Dunmere in 1812.")]
        self.calls: list[tuple[str, int, str]] = []

    def search(self, query, k=5, method="dense"):
        self.calls.append((query, k, method))
        words = set(query.lower().split())
        scored = sorted(self.chunks, key=lambda c: -len(words & set(c[1].lower().replace(".", "").split())))
        return [{"id": cid, "doc_id": cid.split("#")[0], "text": text, "rank": r}
                for r, (cid, text) in enumerate(scored[:k], 1)]


@pytest.fixture()
def world():
    return tiny_world()


@pytest.fixture()
def tools(world):
    return course_tools(world, FakeIndex())


def call(tools, name, **arguments) -> Observation:
    return run_tool(ToolCall(name, arguments), tools)


# ----------------------------------------------------------------------------- the calculator

@pytest.mark.parametrize("expression, expected", [
    ("1 + 2 * 3", "7"), ("(1850 - 1780) * 2", "140"), ("7 / 2", "3.5"), ("6 / 3", "2"), ("7 // 2", "3"),
    ("7 % 3", "1"), ("2 ** 10", "1024"), ("-3 + +5", "2"), ("-(2 - 10)", "8"), ("1 / 3", "0.3333333333"),
    ("2 ** -1", "0.5"), ("  1_000 * 3 ", "3000")])
def test_the_calculator_computes(tools, expression, expected):
    obs = call(tools, "calculator", expression=expression)
    assert obs.ok and obs.error is None and obs.content == expected, obs


UNSAFE = ["__import__('os').system('ls')", "open('/etc/passwd').read()", "(1).__class__", "().__class__.__bases__",
          "x + 1", "'a' * 3", "[1, 2][0]", "lambda: 1", "1 if 1 else 2", "1 < 2", "True + 1", "1, 2", "2 ^ 3",
          "1j * 2", "f'{1}'", "import os", "1; 2", "exec('1')", "eval('1')", "a := 1"]


@pytest.mark.parametrize("expression", UNSAFE)
def test_the_calculator_refuses_what_is_not_arithmetic(tools, expression):
    obs = call(tools, "calculator", expression=expression)
    assert not obs.ok and obs.error == "bad_arguments" and obs.content.startswith("Error (bad_arguments)"), obs


@pytest.mark.parametrize("expression, kind", [
    ("9**9**9", "bad_arguments"), ("2 ** 1000", "bad_arguments"), ("10 ** 99", "tool_error"),
    ("1" + "0" * 20, "tool_error"), ("1e400", "tool_error"), ("1" * 10_000, "bad_arguments"),
    ("+".join(["1"] * 5000), "bad_arguments"), ("1/0", "tool_error"), ("5 // 0", "tool_error"),
    ("5 % 0", "tool_error"), ("(-8) ** 0.5", "tool_error"), ("((((((1))))))" * 30, "bad_arguments"),
    ("", "bad_arguments"), ("1 +", "bad_arguments")])
def test_the_calculator_bounds_its_work(tools, expression, kind):
    t0 = time.perf_counter()
    obs = call(tools, "calculator", expression=expression)
    assert not obs.ok and obs.error == kind, obs
    assert time.perf_counter() - t0 < 0.5


def test_the_calculator_errors_are_exceptions_of_the_tool_kinds():
    with pytest.raises(BadArguments):
        evaluate_arithmetic("__import__('os')")
    with pytest.raises(ToolError) as err:
        evaluate_arithmetic("1/0")
    assert not isinstance(err.value, BadArguments) and "division by zero" in str(err.value)
    assert evaluate_arithmetic("2 ** 3 ** 2") == 512


def test_no_tool_opens_files_runs_commands_or_connects(tools, monkeypatch):
    validate_arguments(tools[0], {"expression": "1"})  # jsonschema's first use may read its metaschemas
    touched: list[str] = []

    def spy(name):
        def refuse(*args, **kwargs):
            touched.append(name)
            raise AssertionError(f"{name} was called")
        return refuse

    for target, attr in [(builtins, "open"), (io, "open"), (os, "open"), (os, "system"), (os, "popen"),
                         (os, "execv"), (subprocess, "Popen"), (subprocess, "run"), (socket, "socket"),
                         (builtins, "eval"), (builtins, "exec")]:
        monkeypatch.setattr(target, attr, spy(f"{target.__name__}.{attr}"))
    inputs = [("calculator", {"expression": e}) for e in UNSAFE + ["1+1", "9**9**9", "1/0"]]
    inputs += [("world_lookup", {"query": "open('/etc/passwd')"}), ("world_lookup", {"query": "Dunmere"}),
               ("dates", {"kind": "age", "person": "__import__('os')", "year": 1800}),
               ("dates", {"kind": "years_between", "start": "Dunmere", "end": "/etc/passwd"}),
               ("legal_lookup", {"keywords": "subprocess.run(['ls'])"}), ("legal_lookup", {"case": "../../etc"})]
    observations = [run_tool(ToolCall(name, args), tools) for name, args in inputs]
    monkeypatch.undo()
    assert touched == []
    assert all(o.error in (None, "bad_arguments", "tool_error") for o in observations)
    assert [o.ok for o in observations[-6:]] == [True, True, False, False, False, False]


# ----------------------------------------------------------------------------- the world's tools

def test_world_lookup_returns_the_best_passages_with_ids_to_cite():
    index = FakeIndex()
    tool = world_lookup(index, k=2, max_chars=100)
    assert index.calls == [("Valdmark", 1, "hybrid")], "warmed up once, so no call loads from disk"
    obs = run_tool(ToolCall("world_lookup", {"query": "Orin Tallow born"}), [tool])
    lines = obs.content.splitlines()
    assert obs.ok and len(lines) == 2 and lines[0].startswith("[person-000#0] Orin Tallow was born")
    assert lines[0].endswith("...") and len(lines[0]) < 100 + 20, "long passages are cut"
    assert index.calls[-1] == ("Orin Tallow born", 2, "hybrid")
    assert run_tool(ToolCall("world_lookup", {"query": "  "}), [tool]).error == "bad_arguments"
    assert run_tool(ToolCall("world_lookup", {"query": "x" * 301}), [tool]).error == "bad_arguments"


def test_date_calculator_answers_ages_and_spans(tools):
    obs = call(tools, "dates", kind="age", person="Orin Tallow", year=1820)
    assert obs.ok and "40 years old" in obs.content
    assert "21 years old" in call(tools, "dates", kind="age", person="sendal", year=1822).content
    assert "in 1820.0" not in call(tools, "dates", kind="age", person="Tallow", year=1820.0).content
    obs = call(tools, "dates", kind="years_between", start="the Flood of Arnholt", end=1850)
    assert obs.ok and "38 years" in obs.content and "Flood of Arnholt (in 1812)" in obs.content
    obs = call(tools, "dates", kind="years_between", start="Flood of Arnholt", end="Orin Tallow")
    assert "Orin Tallow (born in 1780) came 32 years before Flood of Arnholt (in 1812)" in obs.content
    assert "862 years" in call(tools, "dates", kind="years_between", start="Dunmere",
                               end="1812").content
    assert "550 years" in call(tools, "dates", kind="years_between", start="Brenhal Guild",
                               end=2050.0).content
    obs = call(tools, "dates", kind="years_between", start=1600, end="Lantern Fair")
    assert "the same year, 0 years apart" in obs.content


@pytest.mark.parametrize("arguments, kind, says", [
    ({"kind": "age", "person": "Orin Tallow"}, "bad_arguments", "no present year"),
    ({"kind": "years_between", "start": 1800}, "bad_arguments", "start and end"),
    ({"kind": "age", "person": "Orin Talow", "year": 1800}, "tool_error", "Did you mean 'Orin Tallow'"),
    ({"kind": "age", "person": "Dunmere", "year": 1800}, "tool_error", "not a person"),
    ({"kind": "age", "person": "Orin Tallow", "year": 1700}, "tool_error", "born in 1780"),
    ({"kind": "years_between", "start": "Maethwe", "end": 1800}, "tool_error", "no entity named"),
    ({"kind": "weeks"}, "bad_arguments", "is not one of"),
    ({"kind": "age", "person": "Orin Tallow", "year": 99999}, "bad_arguments", "maximum"),
    ({"kind": "age", "person": "Orin Tallow", "year": "1800"}, "bad_arguments", "not of type 'integer'")])
def test_date_calculator_explains_what_it_cannot_do(tools, arguments, kind, says):
    obs = call(tools, "dates", **arguments)
    assert not obs.ok and obs.error == kind and says in obs.content, obs


def test_legal_lookup_finds_articles_and_cases(tools):
    obs = call(tools, "legal_lookup", number=1)
    assert obs.ok and obs.content.startswith("Article 1 (False measures): every trader shall sell")
    assert "A breach: sold goods by a false measure." in obs.content
    assert "Leading case: Tarrow v. Belin (1700)" in obs.content
    assert "Leading case: Keel v. Polnend (1650)" in call(tools, "legal_lookup", number=2).content
    assert "Leading case" not in call(tools, "legal_lookup", number=3).content
    obs = call(tools, "legal_lookup", keywords="A weaver sold goods by false measures")
    assert obs.content.splitlines()[0].startswith("Article 1 ")
    assert call(tools, "legal_lookup", keywords="the boat did not pay the toll").content.startswith("Article 2 ")
    obs = call(tools, "legal_lookup", case="tarrow v belin")
    assert obs.content == ("Tarrow v. Belin, decided in 1700 by the court of Dunmere: applied Article 1, Article 3; "
                           "found for the claimant.")
    assert "found for the defendant" in call(tools, "legal_lookup", case="the case of Polnend").content
    assert call(tools, "legal_lookup", number=2.0).content.startswith("Article 2 (River tolls)")
    assert call(tools, "legal_lookup", number=9).error == "tool_error"
    assert call(tools, "legal_lookup", number=0).error == "bad_arguments"
    assert call(tools, "legal_lookup").error == "bad_arguments"
    assert call(tools, "legal_lookup", number=1, keywords="toll").error == "bad_arguments"
    assert call(tools, "legal_lookup", keywords="zebra giraffe").error == "tool_error"
    assert "Did you mean 'Tarrow v. Belin'" in call(tools, "legal_lookup", case="Tarow v. Belen").content


def test_the_tools_work_over_the_course_world():
    from course_utils.data import world as load_world

    w = load_world()
    tools = [date_calculator(w), legal_lookup(w)]
    for p in w.of_kind("person"):
        obs = call(tools, "dates", kind="age", person=p.name, year=1900)
        assert obs.ok and f"{1900 - p.attrs['birth_year']} years old" in obs.content, obs
    for e in w.of_kind("event"):
        obs = call(tools, "dates", kind="years_between", start=e.name, end=1950)
        assert obs.ok and f"{1950 - e.attrs['year']} years" in obs.content, obs
    for a in w.articles:
        assert call(tools, "legal_lookup", number=a.number).content.startswith(f"Article {a.number} ({a.title})")
        assert call(tools, "legal_lookup", keywords=a.breach).content.startswith(f"Article {a.number} ")
    for p in w.precedents:
        assert call(tools, "legal_lookup", case=p.name).content.startswith(f"{p.name}, decided in {p.year}")


# ----------------------------------------------------------------------------- the call format

def test_parse_reads_good_calls_and_the_text_around_them():
    text = ('I need the age. ' + format_tool_call("calculator", {"expression": "1+1"}) + "\n"
            + '<tool_call>\n{"name": "legal_lookup", "arguments": {"number": 3}}\n</tool_call>')
    calls = parse_tool_calls(text)
    assert [(c.name, c.arguments, c.ok) for c in calls] == [("calculator", {"expression": "1+1"}, True),
                                                             ("legal_lookup", {"number": 3}, True)]
    assert text[calls[0].span[0]:calls[0].span[1]].startswith("<tool_call>{") and text[calls[1].span[1]:] == ""
    assert parse_tool_calls("The answer is 42.") == []
    assert parse_tool_calls('<tool_call>{"name": "calculator"}</tool_call>')[0].arguments == {}
    cut_at_stop = parse_tool_calls('<tool_call>{"name": "calculator", "arguments": {"expression": "2"}}  ')
    assert cut_at_stop[0].ok and cut_at_stop[0].arguments == {"expression": "2"}
    two = parse_tool_calls('<tool_call>{"name": "a", "argu <tool_call>{"name": "b"}</tool_call>')
    assert [(c.name, c.ok) for c in two] == [("", False), ("b", True)] and "cut off" in two[0].error


@pytest.mark.parametrize("text, says", [
    ('<tool_call>{"name": "calculator", "arguments": {"expression": "1+1"}</tool_call>', "cannot be read"),
    ("<tool_call>{'name': 'calculator'}</tool_call>", "cannot be read"),
    ('<tool_call>{"arguments": {}}</tool_call>', "no tool name"),
    ('<tool_call>{"name": 7, "arguments": {}}</tool_call>', "no tool name"),
    ('<tool_call>{"name": "calculator", "arguments": "1+1"}</tool_call>', "must be a JSON object"),
    ('<tool_call>{"name": "calculator", "arguments": [1]}</tool_call>', "must be a JSON object"),
    ('<tool_call>["calculator", {}]</tool_call>', "a JSON object"),
    ('<tool_call>{"name": "calculator", "arguments": {}} and more</tool_call>', "text follows"),
    ('<tool_call></tool_call>', "cannot be read"),
    ("<tool_call>" + "[" * 5000 + "]" * 5000 + "</tool_call>", "nested too deeply"),
    ('<tool_call>{"name": "calculator", "argu', "cut off"),
    ("<tool_call>", "cut off")])
def test_parse_marks_malformed_calls_and_run_tool_counts_them(text, says):
    calls = parse_tool_calls(text)
    assert len(calls) == 1 and not calls[0].ok and says in calls[0].error
    obs = run_tool(calls[0], [calculator()])
    assert obs.error == "malformed" and not obs.ok


def test_validate_arguments_checks_types_required_enum_and_extras(world):
    calc, dates = calculator(), date_calculator(world)
    assert validate_arguments(calc, {"expression": "1"}) is None
    assert "required" in validate_arguments(calc, {})
    assert "not of type 'string'" in validate_arguments(calc, {"expression": 1})
    assert "'x' was unexpected" in validate_arguments(calc, {"expression": "1", "x": 2})
    assert "not of type 'object'" in validate_arguments(calc, ["1"])
    assert "is not one of" in validate_arguments(dates, {"kind": "now"})
    assert "not of type 'integer'" in validate_arguments(dates, {"kind": "age", "year": True})
    assert "arguments.start" in validate_arguments(dates, {"kind": "years_between", "start": [1]})
    assert validate_arguments(dates, {"kind": "years_between", "start": 1800, "end": "Dunmere"}) is None


def test_run_tool_never_raises_and_names_each_error_kind():
    seen = set()

    def boom(**_):
        raise RuntimeError("the tool broke")

    def leave():
        raise SystemExit(3)

    broken = Tool("broken", "Always fails.", {"type": "object", "properties": {}}, boom)
    chatty = Tool("chatty", "Says a lot.", {"type": "object", "properties": {}}, lambda: "word " * 5000)
    data = Tool("data", "Returns a dict.", {"type": "object", "properties": {}}, lambda: {"a": 1})
    exits = Tool("exits", "Calls exit.", {"type": "object", "properties": {}}, leave)
    tools = {"calculator": calculator(), "broken": broken, "chatty": chatty, "data": data, "exits": exits}
    for c in [ToolCall("", error="bad JSON"), ToolCall("nope", {}), ToolCall("calculator", {"x": 1}),
              ToolCall("broken", {}), ToolCall("exits", {}), "not a call", None]:
        obs = run_tool(c, tools)
        assert isinstance(obs, Observation) and not obs.ok and obs.content.startswith("Error (")
        seen.add(obs.error)
    assert seen == set(ERROR_KINDS) - {"timeout"}
    assert "RuntimeError: the tool broke" in run_tool(ToolCall("broken", {}), tools).content
    assert "the tools are broken, calculator, chatty" in run_tool(ToolCall("nope", {}), tools).content
    assert run_tool(ToolCall("chatty", {}), tools).content.endswith("[cut]")
    assert run_tool(ToolCall("data", {}), tools).content == '{"a": 1}'


def test_a_slow_tool_times_out_and_the_loop_goes_on():
    release = threading.Event()
    slow = Tool("slow", "Waits.", {"type": "object", "properties": {}}, lambda: release.wait(5) and "late",
                time_limit=0.1)
    t0 = time.perf_counter()
    obs = run_tool(ToolCall("slow", {}), [slow])
    assert obs.error == "timeout" and not obs.ok and "0.1 s" in obs.content
    assert 0.09 <= obs.seconds < 1 and time.perf_counter() - t0 < 1
    release.set()


def test_tool_definitions_are_checked():
    with pytest.raises(ValueError, match="letters, digits"):
        Tool("two words", "x", {"type": "object", "properties": {}}, print)
    with pytest.raises(ValueError, match="type 'object'"):
        Tool("t", "x", {"type": "string"}, print)
    from jsonschema.exceptions import SchemaError

    with pytest.raises(SchemaError):
        Tool("t", "x", {"type": "object", "properties": {"a": {"type": "text"}}}, print)


# ----------------------------------------------------------------------------- schemas and prompts

TOOLS_TEMPLATE = (
    "{%- if tools %}<|system|>\nTools:{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{%- endfor %}"
    "<|end|>\n{% endif %}"
    "{%- for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{%- if m.tool_calls is defined %}{%- for c in m.tool_calls %}<tool_call>{{ c.function | tojson }}</tool_call>"
    "{%- endfor %}{%- endif %}<|end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizers():
    """The course template on a tokenizer trained on three lines, and a copy with a template that reads tools."""
    from course_utils.tokenizer import train_tokenizer, wrap_tokenizer

    course = wrap_tokenizer(train_tokenizer(["Observation (calculator): 42", "Dunmere was founded in 950."] * 5,
                                            300, min_frequency=1))
    hub = copy.deepcopy(course)
    hub.chat_template = TOOLS_TEMPLATE
    return course, hub


def conversation():
    reply = "Let me compute. " + format_tool_call("calculator", {"expression": "40 + 2"})
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 40 + 2?"},
            assistant_message(reply), run_tool(parse_tool_calls(reply)[0], [calculator()]).message()]


def test_schemas_have_the_function_calling_shape(tools):
    from jsonschema import Draft202012Validator

    assert [t.name for t in tools] == ["calculator", "world_lookup", "dates", "legal_lookup"]
    for t in tools:
        s = t.schema
        assert set(s) == {"type", "function"} and s["type"] == "function"
        assert set(s["function"]) == {"name", "description", "parameters"} and s["function"]["name"] == t.name
        params = s["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params.get("required", [])) <= set(params["properties"])
        Draft202012Validator.check_schema(params)
        assert json.loads(json.dumps(s)) == s


def test_a_tools_aware_template_gets_the_schemas(tokenizers, tools):
    course, hub = tokenizers
    assert supports_tools(hub) and not supports_tools(course)
    text = render_prompt(hub, conversation(), tools)
    lines = text.split("<|end|>")[0].splitlines()[2:]
    assert [json.loads(line) for line in lines] == [t.schema for t in tools]
    assert '<tool_call>{"name": "calculator", "arguments": {"expression": "40 + 2"}}</tool_call>' in text
    assert "<|tool|>\n42<|end|>" in text and text.endswith("<|assistant|>\n")


def test_the_course_template_gets_tools_in_the_system_prompt(tokenizers, tools):
    course, _ = tokenizers
    text = render_prompt(course, conversation(), tools)
    system = tools_system_prompt(tools, "Be brief.")
    assert text.startswith(f"<|endoftext|><|system|>\n{system}<|end|>\n<|user|>\nWhat is 40 + 2?<|end|>\n")
    assert ('<|assistant|>\nLet me compute.\n<tool_call>{"name": "calculator", "arguments": {"expression": "40 + 2"}}'
            '</tool_call><|end|>\n<|user|>\nObservation (calculator): 42<|end|>\n<|assistant|>\n') in text
    for t in tools:
        assert f"- {t.name}(" in system
    assert "dates(kind: \"age\"|\"years_between\", person?: string" in system
    default = render_prompt(course, conversation()[1:], tools)
    assert default.startswith(f"<|endoftext|><|system|>\n{tools_system_prompt(tools)}<|end|>")
    brief = render_prompt(course, conversation(), tools, brief=True)
    assert brief.startswith("<|endoftext|><|system|>\nBe brief.\nTools: calculator, world_lookup, dates, "
                            "legal_lookup.<|end|>\n") and "Observation (calculator): 42" in brief


def test_course_messages_maps_tool_turns_without_the_tool_role():
    msgs = [{"role": "user", "content": "Q"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
                            {"type": "function", "function": {"name": "b", "arguments": {}}}]},
            {"role": "tool", "name": "a", "content": "1"}, {"role": "tool", "content": "2"},
            {"role": "assistant", "content": "Done."}]
    assert course_messages(msgs) == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": format_tool_call("a", {"x": 1}) + "\n" + format_tool_call("b", {})},
        {"role": "user", "content": "Observation (a): 1\nObservation: 2"},
        {"role": "assistant", "content": "Done."}]
    assert course_messages(msgs[:3])[-1] == {"role": "user", "content": "Observation (a): 1"}
    with pytest.raises(ValueError, match="role 'function'"):
        course_messages([{"role": "function", "content": "x"}])


def test_assistant_message_round_trips_the_calls():
    text = "First. " + format_tool_call("calculator", {"expression": "1"}) + " Then. " + format_tool_call("b", {})
    msg = assistant_message(text)
    assert msg["content"] == "First.  Then."
    assert [c["function"]["name"] for c in msg["tool_calls"]] == ["calculator", "b"]
    again = course_messages([msg])[0]["content"]
    assert [(c.name, c.arguments) for c in parse_tool_calls(again)] == [("calculator", {"expression": "1"}), ("b", {})]
    broken = 'Oops <tool_call>{"name": }</tool_call>'
    assert assistant_message(broken) == {"role": "assistant", "content": broken}
