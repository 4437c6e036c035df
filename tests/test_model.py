"""The from-scratch Llama-style decoder (course_utils.model, notebook 02)."""

import pytest
import torch

from course_utils.model import GPT, GPTConfig, RMSNorm, apply_rope, rope_cache, sample_next_token

CFG = GPTConfig(vocab_size=97, max_seq_len=24, n_layer=2, n_head=4, d_model=32, ffn_hidden=80)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(CFG).eval()


def test_shapes_and_loss(model):
    idx = torch.randint(0, 97, (3, 24))
    with torch.no_grad():
        logits, loss = model(idx, torch.randint(0, 97, (3, 24)))
    assert logits.shape == (3, 24, 97)
    assert abs(float(loss) - torch.log(torch.tensor(97.0)).item()) < 0.5  # ~uniform at init
    assert model(idx)[1] is None


def test_causal_future_tokens_do_not_change_the_past(model):
    a = torch.randint(0, 97, (1, 20))
    b = a.clone()
    b[0, 12:] = (b[0, 12:] + 1) % 97
    la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :12], lb[:, :12])
    assert not torch.allclose(la[:, 12:], lb[:, 12:])


def test_param_count_and_tied_head(model):
    C, Fh, V, L = 32, 80, 97, 2
    expected = V * C + L * (4 * C * C + 3 * C * Fh + 2 * C) + C
    assert model.num_params() == expected
    assert model.lm_head.weight is model.embed_tokens.weight
    untied = GPT(GPTConfig(**{**CFG.__dict__, "tie_embeddings": False}))
    assert untied.num_params() == expected + V * C
    assert model.num_params(non_embedding=True) == expected - V * C


def test_flops_per_token_formula(model):
    n_matmul = 2 * (4 * 32 * 32 + 3 * 32 * 80) + 32 * 97
    assert model.flops_per_token(24) == 6 * n_matmul + 12 * 2 * 32 * 24


def test_rmsnorm_unit_rms():
    x = torch.randn(4, 8, 16) * 7
    y = RMSNorm(16)(x)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(4, 8), rtol=1e-3, atol=1e-3)


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_cache(32, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(i, j):
        qi = apply_rope(q.view(1, 1, 1, 8), cos[i : i + 1], sin[i : i + 1])
        kj = apply_rope(k.view(1, 1, 1, 8), cos[j : j + 1], sin[j : j + 1])
        return float((qi * kj).sum())

    assert score(5, 2) == pytest.approx(score(13, 10), abs=1e-4)
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-4)
    # a rotation keeps lengths
    x = torch.randn(1, 1, 32, 8)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_sampling_modes():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5]])
    g = torch.Generator().manual_seed(0)
    assert int(sample_next_token(logits, temperature=0)) == 1
    assert all(int(sample_next_token(logits, 1.0, top_k=1, generator=g)) == 1 for _ in range(20))
    assert all(int(sample_next_token(logits, 1.0, top_p=0.01, generator=g)) == 1 for _ in range(20))
    picks = {int(sample_next_token(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert picks == {1, 3}
    picks = {int(sample_next_token(logits, 5.0, generator=g)) for _ in range(300)}
    assert picks == {0, 1, 2, 3}


def test_generate_appends_tokens_and_respects_context(model):
    idx = torch.randint(0, 97, (2, 5))
    out = model.generate(idx, 30, temperature=0.8, top_k=10, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 35) and torch.equal(out[:, :5], idx)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(d_model=30, n_head=4)
