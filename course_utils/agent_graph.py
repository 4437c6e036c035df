"""Notebook 12 (agents): the same agent as a LangGraph graph, and the multi-agent hand-off.

- :func:`langchain_tools`: the course's tools (:mod:`course_utils.tools`) as LangChain ``StructuredTool``s with
  their JSON schemas; each runs through :func:`~course_utils.tools.run_tool`, so a bad call comes back as an
  error observation instead of an exception.
- :func:`react_graph`: a ``StateGraph`` over ``MessagesState`` with an ``agent`` node (the course model writes a
  step, :func:`course_utils.agent.parse_step` turns its call into the ``AIMessage.tool_calls`` every LangChain
  model emits) and LangGraph's prebuilt ``ToolNode``; the step-wise prompt is rebuilt from the messages at each
  turn. A chat model with native tool calling (an endpoint's, ``bind_tools``) fits the same graph with
  :func:`chat_model_node`.
- :func:`graph_answer`: one question through a graph: the answer and the trace of calls and observations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from course_utils.agent import AGENT_SYSTEM, MAX_NOTE_CHARS, parse_step, step_messages
from course_utils.tools import Tool, ToolCall, run_tool, validate_arguments

__all__ = ["chat_model_node", "course_model_node", "graph_answer", "langchain_tools", "react_graph"]


def langchain_tools(tools: Sequence[Tool]) -> list[Any]:
    """``tools`` as LangChain ``StructuredTool``s: same name, description and JSON schema; the call goes through
    :func:`~course_utils.tools.run_tool` (time limit, schema check, errors as text)."""
    from langchain_core.tools import StructuredTool

    table = {t.name: t for t in tools}

    def runner(name: str) -> Callable[..., str]:
        return lambda **arguments: run_tool(ToolCall(name, arguments), table).content

    return [StructuredTool.from_function(func=runner(t.name), name=t.name, description=t.description,
                                         args_schema=t.parameters) for t in tools]


def _step_inputs(messages: Sequence[Any]) -> tuple[str, list[str], str | None, set[str], int]:
    """From a graph's messages: the question (first human message), the notes (thoughts of earlier steps), the
    latest observation (the last tool or error message after the last AI message), the calls made and the steps
    taken (AI messages)."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    question = next(str(m.content) for m in messages if isinstance(m, HumanMessage))
    notes, made, observation, steps = [], set(), None, 0
    for m in messages:
        if isinstance(m, AIMessage):
            steps += 1
            extra = m.additional_kwargs or {}
            if extra.get("thought"):
                notes.append(extra["thought"][:MAX_NOTE_CHARS])
            if extra.get("call"):
                made.add(json.dumps(extra["call"], sort_keys=True, default=str))
            observation = None
        elif isinstance(m, ToolMessage) or (isinstance(m, HumanMessage) and str(m.content).startswith("Error")):
            observation = str(m.content)
    return question, notes, observation, made, steps


def course_model_node(generate: Callable[[list[list[dict[str, str]]]], list[str]], tools: Sequence[Tool],
                      system: str = AGENT_SYSTEM, max_steps: int = 6) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ``agent`` node for a model that writes :mod:`course_utils.agent`'s steps: builds the step prompt from
    the state, generates, and returns an ``AIMessage`` (its call in ``tool_calls``, its thought in
    ``additional_kwargs``). The guards of :func:`course_utils.agent.run_agents`, with the same observations: a
    step that cannot be read, a call already made, an unknown tool or arguments the schema refuses add an
    ``Error`` human message instead of a call, and the graph comes back to this node; after ``max_steps`` steps
    the node stops the graph (``additional_kwargs["stopped"]``)."""
    from langchain_core.messages import AIMessage, HumanMessage

    table = {t.name: t for t in tools}

    def node(state: dict[str, Any]) -> dict[str, Any]:
        question, notes, observation, made, taken = _step_inputs(state["messages"])
        if taken >= max_steps:
            return {"messages": [AIMessage("", additional_kwargs={"stopped": "max_steps"})]}
        reply = generate([step_messages(question, notes, observation, system)])[0]
        step = parse_step(reply, table)
        extra: dict[str, Any] = {"thought": step.thought} if step.thought else {}
        if step.answer is not None:
            return {"messages": [AIMessage(step.answer, additional_kwargs=extra)]}
        if step.call is None or step.error:
            error = "Error: write 'Action: tool: arguments' or 'Answer: ...'" + (f" ({step.error})." if step.error
                                                                                 else ".")
            return {"messages": [AIMessage(reply, additional_kwargs={**extra, "error": "malformed"}),
                                 HumanMessage(error)]}
        call = {"name": step.call.name, "arguments": step.call.arguments}
        extra["call"] = call
        if json.dumps(call, sort_keys=True, default=str) in made:
            return {"messages": [AIMessage(reply, additional_kwargs={**extra, "error": "repeated"}),
                                 HumanMessage("Error: you made this call already; use its result or answer.")]}
        if step.call.name not in table or validate_arguments(table[step.call.name], step.call.arguments):
            failed = run_tool(step.call, table)  # the same error observation run_agents shows
            return {"messages": [AIMessage(reply, additional_kwargs={**extra, "error": failed.error}),
                                 HumanMessage(failed.content)]}
        tool_call = {"name": step.call.name, "args": step.call.arguments, "id": f"call-{len(made) + 1}"}
        return {"messages": [AIMessage("", tool_calls=[tool_call], additional_kwargs=extra)]}

    return node


def chat_model_node(model: Any, tools: Sequence[Tool], system: str = AGENT_SYSTEM) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The ``agent`` node for a LangChain chat model with native tool calling (``ChatOpenAI`` on an endpoint):
    the whole conversation goes in, the model's own ``tool_calls`` come out."""
    from langchain_core.messages import SystemMessage

    bound = model.bind_tools(langchain_tools(tools))

    def node(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [bound.invoke([SystemMessage(system), *state["messages"]])]}

    return node


