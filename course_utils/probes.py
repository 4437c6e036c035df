"""Probes of what a model learned: facts it remembers and facts it can read.

Taught in notebook 02 (sections "Sampling after training, and what it knows" and "Reading, not
remembering"); used by notebooks 08 and 10, ``course probe`` and the base model's build, which
logs them at every validation (:func:`course_utils.pretrain.load_or_build_base_model`).

- :func:`birthplace_probe`: closed-book recall of seen facts ("<person> was born in").
- :func:`reading_probe`: copying a fact from a passage about a one-off entity, with names that
  carry the one-off marks or names built from the world's syllables.
- :func:`reading_and_recall`: all three figures in one dict.

Each takes our :class:`~course_utils.model.GPT` or a transformers causal LM. ``quick=True``
replaces generation by one batched teacher-forced pass (:func:`_greedy_matches`).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from course_utils.model import GPT
from course_utils.settings import Settings

__all__ = ["birthplace_probe", "gate_probe", "reading_and_recall", "reading_probe"]


@torch.no_grad()
def _greedy_continuation(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The greedy continuation of ``<bos> + prompt`` (special tokens dropped, stripped), from
    our :class:`~course_utils.model.GPT` or a transformers causal LM in eval mode."""
    ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    x = torch.tensor([ids], device=next(model.parameters()).device)
    if isinstance(model, GPT):
        out = model.generate(x, max_new_tokens, temperature=0)
    else:
        out = model.generate(x, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()


@torch.no_grad()
def _greedy_matches(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 32) -> list[bool]:
    """For each prompt, would greedy decoding continue it with ``" " + answer``? Checked in one
    teacher-forced forward pass per batch (right-padded: a causal model never looks at the
    padding after a position): every answer token must be the argmax after the tokens before
    it. The same verdict as generating and comparing, except where the model would spell the
    answer with other tokens; many times faster. Our GPT or a transformers causal LM."""
    device = next(model.parameters()).device
    out: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for prompt, answer in zip(prompts[start:start + batch_size], answers[start:start + batch_size], strict=True):
            p = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
            a = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
            rows.append(p + a)
            spans.append((len(p), len(a)))
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        x = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        logits = model(x)[0] if isinstance(model, GPT) else model(input_ids=x).logits
        guess = logits.argmax(-1)  # (B, T): the greedy next token after each position
        for i, (n_p, n_a) in enumerate(spans):
            out.append(bool(torch.equal(guess[i, n_p - 1 : n_p + n_a - 1], x[i, n_p : n_p + n_a])))
    return out


def birthplace_probe(model, tokenizer, settings: Settings | None = None, *, seen: bool = True,
                     limit: int | None = None, max_new_tokens: int = 8, quick: bool = False) -> dict[str, Any]:
    """Closed-book probe of facts: complete ``"<person> was born in"`` greedily and check
    that the continuation names the right town (``"Vessary"`` or ``"the town of Vessary"``).

    ``model`` is our :class:`~course_utils.model.GPT` or a transformers causal LM. Returns
    the share correct, the share naming *some* town of the world, the share a constant
    guess of the most common birthplace would get, and a few examples. ``quick=True``
    (used during training) only checks whether greedy decoding would write the town
    (:func:`_greedy_matches`, batched), with no completions and no "names a town" share.
    """
    from collections import Counter

    from course_utils.data import world as load_world

    w = load_world(settings)
    facts = [f for f in w.facts(seen=seen) if f.attribute == "born_in"][:limit]
    towns = {f.value for f in w.facts() if f.attribute == "born_in"}
    model.eval()
    if quick:  # the town, or "the town of" and the town: what the full probe accepts
        prompts = [f"{w.get(f.entity_id).name} was born in" for f in facts]
        bare = _greedy_matches(model, tokenizer, prompts, [f.value for f in facts])
        long = _greedy_matches(model, tokenizer, prompts, [f"the town of {f.value}" for f in facts])
        hits = [a or b for a, b in zip(bare, long, strict=True)]
        return {"n": len(hits), "share_correct": sum(hits) / max(1, len(hits))}
    rows = []
    for f in facts:
        name = w.get(f.entity_id).name
        prompt = f"{name} was born in"
        cont = _greedy_continuation(model, tokenizer, prompt, max_new_tokens)
        answer = cont.removeprefix("the town of ").strip()
        rows.append({"prompt": prompt, "expected": f.value, "completion": cont,
                     "correct": answer.startswith(f.value),
                     "names_a_town": any(answer.startswith(t) for t in towns)})
    n = max(1, len(rows))
    most_common = Counter(f.value for f in facts).most_common(1)
    return {
        "n": len(rows),
        "share_correct": sum(r["correct"] for r in rows) / n,
        "share_names_a_town": sum(r["names_a_town"] for r in rows) / n,
        "constant_guess_share": (most_common[0][1] / n) if most_common else 0.0,
        "towns": len(towns),
        "examples": rows[:8],
        "rows": rows,
    }


_READ_ATTRS = ("born_in", "birth_year", "guild", "river", "region", "founded", "population")


def reading_probe(model, tokenizer, n: int = 60, seed: int = 2024, max_new_tokens: int = 8, *,
                  names: str = "fresh", settings: Settings | None = None, quick: bool = False) -> dict[str, Any]:
    """In-context reading: can the model copy a fact it has just read?

    For ``n`` one-off invented people and towns (names no training text contains), the
    prompt is a passage with all their facts, a blank line, then a fact's canonical
    sentence cut before its value (``"Xanisha lies on"``); the greedy continuation is
    correct if it starts with the value from the passage (``"the Brarkiquen"``). No
    memorised fact can help, so this measures copying from the context alone, the skill
    that grounded answers and RAG need. ``model``: our GPT or a transformers causal LM.

    ``names``: ``"fresh"`` names carry the one-off marks (q, x, z), ``"world"`` names are
    built from the world's own syllables (none equal to a name of the world of ``settings``).
    The reading drills of pretraining (:mod:`course_utils.drills`) use other seeds.
    ``quick=True``: only the share correct, from one batched teacher-forced pass
    (:func:`_greedy_matches`); what pretraining logs at every validation.
    """
    from course_utils.corpus import PHRASES, fresh_entity, fresh_passage
    from course_utils.world import NameForge

    if names not in ("fresh", "world"):
        raise ValueError(f"names must be 'fresh' or 'world', got {names!r}.")
    avoid = None
    if names == "world":
        from course_utils.data import world as load_world
        from course_utils.world import world_name_words

        avoid = world_name_words(load_world(settings))
    rng = random.Random(seed)
    forge = NameForge(random.Random(seed + 1), fresh=True, marks=names == "fresh", avoid=avoid)
    model.eval()
    items = []
    for _ in range(n):
        x = fresh_entity(rng, forge)
        attr = rng.choice([a for a in _READ_ATTRS if a in x.facts])
        prefix = PHRASES[(x.kind, attr)][0].split("{o}")[0].format(s=x.name).rstrip()
        items.append((x, attr, f"{fresh_passage(x, rng)}\n\n{prefix}"))
    if quick:
        hits = _greedy_matches(model, tokenizer, [p for _, _, p in items], [x.facts[a] for x, a, _ in items])
        return {"n": len(hits), "names": names, "share_correct": sum(hits) / max(1, len(hits))}
    rows = []
    for x, attr, prompt in items:
        value = x.facts[attr]
        cont = _greedy_continuation(model, tokenizer, prompt, max_new_tokens)
        others = [v for a, v in x.facts.items() if a != attr]
        rows.append({"prompt": prompt, "expected": value, "completion": cont, "correct": cont.startswith(value),
                     "copies_other_fact": any(cont.startswith(v) for v in others)})
    k = max(1, len(rows))
    numbers = [r["correct"] for r in rows if r["expected"].isdigit()]
    words = [r["correct"] for r in rows if not r["expected"].isdigit()]
    return {
        "n": len(rows),
        "names": names,
        "share_correct": sum(r["correct"] for r in rows) / k,
        "share_correct_numbers": sum(numbers) / max(1, len(numbers)),  # years and populations
        "share_correct_words": sum(words) / max(1, len(words)),  # towns, rivers, guilds, provinces
        "n_numbers": len(numbers),
        "share_wrong_fact_copied": sum(r["copies_other_fact"] for r in rows) / k,
        "examples": rows[:6],
        "rows": rows,
    }


def reading_and_recall(model, tokenizer, settings: Settings | None = None, *, n_reading: int = 60,
                       n_birthplace: int | None = 120, seed: int = 2024, quick: bool = False) -> dict[str, float]:
    """The three probes in one dict: ``reading_fresh``, ``reading_world`` (shares of facts
    copied from a passage, both name variants) and ``birthplace`` (share of seen facts
    recalled closed-book). What ``course probe`` prints and (``quick=True``, batched)
    pretraining logs at each validation."""
    return {
        "reading_fresh": reading_probe(model, tokenizer, n_reading, seed, names="fresh", quick=quick)["share_correct"],
        "reading_world": reading_probe(model, tokenizer, n_reading, seed, names="world", settings=settings,
                                       quick=quick)["share_correct"],
        "birthplace": birthplace_probe(model, tokenizer, settings, limit=n_birthplace, quick=quick)["share_correct"],
    }


#: The gate's passages: a seed of their own, so that a run whose schedule the gate decides is still
#: measured on passages (seed 2024) that chose nothing.
GATE_SEED = 5000


def gate_probe(model, tokenizer, settings: Settings | None = None, *, n: int = 40) -> dict[str, float]:
    """``reading_gate``: the lower of the two quick reading shares (both name kinds) on ``n`` passages
    each of their own seed (:data:`GATE_SEED`); what a gated decay waits for
    (:class:`course_utils.schedule.Schedule`)."""
    shares = [reading_probe(model, tokenizer, n, GATE_SEED, names=names, settings=settings, quick=True)["share_correct"]
              for names in ("fresh", "world")]
    return {"reading_gate": min(shares)}
