"""Pretraining throughput: our from-scratch model vs transformers' LlamaForCausalLM, and MFU.

Same config, same batch, same precision, same optimizer, same machine, measured in one
run with the two models interleaved (A B A B ...) so that other load on the machine hits
both alike. MFU is measured against a peak measured here with a 2048^3 matmul in the
training precision (bf16 where the CPU supports it).

    python benchmarks/bench_pretrain.py                      # learner preset, eager
    python benchmarks/bench_pretrain.py --compile            # also torch.compile'd ours
    python benchmarks/bench_pretrain.py --train              # + the full learner training run:
                                                             #   wall time, val loss vs unigram, probe
    python benchmarks/bench_pretrain.py --json               # one JSON line, last
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: no spinning threads on a shared CPU

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course_utils.hf import to_llama  # noqa: E402
from course_utils.model import GPT  # noqa: E402
from course_utils.pretrain import autocast_dtype, get_preset, measure_peak_flops  # noqa: E402


def _step_fn(model, forward, opt, x, y, dtype):
    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            logits = forward(x)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="learner", help="model/batch preset to measure (default learner)")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size (the course tokenizer's is ~4096)")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile'd ours")
    ap.add_argument("--train", action="store_true", help="also run the full preset training and the probe")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line, last")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    cfg = get_preset(args.preset)
    cfg.model.vocab_size = args.vocab
    dtype = autocast_dtype("cpu", cfg.precision)
    B, T = cfg.batch_size, cfg.seq_len
    x = torch.randint(0, args.vocab, (B, T))
    y = torch.randint(0, args.vocab, (B, T))

    ours = GPT(cfg.model)
    hf = to_llama(ours).train()  # same weights, same config
    models = {"ours": ours, "transformers": hf}
    steps = {
        "ours": _step_fn(ours, lambda t: ours(t)[0], torch.optim.AdamW(ours.parameters(), fused=True), x, y, dtype),
        "transformers": _step_fn(hf, lambda t: hf(input_ids=t).logits, torch.optim.AdamW(hf.parameters(), fused=True), x, y, dtype),
    }
    if args.compile:
        comp = GPT(cfg.model)
        cf = torch.compile(comp)
        models["ours_compiled"] = comp
        steps["ours_compiled"] = _step_fn(comp, lambda t: cf(t)[0], torch.optim.AdamW(comp.parameters(), fused=True), x, y, dtype)

    peak_before = measure_peak_flops(dtype, "cpu")
    for name, step in steps.items():  # warm up (and compile)
        t0 = time.perf_counter()
        step()
        step()
        print(f"warm-up {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[name].append(args.steps * B * T / (time.perf_counter() - t0))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} tok/s" for k, v in rates.items()), file=sys.stderr)
    from course_utils import pretrain

    pretrain._PEAKS.clear()
    peak = max(peak_before, measure_peak_flops(dtype, "cpu"))  # the best of before and after
    fp32_peak = measure_peak_flops(torch.float32, "cpu")
    flops_tok = ours.flops_per_token(T)
    tps = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "preset": args.preset,
        "params": ours.num_params(),
        "flops_per_token": flops_tok,
        "batch": [B, T],
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "peak_flops": peak,
        "fp32_peak_flops": fp32_peak,
        "tokens_per_s": tps,
        "ours_vs_transformers": tps["ours"] / tps["transformers"],
        "mfu": {k: v * flops_tok / peak for k, v in tps.items()},
        "threads": torch.get_num_threads(),
    }
    if args.compile:
        result["compiled_vs_transformers"] = tps["ours_compiled"] / tps["transformers"]

    if args.train:
        from course_utils.pretrain import run_pretraining
        from course_utils.probes import birthplace_probe

        start = time.perf_counter()
        res, tok = run_pretraining(args.preset)
        result["training"] = res.summary()
        result["training"]["wall_s_total"] = time.perf_counter() - start
        probe = birthplace_probe(res.model.float(), tok)
        result["probe"] = {k: v for k, v in probe.items() if k not in ("rows", "examples")}
        result["probe"]["examples"] = [f"{e['prompt']} -> {e['completion']} ({e['expected']})" for e in probe["examples"][:4]]

    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
