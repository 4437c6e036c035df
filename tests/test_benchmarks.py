"""The measurement helpers of benchmarks/ that the notes quote: copy sequences score only what can be
copied; the SFT budget and DPO scripts read their runs right."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import dpo_nll
from benchmarks.induction_budget import copy_batch
from benchmarks.sft_budget import DEFAULT_RUNS, parse_run


def test_copy_batch_repeats_a_span_and_ignores_its_first_copy():
    x, y = copy_batch(rows=5, T=64, vocab=50, seed=3, low=6, span=(4, 9))
    assert x.shape == y.shape == (5, 64)
    assert int(x.min()) >= 6 and int(x.max()) < 50
    for r in range(5):
        scored = (y[r] != -100).nonzero().flatten()
        n = int(scored[0]) + 1  # the period: the first scored target is the second copy's first token
        assert 4 <= n <= 9
        assert torch.equal(x[r, n:], x[r, :-n])  # a repeat of the span
        assert torch.equal(y[r, n - 1:], torch.cat([x[r, n:], x[r, -n:-n + 1] if n > 1 else x[r, :1]]))
    assert torch.equal(copy_batch(2, 16, 30, seed=1)[0], copy_batch(2, 16, 30, seed=1)[0])


def test_sft_budget_reads_lr_steps_pairs():
    assert parse_run("5e-4:450") == (5e-4, 450)
    assert [parse_run(r) for r in DEFAULT_RUNS][-1] == (5e-4, 450)
    for bad in ("5e-4", "x:3", "0:10", "1e-3:-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_run(bad)


def test_dpo_nll_reads_its_runs():
    assert dpo_nll.parse_run("0.1:2e-4:160:1") == (0.1, 2e-4, 160, 1.0)
    assert [dpo_nll.parse_run(r)[3] for r in dpo_nll.DEFAULT_RUNS] == [0.0, 0.0, 0.0, 1.0]
    for bad in ("0.1:2e-4:160", "0:2e-4:160:1", "0.1:2e-4:160:-1", "a:b:c:d"):
        with pytest.raises(argparse.ArgumentTypeError):
            dpo_nll.parse_run(bad)
