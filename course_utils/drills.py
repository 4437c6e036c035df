"""Reading drills: short documents that can only be continued by copying from the context.

Taught in notebook 02 (section "Reading, not remembering"); mixed into pretraining by
:func:`course_utils.pretrain.train` through ``TrainConfig.drill_rows``.

World text (:mod:`course_utils.corpus`) states every fact many times, so a model can
predict it from memory. A reading drill is about one to three *one-off* people or towns,
invented for that drill alone: a passage states their facts, then the drill asks for
some of them again (questions and answers, a record card and prose, a notice read aloud,
a summary, cloze sentences, the grounded-question layout of notebooks 04 and 08). The
second mention of a value can be predicted only by finding it earlier in the context and
copying it, which is exactly the skill that grounded answers and RAG need. With several
entities in one passage the model must also copy the value of the *right* one.

Half of the drills name their entities with the fresh-name marks (q, x, z: no world name
has them), half with the world's own syllables (checked against every name of the world,
seen and unseen, so no evaluation entity appears). Drills are generated deterministically
from a seed and cached as a token stream (:func:`load_drill_tokens`).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_utils.corpus import (
    QUESTIONS,
    Fresh,
    fresh_entity,
    fresh_passage,
    fresh_sentence,
)
from course_utils.settings import Settings, get_settings
from course_utils.world import NameForge, World, world_name_words

__all__ = [
    "DRILL_STYLES",
    "DrillConfig",
    "drill_documents",
    "load_drill_tokens",
    "name_forge",
    "pack_drills",
    "pack_rows",
    "reading_drill",
    "recall_lines",
]

#: The layouts a drill can take (each chosen with equal probability).
DRILL_STYLES = ("questions", "card", "notice", "summary", "grounded", "cloze")

_CARD_FIELDS = {"born_in": "Birthplace", "birth_year": "Year of birth", "craft": "Occupation", "guild": "Guild",
                "river": "River", "founded": "Founded", "population": "Population", "region": "Province"}
_HEADS = ["Read the passage and answer the questions.", "From an old register.",
          "A page from a traveller's notebook.", "Reading practice.", "Notes from the town archive."]
_SPEAKERS = ["Anna", "Tom", "Mara", "Ben", "the clerk", "the teacher", "the guide"]


@dataclass
class DrillConfig:
    """How the reading drills are generated."""

    world_syllables: float = 0.5  # share of drills whose names use the world's syllables (the rest: q/x/z marks)
    max_entities: int = 3  # a drill is about 1..max_entities one-off entities (1: 50%, 2: 35%, 3: 15%; capped)
    # share of drills that also ask about a world fact the passage does not name (0: none; see recall_lines)
    recall: float = field(default=0.0, metadata={"key_unless": 0.0})
    # share of one-off people born in a town of the world (a seen one) instead of an invented town, as the
    # world's unseen people are: copying "was born in X" must not teach the model to invent X
    world_towns: float = field(default=0.7, metadata={"key_unless": 0.0})
    # share of drills that ask their numbers (years, populations) first: more digits copied after a
    # number's first chunk, so the model learns to continue a number, not only to find it
    numbers: float = field(default=0.5, metadata={"key_unless": 0.0})
    # how many facts a drill asks or restates: between asked_min and asked_max (capped by the facts it has);
    # more facts asked, more values copied per drill token
    asked_min: int = field(default=2, metadata={"key_unless": 2})
    asked_max: int = field(default=5, metadata={"key_unless": 5})
    seed: int = 11  # seed of the generator (the stream is the same for the same seed)


def name_forge(rng: random.Random, world_syllables: bool, avoid: set[str] | None = None) -> NameForge:
    """A forge of one-off names: with the q/x/z marks, or from the world's own syllables
    avoiding ``avoid`` (:func:`world_name_words`)."""
    return NameForge(random.Random(rng.random()), fresh=True, marks=not world_syllables, avoid=avoid)


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _question(x: Fresh, attr: str, rng: random.Random) -> str:
    return rng.choice(QUESTIONS[(x.kind, attr)]).format(s=x.name)


def _passage(xs: list[Fresh], rng: random.Random) -> str:
    """The facts of every entity: one after the other, or (half the time) interleaved."""
    if len(xs) == 1 or rng.random() < 0.5:
        return " ".join(fresh_passage(x, rng) for x in xs)
    sentences = [fresh_sentence(x, a, rng) for x in xs for a in x.facts]
    rng.shuffle(sentences)
    return " ".join(sentences)


def recall_lines(world: World) -> list[tuple[str, str]]:
    """``(question, answer)`` about facts of the world's seen entities that SFT trains on (fold A of
    :func:`course_utils.supervised.split_seen_facts`; never an unseen entity, never an evaluation
    fact): what a drill asks *besides* its passage, to be answered from memory."""
    from course_utils.corpus import QUESTIONS, fact_sentence, ref
    from course_utils.supervised import SetsConfig, split_seen_facts

    fold_a, _ = split_seen_facts(world, SetsConfig())
    rng = random.Random(0)
    out = []
    for f in fold_a:
        e = world.get(f.entity_id)
        out.append((rng.choice(QUESTIONS[(e.kind, f.attribute)]).format(s=ref(e)),
                    fact_sentence(world, e, f.attribute, canonical=True)))
    return out


def reading_drill(rng: random.Random, forge: NameForge, style: str | None = None, max_entities: int = 3,
                  recall: tuple[str, str] | None = None, towns: list[str] | None = None,
                  world_towns: float = 0.0, numbers: float = 0.0, n_asked: tuple[int, int] = (2, 5)) -> str:
    """One reading drill about 1 to ``max_entities`` (at most 3) one-off entities named by ``forge``
    (see the module docstring).

    ``style`` picks a layout from :data:`DRILL_STYLES` (default: drawn from ``rng``). ``recall``: a
    ``(question, answer)`` about a world entity the passage does not name (:func:`recall_lines`),
    asked among the passage's questions (or its answer said among the restatements): the model
    learns to copy what the context holds and to remember what it does not, instead of copying
    (or inventing) a name after every "was born in". ``towns``, ``world_towns``: a one-off person is
    born in one of ``towns`` (the world's seen towns) with probability ``world_towns``, as the
    world's unseen people are, so that the drills do not teach that an invented name follows
    "was born in". ``numbers``: the probability that the drill asks its entities' numbers (years,
    populations) before any other fact. ``n_asked``: the least and most facts asked or restated (capped by
    the facts the drill has).
    """
    style = style or rng.choice(DRILL_STYLES)
    if style not in DRILL_STYLES:
        raise ValueError(f"Unknown drill style {style!r}: choose one of {', '.join(DRILL_STYLES)}.")
    k = min(max_entities, 1 if rng.random() < 0.5 else (2 if rng.random() < 0.7 else 3))
    xs = [fresh_entity(rng, forge) for _ in range(k)]
    if towns and world_towns:
        for x in xs:
            if x.kind == "person" and rng.random() < world_towns:
                x.facts["born_in"] = rng.choice(towns)
    # n_asked facts (2-5 by default) asked about, each of a random entity of the drill
    asked = [(x, a) for x in xs for a in x.facts]
    rng.shuffle(asked)
    if numbers and rng.random() < numbers:  # the numbers first: more digits copied after their first chunk
        asked.sort(key=lambda xa: not xa[0].facts[xa[1]].isdigit())
    hi = min(n_asked[1], len(asked))
    asked = asked[: rng.randrange(min(n_asked[0], hi), hi + 1)]

    def with_recall(lines: list[str], line: str | None) -> list[str]:
        if recall is not None and line is not None:
            lines.insert(rng.randrange(len(lines) + 1), line)
        return lines

    q_recall, a_recall = recall if recall is not None else (None, None)
    if style == "questions":
        qa = [f"Q: {_question(x, a, rng)}\nA: {fresh_sentence(x, a, rng)}" for x, a in asked]
        qa = with_recall(qa, f"Q: {q_recall}\nA: {a_recall}" if recall else None)
        return f"{rng.choice(_HEADS)}\n\n{_passage(xs, rng)}\n\n" + "\n".join(qa)
    if style == "card":
        cards = []
        for x in xs:
            attrs = list(x.facts)
            rng.shuffle(attrs)
            cards.append("\n".join([f"Name: {x.name}"] + [f"{_CARD_FIELDS[a]}: {x.facts[a]}" for a in attrs]))
        prose = " ".join(with_recall([fresh_sentence(x, a, rng) for x, a in asked], a_recall))
        return "Register entries\n\n" + "\n\n".join(cards) + "\n\n" + prose
    if style == "notice":
        a_, b_ = rng.sample(_SPEAKERS, 2)
        turns = [f"{_cap(b_)}: {_question(x, attr, rng)}\n{_cap(a_)}: {fresh_sentence(x, attr, rng)}"
                 for x, attr in asked]
        turns = with_recall(turns, f"{_cap(b_)}: {q_recall}\n{_cap(a_)}: {a_recall}" if recall else None)
        return "\n".join([f"{_cap(a_)}: The notice says this. {_passage(xs, rng)}"] + turns)
    if style == "summary":
        summary = " ".join(with_recall([fresh_sentence(x, a, rng, canonical=True) for x, a in asked], a_recall))
        return f"{_passage(xs, rng)}\n\nIn short: {summary}"
    if style == "grounded":  # the layout of grounded SFT answers and the RAG prompt
        x, a = asked[0]
        return (f"Read the passage and answer the question.\n\nPassage: {_passage(xs, rng)}\n\n"
                f"Question: {_question(x, a, rng)}\nAnswer: {fresh_sentence(x, a, rng, canonical=True)}")
    cloze = "\n".join(with_recall([fresh_sentence(x, a, rng, canonical=True) for x, a in asked], a_recall))
    return f"{_passage(xs, rng)}\n\n{cloze}"  # "cloze"


def drill_documents(n: int, config: DrillConfig | None = None, avoid: set[str] | None = None,
                    recall: list[tuple[str, str]] | None = None, towns: list[str] | None = None) -> list[str]:
    """``n`` reading drills, the same for the same ``config.seed``.

    ``avoid``: lower-case words the world-syllable names must not be (:func:`world_name_words`).
    ``recall``: world questions and answers (:func:`recall_lines`); a share ``config.recall`` of the
    drills asks one of them besides the passage's (none without ``recall``). ``towns``: the world's
    seen towns, where a share ``config.world_towns`` of the one-off people are born.
    """
    cfg = config or DrillConfig()
    rng = random.Random(cfg.seed)
    docs = []
    for _ in range(n):
        world_syllables = rng.random() < cfg.world_syllables
        forge = name_forge(rng, world_syllables, avoid)
        extra = rng.choice(recall) if cfg.recall and recall and rng.random() < cfg.recall else None
        docs.append(reading_drill(rng, forge, max_entities=cfg.max_entities, recall=extra, towns=towns,
                                  world_towns=cfg.world_towns, numbers=cfg.numbers,
                                  n_asked=(cfg.asked_min, cfg.asked_max)))
    return docs


def pack_rows(docs_ids: list[list[int]], seq_len: int, eos: int) -> list[int]:
    """Rows of exactly ``seq_len`` ids, each starting a document: ``<eos> doc <eos> doc ...``; the
    document that does not fit is cut at the row's end and the rest of it dropped.

    Training windows are ``seq_len + 1`` ids starting at multiples of ``seq_len``
    (``pretrain._Batches``), so every drill row starts with a whole passage: a drill is passage
    first, so a cut only ever drops restatements, never the passage they copy from."""
    out: list[int] = []
    row: list[int] = []
    for ids in docs_ids:
        row += [eos] + ids
        if len(row) >= seq_len:
            out += row[:seq_len]
            row = []
    return out


def pack_drills(tokenizer: Any, docs: list[str], seq_len: int):
    """``docs`` tokenized and packed in rows of ``seq_len`` (:func:`pack_rows`), as one int32 tensor."""
    import torch

    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    return torch.tensor(pack_rows(ids, seq_len, tokenizer.eos_token_id), dtype=torch.int32)


def load_drill_tokens(tokens: int, settings: Settings | None = None, config: DrillConfig | None = None,
                      tokenizer: Any = None, seq_len: int | None = None):
    """A stream of at least ``tokens`` token ids of reading drills (int32, documents separated
    by ``<|endoftext|>``), tokenized with the course tokenizer and cached ("drills").

    With ``seq_len`` the stream is packed in rows of ``seq_len`` (:func:`pack_rows`) so that every
    training window starts at a drill's beginning. Built in a few seconds per million tokens;
    deterministic by ``config.seed``.
    """
    from safetensors.torch import load_file, save_file

    from course_utils.artifacts import config_dict, load_or_build
    from course_utils.data import world, world_sha
    from course_utils.tokenizer import TokenizerConfig, encode_documents, load_or_build_tokenizer

    settings = settings or get_settings()
    cfg = config or DrillConfig()
    tok = tokenizer or load_or_build_tokenizer(settings)
    # Round the size up so that nearby budgets share one cached stream.
    target = max(100_000, -(-tokens // 500_000) * 500_000)

    def build(folder: Path) -> None:
        import torch

        w = world(settings)
        avoid, recall = world_name_words(w), recall_lines(w)
        towns = [e.name for e in w.of_kind("town", seen=True)]
        rng_cfg = dataclasses.replace(cfg)
        out, total, batch = [], 0, 2000
        while total < target:
            docs = drill_documents(batch, rng_cfg, avoid, recall, towns)
            ids = pack_drills(tok, docs, seq_len) if seq_len else encode_documents(tok, docs)
            out.append(ids)
            total += len(ids)
            rng_cfg = dataclasses.replace(rng_cfg, seed=rng_cfg.seed * 7919 + 1)  # the next batch of drills
        stream = torch.cat(out)
        if seq_len:  # a final <eos>: the target of the last row's last position
            stream = torch.cat([stream, torch.tensor([tok.eos_token_id], dtype=torch.int32)])
        save_file({"drills": stream}, folder / "drills.safetensors")

    key = {"drills": config_dict(cfg), "tokens": target, "tokenizer": config_dict(TokenizerConfig()),
           "world_sha": world_sha(settings), "rows": seq_len}
    path = load_or_build("drills", key, build, settings=settings)
    return load_file(path / "drills.safetensors")["drills"]
