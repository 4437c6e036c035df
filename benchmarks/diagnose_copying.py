"""Why the course model could not read a passage or be fine-tuned cheaply before the reading drills.

Until stop 13 the learner base model copied 0% of one-off facts from a passage (``reading_probe``),
grounded SFT answers stayed at 0, and plain LoRA got a quarter of full fine-tuning's gain. The reading
drills (notebook 02, ``benchmarks/reading_recipe.py``) changed the first two. Note on measurement 2 (from the
session that filed issue 15, not re-measured here):
the random-token induction test stayed flat even for models that read well, so it is not a test of
reading; the reading probe is. This script measures, on the cached models:

1. **Tokens never seen in pretraining**: how many vocabulary ids never occur in the tokenized
   pretraining corpus (bytes and intermediate BPE merges the corpus always merges further), how
   similar their embedding rows are to each other (collapsed rows look alike to every layer), and
   which share of the tokens of one-off ("fresh") names falls among them.
2. **Induction**: NLL of random token sequences repeated once; a model with induction heads
   predicts the second copy far better than the first.
3. **Reading without unseen tokens**: the reading probe again with one-off names built from the
   world's own syllables, on the base model and the SFT model.

    python -m benchmarks.diagnose_copying          # learner models (built if missing), ~1 min
    python -m benchmarks.diagnose_copying --json   # one JSON line, last

Measured 2026-12-01 on the learner models *before* pretraining had reading drills (not re-run since; with
the drills, 882 of 4,078 ids stay unseen and the SFT set needs 80 of them, measured 2026-12-02): 2,156 of 4,078 ids never in pretraining, their rows' mean
pairwise cosine 0.98 (seen rows 0.12); 57% of fresh-name fact-value tokens unseen; no induction
(second copy 12.44 vs first 12.24 nats); reading 0/60 with world-syllable names on base and SFT model.
"""

from __future__ import annotations

import argparse
import json
import random

import torch


def unseen_tokens(train_ids: torch.Tensor, embedding: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """Count of ids absent from ``train_ids`` and the mean pairwise cosine of their rows vs seen
    rows, and the boolean mask of seen ids."""
    V = embedding.shape[0]
    seen = torch.bincount(train_ids.long(), minlength=V)[:V] > 0
    unit = torch.nn.functional.normalize(embedding.float(), dim=1)

    def mean_cos(rows: torch.Tensor) -> float:
        if rows.shape[0] < 2:
            return float("nan")
        sim = rows @ rows.T
        n = rows.shape[0]
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))

    return {"vocab": int(V), "never_in_pretraining": int((~seen).sum()),
            "mean_cos_unseen": mean_cos(unit[~seen]), "mean_cos_seen": mean_cos(unit[seen])}, seen


def induction(model, vocab: int, length: int = 50, rows: int = 16, seed: int = 0) -> dict[str, float]:
    """Mean NLL of the first and the second copy of random sequences of ``length`` ids.
    ``model``: a transformers causal LM or our GPT (both return the logits first)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(100, vocab, (rows, length), generator=g)
    ids = torch.cat([x, x], 1)
    with torch.no_grad():
        logits = model(ids)[0][:, :-1].float()
    nll = -torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    return {"first_copy_nll": float(nll[:, : length - 1].mean()), "second_copy_nll": float(nll[:, length:].mean())}


def main(argv: list[str] | None = None) -> int:
    from course_utils import pretrain, probes
    from course_utils import world as world_mod
    from course_utils.corpus import fresh_entity
    from course_utils.dpo import load_model
    from course_utils.settings import get_settings
    from course_utils.sft import load_base, load_or_build_sft_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON line, last")
    args = ap.parse_args(argv)
    settings = get_settings()
    train_ids = pretrain.pretraining_tokens(settings)  # the corpus and the reading drills
    base, tok, _ = load_base(None, settings)
    stats, seen = unseen_tokens(train_ids, base.get_input_embeddings().weight.detach())
    rng, forge = random.Random(2024), world_mod.NameForge(random.Random(2025), fresh=True)
    total = unseen = 0
    for _ in range(60):
        for value in fresh_entity(rng, forge).facts.values():
            ids = tok(" " + str(value), add_special_tokens=False)["input_ids"]
            total += len(ids)
            unseen += sum(1 for i in ids if i < len(seen) and not seen[i])
    stats["fresh_value_tokens_unseen_share"] = unseen / max(1, total)
    stats.update(induction(base, len(seen)))
    stats["reading_base_world_syllables"] = probes.reading_probe(base, tok, n=60, names="world",
                                                                   settings=settings)["share_correct"]
    sft_model, sft_tok = load_model(load_or_build_sft_model(settings))
    stats["reading_sft_world_syllables"] = probes.reading_probe(sft_model, sft_tok, n=60, names="world",
                                                                  settings=settings)["share_correct"]
    for k, v in stats.items():
        print(f"{k:36s} {v:.4g}" if isinstance(v, float) else f"{k:36s} {v}")
    if args.json:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
