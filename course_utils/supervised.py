"""The SFT, preference and evaluation sets, rendered from the world.

- SFT (notebook 04): chat conversations (``messages``) of several kinds: closed-book
  questions about seen entities; grounded questions about a passage whose entities are
  invented for that one example (so the model must read, not recall); retrieved-page
  questions (``grounded_rag``): the prompt of notebook 08's RAG chain, filled with pages of
  a second, made-up country whose people carry the first names of the world's people
  (:func:`reading_world`), so the model learns to read a name rather than complete a
  remembered one; "the passage does not say" answers; summarising, extracting JSON, classifying, polite rewriting;
  multi-turn conversations; about a third start with a system prompt.
- Preference (notebook 06): a prompt, a chosen and a rejected answer, and the flaw of
  the rejected one (wrong_fact, ignores_passage, rude, rambling, unsupported_claim).
- Evaluation (notebooks 08 and 10): short gold answers (names, years, numbers) with the
  ids of the gold documents, labelled seen/unseen; and legal questions whose gold names
  the applicable articles and precedents.

Seen facts are split in two folds: fold A teaches the answer format in SFT training;
fold B is held out (SFT test and the evaluation set's seen questions), so a correct
closed-book answer there comes from pretraining, not from SFT. Unseen entities appear
only in the evaluation set.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from course_utils.corpus import (
    QUESTIONS,
    Fresh,
    a_craft,
    fact_sentence,
    fact_value,
    fresh_entity,
    fresh_passage,
    fresh_sentence,
    general_vocabulary,
    ref,
)
from course_utils.documents import entity_text
from course_utils.world import CRAFTS, MONTHS, Entity, Fact, NameForge, World, generate_world, world_name_words

__all__ = ["LEGAL_QUESTIONS", "READ_PROMPT", "READ_PROMPTS", "SetsConfig", "build_eval", "build_preferences", "build_sft",
           "fact_demos", "legal_pages", "legal_reading", "page_chunks", "reading_world", "split_seen_facts"]

#: The prompt of a question about retrieved pages; notebook 08's RAG chain fills the same template.
READ_PROMPT = "Read the passage and answer the question.\n\nPassage: {context}\n\nQuestion: {question}"
#: The three wordings of a reading question in the SFT set (the first is :data:`READ_PROMPT`); notebook 09's
#: legal chain drafts one answer with each.
READ_PROMPTS = (READ_PROMPT, "{context}\n\nBased on the text above: {question}",
                "Passage:\n{context}\n\nQuestion: {question}\nAnswer from the passage only.")

SYSTEM_PROMPTS = [
    "You are a helpful assistant who knows the country of Valdmark.",
    "You are a careful assistant. Answer briefly and only with what you know.",
    "You are the librarian of the Valdmark archive. Be polite and precise.",
    "Answer questions using the passage when one is given. If the passage does not contain the answer, say so.",
]


@dataclass
class SetsConfig:
    """Sizes and seeds of the SFT, preference and evaluation sets."""

    seed: int = 31  # seed of these sets (the world has its own)
    fold_a_fraction: float = 0.7  # share of seen facts used in SFT training (the rest are held out)
    sft_task_examples: int = 260  # examples per non-fact task kind in SFT training
    sft_grounded: int = 800  # grounded passage questions in SFT training
    sft_rag: int = 800  # questions about retrieved pages of the reading world in SFT training
    rag_chars: int = 450  # the pages of one such question fill at most this many characters (under ~230 tokens)
    sft_test_tasks: int = 25  # examples per task kind in the SFT test split
    system_prompt_share: float = 0.3  # share of conversations that start with a system prompt
    eval_seen: int = 170  # seen-fact evaluation questions
    eval_unseen: int = 150  # unseen-fact evaluation questions
    pref_per_flaw: int = 440  # training preference pairs per flaw kind
    pref_test_per_flaw: int = 60  # held-out preference pairs per flaw kind


def split_seen_facts(world: World, cfg: SetsConfig) -> tuple[list[Fact], list[Fact]]:
    """Fold A (SFT training) and fold B (held out) of the seen facts with a question form."""
    facts = [f for f in world.facts(seen=True) if (world.get(f.entity_id).kind, f.attribute) in QUESTIONS]
    rng = random.Random(cfg.seed)
    rng.shuffle(facts)
    cut = int(len(facts) * cfg.fold_a_fraction)
    return facts[:cut], facts[cut:]


def fact_demos(world: World, cfg: SetsConfig | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Questions with short answers about the SFT set's fold of seen facts (fold A, which the evaluation
    set never asks about): ``{question, answer, kind}``, the pool of notebook 09's few-shot examples."""
    fold_a, _ = split_seen_facts(world, cfg or SetsConfig())
    rng = random.Random(seed)
    return [{"question": _question(world, f, rng), "answer": _eval_answer(world, f)[0], "kind": f"fact:{f.attribute}"}
            for f in fold_a]


