"""Can copy-rich pretraining give the learner model induction heads within its budget? Measured: no.

Notebooks 02 and 08 report that the learner base model does not copy from its context (the
reading probe is 0%, so RAG cannot help it). Induction heads, the circuit that copies, form
when the training data rewards copying. This script trains the learner architecture (4 layers,
d_model 256, context 256) on *copy sequences*, the easiest possible copying task (a random span
of token ids written again and again; the first copy is not scored), and reports every 25 steps
the NLL of the first and the second copy of 16 held-out random sequences. A model with
induction predicts the second copy almost perfectly (NLL near 0); without it both stay near
ln(vocab).

    python -m benchmarks.induction_budget                      # 300 steps, ~5 min on 2 cores
    python -m benchmarks.induction_budget --steps 200 --lr 5e-3 --span 4 16
    python -m benchmarks.induction_budget --vocab 300          # spans over 300 ids only

Measured 2026-12-01 (2 cores, fp32, 16 sequences of 256 tokens per step):
- ``--steps 200``: spans 8-48 over all 4,078 ids, lr 2e-3: after 200 steps (3,200 sequences,
  0.8 M tokens, 187 s) first copy 8.59 nats, second 8.06; training loss 7.80 vs ln(4078) = 8.31:
  no induction.
- (the same loop before it became this script) spans 4-16 at lr 5e-3: after 175 steps first 8.87,
  second 8.63; spans over 300 ids: after 175 steps training loss 5.66, ln(300) = 5.70: nothing copied.
- Mixed into the learner pretraining instead (2 of every 16 sequences, 500 steps, the rest of the
  run unchanged; measured with the same mix built into the training loop, which ``--mix`` now
  reproduces from outside): second copy 8.59 vs first 8.84, validation loss 0.766 instead of 0.625,
  birthplaces recalled 14% of 120 instead of 54% (the cached learner base model), reading probe 0/60.
So within a 2-core budget the circuit does not form even on pure copy data; published small
models need far more sequences (hundreds of thousands) before the phase change. The course's
RAG therefore needs a larger base model (the ``gpu`` preset) or a hub model to show the gain.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from benchmarks.diagnose_copying import induction


def copy_batch(rows: int, T: int, vocab: int, seed: int, low: int = 6,
               span: tuple[int, int] = (8, 48)) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` inputs and targets of ``T`` tokens: a random span of ids in ``[low, vocab)``
    repeated; targets of the first copy are -100 (nothing to copy from yet)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.empty(rows, T + 1, dtype=torch.long)
    first = torch.zeros(rows, T + 1, dtype=torch.bool)
    for r in range(rows):
        n = int(torch.randint(span[0], span[1] + 1, (1,), generator=g))
        piece = torch.randint(low, vocab, (n,), generator=g)
        x[r] = piece.repeat((T + 1) // n + 1)[: T + 1]
        first[r, :n] = True
    y = x[:, 1:].clone()
    y[first[:, 1:]] = -100
    return x[:, :-1], y


def pure(args) -> dict:
    from course_utils import pretrain

    cfg = pretrain.get_preset("learner", max_steps=args.steps, lr=args.lr)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=4078))
    model = pretrain.build_model(cfg)
    opt = pretrain._optimizer(model, cfg, "cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, pretrain._lr_lambda(cfg))
    rows, t0 = [], time.time()
    for step in range(args.steps):
        x, y = copy_batch(cfg.batch_size, cfg.seq_len, args.vocab, seed=step + 1, span=tuple(args.span))
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 25 == 0 or step + 1 == args.steps:
            nll = induction(model, 4078)
            rows.append({"step": step + 1, "train_loss": round(float(loss.detach()), 3),
                         "first_copy": round(nll["first_copy_nll"], 3), "second_copy": round(nll["second_copy_nll"], 3),
                         "s": round(time.time() - t0)})
            print(rows[-1], flush=True)
    return {"mode": "pure", "steps": args.steps, "lr": args.lr, "span": args.span, "vocab": args.vocab, "log": rows}


def mix(args) -> dict:
    from course_utils import pretrain
    from course_utils.settings import get_settings

    settings = get_settings()
    train_ids, val_ids, tok = pretrain.load_token_data(settings)
    cfg = pretrain.get_preset("learner", seed=settings.seed)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=len(tok)))
    original = pretrain._Batches.next
    calls = {"n": 0}

    def with_copies(self, n):  # the last `args.rows` rows of every batch become copy sequences
        x, y = original(self, n)
        if self.ids is not train_ids:
            return x, y  # validation batches stay corpus text
        calls["n"] += 1
        cx, cy = copy_batch(args.rows, self.T, len(tok), seed=calls["n"])
        return torch.cat([x[args.rows:], cx]), torch.cat([y[args.rows:], cy])

    pretrain._Batches.next = with_copies
    try:
        result = pretrain.train(cfg, train_ids, val_ids, progress=True)
    finally:
        pretrain._Batches.next = original
    model = result.model.eval()
    nll = induction(model, len(tok))
    birth = pretrain.birthplace_probe(model, tok, settings, limit=120)["share_correct"]
    reading = pretrain.reading_probe(model, tok, n=60)["share_correct"]
    out = {"mode": "mix", "copy_rows": args.rows, "val_loss": result.val_loss, "first_copy": nll["first_copy_nll"],
           "second_copy": nll["second_copy_nll"], "birthplace": birth, "reading": reading}
    print(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--span", type=int, nargs=2, default=[8, 48])
    ap.add_argument("--vocab", type=int, default=4078, help="copy sequences draw ids below this")
    ap.add_argument("--mix", action="store_true", help="learner pretraining with copy rows instead (~9 min)")
    ap.add_argument("--rows", type=int, default=2, help="copy rows per batch of 16 with --mix")
    ap.add_argument("--json", action="store_true", help="print one JSON line, last")
    args = ap.parse_args(argv)
    out = mix(args) if args.mix else pure(args)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
