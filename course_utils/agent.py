"""Notebook 12 (agents): the ReAct loop over the tools of :mod:`course_utils.tools`, in the step-wise form that
fits the course model's 256-token window, its SFT data and its scores.

- **One step, one prompt** (:func:`step_messages`): the question, a line of notes (what the model wrote down from
  earlier observations) and the latest observation only. A whole trace in the chat, with calls in JSON, takes
  twice the window (``python -m benchmarks.agent_token_budget``); a step of this loop stays near half of it.
- **The step the model writes** (:func:`parse_step`)::

      Thought: [town-12#0] Tumwa has 27970 people.
      Action: calculator: 42040 + 27970

  or ``Answer: ...`` instead of the action. A call is ``tool: value`` for a tool with one required argument,
  else ``tool: key value; key value`` (:func:`format_compact_call`, :func:`parse_compact_call`): the same
  :class:`~course_utils.tools.ToolCall` as the JSON format gives, so validity and argument accuracy are measured
  the same way for both. Hub models keep JSON through :func:`course_utils.tools.render_prompt`, the whole
  trace in their window (:func:`run_json_agent`).
- **The loop** (:func:`run_agents`): up to ``max_steps`` steps for a batch of questions in lockstep (one
  generation per step for all), with guards: a malformed step or a repeated call is answered with an error
  observation and counted, never run.
- **SFT data** (:func:`agent_step_records`): every step of a task's gold plan (:mod:`course_utils.agent_tasks`)
  as one conversation, the thought copied from the observation's sentence that holds the fact.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from course_utils.tools import Tool, ToolCall, run_tool, validate_arguments

__all__ = ["AGENT_SYSTEM", "MAX_NOTE_CHARS", "AgentStep", "Trace", "agent_step_records", "call_matches",
           "format_compact_call", "format_step", "note_from", "note_from_call", "parse_compact_call", "parse_step",
           "run_agents", "run_json_agent", "step_messages"]

AGENT_SYSTEM = "Answer with the tools: world_lookup, calculator, dates, legal_lookup."
MAX_NOTE_CHARS = 160  # a note (the thought) is cut here: notes are the agent's memory of earlier observations
MAX_OBSERVATION_CHARS = 280  # the latest observation is cut here (a passage of world_lookup with k=1 fits)
_STEP = re.compile(r"^\s*(?:Thought:\s*(?P<thought>.*?)\s*\n)?\s*(?:(?P<kind>Action|Answer):\s*(?P<body>.*?))\s*$",
                   re.S)


# ----------------------------------------------------------------------------- the compact call format

def _only_required(tool: Tool | None) -> str | None:
    """The argument a bare value stands for: the tool's single required argument, if it has one."""
    if tool is None:
        return None
    required = tool.parameters.get("required", [])
    return required[0] if len(required) == 1 else None


def format_compact_call(name: str, arguments: Mapping[str, Any], tool: Tool | None = None) -> str:
    """``name: value`` when the only argument is ``tool``'s single required one (``world_lookup: Who led X?``),
    else ``name: key value; key value`` in the order given (``dates: kind age; person X; year
    1700``). Words, not ``key=value``: the course tokenizer knows ``" years"``, not ``"=years"``; for the same
    reason an enum value is written with spaces for underscores (``years between``)."""
    args = dict(arguments)
    only = _only_required(tool)
    if only is not None and list(args) == [only]:
        return f"{name}: {args[only]}"
    properties = tool.parameters.get("properties", {}) if tool else {}

    def word(key: str, value: Any) -> str:
        return str(value).replace("_", " ") if "enum" in properties.get(key, {}) else str(value)

    return f"{name}: " + "; ".join(f"{k} {word(k, v)}" for k, v in args.items())


def _typed(value: str, schema: Mapping[str, Any]) -> Any:
    """``value`` as the JSON type the schema asks for (an integer, where digits were written for one; an enum
    value written with spaces for its underscores)."""
    for option in schema.get("enum", []):
        if value.replace(" ", "_").lower() == str(option).lower():
            return option
    kinds = schema.get("type", "string")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds and re.fullmatch(r"-?\d+", value):
        return int(value)
    if "number" in kinds and re.fullmatch(r"-?\d+(?:\.\d+)?", value):
        return float(value)
    return value


