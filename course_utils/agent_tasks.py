"""Notebook 12 (agents): tool-use tasks generated from the world, their gold traces, SFT conversations, scores.

- **Tasks** (:func:`build_agent_tasks`): four kinds of questions with gold answers, each needing the tools of
  :mod:`course_utils.tools`: ``arithmetic`` (two facts looked up, then the calculator), ``multi_hop`` (a lookup
  whose answer names the subject of a second lookup), ``date`` (ages and spans with the date calculator) and
  ``legal`` (the legal-code lookup). Seen and unseen entities are mixed (the facts of unseen ones are only in the
  document store, so only a lookup finds them).
- **Splits that share no entity**: every entity, article and case goes to ``"train"`` or ``"eval"`` by a hash of
  its id (:func:`entity_split`, 80/20), and a task belongs to a split only when all the entities it is about are
  in it: an agent trained on the train tasks never read an eval task's facts in its training data.
- **Plans**: a task's ``plan`` is its gold trace, the tool calls ``{"tool", "arguments", "expect"}`` (``expect``:
  what the observation must contain) and a last ``{"answer": sentence}``; :func:`gold_conversation` runs the
  calls and writes the chat messages an SFT set is made of; :func:`score_answer` marks a reply.
- :class:`OracleIndex` stands in for the retrieval index (``search`` finds the page of the entity a query names):
  tests, and traces that should not depend on retrieval errors, use it without loading an embedder.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from course_utils.corpus import PHRASES, QUESTIONS, a_craft, attributes, fact_sentence, ref
from course_utils.metrics import contains_answer
from course_utils.tools import (DEFAULT_SYSTEM, Observation, Tool, ToolCall, assistant_message, format_tool_call,
                                render_prompt, run_tool, tools_system_prompt)
from course_utils.world import CRAFTS, Entity, World

__all__ = ["EVAL_PERCENT", "KINDS", "SPLITS", "OracleIndex", "build_agent_tasks", "entity_split",
           "gold_conversation", "render_gold", "score_answer", "split_plan"]

KINDS = ("arithmetic", "multi_hop", "date", "legal")
SPLITS = ("train", "eval")
EVAL_PERCENT = 20  # share of entities (and so of tasks' subjects) kept for the evaluation split, in percent

#: First hops of a multi-hop question: (kind, pointer attribute) -> how the question names the entity it reaches.
_VIA = {("person", "born_in"): "the town where {s} was born", ("person", "guild"): "the guild of {s}",
        ("guild", "seat"): "the town where {s} has its seat", ("guild", "founder"): "the founder of {s}",
        ("festival", "town"): "the town where {s} is held", ("festival", "founder"): "the person who started {s}",
        ("event", "town"): "the town where {s} took place", ("event", "leader"): "the person who led {s}",
        ("town", "river"): "the river that flows through {s}", ("river", "source"): "the mountain where {s} rises"}
#: Second hops: (kind, attribute) -> the question, about the entity the first hop reached.
_ASK = {("town", "region"): "In which province is {np}?", ("town", "river"): "Which river flows through {np}?",
        ("town", "population"): "How many people live in {np}?", ("town", "founded"): "In what year was {np} founded?",
        ("person", "born_in"): "In which town was {np} born?", ("person", "birth_year"): "In what year was {np} born?",
        ("person", "guild"): "Which guild did {np} belong to?", ("person", "craft"): "What was the craft of {np}?",
        ("guild", "seat"): "In which town does {np} have its seat?",
        ("guild", "founded"): "In what year was {np} founded?",
        ("river", "length_km"): "How long is {np}, in kilometres?",
        ("river", "source"): "On which mountain does {np} rise?",
        ("mountain", "height_m"): "How high is {np}, in metres?", ("mountain", "region"): "In which province is {np}?"}
#: Arithmetic over two facts of the same kind: (kind, attribute, operator) -> question and answer sentence.
_ARITH = {("town", "population", "+"): ("What is the population of {a} plus that of {b}?",
                                        "{a} and {b} have {r} people together."),
          ("town", "population", "-"): ("How many more people live in {a} than in {b}?",
                                        "{a} has {r} more people than {b}."),
          ("mountain", "height_m", "-"): ("How many metres higher is {a} than {b}?",
                                          "{A} is {r} metres higher than {b}."),
          ("river", "length_km", "+"): ("What is the total length of {a} and {b}, in kilometres?",
                                        "{A} and {b} are {r} kilometres long together."),
          ("river", "length_km", "-"): ("How many kilometres longer is {a} than {b}?",
                                        "{A} is {r} kilometres longer than {b}.")}
#: How a date question names the year of an entity of each dated kind.
_WHEN = {"person": "the birth of {s}", "town": "the founding of {s}", "guild": "the founding of {s}",
         "festival": "the first {bare}", "event": "{s}"}
_YEAR = {"person": "birth_year", "town": "founded", "guild": "founded", "festival": "first_held", "event": "year"}
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def entity_split(entity_id: str, eval_percent: int = EVAL_PERCENT) -> str:
    """``"eval"`` for about ``eval_percent`` % of ids (a hash of the id, the same on every machine), else
    ``"train"``: entities, articles (``"article-07"``) and cases (``"precedent-017"``) alike."""
    digest = hashlib.sha256(f"agent-tasks:{entity_id}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % 100 < eval_percent else "train"


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _value(world: World, e: Entity, attr: str) -> tuple[str, list[str]]:
    """A fact's value as an observation must contain it, and the answers that accept it."""
    if attr + "_id" in e.attrs:
        target = world.get(e.attrs[attr + "_id"])
        return target.name, [target.name, *target.aliases]
    return str(e.attrs[attr]), [str(e.attrs[attr])]