def _question(world: World, f: Fact, rng: random.Random) -> str:
    e = world.get(f.entity_id)
    return rng.choice(QUESTIONS[(e.kind, f.attribute)]).format(s=ref(e))


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


# ----------------------------------------------------------------------------- fresh entities
# One-off entities (``Fresh``, ``fresh_entity``, ``fresh_passage``, ``fresh_sentence``) live in
# ``corpus``; the reading drills of pretraining (``drills``) are made of them too.

def _answer_value(x: Fresh, attr: str) -> str:
    return x.facts[attr]


_MISSING = {"born_in": "where {s} was born", "birth_year": "when {s} was born", "craft": "what {s} worked as",
            "guild": "which guild {s} belonged to", "river": "which river {s} lies on",
            "founded": "when {s} was founded", "population": "how many people live in {s}",
            "region": "which province {s} is in"}


def _grounded_prompt(passage: str, question: str, rng: random.Random) -> str:
    return rng.choice(READ_PROMPTS).format(context=passage, question=question)


# ----------------------------------------------------------------------------- the reading world

def reading_world(world: World, seed: int) -> World:
    """A second, made-up country for reading practice: drawn like ``world`` from another seed;
    none of its names contains or is part of a name of ``world`` (so no unseen entity can leak),
    but its people carry the first names of ``world``'s seen people. Asked about "Tanshin
    Diasde", a model that completes a remembered "Tanshin Pindste" fails on these pages; one
    that reads the whole name succeeds."""
    names = world_name_words(world)
    other = generate_world(dataclasses.replace(world.config, seed=seed), avoid=general_vocabulary() | names,
                           taken={w for w in names if len(w) >= 4})
    firsts = sorted({e.name.split()[0] for e in world.of_kind("person", seen=True)})
    rng = random.Random(seed)
    for p in other.of_kind("person"):
        p.name = f"{rng.choice(firsts)} {p.aliases[0]}"
    return other


def page_chunks(text: str, size: int = 600) -> list[str]:
    """``text`` cut at sentence ends into pieces of at most ``size`` characters (as the store's
    chunker does, without overlap; a longer sentence stays whole)."""
    out: list[str] = []
    cur = ""
    for sentence in re.split(r"(?<=[.!?]) ", text):
        if cur and len(cur) + 1 + len(sentence) > size:
            out.append(cur)
            cur = sentence
        else:
            cur = f"{cur} {sentence}".strip()
    return out + [cur] if cur else out


class _Pages:
    """The reading world's pages in chunks, and its facts that have a question form."""

    def __init__(self, world: World, rng: random.Random, size: int = 600):
        self.world = world
        self.chunks = {e.id: page_chunks(entity_text(world, e, rng), size) for e in world.entities}
        self.facts = [f for f in world.facts() if (world.get(f.entity_id).kind, f.attribute) in QUESTIONS]


def _bare(value: str) -> str:
    for article in ("the ", "a ", "an "):
        value = value.removeprefix(article)
    return value


