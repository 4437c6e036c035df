"""The measurement helpers of benchmarks/ that the notes quote: copy sequences score only what can be copied."""

from __future__ import annotations

import torch

from benchmarks.induction_budget import copy_batch


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