def _lookup(e: Entity, attr: str, expect: str) -> dict[str, Any]:
    """A world_lookup step: the evaluation set's first phrasing of the question about ``e``'s ``attr``."""
    return {"tool": "world_lookup", "arguments": {"query": QUESTIONS[(e.kind, attr)][0].format(s=ref(e))},
            "expect": [expect]}


def _task(template: str, question: str, answers: list[str], about: list[str], touched: list[str],
          plan: list[dict[str, Any]]) -> dict[str, Any]:
    return {"template": template, "question": question, "answers": answers, "about": about,
            "touched": about + touched, "plan": plan}


# ----------------------------------------------------------------------------- the four kinds

def _arithmetic(world: World, inside: Callable[[str], bool], rng: random.Random) -> Iterable[dict[str, Any]]:
    for (kind, attr, op), (ask, say) in _ARITH.items():
        items = [e for e in world.of_kind(kind) if inside(e.id)]
        for i, first in enumerate(items):
            for second in items[i + 1:]:
                if op == "-" and first.attrs[attr] == second.attrs[attr]:
                    continue
                swap = first.attrs[attr] < second.attrs[attr] if op == "-" else rng.random() < 0.5
                a, b = (second, first) if swap else (first, second)
                x, y = a.attrs[attr], b.attrs[attr]
                r = str(x + y if op == "+" else x - y)
                expression = f"{x} {op} {y}"
                plan = [_lookup(a, attr, str(x)), _lookup(b, attr, str(y)),
                        {"tool": "calculator", "arguments": {"expression": expression}, "expect": [r]},
                        {"answer": say.format(a=ref(a), A=ref(a, start=True), b=ref(b), r=r)}]
                yield _task(f"{kind}.{attr}{op}", ask.format(a=ref(a), b=ref(b)), [r], [a.id, b.id], [], plan)


