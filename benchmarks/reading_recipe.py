"""The recipe search behind the learner preset's reading drills: which mix, schedule and
context make the base model read a passage (copy a one-off fact from it) and still remember
the world, within a 2-core CPU budget.

Each recipe is the learner preset with some fields replaced; every ``--every`` steps the run
logs the validation loss, the reading probe with both name variants (``reading_fresh``: names
with the one-off marks q/x/z; ``reading_world``: names from the world's own syllables) and the
closed-book birthplace probe. Runs checkpoint to ``--out/<recipe>`` and resume when started
again, so a search can span sessions.

    python -m benchmarks.reading_recipe --recipes old,mix24_wsd   # one after the other
    python -m benchmarks.reading_recipe --list                    # the recipes and their fields
    python -m benchmarks.reading_recipe --table                   # the table of finished runs

Measured 2026-12-02 on this kind of machine (2 cores, AMD EPYC with AVX512-BF16, bf16 autocast);
figures at the final step, by generation: reading on 60 + 60 passages, birthplace on 120 people
(``--results benchmarks/results/reading_recipe.json`` holds them with each run's curve). Train time
from tokens/s, probes and validation excluded; other jobs shared the machine for part of each run:

| recipe | context | steps | val loss (256-token windows) | reading fresh / world | birthplace | tok/s | train time |
|---|---|---|---|---|---|---|---|
| ctx512_half | 512 | 700 | 0.568 | 0% / 0% | 46% | 4,570 | 15.7 min |
| ctx256_small | 256 | 1050 | 0.547 | 37% / 28% | 40% | 5,742 | 12.5 min |
| ctx256_long | 256 | 1500 | 0.517 | 82% / 77% | 35% | 6,063 | 16.9 min |

Copying appears suddenly after about 1,000 steps of 8 drill rows (about 2M drill tokens) whatever the
run's length; fewer steps at a longer context (ctx512_half: as many drill tokens in 700 steps) never got
there. The learner preset is ctx256_long. The cost is recall: with half of every batch drills, the
birthplace probe stays under the corpus-only preset's (57% measured on an Ice Lake Xeon at stop 13),
because a drill's "X was born in" must be copied while the corpus's must be remembered; the decay
phase is where recall consolidates (``ctx256_anneal`` hands half the drill rows back to the corpus
there: the next recipe to measure).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

#: The learner preset before reading drills (2026-12-01): every recipe starts from it.
OLD_LEARNER: dict[str, Any] = {
    "model.max_seq_len": 256, "model.n_layer": 4, "model.n_head": 4, "model.d_model": 256, "model.ffn_hidden": 688,
    "batch_size": 16, "drill_rows": 0, "max_steps": 500, "warmup_steps": 30, "eval_every": 100, "eval_batches": 8,
    "checkpoint_every": 100, "lr": 2e-3, "schedule": "cosine", "compile": False,
}

#: Each recipe: fields of ``TrainConfig`` replaced in :data:`OLD_LEARNER` (``model.*`` for the model).
RECIPES: dict[str, dict[str, Any]] = {
    # the old preset: corpus only, cosine 2e-3, 500 steps
    "old": {},
    # 16 corpus rows + 8 drill rows (added), warmup-stable-decay at 3e-3
    "mix24_wsd": {"drill_rows": 8, "max_steps": 1000, "lr": 3e-3, "schedule": "wsd", "decay_frac": 0.2,
                  "eval_every": 100, "checkpoint_every": 100},
    # context 512: 8 corpus rows + 4 drill rows of 512 (the same tokens per step)
    "ctx512_wsd": {"batch_size": 8, "drill_rows": 4, "model.max_seq_len": 512, "max_steps": 1000, "lr": 3e-3,
                   "schedule": "wsd", "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100},
    # context 512, half the rows drills (6 + 6), compiled, 700 steps: about the old preset's corpus tokens
    "ctx512_half": {"batch_size": 6, "drill_rows": 6, "model.max_seq_len": 512, "max_steps": 700, "lr": 3e-3,
                    "schedule": "wsd", "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100,
                    "compile": True},
    # the same compute in more, smaller steps: 4 + 4 rows of 512, 1,050 steps
    "ctx512_small": {"batch_size": 4, "drill_rows": 4, "model.max_seq_len": 512, "max_steps": 1050, "lr": 3e-3,
                     "schedule": "wsd", "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100,
                     "compile": True},
    # the same at a 256-token context: 8 + 8 rows, 1,050 steps
    "ctx256_small": {"batch_size": 8, "drill_rows": 8, "max_steps": 1050, "lr": 3e-3, "schedule": "wsd",
                     "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100, "compile": True},
    # the same, 1,500 steps: the whole 15-minute budget of a compiled bf16 run on this machine
    "ctx256_long": {"batch_size": 8, "drill_rows": 8, "max_steps": 1500, "lr": 3e-3, "schedule": "wsd",
                    "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100, "compile": True},
    # the same, annealed on the corpus: 12 corpus + 4 drill rows while the rate decays (last 300 steps)
    "ctx256_anneal": {"batch_size": 8, "drill_rows": 8, "decay_drill_rows": 4, "max_steps": 1500, "lr": 3e-3,
                      "schedule": "wsd", "decay_frac": 0.2, "eval_every": 100, "checkpoint_every": 100,
                      "compile": True},
}


def recipe_config(name: str):
    """The ``TrainConfig`` of recipe ``name`` (vocab size set later from the tokenizer)."""
    import dataclasses

    from course_utils.model import GPTConfig
    from course_utils.pretrain import TrainConfig

    if name not in RECIPES:
        raise SystemExit(f"Unknown recipe {name!r}: choose from {', '.join(RECIPES)}.")
    fields = {**OLD_LEARNER, **RECIPES[name]}
    cfg = TrainConfig(model=GPTConfig())
    model = {k.split(".", 1)[1]: v for k, v in fields.items() if k.startswith("model.")}
    top = {k: v for k, v in fields.items() if not k.startswith("model.")}
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model), **top)


def run(name: str, out: Path, n_reading: int, n_birth: int, threads: int | None) -> dict[str, Any]:
    import dataclasses

    import torch

    from course_utils.drills import load_drill_tokens
    from course_utils.pretrain import _val_loss, load_token_data, train
    from course_utils.probes import reading_and_recall
    from course_utils.settings import get_settings

    if threads:
        torch.set_num_threads(threads)
    settings = get_settings()
    cfg = recipe_config(name)
    train_ids, val_ids, tok = load_token_data(settings)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    drills = load_drill_tokens(cfg.drill_tokens(), settings, tokenizer=tok, seq_len=cfg.seq_len) if cfg.drill_rows else None
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.jsonl"

    def probe(model) -> dict[str, float]:
        t0 = time.perf_counter()
        figures = reading_and_recall(model, tok, settings, n_reading=n_reading, n_birthplace=n_birth, quick=True)
        figures["probe_s"] = time.perf_counter() - t0
        return figures

    def on_eval(history: list[dict[str, float]]) -> None:
        with log.open("a") as f:
            f.write(json.dumps(history[-1]) + "\n")
        r = history[-1]
        print(f"[{name}] step {r['step']}: val {r['val_loss']:.3f}, reading {r.get('reading_fresh', 0):.0%}/"
              f"{r.get('reading_world', 0):.0%}, birthplace {r.get('birthplace', 0):.0%}, "
              f"{r['tokens_per_s']:,.0f} tok/s", flush=True)

    start = time.perf_counter()
    result = train(cfg, train_ids, val_ids, out_dir=folder, drill_ids=drills, probe=probe, on_eval=on_eval)
    session_s = time.perf_counter() - start
    model = result.model.float().eval()
    # Final figures: probes by generation (not the quick teacher-forced check), and the validation
    # loss also on 256-token windows, so that models of different contexts compare on equal terms.
    final = reading_and_recall(model, tok, settings, n_reading=n_reading, n_birthplace=n_birth)
    cfg256 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_seq_len=256), batch_size=16)
    val256 = _val_loss(model, val_ids, cfg256, "cpu", contextlib.nullcontext)
    curve = [{k: r[k] for k in ("step", "val_loss", "reading_fresh", "reading_world", "birthplace") if k in r}
             for r in result.history if "val_loss" in r]
    tps = result.history[-1]["tokens_per_s"]  # the last session's throughput (also when resumed at the end)
    summary = {"recipe": name, "fields": RECIPES[name], "steps": result.steps, "context": cfg.seq_len,
               "val_loss": result.val_loss, "val_loss_256": val256, **final,
               "tokens_per_s": tps, "precision": result.precision,
               "train_s": round(result.steps * cfg.tokens_per_step() / max(tps, 1)),
               "session_wall_s": round(session_s), "curve": curve}
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def collect(out: Path) -> dict[str, Any]:
    """Every finished run's summary, by recipe, in :data:`RECIPES` order."""
    found = {}
    for name in RECIPES:
        path = out / name / "summary.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def table(summaries: dict[str, Any]) -> str:
    """The Markdown table of the runs (train time from tokens/s: probes and validation excluded)."""
    rows = ["| recipe | context | steps | val loss (256-token windows) | reading fresh / world | birthplace "
            "| tok/s | train time |", "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(f"| {name} | {s['context']} | {s['steps']} | {s['val_loss_256']:.3f} | "
                    f"{s['reading_fresh']:.0%} / {s['reading_world']:.0%} | {s['birthplace']:.0%} | "
                    f"{s['tokens_per_s']:,.0f} | {s['train_s'] / 60:.1f} min |")
    return "\n".join(rows)