def react_graph(node: Callable[[dict[str, Any]], dict[str, Any]], tools: Sequence[Tool]) -> Any:
    """The ReAct loop as a compiled LangGraph graph: ``agent`` -> ``tools`` (LangGraph's ``ToolNode``) when the
    last message carries tool calls, back to ``agent`` after an ``Error:`` message, else the end."""
    from langchain_core.messages import AIMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    def route(state: dict[str, Any]) -> str:
        last = state["messages"][-1]
        if isinstance(last, AIMessage) and last.tool_calls:
            return "tools"
        return "agent" if not isinstance(last, AIMessage) else END

    g = StateGraph(MessagesState)
    g.add_node("agent", node)
    g.add_node("tools", ToolNode(langchain_tools(tools)))
    g.add_edge(START, "agent")
    g.add_conditional_edges("agent", route, {"tools": "tools", "agent": "agent", END: END})
    g.add_edge("tools", "agent")
    return g.compile()


def graph_answer(graph: Any, question: str, max_steps: int = 6) -> dict[str, Any]:
    """``question`` through ``graph``: ``answer`` (None when the step limit stopped it), ``stopped``, ``steps``
    (per agent turn: thought, call, observation, error) and ``messages``. ``max_steps`` bounds the graph's
    super-steps too (LangGraph's recursion limit), for a node that does not count its own steps."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langgraph.errors import GraphRecursionError

    from course_utils.agent import Trace

    limit = 3 * max_steps + 2  # an agent turn and a tool turn per step, the answer, and room for error turns
    stopped, state = "answer", None
    try:  # streamed, so that the messages so far survive a stop at the step limit
        for state in graph.stream({"messages": [HumanMessage(question)]}, {"recursion_limit": limit},
                                  stream_mode="values"):
            pass
    except GraphRecursionError:
        stopped = "max_steps"
    messages = list(state["messages"]) if state else []
    trace = Trace(question, stopped=stopped)
    for m in messages:
        extra = getattr(m, "additional_kwargs", None) or {}
        if isinstance(m, AIMessage) and extra.get("stopped"):
            trace.stopped = extra["stopped"]
        elif isinstance(m, AIMessage):
            call = extra.get("call") or ({"name": m.tool_calls[0]["name"], "arguments": m.tool_calls[0]["args"]}
                                         if m.tool_calls else None)
            trace.steps.append({"thought": extra.get("thought", ""), "observation": None, "call": call,
                                "error": extra.get("error"), "raw": str(m.content)})
        elif isinstance(m, (ToolMessage, HumanMessage)) and trace.steps:
            text = str(m.content)
            trace.steps[-1]["observation"] = text
            if isinstance(m, ToolMessage) and text.startswith("Error ("):  # run_tool's report
                trace.steps[-1]["error"] = text[7:].split(")")[0]
            elif isinstance(m, ToolMessage) and getattr(m, "status", "") == "error":  # ToolNode's own
                trace.steps[-1]["error"] = "tool_error"
    last = messages[-1] if messages else None
    if trace.stopped == "answer" and isinstance(last, AIMessage) and not last.tool_calls:
        trace.answer = str(last.content)
    return {**trace.to_dict(), "messages": messages}
