"""``course agent ask "question"``: notebook 12's agent answers with the course's tools; the answer, the trace of
calls and observations, and timings (:mod:`course_utils.agent`, :mod:`course_utils.agent_graph`)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from course_utils.cli_course import command

__all__ = ["add_agent"]


def _cmd_agent_ask(args: argparse.Namespace) -> dict[str, Any]:
    from course_utils.agent import run_agents, run_json_agent
    from course_utils.agent_model import agent_tools, load_or_build_agent_model

    if not args.question.strip():
        raise ValueError("Give a question, e.g. course agent ask \"What is the population of Dubumwas plus that "
                         "of Tumwa?\"")
    t0 = time.perf_counter()
    tools = agent_tools()
    if args.endpoint:  # a chat model with native tool calling, through the LangGraph graph
        from course_utils.agent_graph import chat_model_node, graph_answer, react_graph
        from course_utils.chains import endpoint_llm

        model = endpoint_llm(args.endpoint, args.endpoint_model, max_new_tokens=args.max_new_tokens)
        loaded = time.perf_counter()
        out = graph_answer(react_graph(chat_model_node(model, tools), tools), args.question, args.max_steps)
        out.pop("messages")
        out["convention"] = "native"
        target = args.endpoint
    else:
        from course_utils.agent_eval import generator
        from course_utils.hf import resolve_model_source
        from course_utils.rag_chain import load_llm, text_replies
        from course_utils.tools import supports_tools

        target = load_or_build_agent_model() if args.model == "agent" else resolve_model_source(args.model, "--model")
        llm = load_llm(target, max_new_tokens=args.max_new_tokens, batch_size=1)
        loaded = time.perf_counter()
        tok = llm.pipeline.tokenizer
        if supports_tools(tok):  # a hub model: the JSON convention of its own chat template, the whole trace
            out = run_json_agent(lambda prompts: text_replies(llm, prompts), tok, [args.question], tools,
                                 max_steps=args.max_steps)[0].to_dict()
            out["convention"] = "json"
        else:  # the course's models: the compact steps that fit 256 tokens
            out = run_agents(generator(llm), [args.question], tools, max_steps=args.max_steps)[0].to_dict()
            out["convention"] = "compact"
    done = time.perf_counter()
    tool_s = sum(s.get("seconds") or 0.0 for s in out["steps"])
    out.update(model=str(target), timings={"load_s": round(loaded - t0, 3), "answer_s": round(done - loaded, 3),
                                           "tools_s": round(tool_s, 4), "steps": len(out["steps"])})
    if not args.json:
        for n, s in enumerate(out["steps"], 1):
            if s.get("thought"):
                print(f"{n}. Thought: {s['thought']}")
            if s.get("call"):
                print(f"{n}. Action: {s['call']['name']} {s['call']['arguments']}")
                print(f"   Observation: {(s.get('observation') or '')[:200]}")
            elif s.get("error"):
                print(f"{n}. ({s['error']}) {s.get('raw', '')[:120]}")
        print(f"Answer: {out['answer']}" if out["answer"] is not None else f"No answer ({out['stopped']}).")
        print(f"{out['timings']['answer_s']} s ({out['timings']['tools_s']} s in tools), model {out['model']}")
        out["_quiet"] = True
    return out


def add_agent(sub: argparse._SubParsersAction) -> None:
    """Register ``course agent ask``."""
    ask = command(sub, "agent", "notebook 12's agent: `course agent ask \"question\"` answers with the course "
                                "model and its tools (lookup, calculator, dates, the legal code), printing the trace "
                                "of tool calls and the timings")
    ask.add_argument("action", choices=["ask"], help="ask: answer one question")
    ask.add_argument("question", help="the question, in quotes")
    ask.add_argument("--model", default="agent", help="agent (the course's agent adapter, the default), a "
                                                      "transformers folder or a hub id: one whose chat template "
                                                      "reads tools gets the JSON convention, others the compact "
                                                      "steps")
    ask.add_argument("--endpoint", default=None, help="an OpenAI-compatible endpoint with tool calling instead "
                                                      "(base URL); --endpoint-model names its model")
    ask.add_argument("--endpoint-model", default="course", help="the model name the endpoint expects")
    ask.add_argument("--max-steps", type=int, default=6, help="most steps before the agent stops (default: 6)")
    ask.add_argument("--max-new-tokens", type=int, default=64, help="longest step in tokens")
    ask.set_defaults(func=_cmd_agent_ask)