def plot(summaries: dict[str, Any], path: str) -> None:
    """Reading (both name kinds) and birthplace recall against the step, one panel per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.6), sharey=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], summaries.items()):
        steps = [r["step"] for r in s["curve"]]
        for key, label, mark in (("reading_fresh", "reading (fresh names)", "o-"),
                                 ("reading_world", "reading (world syllables)", "s-"),
                                 ("birthplace", "birthplace recall", "^-")):
            ax.plot(steps, [r.get(key, float("nan")) for r in s["curve"]], mark, ms=3, label=label)
        ax.set_title(f"{name} (context {s['context']})")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share correct (quick probe)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="old,mix24_wsd", help="comma-separated recipe names, run in order")
    ap.add_argument("--out", default="build/reading_recipe", help="folder for runs (resumed if present)")
    ap.add_argument("--reading", type=int, default=60, help="passages per reading probe (each name variant)")
    ap.add_argument("--birthplace", type=int, default=120, help="people in the birthplace probe")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--list", action="store_true", help="print the recipes and exit")
    ap.add_argument("--table", action="store_true", help="print the table of finished runs and exit")
    ap.add_argument("--json", action="store_true", help="print one JSON line per recipe")
    ap.add_argument("--plot", default=None, help="also draw the probes against the step to this PNG file")
    ap.add_argument("--results", default=None, help="also write every finished run's summary to this JSON file "
                                                     "(benchmarks/results/reading_recipe.json: read by notebook 02)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.list:
        for name, fields in RECIPES.items():
            print(f"{name:14s} {fields}")
        return 0
    if not args.table:
        for name in args.recipes.split(","):
            summary = run(name.strip(), out, args.reading, args.birthplace, args.threads)
            if args.json:
                print(json.dumps({k: v for k, v in summary.items() if k != "curve"}), flush=True)
    summaries = collect(out)
    if args.results:
        Path(args.results).write_text(json.dumps(summaries, indent=1) + "\n")
    if args.plot:
        plot(summaries, args.plot)
    print(table(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
