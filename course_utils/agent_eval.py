"""Notebook 12 (agents): measuring an agent on the tool-use tasks of :mod:`course_utils.agent_tasks`.

- :func:`step_scores`: each gold step's prompt given to a model (teacher forcing: the earlier steps are the gold
  ones), its reply read: is the call well formed, a known tool with arguments that fit its schema (``valid``),
  the gold call (``exact``), a call whose observation holds the fact the plan needs (``useful``)? Before and
  after training, on the same prompts.
- :func:`answer_tasks`: whole tasks answered four ways, one row per task: ``closed-book`` (the question alone),
  ``rag`` (the question over the retrieved passages, the course's reading prompt), ``agent`` (the ReAct loop,
  :func:`course_utils.agent.run_agents`) and ``team`` (:func:`course_utils.agent_team.run_team`).
- :func:`success_table`: success per system and kind with 95% bootstrap intervals, steps, tool-call errors and
  seconds per task; :func:`failure_modes`: why the agent's failures failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from course_utils.agent import parse_step, run_agents
from course_utils.agent_tasks import KINDS, score_answer, split_plan

__all__ = ["Generate", "answer_tasks", "failure_modes", "generator", "step_scores", "success_table"]

Generate = Callable[[list[list[dict[str, str]]]], list[str]]


def generator(llm) -> Generate:
    """A function from conversations to replies over :func:`course_utils.rag_chain.load_llm`'s pipeline (or a
    LangChain chat model): what :func:`course_utils.agent.run_agents` calls at each step."""
    from course_utils.rag_chain import chat_replies

    return lambda conversations: chat_replies(llm, conversations) if conversations else []


def step_scores(generate: Generate, records: Sequence[Mapping[str, Any]], tasks: Sequence[Mapping[str, Any]],
                tools) -> Any:
    """One row per gold step (:func:`course_utils.agent.agent_step_records` of ``tasks``): the model's reply to
    the step's prompt, and for call steps ``valid`` / ``exact`` / ``useful`` (:func:`course_utils.agent.call_matches`),
    ``malformed`` (the step cannot be read at all, or its call cannot); for the answer steps ``right``."""
    import pandas as pd

    from course_utils.agent import call_matches

    by_id = {t["id"]: t for t in tasks}
    replies = generate([list(r["messages"][:-1]) for r in records])
    rows = []
    for r, reply in zip(records, replies):
        task_id, n = r["id"].split("-", 1)[1].rsplit("-", 1)
        task = by_id[task_id]
        calls, _ = split_plan(task)
        step = parse_step(reply, tools)
        row = {"task": task_id, "kind": task["kind"], "step": int(n), "reply": reply,
               "malformed": step.error is not None}
        if int(n) < len(calls):
            row.update(call_matches(step.call, calls[int(n)], tools), part="call")
        else:
            row.update(part="answer", right=step.answer is not None and score_answer(step.answer, task))
        rows.append(row)
    return pd.DataFrame(rows)


def answer_tasks(tasks: Sequence[Mapping[str, Any]], system: str, generate: Generate, *, tools=None, index=None,
                 k: int = 2, tokenizer=None, context: int = 256, max_steps: int = 6) -> Any:
    """One row per task: ``reply``, ``right`` (:func:`course_utils.agent_tasks.score_answer`), ``steps``,
    ``calls``, ``errors`` (tool-call errors), ``stopped`` and ``seconds`` (the batch's time, shared out).
    ``system``: ``"closed-book"``, ``"rag"`` (needs ``index`` and ``tokenizer``: passages that fit ``context``)
    ``"agent"`` (needs ``tools``; ``max_steps`` per question) or ``"team"`` (the planner, researcher and writer of
    :func:`course_utils.agent_team.run_team`; ``max_steps`` per sub-question)."""
    import pandas as pd

    questions = [t["question"] for t in tasks]
    t0 = time.perf_counter()
    extra: list[dict[str, Any]] = [{} for _ in tasks]
    if system == "closed-book":
        replies = generate([[{"role": "user", "content": q}] for q in questions])
    elif system == "rag":
        from course_utils.generation import fit_passages
        from course_utils.supervised import READ_PROMPT

        if index is None or tokenizer is None:
            raise ValueError("answer_tasks(system='rag') needs index= and tokenizer=.")
        prompts = []
        for q in questions:
            passages = fit_passages([h["text"] for h in index.search(q, k=k)], q, tokenizer, context)
            prompts.append([{"role": "user", "content": READ_PROMPT.format(context=" ".join(passages), question=q)}])
        replies = generate(prompts)
    elif system == "agent":
        if tools is None:
            raise ValueError("answer_tasks(system='agent') needs tools=.")
        traces = run_agents(generate, questions, tools, max_steps=max_steps)
        replies = [tr.answer or "" for tr in traces]
        extra = [{"steps": len(tr.steps), "calls": tr.calls, "errors": sum(tr.errors.values()),
                  "error_kinds": tr.errors, "stopped": tr.stopped, "trace": tr.to_dict()} for tr in traces]
    elif system == "team":
        from course_utils.agent_team import run_team

        if tools is None:
            raise ValueError("answer_tasks(system='team') needs tools=.")
        outs = run_team(generate, questions, tools, max_steps=max_steps)
        replies = [o["answer"] for o in outs]
        extra = [{"steps": o["steps"], "calls": o["calls"], "errors": sum(o["errors"].values()),
                  "error_kinds": o["errors"], "stopped": "answer" if o["plan_ok"] else "bad plan",
                  "trace": o} for o in outs]
    else:
        raise ValueError(f"Unknown system {system!r}: closed-book, rag, agent or team.")
    seconds = (time.perf_counter() - t0) / max(1, len(tasks))
    rows = []
    for t, reply, more in zip(tasks, replies, extra):
        rows.append({"id": t["id"], "kind": t["kind"], "seen": t["seen"], "system": system, "reply": reply,
                     "right": score_answer(reply, t), "steps": more.get("steps", 1), "calls": more.get("calls", 0),
                     "errors": more.get("errors", 0), "stopped": more.get("stopped", "answer"), "seconds": seconds,
                     **({"error_kinds": more["error_kinds"], "trace": more["trace"]} if more else {})})
    return pd.DataFrame(rows)


def success_table(results: Sequence[Any], kinds: Sequence[str] = KINDS) -> Any:
    """Rows ``system x (each kind, all)``: ``success`` with its 95% bootstrap interval (``low``, ``high``),
    ``n``, mean ``steps``, ``calls`` and tool-call ``errors`` per task, ``seconds`` per task."""
    import pandas as pd

    from course_utils.scores import bootstrap_ci

    df = pd.concat(list(results), ignore_index=True)
    rows = []
    for system, part in df.groupby("system", sort=False):
        for kind in list(kinds) + ["all"]:
            sub = part if kind == "all" else part[part["kind"] == kind]
            if sub.empty:
                continue
            est, lo, hi = bootstrap_ci(sub["right"].astype(float).tolist())
            rows.append({"system": system, "kind": kind, "success": est, "low": lo, "high": hi, "n": len(sub),
                         "steps": sub["steps"].mean(), "calls": sub["calls"].mean(),
                         "errors": sub["errors"].mean(), "seconds": sub["seconds"].mean()})
    return pd.DataFrame(rows)


def failure_modes(result: Any, tasks: Sequence[Mapping[str, Any]]) -> Any:
    """The agent's (or the team's) failed tasks by cause, the first that applies: ``unreadable plan`` (the team's
    planner), ``no answer`` (stopped at the step limit),
    ``malformed steps``, ``tool errors`` (a call failed), ``missed the fact`` (no observation held what the
    plan expects), ``wrong answer`` (the facts were seen, the answer is wrong). A Series: cause -> count."""
    import pandas as pd

    by_id = {t["id"]: t for t in tasks}
    causes = []
    for _, row in result[~result["right"]].iterrows():
        trace, task = row["trace"], by_id[row["id"]]
        kinds = row["error_kinds"] or {}
        steps = [s for r in trace["research"] for s in r["steps"]] if "research" in trace else trace["steps"]
        seen = " ".join(s.get("observation") or "" for s in steps)
        needed = [x for s in split_plan(task)[0] for x in s.get("expect", [])]
        if row["stopped"] == "bad plan":
            causes.append("unreadable plan")
        elif row["stopped"] != "answer":
            causes.append("no answer")
        elif kinds.get("malformed") or kinds.get("repeated"):
            causes.append("malformed steps")
        elif any(k not in ("malformed", "repeated") for k in kinds):
            causes.append("tool errors")
        elif not all(x in seen for x in needed):
            causes.append("missed the fact")
        else:
            causes.append("wrong answer")
    order = ["unreadable plan", "no answer", "malformed steps", "tool errors", "missed the fact", "wrong answer"]
    return pd.Series(causes, dtype=object).value_counts().reindex(order, fill_value=0)