def _multi_hop(world: World, inside: Callable[[str], bool], rng: random.Random) -> Iterable[dict[str, Any]]:
    for e in world.entities:
        if not inside(e.id):
            continue
        for (kind, first), via in _VIA.items():
            if kind != e.kind:
                continue
            hop = world.get(e.attrs[first + "_id"])
            if not inside(hop.id):
                continue
            for (hop_kind, second), ask in _ASK.items():
                if hop_kind != hop.kind or hop.attrs.get(second + "_id") == e.id:  # no answer that is the subject
                    continue
                expect, answers = _value(world, hop, second)
                target = [hop.attrs[second + "_id"]] if second + "_id" in hop.attrs else []
                answer = " ".join(fact_sentence(world, x, a, canonical=True) for x, a in ((e, first), (hop, second)))
                plan = [_lookup(e, first, hop.name), _lookup(hop, second, expect), {"answer": answer}]
                yield _task(f"{kind}.{first}>{second}", ask.format(np=via.format(s=ref(e))), answers,
                            [e.id, hop.id], target, plan)


def _date(world: World, inside: Callable[[str], bool], rng: random.Random) -> Iterable[dict[str, Any]]:
    people = [p for p in world.of_kind("person") if inside(p.id)]
    for p in people:
        born = p.attrs["birth_year"]
        year = born + rng.randrange(5, 81)
        plan = [{"tool": "dates", "arguments": {"kind": "age", "person": p.name, "year": year},
                 "expect": [f"{year - born} years old"]},
                {"answer": f"In {year}, {p.name} was {year - born} years old."}]
        yield _task("age", f"How old was {p.name} in {year}?", [str(year - born)], [p.id], [], plan)
    events = [e for e in world.of_kind("event") if inside(e.id)]
    for p in people:
        for ev in events:
            age = ev.attrs["year"] - p.attrs["birth_year"]
            if 5 <= age <= 90:
                plan = [{"tool": "dates", "arguments": {"kind": "years_between", "start": p.name,
                                                                  "end": ev.name}, "expect": [f"{age} years"]},
                        {"answer": f"{p.name} was {age} years old at the time of {ref(ev)}."}]
                yield _task("age_at_event", f"How old was {p.name} when {ref(ev)} took place?", [str(age)],
                            [p.id, ev.id], [], plan)
    for first, then in (("guild", "person"), ("town", "event"), ("festival", "event"), ("town", "guild")):
        for a in (e for e in world.of_kind(first) if inside(e.id)):
            for b in (e for e in world.of_kind(then) if inside(e.id)):
                span = abs(b.attrs[_YEAR[then]] - a.attrs[_YEAR[first]])
                if span == 0:
                    continue
                when_a = _WHEN[first].format(s=ref(a), bare=a.name)
                when_b = _WHEN[then].format(s=ref(b), bare=b.name)
                plan = [{"tool": "dates", "arguments": {"kind": "years_between", "start": a.name,
                                                                  "end": b.name}, "expect": [f"{span} years"]},
                        {"answer": f"{span} years passed between {when_a} and {when_b}."}]
                yield _task(f"span.{first}-{then}", f"How many years passed between {when_a} and {when_b}?",
                            [str(span)], [a.id, b.id], [], plan)


