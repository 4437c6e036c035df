"""The selective state-space mixer (course_utils.ssm, notebook 03) and the hybrid model built with it."""

import pytest
import torch

from course_utils.model import GPT, GPTConfig
from course_utils.ssm import SSMMixer, ssd_scan, ssm_recurrence

_CFG = dict(vocab_size=300, max_seq_len=40, n_layer=2, n_head=2, d_model=32, ffn_hidden=48)


@pytest.mark.parametrize("T, chunk", [(40, 8), (37, 16), (5, 32)])
def test_the_chunked_scan_equals_the_recurrence(T, chunk):
    torch.manual_seed(0)
    B, H, P, N = 2, 3, 4, 5
    x, b, c = torch.randn(B, T, H, P), torch.randn(B, T, N), torch.randn(B, T, N)
    a = -torch.rand(B, T, H) * 2  # log-decays <= 0
    torch.testing.assert_close(ssd_scan(x, a, b, c, chunk=chunk), ssm_recurrence(x, a, b, c), atol=1e-4, rtol=1e-4)


def test_the_mixer_is_causal_and_keeps_the_shape():
    torch.manual_seed(0)
    mixer = SSMMixer(GPTConfig(**_CFG))
    u = torch.randn(2, 20, 32)
    y = mixer(u)
    u2 = u.clone()
    u2[:, 12:] = torch.randn(2, 8, 32)  # change the future
    assert y.shape == u.shape and torch.allclose(mixer(u2)[:, :12], y[:, :12], atol=1e-6)
    assert not torch.allclose(mixer(u2)[:, 12:], y[:, 12:])


def test_a_hybrid_model_trains_and_refuses_what_it_cannot_do(tmp_path):
    from course_utils.hf import export_hf
    from course_utils.inference import KVCache

    torch.manual_seed(0)
    model = GPT(GPTConfig(**_CFG, ssm_layers=(0,)))
    assert model.layers[0].ssm and not model.layers[1].ssm
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 300, (4, 32))
    first = None
    for _ in range(20):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 1.0  # it learns (a fixed batch)
    assert model.generate(x[:1, :4], 3, temperature=0).shape == (1, 7)
    dense = GPT(GPTConfig(**_CFG))
    assert model.flops_per_token() != dense.flops_per_token()
    with pytest.raises(ValueError, match="stays a course model"):
        export_hf(model, tmp_path / "hybrid")
    with pytest.raises(ValueError, match="without a cache"):
        KVCache.empty(model, 1)
    with pytest.raises(ValueError, match="must name blocks 0..1"):
        GPTConfig(**_CFG, ssm_layers=(2,))