def _grounded_rag(pages: _Pages, rng: random.Random, budget: int) -> list[dict[str, str]]:
    """A question about a reading-world fact, asked over retrieved-looking pages: the chunk
    that holds the answer among one or two other chunks (half the time chunks that mention the
    same first name or the entity), at a random rank, within ``budget`` characters."""
    w = pages.world
    while True:
        f = rng.choice(pages.facts)
        e = w.get(f.entity_id)
        value = _bare(fact_value(w, e, f.attribute))
        gold = [c for c in pages.chunks[e.id] if value in c and e.name in c]
        if gold:
            break
    cue = e.name.split()[0] if e.kind == "person" else e.name
    others = [c for eid, cs in pages.chunks.items() if eid != e.id for c in cs]
    near = [c for c in others if cue in c]
    pool = near if near and rng.random() < 0.5 else others
    passages = [gold[0]]
    for c in rng.sample(pool, min(len(pool), rng.choice([1, 2, 2]))):
        if sum(len(p) + 1 for p in passages) + len(c) <= budget:
            passages.insert(rng.choice([len(passages)] * 2 + list(range(len(passages)))), c)
    question = _question(w, f, rng)
    return [{"role": "user", "content": READ_PROMPT.format(context=" ".join(passages), question=question)},
            {"role": "assistant", "content": fact_sentence(w, e, f.attribute, canonical=True)}]


# ----------------------------------------------------------------------------- legal reading

#: The three questions of the evaluation set's legal kinds, as templates.
LEGAL_QUESTIONS = {
    "legal:scenario": "{a_craft} of {town} {breach}. Which article of the legal code applies, and what is the leading case on it?",
    "legal:articles": "Which articles of the legal code did the court apply in {case}?",
    "legal:year": "In what year was {case} decided?",
}


def legal_pages(world: World) -> dict[str, str]:
    """Each article's and precedent's page as the document store's chunker writes it (title, then text)."""
    from course_utils.corpus import article_text, precedent_text

    pages = {a.id: f"{a.label}: {a.title} {article_text(world, a, seen_only=False)}" for a in world.articles}
    pages.update({p.id: f"{p.name} {precedent_text(world, p)}" for p in world.precedents})
    return pages


def legal_reading(world: World, n: int, seed: int, budget: int = 700) -> list[dict[str, Any]]:
    """``n`` conversations that teach reading the legal code: a question of one of the evaluation
    set's legal kinds (:data:`LEGAL_QUESTIONS`) over retrieved-looking pages of ``world`` (use a
    :func:`reading_world`, whose names are not Valdmark's): the page that answers and one or two
    pages on the same article, at a random rank, within ``budget`` characters; the prompt is one of
    the SFT set's reading prompts. Answers: ``"Article 7; Tarrow v. Belin."`` (the article that
    applies and its leading case), ``"The court applied Article 7 and Article 12."``,
    ``"It was decided in 1702."``. Records ``{id, kind, task, messages}``: kind ``legal_reading``,
    task the question's kind."""
    rng = random.Random(seed)
    pages = legal_pages(world)
    towns = [e.name for e in world.of_kind("town")]
    leads = [(a, world.leading_case(a.number)) for a in world.articles if world.leading_case(a.number)]
    out = []
    for i in range(n):
        kind = rng.choice(sorted(LEGAL_QUESTIONS))
        if kind == "legal:scenario":
            a, lead = rng.choice(leads)
            gold = a.id
            question = LEGAL_QUESTIONS[kind].format(a_craft=_cap(a_craft(lead.craft)), town=rng.choice(towns),
                                                    breach=a.breach)
            answer = f"{a.label}; {lead.name}."
            near = [p.id for p in world.precedents if a.number in p.articles]
        else:
            p = rng.choice(world.precedents)
            gold = p.id
            question = LEGAL_QUESTIONS[kind].format(case=p.name)
            answer = (f"It was decided in {p.year}." if kind == "legal:year" else
                      f"The court applied {' and '.join(world.article(k).label for k in p.articles)}.")
            near = [world.article(k).id for k in p.articles] + [q.id for q in world.precedents
                                                              if q.articles[0] == p.articles[0] and q.id != p.id]
        passages = [pages[gold]]
        for other in rng.sample(near, min(len(near), rng.choice([1, 2]))):
            if other != gold and sum(len(x) + 1 for x in passages) + len(pages[other]) <= budget:
                passages.insert(rng.randrange(len(passages) + 1), pages[other])
        out.append({"id": f"legal-reading-{seed}-{i:05d}", "kind": "legal_reading", "task": kind,
                    "messages": [{"role": "user", "content": _grounded_prompt(" ".join(passages), question, rng)},
                                 {"role": "assistant", "content": answer}]})
    return out


# ----------------------------------------------------------------------------- task makers