def _legal(world: World, inside: Callable[[str], bool], rng: random.Random) -> Iterable[dict[str, Any]]:
    towns = [t for t in world.of_kind("town", seen=True) if inside(t.id)]
    for a in (a for a in world.articles if inside(a.id)):
        lead = world.leading_case(a.number)
        says = f"{a.label} ({a.title}): {a.duty}"
        by_number = {"tool": "legal_lookup", "arguments": {"number": a.number}, "expect": [says]}
        for town in rng.sample(towns, min(2, len(towns))):  # the scenario names a town and a craft of the split
            plan = [{"tool": "legal_lookup", "arguments": {"keywords": a.breach}, "expect": [says]},
                    {"answer": f"{says}."}]
            yield _task("scenario", f"{_cap(a_craft(rng.choice(CRAFTS)))} of {town.name} {a.breach}. Which article "
                        "of the legal code applies?", [a.label], [a.id, town.id], [], plan)
        yield _task("says", f"What does {a.label} of the legal code of Valdmark say?", [a.duty, a.title], [a.id], [],
                    [by_number, {"answer": f"{says}."}])
        if lead is not None:
            yield _task("leading_case", f"What is the leading case on {a.label} of the legal code?", [lead.name],
                        [a.id], [lead.id], [{**by_number, "expect": [f"Leading case: {lead.name} ({lead.year})"]},
                                            {"answer": f"The leading case on {a.label} is {lead.name} ({lead.year})."}])
    for p in (p for p in world.precedents if inside(p.id)):
        court = world.get(p.court_town_id)
        labels = [world.article(n).label for n in p.articles]
        decided = f"{p.name}, decided in {p.year} by the court of {court.name}"
        step = {"tool": "legal_lookup", "arguments": {"case": p.name}, "expect": [decided]}
        answers = [" and ".join(labels), ", ".join(labels)] + ([f"Articles {p.articles[0]} and {p.articles[1]}"]
                                                               if len(labels) == 2 else [])
        yield _task("case_articles", f"Which articles of the legal code did the court apply in {p.name}?",
                    list(dict.fromkeys(answers)), [p.id], [], [{**step, "expect": [decided, ", ".join(labels)]},
                    {"answer": f"The court applied {' and '.join(labels)} in {p.name}."}])
        yield _task("case_year", f"In what year was {p.name} decided?", [str(p.year)], [p.id], [],
                    [step, {"answer": f"{p.name} was decided in {p.year}."}])
        yield _task("case_court", f"Which town's court decided {p.name}?", [court.name], [p.id], [court.id],
                    [step, {"answer": f"The court of {court.name} decided {p.name}."}])


_MAKERS = {"arithmetic": _arithmetic, "multi_hop": _multi_hop, "date": _date, "legal": _legal}


def _round_robin(pool: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Up to ``n`` of ``pool``, taking one of each template in turn (so that no template floods a kind)."""
    by_template: dict[str, list[dict[str, Any]]] = {}
    for task in pool:
        by_template.setdefault(task["template"], []).append(task)
    for tasks in by_template.values():
        rng.shuffle(tasks)
    out: list[dict[str, Any]] = []
    while len(out) < n and any(by_template.values()):
        for name in sorted(by_template):
            if by_template[name] and len(out) < n:
                out.append(by_template[name].pop())
    return out


def build_agent_tasks(world: World, n_per_kind: int, seed: int, split: str,
                      unseen_share: float = 0.5, eval_percent: int = EVAL_PERCENT) -> list[dict[str, Any]]:
    """``n_per_kind`` tasks of each kind in :data:`KINDS` for ``split`` (``"train"`` or ``"eval"``), drawn with
    ``seed``: the same arguments always give the same tasks.

    Each task is ``{"id", "kind", "template", "question", "answers", "entities", "seen", "split", "plan"}``:
    ``answers`` the accepted gold strings (a number as digits, a name and its short form), ``entities`` the names
    of what the task is about (the subjects named in the question and the entities whose facts a lookup reads;
    a province or a case that is only the answer is not among them, as a year is not), ``seen`` whether all the
    entities it touches (answer ones included) are in the training text, ``plan`` the gold trace (see
    :func:`split_plan`). A task is in ``split`` only when every entity it is about is (:func:`entity_split`).
    About ``unseen_share`` of each kind touches an unseen entity, templates of a kind take turns; a kind with
    fewer candidates than ``n_per_kind`` gives all it has (the course world gives ``eval`` 40 of each kind).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}.")
    if n_per_kind < 0:
        raise ValueError(f"n_per_kind must be 0 or more, not {n_per_kind}.")
    names = {e.id: (e.name, e.seen) for e in world.entities}
    names.update({a.id: (a.label, True) for a in world.articles})
    names.update({p.id: (p.name, p.seen) for p in world.precedents})

    def inside(entity_id: str) -> bool:
        return entity_split(entity_id, eval_percent) == split

    out: list[dict[str, Any]] = []
    for kind in KINDS:
        rng = random.Random(f"agent-tasks:{seed}:{split}:{kind}")
        candidates, questions = [], set()
        for task in _MAKERS[kind](world, inside, rng):
            if task["question"] not in questions:
                questions.add(task["question"])
                candidates.append({**task, "seen": all(names[i][1] for i in task["touched"])})
        unseen = [t for t in candidates if not t["seen"]]
        chosen = _round_robin(unseen, round(n_per_kind * unseen_share), rng)
        chosen += _round_robin([t for t in candidates if t["seen"]], n_per_kind - len(chosen), rng)
        if len(chosen) < n_per_kind:  # too few seen ones: more unseen
            taken = {id(t) for t in chosen}
            chosen += _round_robin([t for t in unseen if id(t) not in taken], n_per_kind - len(chosen), rng)
        rng.shuffle(chosen)
        for i, t in enumerate(chosen):
            out.append({"id": f"agent-{split}-{kind}-{i:03d}", "kind": kind, "template": t["template"],
                        "question": t["question"], "answers": t["answers"],
                        "entities": [names[x][0] for x in t["about"]], "seen": t["seen"], "split": split,
                        "plan": t["plan"]})
    return out


