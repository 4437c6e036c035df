"""Fast generation with the course model (course_utils.inference, notebook 13): the KV cache gives the
uncached model's logits and tokens, padded rows generate what they would alone, the sampling settings
equal transformers' processors, speculative decoding equals the target's greedy output."""

import pytest
import torch

from course_utils.hf import to_llama
from course_utils.inference import (KVCache, Sampling, forward_cached, generate, left_pad, process_logits,
                                    speculative_generate)
from course_utils.model import GPT, GPTConfig


def _gpt(seed: int, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": 97, "max_seq_len": 64, "n_layer": 2, "n_head": 2, "d_model": 32,
                       "ffn_hidden": 64, **kw})
    m = GPT(cfg)
    with torch.no_grad():  # larger weights: sharper distributions, so that a wrong position or mask shows
        for p in m.parameters():
            p.mul_(4.0) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def model():
    return _gpt(0)


def test_prefill_and_steps_give_the_full_forward_logits(model):
    idx = torch.randint(0, 97, (2, 20))
    full, _ = model(idx)
    cache = KVCache.empty(model, 2)
    parts = [forward_cached(model, idx[:, :12], cache)] + [forward_cached(model, idx[:, i:i + 1], cache)
                                                          for i in range(12, 20)]
    assert cache.length == 20
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-4)


def test_cached_greedy_equals_the_uncached_model(model):
    idx = torch.randint(0, 97, (1, 7))
    ours = generate(model, idx, 30)
    assert torch.equal(ours, model.generate(idx, 30, temperature=0))
    assert torch.equal(ours, generate(model, idx, 30, use_cache=False))


def test_a_left_padded_row_generates_what_it_would_alone(model):
    prompts = [[5, 9, 13, 2, 7, 1, 8], [40, 41], [3, 3, 60, 12]]
    ids, mask = left_pad(prompts, pad_id=0)
    assert mask.sum(1).tolist() == [7, 2, 4] and ids[1, :5].tolist() == [0] * 5
    logits = forward_cached(model, ids, KVCache.empty(model, 3), mask)
    for i, p in enumerate(prompts):  # the real positions' logits are the row's own
        alone, _ = model(torch.tensor([p]))
        assert torch.allclose(logits[i, -len(p):], alone[0], atol=1e-4)
    batch = generate(model, ids, 12, mask=mask)
    for row, p in zip(batch, prompts):
        alone = generate(model, torch.tensor([p]), 12)
        assert row[-12:].tolist() == alone[0, -12:].tolist()


def test_transformers_cached_generate_gives_the_same_tokens(model):
    idx = torch.randint(0, 97, (1, 6))
    hf = to_llama(model).eval()
    theirs = hf.generate(idx, max_new_tokens=20, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(generate(model, idx, 20), theirs)


@pytest.mark.parametrize("settings", [
    {"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.8}, {"repetition_penalty": 1.3},
    {"temperature": 1.3, "top_k": 20, "top_p": 0.9, "repetition_penalty": 1.2},
])
def test_processed_logits_equal_transformers_processors(settings):
    from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                              TopKLogitsWarper, TopPLogitsWarper)

    torch.manual_seed(1)
    logits, ids = torch.randn(4, 97) * 3, torch.randint(0, 97, (4, 15))
    procs = LogitsProcessorList()
    if "repetition_penalty" in settings:
        procs.append(RepetitionPenaltyLogitsProcessor(settings["repetition_penalty"]))
    if "temperature" in settings:
        procs.append(TemperatureLogitsWarper(settings["temperature"]))
    if "top_k" in settings:
        procs.append(TopKLogitsWarper(settings["top_k"]))
    if "top_p" in settings:
        procs.append(TopPLogitsWarper(settings["top_p"]))
    ours = process_logits(logits, ids, Sampling(**settings))
    theirs = procs(ids, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)], atol=1e-6)
    assert (~torch.isinf(ours)).sum(1).min() >= 1