def parse_compact_call(text: str, tools: Sequence[Tool] | Mapping[str, Tool]) -> ToolCall:
    """The call in ``text`` (``tool: value`` or ``tool: key value; ...``, see :func:`format_compact_call`;
    ``key=value`` is read too) as a :class:`~course_utils.tools.ToolCall`, values typed by the tool's schema;
    ``error`` set when it cannot be read. An unknown tool name is read (a bare value as ``input``), not refused:
    :func:`~course_utils.tools.run_tool` reports it as ``unknown_tool``."""
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    head, sep, rest = text.strip().partition(":")
    name = head.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
        return ToolCall(name if sep else "", {}, "a call is 'tool: arguments'", (0, len(text)))
    rest = rest.strip()
    tool = table.get(name)
    properties = tool.parameters.get("properties", {}) if tool else {}

    def keyed(part: str) -> tuple[str, str] | None:
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.*)", part, re.S)
        if m is None:
            m = re.fullmatch(r"([A-Za-z_]\w*)\s+(.*)", part, re.S)
            m = m if m and m.group(1) in properties else None
        return (m.group(1), m.group(2).strip()) if m else None

    pairs = [p.strip() for p in rest.split(";")] if rest else []
    found = [keyed(p) for p in pairs]
    if pairs and all(found):
        return ToolCall(name, {k: _typed(v, properties.get(k, {})) for k, v in found}, None, (0, len(text)))
    only = _only_required(tool) if tool else "input"  # an unknown tool's bare value: run_tool refuses the tool
    if only is not None and rest and not any(found):
        return ToolCall(name, {only: _typed(rest, properties.get(only, {}))}, None, (0, len(text)))
    why = "no arguments" if not rest else "write every argument as 'key value', separated by ';'"
    return ToolCall(name, {}, why, (0, len(text)))


# ----------------------------------------------------------------------------- one step

@dataclass
class AgentStep:
    """What the model wrote at one step: a thought (its note), and a call or an answer; ``error`` when neither
    can be read."""

    thought: str = ""
    call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None
    raw: str = ""


def parse_step(text: str, tools: Sequence[Tool] | Mapping[str, Tool]) -> AgentStep:
    """``Thought: ...`` (optional) then ``Action: <call>`` or ``Answer: ...`` (see the module)."""
    m = _STEP.match(text or "")
    if not m:
        return AgentStep(error="a step is 'Thought: ...' then 'Action: tool: arguments' or 'Answer: ...'",
                         raw=text)
    thought, body = (m.group("thought") or "").strip(), m.group("body").strip()
    if m.group("kind") == "Answer":
        return AgentStep(thought, answer=body, raw=text) if body else AgentStep(thought, error="an empty answer",
                                                                             raw=text)
    call = parse_compact_call(body.split("\n")[0], tools)
    return AgentStep(thought, call, error=call.error, raw=text)


def format_step(thought: str, call: str | None = None, answer: str | None = None) -> str:
    """The text of one step (an SFT target): ``Thought:`` when there is one, then the action or the answer."""
    if (call is None) == (answer is None):
        raise ValueError("A step has a call or an answer, not both.")
    head = f"Thought: {thought}\n" if thought else ""
    return head + (f"Action: {call}" if call is not None else f"Answer: {answer}")


def step_messages(question: str, notes: Sequence[str] = (), observation: str | None = None,
                  system: str = AGENT_SYSTEM) -> list[dict[str, str]]:
    """The prompt of one step: the question, the notes so far on one line, the latest observation (cut)."""
    lines = [f"Question: {question}"]
    if notes:
        lines.append("Notes: " + " ".join(notes))
    if observation is not None:
        cut = observation if len(observation) <= MAX_OBSERVATION_CHARS else observation[:MAX_OBSERVATION_CHARS] + "..."
        lines.append(f"Observation: {cut}")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(lines)}]