# ----------------------------------------------------------------------------- gold traces and scores

def split_plan(task: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A task's plan as ``(calls, answer)``: the tool steps ``{"tool", "arguments", "expect"}`` in order, and
    the final answer sentence (without citations)."""
    steps = list(task["plan"])
    if not steps or "answer" not in steps[-1]:
        raise ValueError(f"Task {task.get('id')}: a plan ends with {{'answer': ...}}.")
    return steps[:-1], steps[-1]["answer"]


def _cited(content: str, expect: Sequence[str]) -> str | None:
    """The id of the passage of a world_lookup observation (lines ``[id] text``) that holds the expected
    fact, else of the first passage."""
    passages = re.findall(r"^\[([^\]]+)\] (.*)$", content, flags=re.M)
    for pid, text in passages:
        if all(x in text for x in expect):
            return pid
    return passages[0][0] if passages else None


def gold_conversation(task: Mapping[str, Any], tools: Sequence[Tool],
                      run: Callable[[ToolCall], Observation] | None = None, base: str = DEFAULT_SYSTEM,
                      strict: bool = True) -> list[dict[str, Any]]:
    """The plan of ``task`` as chat messages for SFT: a system prompt (:func:`tools_system_prompt` with
    ``brief=True``), the question, then per call an assistant message with ``tool_calls`` (as
    :func:`~course_utils.tools.assistant_message` writes it) and the ``"tool"`` message of its observation,
    and the answer, citing ``[chunk id]`` of each passage a lookup used. Observations come from ``run(call)``
    (default :func:`run_tool` over ``tools``). ``strict``: a failed call, or an observation without the fact
    the plan expects (a retriever that missed the page, a passage cut before the fact), raises ``ValueError``
    naming the task and the step, so that a data set built over a real index can skip that task."""
    run = run or (lambda call: run_tool(call, tools))
    calls, answer = split_plan(task)
    messages: list[dict[str, Any]] = [{"role": "system", "content": tools_system_prompt(tools, base, brief=True)},
                                      {"role": "user", "content": task["question"]}]
    cites: list[str] = []
    for n, step in enumerate(calls, 1):
        messages.append(assistant_message(format_tool_call(step["tool"], step["arguments"])))
        obs = run(ToolCall(step["tool"], dict(step["arguments"])))
        missing = [x for x in step.get("expect", []) if x not in obs.content]
        if strict and (not obs.ok or missing):
            why = obs.content[:120] if not obs.ok else f"it lacks {missing[0]!r}"
            raise ValueError(f"Task {task.get('id')}, step {n} ({step['tool']}): {why}.")
        messages.append(obs.message())
        if step["tool"] == "world_lookup" and obs.ok:
            cites.append(_cited(obs.content, step.get("expect", [])) or "")
    sources = " ".join(f"[{c}]" for c in dict.fromkeys(c for c in cites if c))
    if sources:
        answer = f"{answer[:-1]} {sources}." if answer.endswith(".") else f"{answer} {sources}"
    messages.append({"role": "assistant", "content": answer})
    return messages


def render_gold(tokenizer, messages: Sequence[Mapping[str, Any]], tools: Sequence[Tool]) -> str:
    """A :func:`gold_conversation` as training text through :func:`~course_utils.tools.render_prompt`, with the
    tools line once (``render_prompt`` treats a system message as the base it adds the tools line to)."""
    rest = list(messages)
    base = DEFAULT_SYSTEM
    if rest and rest[0].get("role") == "system":
        base = (rest.pop(0).get("content") or DEFAULT_SYSTEM).rsplit("\nTools: ", 1)[0]
    return render_prompt(tokenizer, rest, tools, add_generation_prompt=False, base=base, brief=True)


def _numbers(text: str) -> set[float]:
    return {float(m.rstrip(",").replace(",", "")) for m in _NUMBER.findall(text) if m.rstrip(",")}


def score_answer(reply: str, task: Mapping[str, Any]) -> bool:
    """Whether ``reply`` gives one of ``task["answers"]``: as whole words, case and punctuation aside
    (:func:`course_utils.metrics.contains_answer`), or for a numeric answer as a number anywhere in the reply
    (``"45,640"`` and ``"45640.0"`` give 45640)."""
    answers = list(task["answers"])
    if contains_answer(reply or "", answers):
        return True
    wanted = {float(a.replace(",", "")) for a in answers if re.fullmatch(r"\d[\d,]*(?:\.\d+)?", a)}
    return bool(wanted & _numbers(reply or ""))


# ----------------------------------------------------------------------------- a stand-in for the index

class OracleIndex:
    """What :func:`~course_utils.tools.world_lookup` needs of a :class:`~course_utils.rag.RagIndex` (``search``),
    answered by name: the passages of the entity the query names (the longest name, then the earliest), up to
    ``k``. ``chunks`` are ``{"id", "text", "entity_id" or "doc_id"}`` (e.g. the real index's ``chunks.jsonl``);
    by default one passage per entity, ``[<id>#0]``, with its facts in their canonical sentences. A perfect
    retriever: for tests and gold traces, not for measuring retrieval."""

    def __init__(self, world: World, chunks: Iterable[Mapping[str, Any]] | None = None) -> None:
        if chunks is None:
            chunks = [{"id": f"{e.id}#0", "entity_id": e.id, "text": self.facts_text(world, e)}
                      for e in world.entities]
        self.pages: dict[str, list[dict[str, Any]]] = {}  # entity id -> its passages, in order
        for c in chunks:
            self.pages.setdefault(c.get("entity_id") or c["doc_id"], []).append(dict(c))
        self.by_name = {n.lower(): e.id for e in world.entities for n in [e.name, *e.aliases] if e.id in self.pages}
        words = sorted(self.by_name, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")\b", re.I) if words else None

    @staticmethod
    def facts_text(world: World, e: Entity) -> str:
        """``e``'s facts, one canonical sentence each (a province, which has none, gets one sentence)."""
        said = [fact_sentence(world, e, a, canonical=True) for a in attributes(e) if (e.kind, a) in PHRASES]
        return " ".join(said) or f"{e.name} is a province of Valdmark."

    def search(self, query: str, k: int = 5, method: str = "hybrid") -> list[dict[str, Any]]:
        found = list(self.pattern.finditer(query)) if self.pattern else []
        found.sort(key=lambda m: (-len(m.group(0)), m.start()))
        if not found:
            return []
        hits = self.pages[self.by_name[found[0].group(0).lower()]][:k]
        return [{"id": c["id"], "doc_id": c.get("doc_id", c["id"].split("#")[0]), "text": c["text"], "rank": r,
                 "score": 1.0 / r} for r, c in enumerate(hits, 1)]