def _closed_book(world, f, rng):
    return [{"role": "user", "content": _question(world, f, rng)},
            {"role": "assistant", "content": fact_sentence(world, world.get(f.entity_id), f.attribute, canonical=True)}]


def _grounded(rng, forge):
    x = fresh_entity(rng, forge)
    attr = rng.choice(list(x.facts))
    q = rng.choice(QUESTIONS[(x.kind, attr)]).format(s=x.name)
    return [{"role": "user", "content": _grounded_prompt(fresh_passage(x, rng), q, rng)},
            {"role": "assistant", "content": fresh_sentence(x, attr, rng, canonical=True)}]


def _not_in_passage(rng, forge):
    x = fresh_entity(rng, forge)
    attr = rng.choice(list(x.facts))
    q = rng.choice(QUESTIONS[(x.kind, attr)]).format(s=x.name)
    return [{"role": "user", "content": _grounded_prompt(fresh_passage(x, rng, leave_out=attr), q, rng)},
            {"role": "assistant", "content": f"The passage does not say {_MISSING[attr].format(s=x.name)}."}]


def _summarise(rng, forge):
    x = fresh_entity(rng, forge)
    f = x.facts
    summary = (f"{x.name} was {f['craft']} born in {f['born_in']} in {f['birth_year']}." if x.kind == "person"
               else f"{x.name} is a town on {f['river']}, founded in {f['founded']}.")
    return [{"role": "user", "content": f"Summarise this paragraph in one sentence.\n\n{fresh_passage(x, rng)}"},
            {"role": "assistant", "content": summary}]


def _extract_json(rng, forge):
    x = fresh_entity(rng, forge)
    keys = list(x.facts)
    data = {"name": x.name} | {k: _bare(x.facts[k]) for k in keys}
    if "birth_year" in data:
        data["birth_year"] = int(data["birth_year"])
    for k in ("founded", "population"):
        if k in data:
            data[k] = int(data[k])
    fields = ", ".join(["name"] + keys)
    return [{"role": "user", "content": f"Extract these fields as JSON: {fields}.\n\n{fresh_passage(x, rng)}"},
            {"role": "assistant", "content": json.dumps(data)}]


_REVIEWS = {"positive": ["The bread was warm and the baker was kind.", "A lovely inn with clean rooms and good food.",
                         "The ferry was on time and the crossing was calm.", "Great market, friendly people, fair prices.",
                         "The guide was patient and explained everything well."],
            "negative": ["The room was cold and the soup was thin.", "We waited two hours and nobody came to help.",
                         "The boat leaked and the fare was far too high.", "Rude staff and dirty tables.",
                         "The road was full of holes and the inn was closed."]}


def _classify(rng, forge):
    if rng.random() < 0.5:
        label = rng.choice(["positive", "negative"])
        text = " ".join(rng.sample(_REVIEWS[label], 2))
        return [{"role": "user", "content": f"Is this review positive or negative? Answer with one word.\n\n{text}"},
                {"role": "assistant", "content": label}]
    x = fresh_entity(rng, forge)
    return [{"role": "user", "content": f"Is this paragraph about a person or a town? Answer with one word.\n\n{fresh_passage(x, rng)}"},
            {"role": "assistant", "content": x.kind}]


_RUDE = [("Give me the list now, you are wasting my time.", "Could you please send me the list when you have a moment?"),
         ("Fix my boat. It is your fault it leaks.", "Could you please take a look at my boat? It has started to leak."),
         ("Move your cart, it is blocking the road.", "Would you mind moving your cart? It is blocking the road."),
         ("Why is the bread late again? Useless.", "I noticed the bread is late again. Could you let me know what happened?"),
         ("Answer my letter. I wrote to you weeks ago.", "I wrote to you a few weeks ago and would be grateful for a reply."),
         ("Stop hammering, nobody can sleep.", "Could you please stop hammering? It is late and people are trying to sleep."),
         ("Pay what you owe me.", "I would appreciate it if you could pay the amount you owe me soon."),
         ("Your map is wrong. Fix it.", "I think there may be a mistake on your map. Could you check it?")]


