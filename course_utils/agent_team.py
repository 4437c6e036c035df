"""Notebook 12 (agents): a multi-agent hand-off — a planner, a researcher and a writer — over the same model.

- **Planner** (:data:`PLANNER_SYSTEM`): splits the question into sub-questions, ``Plan:`` then one per line (a
  newline after ``?`` is one token of the course tokenizer, a ``|`` is a rare one); a later one
  may name an earlier one's finding as ``[1]`` (``Which guild did [1] belong to?``, ``Compute [1] + [2].``).
- **Researcher**: the ReAct agent of :mod:`course_utils.agent` on one sub-question at a time, starting from the
  notes of the earlier ones (so it can write ``[1]`` out); it ends a sub-question with ``Answer: <the finding>``.
- **Writer** (:data:`WRITER_SYSTEM`): the question and every note, no tools: the answer, citing the notes' ids.

:func:`team_records` writes the planner's, the researcher's and the writer's SFT conversations from the gold
plans; :func:`run_team` runs the three for a batch of questions. Roles differ only by their system prompt and
their input, so one LoRA adapter learns all three with the single agent (:mod:`course_utils.agent_model`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from course_utils.agent import (AGENT_SYSTEM, Trace, format_compact_call, format_step, note_from_call, run_agents,
                                step_messages)
from course_utils.agent_tasks import split_plan
from course_utils.tools import Tool, ToolCall, run_tool

__all__ = ["PLANNER_SYSTEM", "WRITER_SYSTEM", "parse_plan", "planner_messages", "run_team", "sub_questions",
           "team_records", "writer_messages"]

PLANNER_SYSTEM = "You are the planner: split the question into the steps a researcher answers one by one."
WRITER_SYSTEM = "You are the writer: answer the question from the notes, citing their ids."
MAX_SUBQUESTIONS = 4


def sub_questions(task: Mapping[str, Any]) -> list[str]:
    """The gold plan of ``task`` as sub-questions: a lookup's query, a calculation as ``Compute <expression>.``,
    with what an earlier step found written ``[n]``; a task of one call is its own question."""
    calls, _ = split_plan(task)
    if len(calls) < 2:
        return [task["question"]]
    out = []
    for i, step in enumerate(calls):
        args = step["arguments"]
        text = args["query"] if "query" in args else f"Compute {args['expression']}." if "expression" in args \
            else task["question"]
        for j in range(i):
            for found in calls[j].get("expect", [])[:1]:
                text = text.replace(found, f"[{j + 1}]")
        out.append(text)
    return out


def planner_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": PLANNER_SYSTEM}, {"role": "user", "content": f"Question: {question}"}]


def writer_messages(question: str, notes: Sequence[str]) -> list[dict[str, str]]:
    return [{"role": "system", "content": WRITER_SYSTEM},
            {"role": "user", "content": f"Question: {question}\nNotes: {' '.join(notes)}"}]


def parse_plan(text: str, question: str) -> tuple[list[str], bool]:
    """The sub-questions of ``Plan:`` and one per line (``|`` separates them too), and whether the plan could be
    read (if not: the question itself, so that the researcher still works on it)."""
    m = re.match(r"^\s*Plan:\s*(.+?)\s*$", text or "", re.S)
    parts = [p.strip() for p in re.split(r"\n|\|", m.group(1)) if p.strip()] if m else []
    if not parts:
        return [question], False
    return parts[:MAX_SUBQUESTIONS], True


def team_records(tasks: Sequence[Mapping[str, Any]], tools: Sequence[Tool], *, id_prefix: str = "team"
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """SFT conversations of the three roles: the plan; per sub-question the researcher's call (from the notes so
    far) and its finding (``Thought: <note>`` then ``Answer: <the fact>``); the writer's answer with citations.
    A task of one call is planned as itself, and its research is the single agent's
    (:func:`~course_utils.agent.agent_step_records`), so only its plan and its writing are added. Tasks whose lookups miss the fact are skipped (second list)."""
    table = {t.name: t for t in tools}
    records, skipped = [], []
    for task in tasks:
        calls, answer = split_plan(task)
        subs, notes, convs = sub_questions(task), [], []
        alone = len(calls) < 2  # its research is the single agent's: agent_step_records teaches it
        convs.append((planner_messages(task["question"]), "Plan:\n" + "\n".join(subs)))
        ok = True
        for sub, step in zip(subs, calls):
            call = ToolCall(step["tool"], dict(step["arguments"]))
            if not alone:
                convs.append((step_messages(sub, notes), format_step("", format_compact_call(
                    call.name, call.arguments, table.get(call.name)))))
            obs = run_tool(call, table)
            if not obs.ok or any(x not in obs.content for x in step.get("expect", [])):
                ok = False
                break
            note = note_from_call(step, obs.content)
            found = (step.get("expect") or [obs.content.strip()])[0]
            if not alone:
                convs.append((step_messages(sub, notes, obs.content), format_step(note, answer=found)))
            notes.append(note)
        if not ok:
            skipped.append(task["id"])
            continue
        cites = [n.split("]")[0][1:] for n in notes if n.startswith("[")]
        final = answer
        if cites:
            sources = " ".join(f"[{c}]" for c in dict.fromkeys(cites))
            final = f"{answer[:-1]} {sources}." if answer.endswith(".") else f"{answer} {sources}"
        convs.append((writer_messages(task["question"], notes), final))
        for n, (prompt, target) in enumerate(convs):
            role = "plan" if n == 0 else "write" if n == len(convs) - 1 else "research"
            records.append({"id": f"{id_prefix}-{task['id']}-{n}", "kind": "agent_team", "task": f"{task['kind']}:{role}",
                            "messages": prompt + [{"role": "assistant", "content": target}]})
    return records, skipped


def run_team(generate: Callable[[list[list[dict[str, str]]]], list[str]], questions: Sequence[str],
             tools: Sequence[Tool], *, max_steps: int = 4, system: str = AGENT_SYSTEM) -> list[dict[str, Any]]:
    """The hand-off for a batch of questions: the planner's plans (one generation), then sub-question by
    sub-question the researcher (:func:`course_utils.agent.run_agents`, ``max_steps`` each, starting from the
    notes so far), then the writer (one generation). Per question: ``answer``, ``plan``, ``plan_ok``,
    ``research`` (the researcher's traces), ``notes``, ``steps`` (model calls: plan + research + writer),
    ``calls``, ``errors`` (tool-call errors by kind) and ``seconds``."""
    t0 = time.perf_counter()
    plans = [parse_plan(text, q) for text, q in zip(generate([planner_messages(q) for q in questions]), questions)]
    notes: list[list[str]] = [[] for _ in questions]
    research: list[list[Trace]] = [[] for _ in questions]
    for depth in range(max(len(p) for p, _ in plans) if plans else 0):
        todo = [i for i, (p, _) in enumerate(plans) if depth < len(p)]
        traces = run_agents(generate, [plans[i][0][depth] for i in todo], tools, max_steps=max_steps,
                            system=system, notes=[notes[i] for i in todo])
        for i, tr in zip(todo, traces):
            research[i].append(tr)
            notes[i] = list(tr.notes)
    answers = generate([writer_messages(q, n) for q, n in zip(questions, notes)])
    seconds = (time.perf_counter() - t0) / max(1, len(questions))
    out = []
    for i, q in enumerate(questions):
        errors: dict[str, int] = {}
        for tr in research[i]:
            for k, v in tr.errors.items():
                errors[k] = errors.get(k, 0) + v
        out.append({"question": q, "answer": answers[i].strip(), "plan": plans[i][0], "plan_ok": plans[i][1],
                    "research": [tr.to_dict() for tr in research[i]], "notes": notes[i],
                    "steps": 2 + sum(len(tr.steps) for tr in research[i]),
                    "calls": sum(tr.calls for tr in research[i]), "errors": errors, "seconds": seconds})
    return out
