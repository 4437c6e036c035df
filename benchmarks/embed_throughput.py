"""Embedding throughput on this CPU: what makes `course rag index` faster at the same retrieval quality.

Embeds the course's chunks (notebook 07's preparation of the document store, or ``--folder`` of your own
documents) with the packaged all-MiniLM-L6-v2 once per setting, and reports chunks per second, the speed-up
over the first setting (today's default: fp32, batch 64) and recall@5 of the evaluation questions' gold
documents with those vectors (dense retrieval, exact search), side by side:

    python -m benchmarks.embed_throughput                      # the course store, every setting
    python -m benchmarks.embed_throughput --folder ~/docs --settings fp32-64,bf16-64

Settings are ``PRECISION-BATCH``, passed to :func:`course_utils.embed.embed`: ``fp32`` runs the model as
loaded; ``int8`` runs it after torch's dynamic int8 quantization of its Linear layers (``torch.ao``, this
benchmark only); ``bf16`` under ``torch.autocast(dtype=torch.bfloat16)``, fast only where the CPU has AVX512-BF16 or
AMX; ``auto`` (the course's default since 2026-12-02) picks bf16 where the CPU reports those flags. Sentence-transformers
already sorts texts by length inside ``encode``, so padding is small at every batch size. Compare ratios
measured in one session on one quiet machine, not absolute speeds across machines.

Measured 2026-12-02 on a quiet 2-core AMD EPYC with AVX512-BF16 (621 chunks of the course store, 424
questions, the fastest of 2 runs), two runs of the script:

| setting | chunks/s (run 1, run 2) | speed-up | recall@5 |
|---|---|---|---|
| fp32-64 (the default before) | 44.2, 40.6 | 1x | 0.9847 |
| fp32-16 / fp32-256 | 48.4 / 29.5 | 1.1x / 0.67x | 0.9847 |
| bf16-8 / bf16-16 / bf16-32 | 67.7 / 76.6 / 83.6 | 1.7x / 1.9x / 2.1x | 0.9847 |
| bf16-64 (the default now, with ``auto``) | 80.9, 91.2 | 1.8x, 2.2x | 0.9847 |
| bf16-256 | 47.8 | 1.1x | 0.9847 |

bf16 vectors have cosine >= 0.99998 with the fp32 ones; recall@5 is the same to four decimals.

sentence-transformers' ONNX and OpenVINO backends cannot join the pinned environment (pip's resolver, 2026-12-02):
``sentence-transformers[onnx]==6.2.0`` needs ``optimum-onnx``, whose every release wants transformers < 4.58 (the
course pins 5.23); ``sentence-transformers[openvino]`` brings ``optimum-intel`` 2.2 with transformers 5.5.4,
tokenizers 0.22.2 and torch 2.14.1 (a CUDA build) in place of the pinned ones. onnxruntime alone installs cleanly,
but exporting and quantizing the model without optimum is a second embedding path to keep in step with the first;
not done. torch's own dynamic int8 quantization (no new package), measured the same day on a quiet machine
(``--settings fp32-64,bf16-64,int8-64``, one run):

| setting | chunks/s | speed-up | cosine with fp32 (min / median) | recall@5 |
|---|---|---|---|---|
| fp32-64 | 38.7 | 1x | 1 / 1 | 0.9847 |
| bf16-64 | 88.5 | 2.29x | 0.99997 / 0.99999 | 0.9847 |
| int8-64 | 85.1 | 2.20x | 0.859 / 0.929 | 0.9729 |

int8 is no faster than bf16 on this CPU and moves the vectors (recall@5 1.2 points lower, outside the issue's 1-point
bar): bf16 stays the default where the CPU has it; int8 would be the choice only on a CPU without bf16.

End to end, ``course rag index DIR --out OUT --json --precision fp32`` (every index before bf16) against the
default ``auto``, back to back, twice, on 26 pages of the Python library reference (Debian's python3-doc,
1,323 chunks), same machine later that day with light load from other jobs (wall seconds of the command;
its JSON's ``stages`` split them):

| round | fp32: wall s (embed s, chunks/s) | auto = bf16: wall s (embed s, chunks/s) | ratio (wall) |
|---|---|---|---|
| 1 | 69.8 (64.3, 20.6) | 35.9 (30.7, 43.1) | 1.94x |
| 2 | 70.3 (65.1, 20.3) | 40.6 (34.7, 38.1) | 1.73x |

The whole library (317 pages, 17,733 chunks) with ``auto``: 442 s wall (prepare 40 s, embed 398 s at 44.6
chunks/s, index and save 2 s). The same run during a pretraining job took 1,889 s (9.8 chunks/s). Under
that load ``autocast_dtype``'s matmul test chose fp32 in some processes (a test process; the first round of
an earlier back-to-back run) while the model embedded 1.6x faster in bf16, so ``auto`` now follows the CPU's
bf16 flags (:func:`course_utils.embed._cpu_embed_dtype`).

Old code against new, end to end, back to back on a quiet 2-core AMD EPYC (AVX512-BF16), 2026-12-03, the whole
library (Debian's python3-doc, 317 pages, copied to ``build/pydocs``): the code before issue 18 (commit 2f198f3, a
git worktree, ``course rag index build/pydocs --out OUT --json``: fp32, each page's text cut by characters,
MiniLM through sentence-transformers) against today's default (bf16 where the CPU has it, the HTML parser's sections with their
heading prefix, the lean transformers embedder):

| code | wall s | chunks | chunks/s end to end | embed s |
|---|---|---|---|---|
| before issue 18 | 494.5 | 11,656 | 23.6 | (not reported) |
| today | 283.0 | 17,733 | 62.7 | 259.9 |

1.75x faster end to end, while embedding 52% more chunks (each section its own chunk, prefixed with its title and
heading): 2.66x the chunks per second. The issue's 2x end to end is met per chunk, not in wall time.
"""

