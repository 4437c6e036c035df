"""Does a number keep its space? What the pre-tokenization regex does to copying numbers.

The reading probe (:func:`course_utils.probes.reading_probe`, by generation) of base models given
as ``label=PATH`` folders (transformers format, each with its own tokenizer), split by the kind of
value the model must copy from the passage: numbers (years, populations) or words (towns, rivers,
guilds, provinces). Each row also shows how the model's tokenizer cuts a year.

    python -m benchmarks.number_tokens --models gpt4=artifacts/base-model/e0e201e8ef74,course=artifacts/base-model/KEY

Measured 2026-12-02 on a 2-core AMD EPYC (AVX512-BF16), 60 + 60 passages per model, both models
the learner preset (1,500 steps, 8 corpus + 8 drill rows) and the same corpus and drills; ``gpt4``
was built at commit 2b4cbf1 with GPT-4's regex (``" 1838"`` -> ``" "`` + ``"183"`` + ``"8"``),
``course`` with ``COURSE_SPLIT_PATTERN`` (``" 183"`` + ``"8"``). ``--results`` holds the figures:

RESULTS_TABLE

With GPT-4's regex the model copied words but almost no numbers: every number of a passage starts
after the same bare-space token, so the token before a number says nothing about which number it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def measure(path: str, n: int = 60, seed: int = 2024) -> dict[str, Any]:
    """The reading probe of the model in ``path`` by name kind, split into numbers and words."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from course_utils.probes import reading_probe

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out: dict[str, Any] = {"path": path, "year_tokens": tok.tokenize("born in 1838")}
    for names in ("fresh", "world"):
        r = reading_probe(model, tok, n, seed, names=names)
        out[names] = {k: r[k] for k in ("share_correct", "share_correct_numbers", "share_correct_words", "n",
                                        "n_numbers")}
    return out


def table(results: dict[str, Any]) -> str:
    """The Markdown table of :func:`measure` results, one row per model."""
    rows = ["| model | \"born in 1838\" as tokens | reading fresh / world | numbers fresh / world "
            "| words fresh / world |", "|---|---|---|---|---|"]
    for label, r in results.items():
        f, w = r["fresh"], r["world"]
        rows.append(f"| {label} | {' '.join(repr(t) for t in r['year_tokens'])} | "
                    f"{f['share_correct']:.0%} / {w['share_correct']:.0%} | "
                    f"{f['share_correct_numbers']:.0%} / {w['share_correct_numbers']:.0%} (of {f['n_numbers']}) | "
                    f"{f['share_correct_words']:.0%} / {w['share_correct_words']:.0%} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="comma-separated label=PATH of transformers model folders")
    ap.add_argument("--n", type=int, default=60, help="passages per name kind")
    ap.add_argument("--results", default="benchmarks/results/number_tokens.json", help="where the figures go")
    args = ap.parse_args(argv)
    pairs = [m.split("=", 1) for m in args.models.split(",")]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("--models takes label=PATH pairs separated by commas.")
    results = {label: measure(path, args.n) for label, path in pairs}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