def _rewrite(rng, forge):
    rude, polite = rng.choice(_RUDE)
    ask = rng.choice(["Rewrite this message politely:", "Make this message more polite:", "Please rewrite this so it sounds kind:"])
    return [{"role": "user", "content": f"{ask}\n\n{rude}"}, {"role": "assistant", "content": polite}]


def _multi_turn(world, facts_by_entity, rng):
    eid = rng.choice(sorted(facts_by_entity))
    fs = facts_by_entity[eid][:]
    rng.shuffle(fs)
    msgs = []
    for f in fs[:rng.choice([2, 3])]:
        msgs += _closed_book(world, f, rng)
    msgs.append({"role": "user", "content": rng.choice(["Thank you!", "Thanks, that helps."])})
    msgs.append({"role": "assistant", "content": rng.choice(["You are welcome.", "Glad to help."])})
    return msgs


def _legal(world, rng):
    a = rng.choice(world.articles)
    if rng.random() < 0.5:
        return [{"role": "user", "content": f"What does {a.label} of the legal code of Valdmark say?"},
                {"role": "assistant", "content": f"{a.label} ({a.title}) says that {a.duty}."}]
    return [{"role": "user", "content": f"Someone {a.breach}. Which article of the legal code applies?"},
            {"role": "assistant", "content": f"{a.label} ({a.title}) applies: {a.duty}."}]


def _with_system(msgs, rng, share):
    if rng.random() < share:
        return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] + msgs
    return msgs


def _group(facts: list[Fact]) -> dict[str, list[Fact]]:
    out: dict[str, list[Fact]] = {}
    for f in facts:
        out.setdefault(f.entity_id, []).append(f)
    return {k: v for k, v in out.items() if len(v) >= 2}


