"""Where does copying a number from a passage break? Per-token accuracy with teacher forcing.

For one-off people and towns (:func:`course_utils.corpus.fresh_entity`, fresh names), the prompt is the
passage, a blank line and a fact's canonical sentence cut before its value (the reading probe's layout,
:func:`course_utils.probes.reading_probe`). With the right value appended, one forward pass gives, for
each token of the value, whether the model's most likely next token is the right one (top-1) and the
probability it gives the right one (p). Numbers (years, populations) and words (towns, rivers, guilds,
provinces) apart, by the token's position in the value: position 0 is the first token of the value.

    python -m benchmarks.number_copying artifacts/base-model/e0e201e8ef74 artifacts/base-model/2cfe38cdc28f

Measured 2026-12-02 (120 entities, every attribute, seed 7), see ``benchmarks/base_models.py`` for the builds:

| model | number tokens | pos 0 top-1 | pos 1 top-1 (p) | pos 2 top-1 (p) | word tokens pos 0-3 top-1 |
|---|---|---|---|---|---|
| gpt4_8x8 (the course's) | " " + "188" + "6" | 1.00 (the bare space) | 0.48 (0.23) | 0.20 (0.12) | 0.95-0.97 |
| course_early12 | " 188" + "6" | 0.46 (0.23) | 0.83 (0.68) | 0.85 (0.62) | 0.96-0.98 |

With GPT-4's regex the model finds the number's first chunk about half the time and then guesses its last
digit (chance is 0.1); with the spaced-number regex it continues a copied number almost always, and the
hard part is the first chunk, which must say *which* number of the passage is meant.
"""

from __future__ import annotations

import argparse
import random


def measure(path: str, n: int = 120, seed: int = 7) -> dict[tuple[str, int], dict[str, float]]:
    """``{(kind, position): {"n", "top1", "p"}}`` for the model folder ``path`` (see the docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.corpus import PHRASES, fresh_entity, fresh_passage
    from course_utils.world import NameForge

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    rng, forge = random.Random(seed), NameForge(random.Random(seed + 1), fresh=True, marks=True)
    sums: dict[tuple[str, int], list[float]] = {}
    for _ in range(n):
        x = fresh_entity(rng, forge)
        for attr in ("birth_year", "founded", "population", "born_in", "river", "guild", "region"):
            if attr not in x.facts:
                continue
            prefix = PHRASES[(x.kind, attr)][0].split("{o}")[0].format(s=x.name).rstrip()
            prompt = f"{fresh_passage(x, rng)}\n\n{prefix}"
            ids = tok(prompt, add_special_tokens=False)["input_ids"]
            full = tok(prompt + " " + x.facts[attr], add_special_tokens=False)["input_ids"]
            if full[: len(ids)] != ids:  # the value merged with the prompt's last token: skip
                continue
            with torch.no_grad():
                logits = model(torch.tensor([full])).logits[0]
            kind = "number" if x.facts[attr].isdigit() else "word"
            for j, target in enumerate(full[len(ids):][:4]):
                probs = logits[len(ids) + j - 1].softmax(-1)
                s = sums.setdefault((kind, j), [0, 0, 0.0])
                s[0] += 1
                s[1] += int(probs.argmax() == target)
                s[2] += float(probs[target])
    return {k: {"n": v[0], "top1": v[1] / v[0], "p": v[2] / v[0]} for k, v in sorted(sums.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="transformers model folders (base models)")
    ap.add_argument("--n", type=int, default=120, help="one-off entities")
    args = ap.parse_args(argv)
    for path in args.models:
        print(path)
        for (kind, pos), r in measure(path, args.n).items():
            print(f"  {kind:6s} token {pos}: top-1 {r['top1']:.2f}  p {r['p']:.2f}  (n {r['n']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
