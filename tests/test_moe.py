"""The mixture-of-experts feed-forward (course_utils.model.MoE, notebook 03): routing, the
load-balancing loss, capacity and dropped tokens, parameter counts, and the Mixtral export."""

import dataclasses

import pytest
import torch

from course_utils.model import GPT, GPTConfig, MoE, SwiGLU

_CFG = dict(vocab_size=300, max_seq_len=32, n_layer=2, n_head=2, d_model=32, ffn_hidden=48)


def _moe(**kw) -> MoE:
    torch.manual_seed(0)
    return MoE(GPTConfig(**{**_CFG, "n_experts": 4, **kw}))


def _route_all_to(moe: MoE, expert: int) -> None:
    """A collapsed router: every token's logits favour ``expert`` by far."""
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[expert] = 1.0  # a positive input sum makes expert's logit the largest


def test_the_balancing_loss_is_one_when_balanced_and_n_experts_when_one_expert_takes_every_token():
    moe = _moe(top_k=1)
    x = torch.rand(2, 16, 32) + 1.0  # positive, so a row of ones in the router is a large logit
    _route_all_to(moe, 2)
    moe.router.weight.data *= 10
    moe(x)
    assert moe.aux_loss.item() == pytest.approx(4.0, rel=1e-3) and moe.load.tolist() == [0, 0, 32, 0]
    # tokens spread evenly, each confidently: token i to expert i % 4
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(4, 32) * 50)
    x = torch.zeros(2, 16, 32)
    for i in range(32):
        x.view(-1, 32)[i, i % 4] = 1.0
    moe(x)
    assert moe.aux_loss.item() == pytest.approx(1.0, abs=1e-3) and moe.load.tolist() == [8, 8, 8, 8]


def test_capacity_drops_the_tokens_an_expert_cannot_take_and_passes_them_through_as_zero():
    moe = _moe(top_k=1, capacity_factor=1.0)
    x = torch.rand(1, 16, 32) + 1.0
    _route_all_to(moe, 0)
    y = moe(x)
    assert moe.dropped == pytest.approx(1 - 4 / 16)  # capacity ceil(1.0 * 16 / 4) = 4 tokens
    assert y[0, :4].abs().sum() > 0 and torch.equal(y[0, 4:], torch.zeros(12, 32))  # first come, first served
    no_cap = _moe(top_k=1)
    _route_all_to(no_cap, 0)
    no_cap(x)
    assert no_cap.dropped == 0.0


def test_one_expert_is_the_dense_feed_forward_and_top_k_weights_follow_norm_topk():
    moe = _moe(n_experts=1, top_k=1, norm_topk=True)
    dense = SwiGLU(GPTConfig(**_CFG))
    dense.load_state_dict(moe.experts[0].state_dict())
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(moe(x), dense(x))  # one expert, weight 1: the dense layer
    switch = _moe(top_k=1, norm_topk=False)  # Switch: the expert's output scaled by its probability
    probs = torch.softmax(switch.router(x.reshape(-1, 32)), -1)
    top = probs.max(-1)
    expected = torch.stack([switch.experts[int(e)](row[None])[0] * p for row, e, p in
                            zip(x.reshape(-1, 32), top.indices, top.values)])
    torch.testing.assert_close(switch(x).reshape(-1, 32), expected)
    with pytest.raises(ValueError, match="top_k=5"):
        GPTConfig(**_CFG, n_experts=4, top_k=5)


def test_the_balancing_loss_trains_the_router_and_counts_in_the_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**_CFG, n_experts=4, top_k=2, aux_loss_coef=0.5))
    x = torch.randint(0, 300, (2, 16))
    _, loss = model(x, x)
    aux = sum(b.mlp.aux_loss for b in model.layers) / 2
    logits, _ = model(x)
    plain = torch.nn.functional.cross_entropy(logits.view(-1, 300), x.view(-1))
    assert loss.item() == pytest.approx(plain.item() + 0.5 * aux.item(), rel=1e-5)
    loss.backward()
    assert all(b.mlp.router.weight.grad.abs().sum() > 0 for b in model.layers)
    stats = model.moe_stats()
    assert set(stats) == {"aux_loss", "expert_load_ratio", "dropped"} and stats["expert_load_ratio"] >= 1
    assert GPT(GPTConfig(**_CFG)).moe_stats() == {}


def test_active_parameters_and_flops_count_top_k_experts():
    dense = GPT(GPTConfig(**_CFG))
    moe = GPT(GPTConfig(**_CFG, n_experts=4, top_k=1))
    expert = 3 * 32 * 48
    assert moe.num_params() - dense.num_params() == 2 * (3 * expert + 32 * 4)  # 3 more experts, a router per layer
    assert moe.num_params(active=True) == dense.num_params() + 2 * 32 * 4
    assert moe.flops_per_token() - dense.flops_per_token() == 6 * 2 * 32 * 4


def test_a_mixture_of_experts_exports_to_mixtral_with_the_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from course_utils.hf import export_hf, logits_max_diff

    torch.manual_seed(0)
    model = GPT(GPTConfig(**_CFG, n_experts=4, top_k=2)).eval()
    folder = export_hf(model, tmp_path / "moe")
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    assert logits_max_diff(model, hf, torch.randint(0, 300, (2, 20))) < 1e-4
    with pytest.raises(ValueError, match="stays course-only"):
        export_hf(GPT(GPTConfig(**_CFG, n_experts=4, top_k=1)), tmp_path / "switch")  # Switch routing by default
    assert MoE(GPTConfig(**_CFG, n_experts=4, top_k=1)).norm_topk is False
    assert MoE(GPTConfig(**_CFG, n_experts=4, top_k=2)).norm_topk is True


def test_new_model_knobs_leave_the_cache_keys_of_dense_models_unchanged():
    from course_utils.artifacts import config_dict
    from course_utils.pretrain import get_preset

    key = config_dict(get_preset("learner"))
    assert "n_experts" not in key["model"] and "top_k" not in key["model"]
    moe = get_preset("learner", model=dataclasses.replace(get_preset("learner").model, n_experts=4))
    assert config_dict(moe)["model"]["n_experts"] == 4


def test_course_pretrain_trains_the_mixture_of_experts_variant_and_reports_its_load(tmp_path, capsys):
    import json

    from course_utils.cli import main
    from tests.test_pretrain import _write_text

    text = _write_text(tmp_path / "docs.txt")
    assert main(["pretrain", "--preset", "tiny", "--text-file", str(text), "--steps", "3", "--experts", "4",
                 "--top-k", "2", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    moe = out["moe"]
    assert (moe["experts"], moe["top_k"]) == (4, 2) and moe["active_params"] < out["params"]
    assert moe["aux_loss"] >= 1.0 - 1e-6 and moe["expert_load_ratio"] >= 1.0 and moe["dropped"] == 0.0