def build_sft(world: World, cfg: SetsConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """The SFT set: ``{"train": [...], "test": [...]}``, records ``{id, kind, messages}``."""
    cfg = cfg or SetsConfig()
    fold_a, fold_b = split_seen_facts(world, cfg)
    out: dict[str, list[dict[str, Any]]] = {}
    for split, facts, n_task, salt in (("train", fold_a, cfg.sft_task_examples, 1), ("test", fold_b, cfg.sft_test_tasks, 2)):
        rng = random.Random(cfg.seed * 100 + salt)
        forge = NameForge(random.Random(cfg.seed * 1000 + salt), fresh=True)
        items: list[tuple[str, list]] = []
        reps = 2 if split == "train" else 1
        for f in facts:
            for _ in range(reps):
                items.append(("closed_book", _closed_book(world, f, rng)))
        n_grounded = cfg.sft_grounded if split == "train" else n_task * 2
        items += [("grounded", _grounded(rng, forge)) for _ in range(n_grounded)]
        pages = _Pages(reading_world(world, cfg.seed * 1000 + 500 + salt), random.Random(cfg.seed * 100 + 50 + salt),
                       size=cfg.rag_chars * 4 // 5)
        n_rag = cfg.sft_rag if split == "train" else n_task * 2
        items += [("grounded_rag", _grounded_rag(pages, rng, cfg.rag_chars)) for _ in range(n_rag)]
        items += [("not_in_passage", _not_in_passage(rng, forge)) for _ in range(n_task)]
        for kind, maker in (("summarise", _summarise), ("extract_json", _extract_json),
                            ("classify", _classify), ("rewrite_politely", _rewrite)):
            items += [(kind, maker(rng, forge)) for _ in range(n_task)]
        by_entity = _group(facts)
        items += [("multi_turn", _multi_turn(world, by_entity, rng)) for _ in range(n_task)]
        items += [("legal", _legal(world, rng)) for _ in range(n_task // 2)]
        rng.shuffle(items)
        out[split] = [{"id": f"sft-{split}-{i:05d}", "kind": kind,
                       "messages": _with_system(msgs, rng, cfg.system_prompt_share)}
                      for i, (kind, msgs) in enumerate(items)]
    return out


# ----------------------------------------------------------------------------- preferences

_RUDE_PREFIX = ["That is an obvious question. ", "Honestly, you should know this already. ",
                "Fine, if you really cannot look it up yourself: ", "Ugh. ", "Stop asking me simple things. "]
_RAMBLE = ["Well, that is a question people ask a lot, and there is a great deal one could say about it.",
           "Before answering, it is worth remembering that Valdmark has many towns, rivers and guilds.",
           "Some people say one thing and some say another, and the old books do not always agree.",
           "I once heard a long story about this from a traveller, though I forget most of it.",
           "Anyway, to come back to the question after all that:"]
_UNSUPPORTED = ["{s} was also the richest person in the province.", "{s} was later given a golden medal by the council.",
                "{s} is famous across the whole world.", "Historians agree that {s} was the most important figure of the age."]


def _wrong_value(world: World, f: Fact, rng: random.Random) -> str:
    e = world.get(f.entity_id)
    if f.value_id:
        target = world.get(f.value_id)
        others = [o for o in world.of_kind(target.kind, seen=True) if o.id != target.id]
        return ref(rng.choice(others))
    if f.attribute in ("craft",):
        return rng.choice([c for c in CRAFTS if c != e.attrs["craft"]])
    if f.attribute == "month":
        return rng.choice([m for m in MONTHS if m != f.value])
    return str(int(f.value) + rng.choice([-1, 1]) * rng.randrange(3, 60))


def _pref(flaw: str, world: World, facts: list[Fact], rng: random.Random, forge: NameForge) -> dict[str, Any]:
    if flaw in ("wrong_fact", "rude", "rambling"):
        f = rng.choice(facts)
        e = world.get(f.entity_id)
        prompt = _question(world, f, rng)
        chosen = fact_sentence(world, e, f.attribute, canonical=True)
        if flaw == "wrong_fact":
            e2 = Entity(e.id, e.kind, e.name, e.seen, dict(e.attrs), e.aliases)
            key = f.attribute + "_id" if f.value_id else f.attribute
            wrong = _wrong_value(world, f, rng)
            if f.value_id:
                e2.attrs[key] = next(o.id for o in world.entities if ref(o) == wrong)
            else:
                e2.attrs[key] = wrong
            rejected = fact_sentence(world, e2, f.attribute, canonical=True)
        elif flaw == "rude":
            rejected = rng.choice(_RUDE_PREFIX) + chosen
        else:
            rejected = " ".join(rng.sample(_RAMBLE[:-1], 3) + [_RAMBLE[-1], chosen,
                                                               rng.choice(_RAMBLE[:-1])])
    else:
        x = fresh_entity(rng, forge)
        attr = rng.choice(list(x.facts))
        q = rng.choice(QUESTIONS[(x.kind, attr)]).format(s=x.name)
        prompt = _grounded_prompt(fresh_passage(x, rng), q, rng)
        chosen = fresh_sentence(x, attr, rng, canonical=True)
        if flaw == "ignores_passage":  # answers with a value the passage does not give
            y = Fresh(x.kind, x.name, dict(x.facts))
            y.facts[attr] = _other_value(x, attr, rng, forge)
            rejected = fresh_sentence(y, attr, rng, canonical=True)
        else:  # unsupported_claim
            rejected = chosen + " " + rng.choice(_UNSUPPORTED).format(s=x.name)
    return {"flaw": flaw, "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def _other_value(x: Fresh, attr: str, rng: random.Random, forge: NameForge) -> str:
    """A value for ``attr`` different from the one in ``x``'s passage."""
    if attr in ("born_in", "region"):
        return forge.name()
    if attr == "guild":
        return f"the {forge.name()} Guild"
    if attr == "river":
        return f"the {forge.name()}"
    if attr == "craft":
        return a_craft(rng.choice([c for c in CRAFTS if a_craft(c) != x.facts[attr]]))
    return str(int(x.facts[attr]) + rng.randrange(3, 40))


FLAWS = ["wrong_fact", "ignores_passage", "rude", "rambling", "unsupported_claim"]


def build_preferences(world: World, cfg: SetsConfig | None = None) -> dict[str, list[dict[str, Any]]]:
    """Preference pairs ``{"train": [...], "test": [...]}`` in trl's conversational format.

    Each record: ``id``, ``flaw``, ``prompt`` (list of user messages), ``chosen`` and
    ``rejected`` (each a one-message assistant list), which trl's ``DPOTrainer`` reads
    directly (drop ``id`` and ``flaw`` first, or keep them: extra columns are ignored).
    """
    cfg = cfg or SetsConfig()
    fold_a, fold_b = split_seen_facts(world, cfg)
    out = {}
    for split, facts, n, salt in (("train", fold_a, cfg.pref_per_flaw, 3), ("test", fold_b, cfg.pref_test_per_flaw, 4)):
        rng = random.Random(cfg.seed * 100 + salt)
        forge = NameForge(random.Random(cfg.seed * 1000 + salt), fresh=True)
        recs = [_pref(flaw, world, facts, rng, forge) for flaw in FLAWS for _ in range(n)]
        rng.shuffle(recs)
        out[split] = [{"id": f"pref-{split}-{i:05d}"} | r for i, r in enumerate(recs)]
    return out


# ----------------------------------------------------------------------------- evaluation

def _eval_answer(world: World, f: Fact) -> tuple[str, list[str]]:
    e = world.get(f.entity_id)
    if f.value_id:
        target = world.get(f.value_id)
        aliases = [ref(target)] if ref(target) != target.name else []
        return target.name, aliases + list(target.aliases)
    if f.attribute == "craft" and e.kind == "guild":
        return f.value + "s", [f.value]
    if f.attribute == "craft" and e.kind == "person":
        return f.value, [f"a {f.value}" if f.value[0] not in "aeiou" else f"an {f.value}"]
    return f.value, []


def build_eval(world: World, cfg: SetsConfig | None = None) -> list[dict[str, Any]]:
    """The evaluation set: fact questions (seen fold B and unseen) and legal questions.

    Record fields: ``id``, ``question``, ``answer`` (short, exact-matchable), ``aliases``,
    ``gold_doc_ids``, ``seen``, ``kind`` ("fact:<attribute>", "legal:scenario",
    "legal:articles", "legal:year"), ``entity_id``, ``articles`` and ``precedents`` (the
    labels a legal answer must name; empty for fact questions).
    """
    cfg = cfg or SetsConfig()
    rng = random.Random(cfg.seed * 100 + 5)
    _, fold_b = split_seen_facts(world, cfg)
    unseen = [f for f in world.facts(seen=False) if (world.get(f.entity_id).kind, f.attribute) in QUESTIONS]
    rng.shuffle(unseen)
    recs: list[dict[str, Any]] = []
    for facts, n in ((fold_b, cfg.eval_seen), (unseen, cfg.eval_unseen)):
        for f in facts[:n]:
            answer, aliases = _eval_answer(world, f)
            recs.append({"question": _question(world, f, rng), "answer": answer, "aliases": aliases,
                         "gold_doc_ids": [f.entity_id], "seen": f.seen, "kind": f"fact:{f.attribute}",
                         "entity_id": f.entity_id, "articles": [], "precedents": []})
    for a in world.articles:
        lead = world.leading_case(a.number)
        if lead is None:
            continue
        town = rng.choice(world.of_kind("town", seen=True)).name
        recs.append({"question": f"{_cap(a_craft(lead.craft))} of {town} {a.breach}. Which article of the legal code "
                                 f"applies, and what is the leading case on it?",
                     "answer": f"{a.label}; {lead.name}", "aliases": [f"{a.label}, {lead.name}"],
                     "gold_doc_ids": [a.id, lead.id], "seen": lead.seen, "kind": "legal:scenario",
                     "entity_id": lead.id, "articles": [a.label], "precedents": [lead.name]})
    for p in rng.sample(world.precedents, 60):
        labels = [world.article(n).label for n in p.articles]
        if rng.random() < 0.5:
            recs.append({"question": f"Which articles of the legal code did the court apply in {p.name}?",
                         "answer": " and ".join(labels), "aliases": [", ".join(labels)] if len(labels) > 1 else [],
                         "gold_doc_ids": [p.id], "seen": p.seen, "kind": "legal:articles",
                         "entity_id": p.id, "articles": labels, "precedents": [p.name]})
        else:
            recs.append({"question": f"In what year was {p.name} decided?", "answer": str(p.year), "aliases": [],
                         "gold_doc_ids": [p.id], "seen": p.seen, "kind": "legal:year",
                         "entity_id": p.id, "articles": [], "precedents": [p.name]})
    return [{"id": f"eval-{i:04d}"} | r for i, r in enumerate(recs)]
