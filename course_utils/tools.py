"""Notebook 12 (agents): tools an agent can call, the tool-call format, and prompts that offer the tools.

- **A tool** (:class:`Tool`) is a name, a description, a JSON schema of its arguments (OpenAI's function-calling
  format: :attr:`Tool.schema` is what ``tokenizer.apply_chat_template(messages, tools=[...])`` takes), a Python
  function and a time limit. Four are built by factories that take only the objects they need: :func:`calculator`
  (arithmetic parsed with ``ast``, never ``eval``), :func:`world_lookup` (the course's retrieval index),
  :func:`date_calculator` (ages and spans of years over the world's calendar) and :func:`legal_lookup` (the legal
  code and its cases). None of them touches files, the network or a shell; :func:`course_tools` builds all four.
- **The call format** (Hermes/Qwen, what many transformers chat templates write): the model writes
  ``<tool_call>{"name": "...", "arguments": {...}}</tool_call>``; :func:`parse_tool_calls` reads them (a malformed
  one comes back with its ``error`` set, not as an exception), :func:`validate_arguments` checks them against the
  schema and :func:`run_tool` runs one and returns an :class:`Observation`, whatever the model wrote. Results go
  back as messages with role ``"tool"`` (:meth:`Observation.message`).
- **Prompts**: :func:`render_prompt` gives the tools to a template that reads ``tools`` (hub models); the course
  template knows only system, user and assistant, so for it :func:`tools_system_prompt` lists the tools in the
  system prompt and :func:`course_messages` writes calls into the assistant's text and observations as user turns.

The world has no "present": no text of the corpus names a current year, so ages are asked for a given year.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import operator
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ERROR_KINDS", "BadArguments", "Observation", "Tool", "ToolCall", "ToolError", "assistant_message",
           "calculator", "course_messages", "course_tools", "date_calculator", "evaluate_arithmetic",
           "format_tool_call", "legal_lookup", "parse_tool_calls", "render_prompt", "run_tool", "supports_tools",
           "tools_system_prompt", "validate_arguments", "world_lookup"]

#: Why a call failed: unreadable, a tool that does not exist, arguments the schema or the tool rejects, an error
#: inside the tool, or no answer within the tool's time limit.
ERROR_KINDS = ("malformed", "unknown_tool", "bad_arguments", "tool_error", "timeout")
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
OBSERVATION = "Observation"  # how the course template's user turns announce a tool's result
MAX_OBSERVATION_CHARS = 2000  # longer tool output is cut (the course model's context is 128-256 tokens)
DEFAULT_SYSTEM = "You answer questions about Valdmark. Call a tool when you need a fact or a calculation."


class ToolError(Exception):
    """A tool could not do what it was asked; the message, one sentence, is what the model reads."""


class BadArguments(ToolError):
    """The arguments fit the schema but the tool cannot use them (an unsafe expression, a missing pair)."""


# ----------------------------------------------------------------------------- tools, calls, observations

@dataclass
class Tool:
    """A function the model may call by name, with JSON arguments checked against ``parameters``."""

    name: str  # what the model writes in "name": letters, digits and underscores
    description: str  # one or two sentences the model reads
    parameters: dict[str, Any]  # JSON schema of the arguments: an "object" with "properties"
    fn: Callable[..., Any]  # called with the arguments as keywords; returns the observation text
    time_limit: float = 5.0  # seconds run_tool waits for fn before it reports a timeout

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise ValueError(f"A tool name is letters, digits and underscores: got {self.name!r}.")
        if self.parameters.get("type") != "object" or not isinstance(self.parameters.get("properties"), dict):
            raise ValueError(f"Tool {self.name}: parameters must be a JSON schema of type 'object' with properties.")
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(self.parameters)  # a mistake in a schema shows here, not mid-agent

    @property
    def schema(self) -> dict[str, Any]:
        """OpenAI's function format: ``{"type": "function", "function": {name, description, parameters}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def signature(self) -> str:
        """One compact line for a system prompt: ``name(arg: type, opt?: type): description``."""
        required = set(self.parameters.get("required", []))
        args = []
        for key, prop in self.parameters["properties"].items():
            kind = "|".join(json.dumps(v) for v in prop["enum"]) if "enum" in prop else prop.get("type", "any")
            kind = "|".join(kind) if isinstance(kind, list) else kind
            args.append(f"{key}{'' if key in required else '?'}: {kind}")
        return f"{self.name}({', '.join(args)}): {self.description}"