from __future__ import annotations

import argparse
import json
import time


def run(settings: list[str], folder: str | None = None, repeats: int = 1) -> list[dict]:
    """One row per setting: chunks/s, speed-up over the first setting, recall@5 (course store only)."""
    import numpy as np
    import torch

    from course_utils import data
    from course_utils.embed import embed, load_embedder
    from course_utils.prep import prepare
    from course_utils.rag import IndexConfig, RagIndex
    from course_utils.retrieval_eval import evaluate_retrieval

    prepared = prepare(folder, verbose=False)
    texts = [c.text for c in prepared.chunks]
    model = load_embedder(device="cpu")
    questions = data.load_eval() if folder is None else []
    rows = []
    reference = None  # the first setting's vectors: every other setting's cosine with them
    for setting in settings:
        precision, batch = setting.split("-")
        runner = model
        if precision == "int8":  # torch's dynamic int8 quantization of every Linear layer (torch.ao)
            import copy
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
                runner = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear},
                                                                dtype=torch.qint8)
            precision = "fp32"
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.inference_mode():
                vecs = embed(texts, runner, batch_size=int(batch), precision=precision, progress=False)
            best = min(best, time.perf_counter() - t0)
        row = {"setting": setting, "chunks": len(texts), "seconds": round(best, 2), "chunks_per_s": round(len(texts) / best, 1)}
        reference = vecs if reference is None else reference
        cosine = (vecs * reference).sum(axis=1)
        row["cosine_min"], row["cosine_median"] = round(float(cosine.min()), 5), round(float(np.median(cosine)), 5)
        if questions:
            index = RagIndex(prepared.chunks, vecs, IndexConfig(), prepared.duplicates, embedder=model)
            metrics = evaluate_retrieval(index, questions, methods=("dense",), ks=(5,))
            row["recall@5"] = round(next(m["recall@5"] for m in metrics if m["subset"] == "all"), 4)
        rows.append(row)
    for row in rows:
        row["speedup"] = round(row["chunks_per_s"] / rows[0]["chunks_per_s"], 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="fp32-64,fp32-16,fp32-256,bf16-64,bf16-256",
                    help="comma-separated PRECISION-BATCH settings; the first is the baseline")
    ap.add_argument("--folder", default=None, help="documents to embed (default: the course store)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per setting (the fastest counts)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    rows = run(args.settings.split(","), args.folder, args.repeats)
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| setting | chunks | seconds | chunks/s | speed-up | cosine with the first (min / median) | recall@5 |\n"
          "|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['chunks']:,} | {r['seconds']} | {r['chunks_per_s']} | {r['speedup']}x | "
              f"{r['cosine_min']} / {r['cosine_median']} | {r.get('recall@5', '-')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