_TITLE = re.compile(r"^(?:[A-Z][A-Z'-]+(?: [A-Z][A-Z'-]+)* (?=[A-Z][a-z])|([A-Z][\w'-]*(?: [A-Z][\w'-]*)*) (?=(?:The )?\1\b))")


def note_from(observation: str, expect: Sequence[str] = ()) -> str:
    """The note a careful reader writes after ``observation``: the passage's chunk id and the shortest full
    sentence that holds all of ``expect`` (else the first sentence), without the page's title, cut at
    :data:`MAX_NOTE_CHARS`."""
    found: list[tuple[int, str, str]] = []
    first = None
    for line in observation.split("\n"):
        m = re.match(r"^\[([^\]]+)\]\s*(.*)$", line)
        cid, body = (m.group(1), _TITLE.sub("", m.group(2))) if m else ("", line)
        for sentence in re.split(r"(?<=[.!?])(?<! v\.)\s+", body):
            sentence = sentence.strip()
            if not sentence:
                continue
            first = first or (cid, sentence)
            if expect and all(x in sentence for x in expect):
                found.append((":" in sentence or not sentence.endswith("."), len(sentence), cid, sentence))
    if not found and first is None:
        return ""
    cid, sentence = min(found)[2:] if found else first
    note = (f"[{cid}] " if cid else "") + sentence
    return note if len(note) <= MAX_NOTE_CHARS else note[:MAX_NOTE_CHARS].rstrip() + "..."


# ----------------------------------------------------------------------------- SFT data

def agent_step_records(tasks: Sequence[Mapping[str, Any]], tools: Sequence[Tool], *, id_prefix: str = "agent",
                       strict: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Every step of each task's gold plan as one SFT conversation ``{id, kind, task, messages}`` (system, the
    step's prompt, the step's text), observations from the real ``tools``. A calculator step's note is the
    sum written out (``42040 + 27970 = 70010.``); a lookup's the sentence with the fact. ``strict``: a task whose
    observation lacks what the plan expects (the retriever missed the page) is skipped; its id is in the second
    list. The answer cites the chunk ids of the passages its notes came from."""
    from course_utils.agent_tasks import split_plan

    table = {t.name: t for t in tools}
    records, skipped = [], []
    for task in tasks:
        calls, answer = split_plan(task)
        notes: list[str] = []
        steps: list[tuple[list[dict[str, str]], str]] = []
        observation = None
        ok = True
        for i, step in enumerate(calls):
            call = ToolCall(step["tool"], dict(step["arguments"]))
            thought = note_from_call(calls[i - 1], observation) if i else ""
            prompt = step_messages(task["question"], notes, observation)
            steps.append((prompt, format_step(thought, format_compact_call(call.name, call.arguments,
                                                                               table.get(call.name)))))
            if thought:
                notes.append(thought)
            obs = run_tool(call, table)
            if strict and (not obs.ok or any(x not in obs.content for x in step.get("expect", []))):
                ok = False
                break
            observation = obs.content
        if not ok:
            skipped.append(task["id"])
            continue
        thought = note_from_call(calls[-1], observation) if calls else ""
        cites = [n.split("]")[0][1:] for n in notes + [thought] if n.startswith("[")]
        final = answer
        if cites:
            sources = " ".join(f"[{c}]" for c in dict.fromkeys(cites))
            final = f"{answer[:-1]} {sources}." if answer.endswith(".") else f"{answer} {sources}"
        steps.append((step_messages(task["question"], notes, observation), format_step(thought, answer=final)))
        for n, (prompt, target) in enumerate(steps):
            records.append({"id": f"{id_prefix}-{task['id']}-{n}", "kind": "agent_step", "task": task["kind"],
                            "messages": prompt + [{"role": "assistant", "content": target}]})
    return records, skipped


def note_from_call(step: Mapping[str, Any], observation: str | None) -> str:
    """The gold thought after running plan ``step``: for the calculator, ``expression = result.``; otherwise
    :func:`note_from` the observation with the step's ``expect``."""
    if observation is None:
        return ""
    if step["tool"] == "calculator":
        return f"{step['arguments']['expression']} = {observation.strip()}."
    return note_from(observation, step.get("expect", []))


