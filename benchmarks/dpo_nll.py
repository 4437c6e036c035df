"""Plain DPO against DPO with the chosen answers' NLL added (RPO), on the course SFT model.

DPO only asks that the chosen answer gain on the rejected one; it can get there by lowering both.
This script trains DPO (LoRA, trl) from the cached learner SFT model once per
``BETA:LR:STEPS:SFT_WEIGHT`` run and reports what notebook 06 measures: implicit-reward accuracy
on 300 held-out pairs, the final KL to the reference, "answer contained" on 170 seen-fact
questions for the SFT and the DPO model, and the cached reward model's win rate of DPO answers
over SFT answers on 60 held-out prompts.

    python -m benchmarks.dpo_nll                      # the four runs below, ~18 min on 2 cores
    python -m benchmarks.dpo_nll --runs 0.1:2e-4:160:1 --json

Measured 2026-12-01 (2 cores, fp32, 8 pairs per step, seed 1234; SFT model: 450 steps at lr 5e-4):

| beta, lr, steps, NLL weight | implicit acc. | final KL | recall (SFT 0.347) | win rate (W/T/L) |
|---|---|---|---|---|
| 0.1, 2e-4, 160, 0 (plain DPO) | 0.843 | 2.77 | 0.294 | 35% (9/24/27) |
| 0.3, 2e-4, 160, 0 | 0.840 | 0.33 | 0.300 | 35% (4/34/22) |
| 0.1, 1e-4, 160, 0 | 0.837 | 2.05 | 0.300 | 41% (11/27/22) |
| **0.1, 2e-4, 160, 1 (the course)** | 0.807 | 0.82 | **0.341** | **47% (9/38/13)** |

(The first row is notebook 06's run before the change; the others were measured by this loop.)
A stronger pull to the reference (beta 0.3) or smaller steps did not keep recall; the NLL term did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

DEFAULT_RUNS = ("0.1:2e-4:160:0", "0.3:2e-4:160:0", "0.1:1e-4:160:0", "0.1:2e-4:160:1")


def parse_run(text: str) -> tuple[float, float, int, float]:
    """``"0.1:2e-4:160:1"`` -> ``(0.1, 2e-4, 160, 1.0)``: beta, learning rate, steps, NLL weight."""
    try:
        beta, lr, steps, weight = text.split(":")
        out = float(beta), float(lr), int(steps), float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BETA:LR:STEPS:SFT_WEIGHT such as 0.1:2e-4:160:1, "
                                         f"got {text!r}") from None
    if min(out[:3]) <= 0 or out[3] < 0:
        raise argparse.ArgumentTypeError(f"beta, lr and steps must be positive, the weight not negative: {text!r}")
    return out


def run(beta: float, lr: float, steps: int, sft_weight: float, pairs: int = 300, questions: int = 170,
        prompts: int = 60) -> dict:
    """Train one DPO model from the cached learner SFT model and measure it against that model."""
    from course_utils import dpo, reward
    from course_utils.data import load_eval, load_preferences
    from course_utils.evaluation import EvalConfig, evaluate_model
    from course_utils.settings import get_settings
    from course_utils.sft import generate_answers, load_or_build_sft_model

    settings = get_settings()
    sft_path = load_or_build_sft_model(settings)
    cfg = dataclasses.replace(dpo.default_config(settings), beta=beta, lr=lr, max_steps=steps, sft_weight=sft_weight)
    policy, tok, _ = dpo.load_policy(sft_path, settings)
    reference, _, _ = dpo.load_policy(sft_path, settings)
    train, test = load_preferences("train", settings=settings), load_preferences("test", settings=settings)
    trained = dpo.train_dpo(policy, tok, train, cfg, kl_records=test[: cfg.kl_pairs], progress=False)
    model = trained.model
    acc = dpo.preference_accuracy(dpo.preference_scores(model, tok, test[:pairs], reference=reference,
                                                        progress=False), beta)
    asked = load_eval(seen=True, kind="fact", settings=settings)[:questions]
    scoring = EvalConfig(max_new_tokens=48, perplexity=False, relevancy=False, progress=False, seed=settings.seed)
    recall = {name: evaluate_model(name, asked, settings=settings, config=scoring, model=m, tokenizer=tok)
              .scores()["contains"] for name, m in (("sft", reference), ("dpo", model))}
    rm, rm_tok = reward.load_reward_model(reward.load_or_build_reward_model(settings))
    sample = test[:: max(1, len(test) // prompts)][:prompts]
    convs = [r["prompt"] for r in sample]
    replies = {name: [o["reply"] for o in generate_answers(m, tok, convs, 48, progress=False)]
               for name, m in (("dpo", model), ("sft", reference))}
    wr = reward.win_rate(rm, rm_tok, convs, replies["dpo"], replies["sft"])
    return {"beta": beta, "lr": lr, "steps": steps, "sft_weight": sft_weight,
            "implicit": round(acc["implicit"], 3), "final_kl": round(trained.kl[-1]["kl"], 3),
            "recall_sft": round(recall["sft"], 3), "recall_dpo": round(recall["dpo"], 3),
            "win_rate": round(wr["win_rate"], 3), "wins_ties_losses": [wr["wins"], wr["ties"], wr["losses"]],
            "s_per_step": round(trained.step_seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=parse_run, nargs="+", default=[parse_run(r) for r in DEFAULT_RUNS],
                    help="BETA:LR:STEPS:SFT_WEIGHT runs (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON line, last")
    args = ap.parse_args(argv)
    results = []
    for spec in args.runs:
        results.append(run(*spec))
        print(results[-1], flush=True)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
