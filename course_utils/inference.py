"""Fast generation with the course's own model: a KV cache, sampling settings, padded batches and
speculative decoding.

Taught in notebook 13 (inference and serving), where each piece is written on the page first and
checked against this module and against transformers:

- :class:`KVCache` and :func:`forward_cached`: the keys and values of every position are computed
  once and kept; a step feeds only the new tokens. Rows of a batch may be left-padded: each row's
  rotary positions start at its first real token, and padded positions are masked out, so a padded
  row generates what it would alone.
- :class:`Sampling` and :func:`process_logits`: repetition penalty, temperature, top-k and top-p
  in the order transformers applies them (``RepetitionPenaltyLogitsProcessor``, then the
  ``Temperature``/``TopK``/``TopP`` warpers), then a seeded draw.
- :func:`generate`: prefill, then one token at a time, with or without the cache (without: every
  step runs the whole sequence again, as ``GPT.generate`` does).
- :func:`speculative_generate`: a small draft model proposes ``k`` tokens, the target checks them
  in one forward pass and keeps the longest agreeing prefix plus its own next token; greedy output
  is the target's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from course_utils.model import GPT, apply_rope

__all__ = ["BatchEngine", "KVCache", "Request", "Sampling", "forward_cached", "generate", "left_pad", "process_logits",
           "simulate_batching", "speculative_generate"]


@dataclass
class KVCache:
    """Keys and values of every layer, ``(B, H, capacity, D)`` each, filled up to ``length``;
    ``mask`` (B, capacity) marks the positions that are real tokens (False: left padding)."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    mask: torch.Tensor
    length: int = 0
    padded: bool = False  # some position written so far is padding (then every step needs the mask)

    @classmethod
    def empty(cls, model: GPT, batch: int, capacity: int | None = None) -> KVCache:
        cfg = model.cfg
        capacity = capacity or cfg.max_seq_len
        if cfg.ssm_layers:
            raise ValueError("A hybrid's state-space blocks carry a state, not keys and values: generate without a "
                             "cache (GPT.generate).")
        if capacity > cfg.max_seq_len:
            raise ValueError(f"A cache of {capacity} positions is longer than the model's context ({cfg.max_seq_len}).")
        p = model.embed_tokens.weight
        shape = (batch, cfg.n_head, capacity, cfg.head_dim)
        return cls(k=[torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.n_layer)],
                   v=[torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in range(cfg.n_layer)],
                   mask=torch.zeros(batch, capacity, dtype=torch.bool, device=p.device))

    @property
    def capacity(self) -> int:
        return self.mask.shape[1]

    def positions(self, new_mask: torch.Tensor) -> torch.Tensor:
        """Rotary positions (B, T) of new tokens: the count of real tokens before each one."""
        before = self.mask[:, : self.length].sum(dim=1, keepdim=True)  # (B, 1)
        return (before + new_mask.long().cumsum(dim=1) - 1).clamp(min=0)

    def truncate(self, length: int) -> None:
        """Forget every position from ``length`` on (speculative decoding's rejected tokens)."""
        self.mask[:, length:] = False
        self.length = length

    def nbytes(self) -> int:
        """Memory the cache holds (keys and values of every layer, the whole capacity)."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


@torch.no_grad()
def forward_cached(model: GPT, idx: torch.Tensor, cache: KVCache, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits (B, T, V) of the new tokens ``idx`` (B, T), which continue what ``cache`` holds; their keys
    and values are added to it. ``mask`` (B, T): False where ``idx`` is left padding (default: none)."""
    B, T = idx.shape
    start = cache.length
    if start + T > cache.capacity:
        raise ValueError(f"{start} cached + {T} new tokens do not fit in a cache of {cache.capacity} positions.")
    end = start + T
    if mask is not None and not bool(mask.all()):
        cache.padded = True
    if not cache.padded:  # no padding anywhere: positions are start..end-1 in every row
        cache.mask[:, start:end] = True
        cos, sin = model.rope_cos[start:end], model.rope_sin[start:end]  # (T, D)
        # a single new token sees every cached position: no mask (the fast path of one-by-one decoding)
        attn_mask = None if T == 1 else (torch.arange(end, device=idx.device)[None, :]
                                         <= torch.arange(start, end, device=idx.device)[:, None])
    else:
        mask = torch.ones_like(idx, dtype=torch.bool) if mask is None else mask.bool()
        pos = cache.positions(mask)  # (B, T)
        cache.mask[:, start:end] = mask
        # query i (at start + i) sees key j when j <= start + i and j is a real token; always itself, so that
        # a padding query's row is not empty (its output is never used)
        causal = torch.arange(end, device=idx.device)[None, :] <= torch.arange(start, end, device=idx.device)[:, None]
        allowed = causal[None] & cache.mask[:, None, :end]  # (B, T, end)
        allowed[:, torch.arange(T), torch.arange(start, end)] = True
        attn_mask = allowed[:, None]  # (B, 1, T, end)
        cos, sin = model.rope_cos[pos].unsqueeze(1), model.rope_sin[pos].unsqueeze(1)  # (B, 1, T, D)
    x = model.embed_tokens(idx)  # (B, T, C)
    for layer, block in enumerate(model.layers):
        attn = block.self_attn
        h = block.input_layernorm(x)
        q, k, v = attn.qkv(h).split(x.shape[-1], dim=-1)
        q, k, v = (t.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
        cache.k[layer][:, :, start:end] = k
        cache.v[layer][:, :, start:end] = v
        y = F.scaled_dot_product_attention(q, cache.k[layer][:, :, :end], cache.v[layer][:, :, :end],
                                           attn_mask=attn_mask)  # (B, H, T, D)
        x = x + attn.o_proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp(block.post_attention_layernorm(x))
    cache.length = end
    return model.lm_head(model.norm(x))


@dataclass
class Sampling:
    """How the next token is chosen. ``temperature=0``: greedy (the other settings are ignored)."""

    temperature: float = 1.0
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # keep the smallest set whose probabilities reach top_p
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the sequence less likely
    seed: int | None = None  # None: torch's global generator
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.repetition_penalty <= 0:
            raise ValueError("temperature must be >= 0 and repetition_penalty > 0.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")

    def generator(self, device) -> torch.Generator | None:
        if self.seed is not None and self._generator is None:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


def process_logits(logits: torch.Tensor, input_ids: torch.Tensor, s: Sampling) -> torch.Tensor:
    """``logits`` (B, V) of the next token after ``input_ids`` (B, T) as ``s`` reshapes them: repetition
    penalty (a seen token's logit divided by the penalty when positive, multiplied when negative), then
    temperature, then top-k, then top-p; removed tokens get -inf. transformers' processors do the same."""
    scores = logits.float().clone()
    if s.repetition_penalty != 1.0:
        seen = scores.gather(1, input_ids)
        seen = torch.where(seen < 0, seen * s.repetition_penalty, seen / s.repetition_penalty)
        scores.scatter_(1, input_ids, seen)
    if s.temperature not in (0, 1):
        scores = scores / s.temperature
    if s.top_k is not None and 0 < s.top_k < scores.shape[-1]:
        kth = torch.topk(scores, s.top_k).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if s.top_p is not None and s.top_p < 1:
        ascending, order = torch.sort(scores, descending=False)
        cum = ascending.softmax(-1).cumsum(-1)
        drop = cum <= 1 - s.top_p
        drop[:, -1] = False  # the most likely token always stays
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


def next_token(logits: torch.Tensor, input_ids: torch.Tensor, s: Sampling) -> torch.Tensor:
    """One token id per row (B, 1): the argmax when ``s.temperature == 0``, else a draw from the
    processed distribution (repetition penalty applies to greedy choice too)."""
    if s.temperature == 0:
        if s.repetition_penalty != 1.0:
            logits = process_logits(logits, input_ids, Sampling(temperature=1.0, repetition_penalty=s.repetition_penalty))
        return logits.argmax(dim=-1, keepdim=True)
    probs = process_logits(logits, input_ids, s).softmax(-1)
    return torch.multinomial(probs, 1, generator=s.generator(logits.device))


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` (B, T_max): every prompt right-aligned, padding on the left (mask False)."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("Every prompt needs at least one token.")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = True
    return ids, mask


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, mask: torch.Tensor | None = None,
             sampling: Sampling | None = None, eos_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """``idx`` (B, T) followed by up to ``max_new_tokens`` new tokens per row (B, T + n); rows that hit
    ``eos_id`` are filled with it afterwards. ``mask`` (B, T): False on left padding. ``use_cache=False``
    runs the whole sequence at every step (the slow way the cache replaces)."""
    s = sampling or Sampling(temperature=0)
    model.eval()
    B, T = idx.shape
    if T + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(f"{T} prompt + {max_new_tokens} new tokens exceed the model's context ({model.cfg.max_seq_len}).")
    mask = torch.ones_like(idx, dtype=torch.bool) if mask is None else mask.bool()
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    cache = KVCache.empty(model, B, T + max_new_tokens) if use_cache else None
    new, new_mask = idx, mask
    for _ in range(max_new_tokens):
        if cache is None:  # everything again, in a fresh cache
            logits = forward_cached(model, idx, KVCache.empty(model, B, idx.shape[1]), mask)
        else:
            logits = forward_cached(model, new, cache, new_mask)
        nxt = next_token(logits[:, -1], idx, s)  # (B, 1)
        if eos_id is not None:
            nxt = torch.where(done[:, None], torch.full_like(nxt, eos_id), nxt)
            done |= nxt[:, 0] == eos_id
        idx = torch.cat([idx, nxt], dim=1)
        mask = torch.cat([mask, torch.ones_like(nxt, dtype=torch.bool)], dim=1)
        new, new_mask = nxt, torch.ones_like(nxt, dtype=torch.bool)
        if eos_id is not None and bool(done.all()):
            break
    return idx


@dataclass
class SpeculativeStats:
    """What speculative decoding did: target passes, draft tokens proposed and accepted."""

    target_passes: int = 0
    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


@torch.no_grad()
def speculative_generate(target: GPT, draft: GPT, idx: torch.Tensor, max_new_tokens: int, k: int = 4,
                         eos_id: int | None = None) -> tuple[torch.Tensor, SpeculativeStats]:
    """Greedy speculative decoding of one sequence ``idx`` (1, T): the draft proposes ``k`` tokens one
    by one, the target scores all of them in one pass, the agreeing prefix is kept with the target's
    own next token, and both caches forget what was rejected. The output equals greedy decoding with
    ``target`` alone; the statistics say how much of the draft was accepted."""
    if idx.shape[0] != 1:
        raise ValueError("speculative_generate decodes one sequence at a time (idx of shape (1, T)).")
    if k < 1:
        raise ValueError("k must be at least 1.")
    target.eval(), draft.eval()
    T = idx.shape[1]
    limit = T + max_new_tokens
    if limit + k > min(target.cfg.max_seq_len, draft.cfg.max_seq_len):
        raise ValueError(f"{T} prompt + {max_new_tokens} new + {k} draft tokens exceed a model's context.")
    tc, dc = KVCache.empty(target, 1, limit + k), KVCache.empty(draft, 1, limit + k)
    stats = SpeculativeStats()
    t_logits = forward_cached(target, idx[:, :-1], tc) if T > 1 else None
    forward_cached(draft, idx[:, :-1], dc) if T > 1 else None
    out = idx
    while out.shape[1] < limit:
        n = min(k, limit - out.shape[1])
        # the draft proposes n tokens (it first catches up on what the target last accepted)
        proposal, d_in = [], out[:, dc.length:]
        for _ in range(n):
            d_tok = forward_cached(draft, d_in, dc)[:, -1].argmax(-1, keepdim=True)
            proposal.append(d_tok)
            d_in = d_tok
        proposal = torch.cat(proposal, dim=1)  # (1, n)
        # the target scores the last accepted token and the n proposals in one pass
        t_logits = forward_cached(target, torch.cat([out[:, tc.length:], proposal], dim=1), tc)
        stats.target_passes += 1
        choice = t_logits[:, -(n + 1):].argmax(-1)  # (1, n + 1): the target's token after each prefix
        agree = int((choice[0, :n] == proposal[0]).long().cumprod(0).sum())
        stats.proposed += n
        stats.accepted += agree
        out = torch.cat([out, proposal[:, :agree], choice[:, agree : agree + 1]], dim=1)
        keep = out.shape[1] - 1  # the newest token's keys are computed at the next pass
        tc.truncate(keep)
        dc.truncate(min(dc.length, keep))
        if eos_id is not None and bool((out[0, T:] == eos_id).any()):
            first = int((out[0, T:] == eos_id).nonzero()[0]) + T
            return out[:, : first + 1], stats
    return out[:, :limit], stats



@dataclass
class Request:
    """A request of the batching simulation: when it arrives, its prompt and reply lengths (tokens)."""

    arrival: float
    prompt: int
    reply: int
    start: float | None = None  # when its prefill ran
    first_token: float | None = None
    finish: float | None = None


def simulate_batching(requests: list[Request], step_seconds, *, policy: str = "continuous",
                      max_batch: int = 16, prefill_seconds=None) -> dict[str, float]:
    """Serve ``requests`` with one model and batches of at most ``max_batch`` sequences; return throughput and
    latency. ``step_seconds(b)``: the time of one decode step for a batch of ``b`` (measured on the real model);
    ``prefill_seconds(tokens)``: the time of a prompt's prefill (default: one step per 64 prompt tokens).

    ``policy="static"``: a batch is formed from the requests waiting, and runs until its *longest* reply is
    done: a finished row still costs its place in every step, and requests that arrive meanwhile wait.
    ``"continuous"`` (what vLLM and TGI do): after every step finished sequences leave and waiting ones join."""
    import dataclasses

    if policy not in ("static", "continuous"):
        raise ValueError(f"policy must be 'static' or 'continuous', got {policy!r}.")
    if not requests or any(r.reply < 1 or r.prompt < 1 for r in requests):
        raise ValueError("Give at least one request, each with a prompt and a reply of at least one token.")
    prefill_seconds = prefill_seconds or (lambda tokens: step_seconds(1) * max(1, -(-tokens // 64)))
    waiting = sorted((dataclasses.replace(r, start=None, first_token=None, finish=None) for r in requests),
                     key=lambda r: r.arrival)
    done: list[Request] = []
    running: list[list] = []  # [request, tokens still to generate]
    clock = busy = 0.0
    width = 0  # rows a step computes: the live ones (continuous) or the whole batch until it ends (static)
    while waiting or running:
        if not running and waiting[0].arrival > clock:
            clock = waiting[0].arrival  # nothing to do until the next request arrives
        if policy == "continuous" or not running:
            while waiting and waiting[0].arrival <= clock and len(running) < max_batch:
                r = waiting.pop(0)
                r.start = clock
                cost = prefill_seconds(r.prompt)
                clock, busy = clock + cost, busy + cost
                running.append([r, r.reply])
            width = len(running)
        cost = step_seconds(width if policy == "static" else len(running))
        clock, busy = clock + cost, busy + cost
        for row in running:
            row[1] -= 1
            if row[0].first_token is None:
                row[0].first_token = clock
            if row[1] == 0:
                row[0].finish = clock
                done.append(row[0])
        running = [row for row in running if row[1] > 0]
    latency = sorted(r.finish - r.arrival for r in done)
    first = sorted(r.first_token - r.arrival for r in done)
    span = max(r.finish for r in done) - min(r.arrival for r in done)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"policy": policy, "requests": len(done), "tokens_per_s": sum(r.reply for r in done) / span,
            "latency_p50": pct(latency, 0.5), "latency_p95": pct(latency, 0.95),
            "first_token_p50": pct(first, 0.5), "busy_share": busy / span}


@dataclass
class _Sequence:
    slot: int
    ids: list[int]  # prompt and generated tokens
    prompt_len: int
    max_new_tokens: int
    sampling: Sampling
    stop: set[int]
    done: bool = False


class BatchEngine:
    """Continuous batching over the course model: up to ``slots`` sequences share one KV cache, a row
    each, every row at its own length. :meth:`add` prefills a new prompt into a free row (between two
    steps: it joins the running batch); :meth:`step` computes one new token for every live sequence in
    one forward pass, and frees the rows of those that finished. What a server runs in its loop
    (``course serve``); each sequence generates what :func:`generate` gives it alone."""

    def __init__(self, model: GPT, slots: int = 16, capacity: int | None = None):
        self.model = model.eval()
        self.cache = KVCache.empty(model, slots, capacity)
        self.lengths = torch.zeros(slots, dtype=torch.long)
        self.sequences: dict[int, _Sequence] = {}
        self._next_id = 0

    @property
    def free_slots(self) -> int:
        return self.cache.mask.shape[0] - len(self.sequences)

    @torch.no_grad()
    def add(self, prompt: list[int], max_new_tokens: int, sampling: Sampling | None = None,
            stop: set[int] | None = None) -> int:
        """Prefill ``prompt`` into a free row; returns the sequence's id. Its first new token comes
        with the next :meth:`step`."""
        if not prompt:
            raise ValueError("The prompt is empty.")
        if len(prompt) + max_new_tokens > self.cache.capacity:
            raise ValueError(f"{len(prompt)} prompt + {max_new_tokens} new tokens exceed the context "
                             f"({self.cache.capacity}).")
        if not self.free_slots:
            raise RuntimeError("Every row is busy: wait for a sequence to finish (free_slots).")
        used = {s.slot for s in self.sequences.values()}
        slot = min(set(range(self.cache.mask.shape[0])) - used)
        one = KVCache.empty(self.model, 1, len(prompt))
        forward_cached(self.model, torch.tensor([prompt[:-1]]), one) if len(prompt) > 1 else None
        n = len(prompt) - 1  # the last prompt token is fed by the first step
        for layer in range(len(self.cache.k)):
            self.cache.k[layer][slot, :, :n] = one.k[layer][0, :, :n]
            self.cache.v[layer][slot, :, :n] = one.v[layer][0, :, :n]
        self.cache.mask[slot] = False
        self.cache.mask[slot, :n] = True
        self.lengths[slot] = n
        seq_id, self._next_id = self._next_id, self._next_id + 1
        self.sequences[seq_id] = _Sequence(slot, list(prompt), len(prompt), max_new_tokens,
                                           sampling or Sampling(temperature=0), set(stop or ()))
        return seq_id

    @torch.no_grad()
    def step(self) -> list[tuple[int, int, bool]]:
        """One token for every live sequence: ``[(id, token, finished), ...]``."""
        if not self.sequences:
            return []
        ids = list(self.sequences)
        seqs = [self.sequences[i] for i in ids]
        rows = torch.tensor([s.slot for s in seqs])
        pos = self.lengths[rows]  # (B,): where the fed token goes, and its rotary position
        tokens = torch.tensor([[s.ids[-1]] for s in seqs])  # (B, 1)
        model, B = self.model, len(seqs)
        width = int(pos.max()) + 1
        self.cache.mask[rows, pos] = True
        visible = self.cache.mask[rows, :width][:, None, None, :]  # (B, 1, 1, width)
        cos, sin = model.rope_cos[pos][:, None, None, :], model.rope_sin[pos][:, None, None, :]
        x = model.embed_tokens(tokens)  # (B, 1, C)
        for layer, block in enumerate(model.layers):
            attn = block.self_attn
            q, k, v = attn.qkv(block.input_layernorm(x)).split(x.shape[-1], dim=-1)
            q, k, v = (t.view(B, 1, attn.n_head, attn.head_dim).transpose(1, 2) for t in (q, k, v))
            q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
            self.cache.k[layer][rows, :, pos] = k[:, :, 0]
            self.cache.v[layer][rows, :, pos] = v[:, :, 0]
            y = F.scaled_dot_product_attention(q, self.cache.k[layer][rows, :, :width],
                                               self.cache.v[layer][rows, :, :width], attn_mask=visible)
            x = x + attn.o_proj(y.transpose(1, 2).reshape(B, 1, -1))
            x = x + block.mlp(block.post_attention_layernorm(x))
        logits = model.lm_head(model.norm(x))[:, -1]  # (B, V)
        self.lengths[rows] += 1
        out = []
        for b, (seq_id, s) in enumerate(zip(ids, seqs)):
            tok = int(next_token(logits[b : b + 1], torch.tensor([s.ids]), s.sampling))
            s.ids.append(tok)
            s.done = tok in s.stop or len(s.ids) - s.prompt_len >= s.max_new_tokens
            out.append((seq_id, tok, s.done))
            if s.done:
                del self.sequences[seq_id]
                self.cache.mask[s.slot] = False
        return out