def call_matches(call: ToolCall | None, step: Mapping[str, Any], tools: Sequence[Tool] | Mapping[str, Tool]
                 ) -> dict[str, bool]:
    """How a predicted call compares with the plan's ``step``: ``valid`` (read, a known tool, arguments that fit
    its schema), ``exact`` (same tool and arguments, strings compared without case and spacing) and ``useful``
    (run, its observation holds what the step expects: a differently worded query that finds the fact counts)."""
    table = dict(tools) if isinstance(tools, Mapping) else {t.name: t for t in tools}
    if call is None or not call.ok or call.name not in table:
        return {"valid": False, "exact": False, "useful": False}
    valid = validate_arguments(table[call.name], call.arguments) is None

    def norm(v: Any) -> Any:
        return " ".join(str(v).lower().split()).rstrip("?.") if isinstance(v, str) else v

    exact = valid and call.name == step["tool"] and {k: norm(v) for k, v in call.arguments.items()} == {
        k: norm(v) for k, v in step["arguments"].items()}
    useful = False
    if valid and call.name == step["tool"]:
        obs = run_tool(call, table)
        useful = obs.ok and all(x in obs.content for x in step.get("expect", []))
    return {"valid": valid, "exact": exact, "useful": useful}


# ----------------------------------------------------------------------------- the loop