def test_seeded_sampling_repeats_and_settings_narrow_the_choice(model):
    idx = torch.randint(0, 97, (1, 5))
    a = generate(model, idx, 15, sampling=Sampling(temperature=1.0, seed=7))
    b = generate(model, idx, 15, sampling=Sampling(temperature=1.0, seed=7))
    c = generate(model, idx, 15, sampling=Sampling(temperature=1.0, seed=8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(generate(model, idx, 15, sampling=Sampling(temperature=1.0, top_k=1, seed=3)),
                       generate(model, idx, 15))  # top-1 sampling is greedy
    with pytest.raises(ValueError, match="top_p"):
        Sampling(top_p=0)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
def test_speculative_decoding_equals_the_target_alone(model, k):
    draft = _gpt(1, n_layer=1, d_model=16, n_head=2, ffn_hidden=32)
    idx = torch.randint(0, 97, (1, 6))
    out, stats = speculative_generate(model, draft, idx, 30, k=k)
    assert torch.equal(out, generate(model, idx, 30))
    assert stats.proposed >= stats.accepted >= 0 and stats.target_passes <= 30
    same, same_stats = speculative_generate(model, model, idx, 30, k=k)  # a perfect draft
    assert torch.equal(same, out) and same_stats.acceptance == 1.0
    assert same_stats.target_passes == -(-30 // (k + 1))  # k accepted + 1 of its own per pass


def test_eos_stops_and_errors_are_sentences(model):
    idx = torch.randint(0, 97, (1, 4))
    first = int(generate(model, idx, 1)[0, -1])
    out = generate(model, idx, 10, eos_id=first)
    assert out.shape[1] == 5
    with pytest.raises(ValueError, match="context"):
        generate(model, torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], 0)
    with pytest.raises(ValueError, match="one sequence"):
        speculative_generate(model, model, torch.zeros(2, 3, dtype=torch.long), 5)


def test_batching_simulation_by_hand():
    from course_utils.inference import Request, simulate_batching

    reqs = [Request(0.0, 10, 1), Request(0.0, 10, 3), Request(0.5, 10, 1)]
    one = lambda b: 1.0  # noqa: E731  (a step costs one second whatever the batch)
    free = lambda tokens: 0.0  # noqa: E731
    static = simulate_batching(reqs, one, policy="static", prefill_seconds=free)
    cont = simulate_batching(reqs, one, policy="continuous", prefill_seconds=free)
    # static: the late request waits for the batch's longest reply (3 s), then runs 1 s: done at 4
    # continuous: it joins after the first step and is done at 2
    assert static["latency_p95"] == pytest.approx(3.5) and cont["latency_p95"] == pytest.approx(3.0)
    assert static["tokens_per_s"] == pytest.approx(5 / 4) and cont["tokens_per_s"] == pytest.approx(5 / 3)
    assert reqs[0].finish is None  # the caller's requests are left as they were
    with pytest.raises(ValueError, match="policy"):
        simulate_batching(reqs, one, policy="fifo")


def test_continuous_batching_serves_more_when_steps_cost_little_more_per_row():
    import random

    from course_utils.inference import Request, simulate_batching

    rng = random.Random(0)
    reqs = [Request(i * 0.05, 40, rng.randint(5, 60)) for i in range(100)]
    step = lambda b: 0.02 + 0.002 * b  # noqa: E731  (a batch costs little more than one row)
    static = simulate_batching(reqs, step, policy="static")
    cont = simulate_batching(reqs, step, policy="continuous")
    assert cont["tokens_per_s"] > static["tokens_per_s"] and cont["latency_p50"] < static["latency_p50"]
    assert static["requests"] == cont["requests"] == 100


def test_batch_engine_rows_join_and_leave_and_generate_what_they_would_alone(model):
    from course_utils.inference import BatchEngine

    prompts = {0: [5, 9, 13, 2, 7], 1: [40], 2: [3, 3, 60, 12, 8, 8, 1], 3: [22, 23]}
    lengths = {0: 12, 1: 5, 2: 9, 3: 7}
    engine = BatchEngine(model, slots=2, capacity=32)
    got: dict[int, list[int]] = {}
    ids = {engine.add(prompts[0], lengths[0]): 0, engine.add(prompts[1], lengths[1]): 1}
    with pytest.raises(RuntimeError, match="busy"):
        engine.add([1, 2], 3)
    queue = [2, 3]
    while engine.sequences or queue:
        while queue and engine.free_slots:  # a finished row is taken by a waiting request at once
            p = queue.pop(0)
            ids[engine.add(prompts[p], lengths[p])] = p
        for seq_id, tok, _ in engine.step():
            got.setdefault(ids[seq_id], []).append(tok)
    for p, prompt in prompts.items():
        alone = generate(model, torch.tensor([prompt]), lengths[p])[0, len(prompt):].tolist()
        assert got[p] == alone, p
    stop = got[0][2]
    first = got[0].index(stop)  # the stop token's first place in that reply
    engine.add(prompts[0], 12, stop={stop})
    steps = [engine.step() for _ in range(first + 1)]
    assert steps[-1] == [(steps[0][0][0], stop, True)] and not engine.sequences  # stopped at it