@dataclass
class ToolCall:
    """One call the model wrote; ``error`` is set (and name/arguments may be empty) when it is malformed."""

    name: str  # the tool asked for
    arguments: dict[str, Any] = field(default_factory=dict)  # its arguments
    error: str | None = None  # why the call could not be read (None: well formed)
    span: tuple[int, int] = (0, 0)  # where the call sits in the model's text (start, end)

    @property
    def ok(self) -> bool:  # read; it may still name an unknown tool or carry bad arguments
        return self.error is None

    def message_part(self) -> dict[str, Any]:
        """The call as an entry of an assistant message's ``tool_calls`` (transformers' convention)."""
        return {"type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class Observation:
    """What running a call gave: the text the model reads next, and whether (and how) it failed."""

    ok: bool  # True: content is the tool's result
    content: str  # the result, or a sentence saying what went wrong
    name: str = ""  # the tool called ("" when the call was unreadable)
    error: str | None = None  # None, or one of ERROR_KINDS
    seconds: float = 0.0  # wall time of the call

    def message(self) -> dict[str, str]:
        """The ``{"role": "tool", "name": ..., "content": ...}`` message that carries it back to the model."""
        return {"role": "tool", "name": self.name, "content": self.content}


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A call written the way the model must write it (SFT targets use this)."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': dict(arguments)}, ensure_ascii=False)}{CALL_CLOSE}"


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``<tool_call>{json}</tool_call>`` in ``text``, in order ([] when the model answered without one).

    A call whose JSON cannot be read, has no string ``name`` or whose ``arguments`` is not an object comes back
    with ``error`` set, so an agent loop can count malformed calls. A missing closing tag is accepted when the
    JSON object is complete and only whitespace follows (the model stopped at its end-of-turn token); missing
    ``arguments`` reads as ``{}``.
    """
    calls: list[ToolCall] = []
    at = 0
    while (start := text.find(CALL_OPEN, at)) >= 0:
        close, following = text.find(CALL_CLOSE, start), text.find(CALL_OPEN, start + 1)
        if following >= 0 and (close < 0 or following < close):
            close = -1  # another call opens before this one closes: this one is cut off
        stop = close if close >= 0 else following if following >= 0 else len(text)
        at = stop + len(CALL_CLOSE) if close >= 0 else stop
        inner = text[start + len(CALL_OPEN): stop].strip()
        try:
            obj, used = json.JSONDecoder().raw_decode(inner)
            named = isinstance(obj, dict) and isinstance(obj.get("name"), str) and obj["name"] != ""
            why = ("text follows the JSON object inside <tool_call>" if inner[used:].strip() else
                   "a call is a JSON object with name and arguments" if not isinstance(obj, dict) else
                   "the call has no tool name" if not named else
                   "arguments must be a JSON object" if not isinstance(obj.get("arguments", {}), dict) else None)
        except (json.JSONDecodeError, RecursionError) as exc:
            obj, named = None, False
            why = ("the call is cut off" if close < 0 else "its JSON is nested too deeply" if
                   isinstance(exc, RecursionError) else f"its JSON cannot be read ({exc.msg} at {exc.pos})")
        name = obj["name"] if named else ""
        arguments = dict(obj.get("arguments", {})) if why is None else {}
        calls.append(ToolCall(name, arguments, why, (start, at)))
    return calls


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """None when ``arguments`` fit ``tool.parameters`` (JSON Schema, with ``jsonschema``), else what is wrong."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(tool.parameters).iter_errors(arguments), key=lambda e: [str(p) for p in e.path])
    if not errors:
        return None
    where = "".join(f".{p}" for p in errors[0].path)
    return f"arguments{where}: {errors[0].message}"


def run_tool(call: ToolCall, tools: Sequence[Tool] | Mapping[str, Tool]) -> Observation:
    """Run one call and say what came of it; never raises on anything the model wrote.

    The tool runs in a daemon thread and ``run_tool`` stops waiting after ``tool.time_limit`` seconds (a
    ``"timeout"`` observation). Python cannot kill a thread: a runaway call keeps its thread busy until it ends,
    which is why every tool also bounds its own work (expression length, exponent size, passages returned).
    """
    t0 = time.perf_counter()

    def fail(kind: str, text: str, name: str = "") -> Observation:
        return Observation(False, f"Error ({kind}): {text}", name, kind, time.perf_counter() - t0)

    if not isinstance(call, ToolCall) or call.error is not None:
        read = isinstance(call, ToolCall)
        return fail("malformed", call.error if read else f"not a call: {call!r:.80}", call.name if read else "")
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    tool = table.get(call.name)
    if tool is None:
        return fail("unknown_tool", f"there is no tool {call.name!r}; the tools are {', '.join(sorted(table))}.",
                    call.name)
    problem = validate_arguments(tool, call.arguments)
    if problem:
        return fail("bad_arguments", problem, tool.name)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = tool.fn(**call.arguments)
        except BaseException as exc:  # reported, whatever it is: a tool must not end the agent
            box["error"] = exc

    worker = threading.Thread(target=work, name=f"tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(tool.time_limit)
    if worker.is_alive():
        return fail("timeout", f"{tool.name} gave no answer within {tool.time_limit:g} s.", tool.name)
    exc = box.get("error")
    if exc is not None:
        kind = "bad_arguments" if isinstance(exc, BadArguments) else "tool_error"
        return fail(kind, str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {exc}", tool.name)
    value = box.get("value")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > MAX_OBSERVATION_CHARS:
        text = text[:MAX_OBSERVATION_CHARS] + " [cut]"
    return Observation(True, text, tool.name, None, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the calculator

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_REFUSED = {ast.Name: "a name", ast.Call: "a function call", ast.Attribute: "an attribute",
            ast.Subscript: "indexing", ast.Tuple: "a tuple (write numbers without commas)",
            ast.BitXor: "^ (write ** for a power)", ast.Lambda: "a lambda", ast.Compare: "a comparison"}


def evaluate_arithmetic(expression: str, max_chars: int = 200, max_exponent: int = 100,
                        max_magnitude: float = 1e15) -> int | float:
    """The value of an arithmetic ``expression``: numbers, ``+ - * / // % **``, unary minus and parentheses.

    The text is parsed with :mod:`ast` and the tree walked here, so nothing in it is ever executed: a name, a
    call, an attribute, indexing or a string is refused (:class:`BadArguments`), as are expressions longer than
    ``max_chars``, exponents beyond ``max_exponent`` and powers whose result would pass ``max_magnitude``. A
    result (or intermediate) beyond ``max_magnitude`` and division by zero are :class:`ToolError`.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise BadArguments("give an arithmetic expression, e.g. '(1850 - 1780) * 2'.")
    if len(expression) > max_chars:
        raise BadArguments(f"the expression has {len(expression)} characters; at most {max_chars} are allowed.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise BadArguments(f"{expression.strip()!r} is not an arithmetic expression.") from None

    def check(value: Any) -> int | float:
        if isinstance(value, complex) or not math.isfinite(value):
            raise ToolError("the result is not a finite real number.")
        if abs(value) > max_magnitude:
            raise ToolError(f"a number in the calculation passes {max_magnitude:g}, the calculator's bound.")
        return value

    def walk(node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return check(node.value)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(_UNARY[type(node.op)](walk(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow):
                if abs(right) > max_exponent:
                    raise BadArguments(f"the exponent {right:g} is larger than {max_exponent}.")
                if abs(left) > 1 and right > 0 and right * math.log10(abs(left)) > math.log10(max_magnitude) + 1:
                    raise ToolError(f"{left:g} ** {right:g} passes {max_magnitude:g}, the calculator's bound.")
            try:
                return check(_BINARY[type(node.op)](left, right))
            except ZeroDivisionError:
                raise ToolError("division by zero.") from None
            except OverflowError:
                raise ToolError(f"a number in the calculation passes {max_magnitude:g}.") from None
        if isinstance(node, ast.Constant):
            what = "a string" if isinstance(node.value, (str, bytes)) else f"the constant {node.value!r}"
        else:
            what = _REFUSED.get(type(node), _REFUSED.get(type(getattr(node, "op", None)), type(node).__name__))
        raise BadArguments(f"{what} is not allowed: only numbers, + - * / // % ** and parentheses.")

    return walk(tree.body)


def _number_text(value: int | float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.10g}"


def calculator(time_limit: float = 1.0) -> Tool:
    """The calculator tool: :func:`evaluate_arithmetic` on the model's expression; the result as text."""
    return Tool(
        name="calculator",
        description="Arithmetic on numbers: + - * / // % ** and parentheses.",
        parameters={"type": "object", "additionalProperties": False, "required": ["expression"],
                    "properties": {"expression": {"type": "string", "description": "e.g. '(1850 - 1780) * 2'"}}},
        fn=lambda expression: _number_text(evaluate_arithmetic(expression)),
        time_limit=time_limit)


# ----------------------------------------------------------------------------- retrieval

def world_lookup(index, k: int = 2, method: str = "hybrid", max_chars: int = 400, max_query_chars: int = 300,
                 time_limit: float = 10.0, warm: bool = True) -> Tool:
    """The archive search tool over ``index`` (a :class:`course_utils.rag.RagIndex`, or anything with its
    ``search(query, k, method=...)``): the ``k`` best passages, each ``[chunk id] text`` cut at ``max_chars``,
    so the answer can cite them. ``warm=True`` runs one search now, so that the embedder and BM25, which the index
    loads on first use, are in memory before the model calls: no tool call reads from disk."""
    if warm:
        index.search("Valdmark", k=1, method=method)

    def lookup(query: str) -> str:
        query = " ".join(query.split())
        if not query:
            raise BadArguments("give a query, e.g. 'Where was Garrae Luorath born?'.")
        if len(query) > max_query_chars:
            raise BadArguments(f"the query has {len(query)} characters; at most {max_query_chars} are allowed.")
        hits = index.search(query, k=k, method=method)
        if not hits:
            return "No passage found."
        cut = [h["text"] if len(h["text"]) <= max_chars else h["text"][:max_chars].rstrip() + "..." for h in hits]
        return "\n".join(f"[{h['id']}] {text}" for h, text in zip(hits, cut))

    return Tool(
        name="world_lookup",
        description="Search the archive of Valdmark; returns passages with their ids to cite.",
        parameters={"type": "object", "additionalProperties": False, "required": ["query"],
                    "properties": {"query": {"type": "string", "description": "what to look for"}}},
        fn=lookup, time_limit=time_limit)


# ----------------------------------------------------------------------------- the world's calendar and code

#: The year an entity is dated by, per kind, and how a sentence says it.
YEAR_FIELDS = {"person": ("birth_year", "born in"), "event": ("year", "in"), "town": ("founded", "founded in"),
               "guild": ("founded", "founded in"), "festival": ("first_held", "first held in")}


def _key(name: str) -> str:
    name = " ".join(name.replace(".", " ").lower().split())
    return name[4:] if name.startswith("the ") else name


def _finder(entities: list) -> Callable[..., Any]:
    """``find(name, what)``: the entity with that name or alias (any case, "the" dropped), else a ToolError
    that suggests close names."""
    by_key: dict[str, list] = {}
    for e in entities:
        for name in dict.fromkeys([e.name, *e.aliases]):
            by_key.setdefault(_key(name), []).append(e)

    def find(name: str, what: str = "entity"):
        found = by_key.get(_key(name), [])
        if len(found) == 1:
            return found[0]
        if found:
            raise ToolError(f"{name!r} names several: {', '.join(e.name for e in found[:4])}; give the full name.")
        close = difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.75)
        hint = f" Did you mean {' or '.join(repr(by_key[c][0].name) for c in close)}?" if close else ""
        raise ToolError(f"no {what} named {name!r} in Valdmark.{hint}")

    return find


def date_calculator(world, time_limit: float = 1.0) -> Tool:
    """The date tool over ``world`` (:class:`course_utils.world.World`): a person's age in a given year
    (``birth_year``), or the years between two years or dated entities (an event's ``year``, a town's or
    guild's ``founded``, a festival's ``first_held``, a person's birth), named as texts name them."""
    find = _finder([e for e in world.entities if e.kind in YEAR_FIELDS])

    def dated(value: int | str) -> tuple[str, int]:
        if not isinstance(value, str) or re.fullmatch(r"\s*\d{1,4}\s*", value):  # 1812, 1812.0 or "1812"
            return str(int(value)), int(value)
        e = find(value)
        attr, verb = YEAR_FIELDS[e.kind]
        return f"{e.name} ({verb} {e.attrs[attr]})", int(e.attrs[attr])

    def calc(kind: str, person: str | None = None, year: int | None = None,
             start: int | str | None = None, end: int | str | None = None) -> str:
        if kind == "age":
            if person is None or year is None:
                raise BadArguments("kind 'age' needs person (a name) and year (the world has no present year).")
            p, year = find(person, "person"), int(year)  # JSON Schema counts 1820.0 as an integer
            if p.kind != "person":
                raise ToolError(f"{p.name} is a {p.kind}, not a person.")
            born = int(p.attrs["birth_year"])
            if year < born:
                raise ToolError(f"{p.name} was born in {born}, after {year}.")
            return f"{p.name} was born in {born}, so in {year} {p.name} was {year - born} years old."
        if start is None or end is None:
            raise BadArguments("kind 'years_between' needs start and end (years or names).")
        (a, ya), (b, yb) = dated(start), dated(end)
        if ya == yb:
            return f"{a} and {b}: the same year, 0 years apart."
        (a, ya), (b, yb) = sorted([(a, ya), (b, yb)], key=lambda p: p[1])
        return f"{a} came {yb - ya} years before {b}."

    either = {"type": ["integer", "string"], "minimum": 0, "maximum": 3000, "maxLength": 100,
              "description": "a year or the name of an event, person, town, ..."}
    return Tool(
        name="dates",
        description="Age of a person in a year, or years between two years or events.",
        parameters={"type": "object", "additionalProperties": False, "required": ["kind"],
                    "properties": {"kind": {"type": "string", "enum": ["age", "years_between"]},
                                   "person": {"type": "string", "maxLength": 100,
                                              "description": "for age: a person's name"},
                                   "year": {"type": "integer", "minimum": 0, "maximum": 3000,
                                            "description": "for age: the year"},
                                   "start": either, "end": either}},
        fn=calc, time_limit=time_limit)


_STOP = set("a an and any are as at be by did do does for from had has have he her his in into is it its of on "
            "or she that the their them they this to was were what when where which who whom why with "
            "article articles law legal code applies apply valdmark".split())


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in _STOP}


def legal_lookup(world, k: int = 2, time_limit: float = 1.0) -> Tool:
    """The legal-code tool over ``world``: an article by ``number``, the ``k`` articles whose title, duty and breach
    share most words with ``keywords`` (words cut to 5 letters, a crude stemmer), or a court ``case`` by name or
    by a party's name. Each article comes with its leading case, each case with the articles it applied."""
    towns = {e.id: e.name for e in world.entities if e.kind == "town"}
    article_stems = {a.number: _stems(f"{a.title} {a.duty} {a.breach}") for a in world.articles}
    cases = {_key(p.name): p for p in world.precedents}
    parties = {_key(n): p for p in world.precedents for n in (p.claimant, p.defendant)}

    def article_text(number: int) -> str:
        a, lead = world.article(number), world.leading_case(number)
        text = f"Article {a.number} ({a.title}): {a.duty}. A breach: {a.breach}."
        return text + (f" Leading case: {lead.name} ({lead.year})." if lead else "")

    def case_text(name: str) -> str:
        p = cases.get(_key(name)) or next((parties[w] for w in _key(name).split() if w in parties), None)
        if p is None:
            close = difflib.get_close_matches(_key(name), list(cases), n=2, cutoff=0.6)
            hint = f" Did you mean {' or '.join(repr(cases[c].name) for c in close)}?" if close else ""
            raise ToolError(f"no case named {name!r} in the code's records.{hint}")
        arts = ", ".join(f"Article {n}" for n in p.articles)
        court = towns.get(p.court_town_id, p.court_town_id)
        side = "the claimant" if p.upheld else "the defendant"
        return f"{p.name}, decided in {p.year} by the court of {court}: applied {arts}; found for {side}."

    def lookup(number: int | None = None, keywords: str | None = None, case: str | None = None) -> str:
        if sum(x is not None for x in (number, keywords, case)) != 1:
            raise BadArguments("give exactly one of number, keywords or case.")
        if number is not None:
            if not 1 <= number <= len(world.articles):
                raise ToolError(f"the legal code has articles 1 to {len(world.articles)}.")
            return article_text(int(number))
        if case is not None:
            return case_text(case)
        words = _stems(keywords)
        scored = sorted(((len(words & s), n) for n, s in article_stems.items()), key=lambda x: (-x[0], x[1]))
        best = [n for score, n in scored[:k] if score > 0]
        if not best:
            raise ToolError(f"no article matches {keywords!r}; try other words.")
        return "\n".join(article_text(n) for n in best)

    return Tool(
        name="legal_lookup",
        description="The legal code of Valdmark: an article by number or keywords, or a court case.",
        parameters={"type": "object", "additionalProperties": False,
                    "properties": {
                        "number": {"type": "integer", "minimum": 1, "description": "an article's number"},
                        "keywords": {"type": "string", "maxLength": 300, "description": "e.g. 'false measure'"},
                        "case": {"type": "string", "maxLength": 100, "description": "e.g. 'Tarrow v. Belin'"}}},
        fn=lookup, time_limit=time_limit)


def course_tools(world=None, index=None) -> list[Tool]:
    """The four tools over the course's world (:func:`course_utils.data.world`) and index
    (:func:`course_utils.rag.load_or_build_index`), each loaded when not given."""
    if world is None:
        from course_utils.data import world as load_world

        world = load_world()
    if index is None:
        from course_utils.rag import load_or_build_index

        index = load_or_build_index()
    return [calculator(), world_lookup(index), date_calculator(world), legal_lookup(world)]


# ----------------------------------------------------------------------------- prompts

def supports_tools(tokenizer) -> bool:
    """Whether ``tokenizer``'s chat template reads a ``tools`` variable (hub models; not the course's)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    template = " ".join(template.values()) if isinstance(template, dict) else template
    return re.search(r"\btools\b", template) is not None


def tools_system_prompt(tools: Sequence[Tool], base: str = DEFAULT_SYSTEM, brief: bool = False) -> str:
    """A system prompt that offers ``tools`` to a model whose template cannot: ``base``, one compact line per
    tool (:meth:`Tool.signature`) and the call format. The four tools' lines take ~350 tokens of the course
    tokenizer, more than the course model's context: ``brief=True`` names the tools only (a model trained on
    calls, e.g. a LoRA adapter, learns their arguments from the examples)."""
    if brief:
        return f"{base.strip()}\nTools: {', '.join(t.name for t in tools)}."
    lines = [base.strip(), "Tools:"] + [f"- {t.signature()}" for t in tools]
    lines.append(f'To call one, write {CALL_OPEN}{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE}. '
                 f'Its result comes back as "{OBSERVATION} (name): ...". Answer when you know.')
    return "\n".join(lines)


def assistant_message(text: str) -> dict[str, Any]:
    """The model's reply as a chat message: with well-formed calls, ``content`` is the text around them and
    ``tool_calls`` the calls (transformers' convention); otherwise ``content`` is the reply as written."""
    calls = parse_tool_calls(text)
    if not calls or not all(c.ok for c in calls):
        return {"role": "assistant", "content": text}
    kept = [text[a:b] for a, b in zip([0] + [c.span[1] for c in calls], [c.span[0] for c in calls] + [len(text)])]
    return {"role": "assistant", "content": "".join(kept).strip(), "tool_calls": [c.message_part() for c in calls]}


def course_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """``messages`` as the course template renders them (system, user, assistant only), template unchanged:
    an assistant's ``tool_calls`` are written into its text with :func:`format_tool_call`, and each run of
    ``"tool"`` messages becomes one user turn, a line ``Observation (name): content`` per result."""
    out: list[dict[str, str]] = []
    pending: list[str] = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if role == "tool":
            pending.append(f"{OBSERVATION} ({m['name']}): {content}" if m.get("name") else f"{OBSERVATION}: {content}")
            continue
        if pending:
            out.append({"role": "user", "content": "\n".join(pending)})
            pending = []
        if role == "assistant" and m.get("tool_calls"):
            calls = [c.get("function", c) for c in m["tool_calls"]]  # OpenAI sends arguments as a JSON string:
            written = [format_tool_call(c["name"], json.loads(a) if isinstance(a, str) else a)
                       for c, a in ((c, c.get("arguments", {})) for c in calls)]
            content = "\n".join(([content] if content else []) + written)
        elif role not in ("system", "user", "assistant"):
            raise ValueError(f"Message role {role!r} cannot be rendered: use system, user, assistant or tool.")
        out.append({"role": role, "content": content})
    if pending:
        out.append({"role": "user", "content": "\n".join(pending)})
    return out


def render_prompt(tokenizer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool],
                  add_generation_prompt: bool = True, base: str = DEFAULT_SYSTEM, brief: bool = False) -> str:
    """The prompt text that offers ``tools`` to the model of ``tokenizer``.

    A template that reads ``tools`` (:func:`supports_tools`) gets the messages as they are and
    ``tools=[t.schema ...]``; the course template gets :func:`course_messages` after a system prompt from
    :func:`tools_system_prompt` (``brief`` passed on; its base is the conversation's own system message, if any).
    The result is text: for token ids of the course route, :func:`course_utils.tokenizer.encode_chat` on the same
    messages keeps ``<|end|>`` written by a tool (or a page it read) as text instead of a control token.
    """
    messages = [dict(m) for m in messages]
    if supports_tools(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=[t.schema for t in tools], tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    if messages and messages[0].get("role") == "system":
        base, messages = messages[0].get("content") or base, messages[1:]
    chat = [{"role": "system", "content": tools_system_prompt(tools, base, brief)}] + course_messages(messages)
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