@dataclass
class Trace:
    """One question through the agent: its steps (thought, call, observation, error, seconds), the answer (None:
    it stopped without one) and why it stopped (``answer``, ``max_steps``)."""

    question: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None
    stopped: str = ""
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # the thoughts written down, earlier ones given included

    @property
    def errors(self) -> dict[str, int]:
        """Tool-call errors by kind (``malformed``, ``repeated``, and :data:`~course_utils.tools.ERROR_KINDS`)."""
        out: dict[str, int] = {}
        for s in self.steps:
            if s.get("error"):
                out[s["error"]] = out.get(s["error"], 0) + 1
        return out

    @property
    def calls(self) -> int:
        return sum(1 for s in self.steps if s.get("call"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": self.errors}


def _guarded_call(call: ToolCall, made: set[str], table: Mapping[str, Tool]) -> dict[str, Any]:
    """The record fields (``call``, ``observation``, ``error``, ``seconds``) of running ``call``, unless the
    question made it already (``made``, its calls so far, gets this one): then the error ``repeated``."""
    record: dict[str, Any] = {"call": {"name": call.name, "arguments": call.arguments}, "observation": None,
                              "error": None, "seconds": 0.0}
    key = json.dumps(record["call"], sort_keys=True, default=str)
    if key in made:
        record.update(error="repeated", observation="Error: you made this call already; use its result or answer.")
        return record
    made.add(key)
    obs = run_tool(call, table)
    record.update(observation=obs.content, error=obs.error, seconds=obs.seconds)
    return record


def run_agents(generate: Callable[[list[list[dict[str, str]]]], list[str]], questions: Sequence[str],
               tools: Sequence[Tool], *, max_steps: int = 6, system: str = AGENT_SYSTEM,
               notes: Sequence[Sequence[str]] | None = None, progress: bool = False) -> list[Trace]:
    """The ReAct loop for every question at once: at each step one ``generate`` call on the prompts of the
    questions still open (:func:`step_messages`), each reply read by :func:`parse_step`, its call run
    (:func:`~course_utils.tools.run_tool`) and its observation shown at the next step. Guards: an unreadable
    step or a call the question already made is not run; the observation says what went wrong (errors
    ``malformed`` and ``repeated``). A question stops at its answer or after ``max_steps`` steps. ``notes``: what
    each question starts with (a researcher's earlier findings, :func:`run_team`)."""
    table = {t.name: t for t in tools}
    traces = [Trace(q, notes=list(notes[i]) if notes else []) for i, q in enumerate(questions)]
    state = [{"notes": traces[i].notes, "observation": None, "made": set(), "t0": time.perf_counter()}
             for i in range(len(questions))]
    open_ = list(range(len(questions)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, desc="agent steps", leave=False)
    for _ in range(max_steps):
        if not open_:
            break
        prompts = [step_messages(traces[i].question, state[i]["notes"], state[i]["observation"], system)
                   for i in open_]
        replies = generate(prompts)
        still = []
        for i, reply in zip(open_, replies):
            st, tr = state[i], traces[i]
            step = parse_step(reply, table)
            if step.thought:
                st["notes"].append(step.thought[:MAX_NOTE_CHARS])
            record: dict[str, Any] = {"thought": step.thought, "raw": reply, "call": None, "observation": None,
                                      "error": None, "seconds": 0.0}
            if step.answer is not None:
                tr.answer, tr.stopped = step.answer, "answer"
                tr.steps.append(record)
                tr.seconds = time.perf_counter() - st["t0"]
                continue
            if step.call is None or step.error:
                record["error"] = "malformed"
                st["observation"] = ("Error: write 'Action: tool: arguments' or 'Answer: ...'"
                                     + (f" ({step.error})." if step.error else "."))
            else:
                record.update(_guarded_call(step.call, st["made"], table))
                st["observation"] = record["observation"]
            if record["observation"] is None:
                record["observation"] = st["observation"]
            tr.steps.append(record)
            still.append(i)
        open_ = still
        if bar is not None:
            bar.update(1)
    for i in open_:
        traces[i].stopped = "max_steps"
        traces[i].seconds = time.perf_counter() - state[i]["t0"]
    if bar is not None:
        bar.close()
    return traces


def run_json_agent(complete: Callable[[list[str]], list[str]], tokenizer, questions: Sequence[str],
                   tools: Sequence[Tool], *, max_steps: int = 6, system: str | None = None) -> list[Trace]:
    """The agent for a model that writes the JSON convention: a hub model whose chat template reads ``tools``
    (:func:`~course_utils.tools.supports_tools`), with the window for a whole trace. At every step the whole
    conversation is the prompt, rendered by :func:`~course_utils.tools.render_prompt` with the tools' schemas;
    the reply's ``<tool_call>`` JSON is read by :func:`~course_utils.tools.parse_tool_calls`, each call run with
    :func:`run_agents`' guards (``malformed``, ``repeated``) and its result sent back as a ``tool`` message; a
    reply without a call is the answer. ``complete``: prompt texts to replies, one batch per step for the
    questions still open (:func:`course_utils.rag_chain.text_replies` over a local pipeline)."""
    from course_utils.tools import CALL_CLOSE, CALL_OPEN, assistant_message, parse_tool_calls, render_prompt

    table = {t.name: t for t in tools}
    traces = [Trace(q) for q in questions]
    start = [{"role": "system", "content": system}] if system else []
    chats = [start + [{"role": "user", "content": q}] for q in questions]
    made: list[set[str]] = [set() for _ in questions]
    t0 = time.perf_counter()
    open_ = list(range(len(questions)))
    for _ in range(max_steps):
        if not open_:
            break
        replies = complete([render_prompt(tokenizer, chats[i], tools) for i in open_])
        still = []
        for i, reply in zip(open_, replies):
            tr, calls = traces[i], parse_tool_calls(reply)
            if not calls:
                tr.answer, tr.stopped, tr.seconds = reply.strip(), "answer", time.perf_counter() - t0
                tr.steps.append({"thought": "", "raw": reply, "call": None, "observation": None, "error": None,
                                 "seconds": 0.0})
                continue
            message = assistant_message(reply)
            chats[i].append(message)
            thought = message["content"] if "tool_calls" in message else ""
            for call in calls:
                record: dict[str, Any] = {"thought": thought, "raw": reply, "call": None, "observation": None,
                                          "error": None, "seconds": 0.0}
                if call.ok:
                    record.update(_guarded_call(call, made[i], table))
                else:
                    record.update(error="malformed", observation=f"Error: write each call as {CALL_OPEN}"
                                  f'{{"name": ..., "arguments": {{...}}}}{CALL_CLOSE} ({call.error}).')
                tr.steps.append(record)
                chats[i].append({"role": "tool", "name": call.name, "content": record["observation"]})
            still.append(i)
        open_ = still
    for i in open_:
        traces[i].stopped, traces[i].seconds = "max_steps", time.perf_counter() - t0
    return traces
