"""A Llama-style decoder-only Transformer in one short file, nanoGPT style.

Taught in notebook 02 (sections "The model, piece by piece" and "Counting parameters
and FLOPs"). Pieces, in the order data flows through them::

    token ids (B, T)
      -> embedding                                     (B, T, C)
      -> n_layer x Block:  x = x + Attention(RMSNorm(x))   pre-norm residual blocks
                           x = x + SwiGLU(RMSNorm(x))
      -> RMSNorm -> linear head (optionally tied to the embedding)  -> logits (B, T, V)

Attention is causal multi-head attention through ``F.scaled_dot_product_attention``
with rotary position embeddings (RoPE) applied to queries and keys. The maths is the
same as transformers' ``LlamaForCausalLM`` (rotate-half RoPE, RMSNorm in float32,
SiLU-gated MLP, no biases), so :mod:`course_utils.hf` can copy the weights over and get
the same logits. Two projections are fused for speed (one bigger matmul is faster on a
CPU than three small ones): ``qkv`` holds q_proj, k_proj, v_proj stacked, and
``gate_up`` holds gate_proj and up_proj; the export splits them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from course_utils.ssm import SSMMixer

__all__ = [
    "GPT",
    "GPTConfig",
    "MoE",
    "RMSNorm",
    "apply_rope",
    "rope_cache",
    "sample_next_token",
]


@dataclass
class GPTConfig:
    """Shape of the model. Defaults: a ~1M-parameter toy; presets live in ``pretrain``."""

    vocab_size: int = 4096  # number of token ids (the tokenizer's vocabulary size)
    max_seq_len: int = 256  # longest context the model is trained and sampled with
    n_layer: int = 4  # number of Transformer blocks
    n_head: int = 4  # attention heads per block; head_dim = d_model // n_head
    d_model: int = 128  # width of the residual stream (C)
    ffn_hidden: int = 352  # hidden width of the SwiGLU feed-forward (~8/3 * d_model)
    rope_theta: float = 10000.0  # base of the rotary embedding's frequencies
    norm_eps: float = 1e-5  # epsilon inside RMSNorm
    tie_embeddings: bool = True  # output head shares the embedding matrix
    init_std: float = 0.02  # std of the normal initialisation of weights
    # mixture of experts (notebook 03): n_experts SwiGLU experts of width ffn_hidden in every block, top_k
    # of them per token; 0: the dense feed-forward. Knobs added later: they join a cache key only when set.
    n_experts: int = field(default=0, metadata={"key_if_set": True})
    top_k: int = field(default=2, metadata={"key_if_set": True})  # experts per token
    # renormalise the top_k router weights to sum to 1 (Mixtral); None: for top_k >= 2 only, since with one
    # expert per token the weight would always be 1 and the router would get no gradient from the loss (Switch)
    norm_topk: bool | None = field(default=None, metadata={"key_if_set": True})
    capacity_factor: float = field(default=0.0, metadata={"key_if_set": True})  # 0: no token is ever dropped
    aux_loss_coef: float = field(default=0.01, metadata={"key_if_set": True})  # load-balancing loss weight
    # a hybrid (notebook 03): these blocks mix tokens with a selective state-space scan instead of attention
    ssm_layers: tuple[int, ...] = field(default=(), metadata={"key_if_set": True})
    ssm_state: int = field(default=16, metadata={"key_if_set": True})  # state size N per head (course_utils.ssm)
    ssm_expand: int = field(default=2, metadata={"key_if_set": True})  # the mixer's inner width / d_model

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}.")
        if any(not 0 <= i < self.n_layer for i in self.ssm_layers):
            raise ValueError(f"ssm_layers={tuple(self.ssm_layers)} must name blocks 0..{self.n_layer - 1}.")
        if self.n_experts and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be between 1 and n_experts={self.n_experts}.")
        if (self.d_model // self.n_head) % 2:
            raise ValueError("head_dim = d_model // n_head must be even for rotary embeddings.")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_head


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (as Llama does)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rope_cache(seq_len: int, head_dim: int, theta: float = 10000.0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of rotary embeddings, each (T, head_dim), rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, head_dim/2): angle of each position and pair
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+D/2}) of ``x`` (B, H, T, D) by position-dependent angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # rotate_half
    return x * cos + rotated * sin


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and the past."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)  # q, k, v stacked
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        q, k = apply_rope(q, cos, sin).to(v.dtype), apply_rope(k, cos, sin).to(v.dtype)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.o_proj(y)


class SwiGLU(nn.Module):
    """Feed-forward: down( silu(gate(x)) * up(x) )."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.hidden = cfg.ffn_hidden
        self.gate_up = nn.Linear(cfg.d_model, 2 * cfg.ffn_hidden, bias=False)  # gate, up stacked
        self.down_proj = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)  # 2 x (B, T, F)
        return self.down_proj(F.silu(gate) * up)


class MoE(nn.Module):
    """Mixture-of-experts feed-forward: a router sends each token to ``top_k`` of ``n_experts`` SwiGLU
    experts and adds their outputs, weighted by the router's probabilities (Mixtral's routing with
    ``norm_topk``, Switch's without: the default for ``top_k = 1``, where renormalised weights are always 1). An expert takes at most ``capacity_factor x tokens x top_k /
    n_experts`` tokens, in order; the rest are dropped (their residual stream passes unchanged).

    After each forward: ``aux_loss``, the load-balancing loss ``n_experts x sum_e f_e x P_e`` (f: share
    of the routed token slots that chose e, P: e's mean router probability; 1.0 when balanced), and
    ``load`` (token slots per expert, before dropping), ``dropped`` (share of slots dropped) and ``choice``
    (the experts each token went to), detached.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.n_experts, cfg.top_k
        self.norm_topk = cfg.top_k > 1 if cfg.norm_topk is None else cfg.norm_topk
        self.capacity_factor = cfg.capacity_factor
        self.router = nn.Linear(cfg.d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg) for _ in range(cfg.n_experts))
        self.aux_loss = torch.zeros(())
        self.load = torch.zeros(cfg.n_experts)
        self.dropped = 0.0
        self.choice = torch.zeros(0, cfg.top_k, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        flat = x.reshape(-1, C)  # (N, C): every token on its own
        probs = F.softmax(self.router(flat).float(), dim=-1)  # (N, E)
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (N, k): the experts each token goes to
        if self.norm_topk:
            weights = weights / weights.sum(-1, keepdim=True)
        slots = F.one_hot(chosen, self.n_experts).sum(1).float()  # (N, E): 1 where a token went
        self.aux_loss = self.n_experts * (slots.mean(0) / self.top_k * probs.mean(0)).sum()
        n = flat.shape[0]
        capacity = math.ceil(self.capacity_factor * n * self.top_k / self.n_experts) if self.capacity_factor else n
        out = torch.zeros_like(flat)
        kept = 0
        for e, expert in enumerate(self.experts):
            rows, which = (chosen == e).nonzero(as_tuple=True)  # tokens routed to e, in order
            rows, which = rows[:capacity], which[:capacity]  # first come, first served
            kept += rows.numel()
            if rows.numel():
                y = expert(flat[rows]) * weights[rows, which].unsqueeze(-1)  # (n_e, C)
                out.index_add_(0, rows, y.to(out.dtype))
        self.load = slots.sum(0).detach()
        self.choice = chosen.detach()  # (N, k): the experts of each token, for looking at what the router learned
        self.dropped = 1.0 - kept / (n * self.top_k)
        return out.view(B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: attention, then feed-forward, each added to x."""

    def __init__(self, cfg: GPTConfig, layer: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ssm = layer in cfg.ssm_layers  # a hybrid's state-space block: no attention, no position encoding
        if self.ssm:
            self.mixer = SSMMixer(cfg)
        else:
            self.self_attn = CausalSelfAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MoE(cfg) if cfg.n_experts else SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        mix = self.mixer if self.ssm else self.self_attn
        x = x + mix(self.input_layernorm(x), cos, sin)  # (B, T, C)
        x = x + self.mlp(self.post_attention_layernorm(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """The decoder: embedding, blocks, final norm, head. ``forward`` returns logits and loss."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.activation_checkpointing = False  # set by the training loop (TrainConfig.activation_checkpointing)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T_max, D)
        self.register_buffer("rope_sin", sin, persistent=False)  # (T_max, D)
        self.apply(self._init_weights)
        # residual projections start smaller so the residual stream does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``idx`` (B, T) token ids -> logits (B, T, V), and the mean cross-entropy if
        ``targets`` (B, T) are given (positions with target -100 are ignored)."""
        B, T = idx.shape
        if T > self.cfg.max_seq_len:
            raise ValueError(
                f"The sequence has {T} tokens but the model's context is {self.cfg.max_seq_len}: "
                f"cut the prompt to its last {self.cfg.max_seq_len} tokens."
            )
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]  # (T, D)
        x = self.embed_tokens(idx)  # (B, T, C)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            if recompute:  # keep only the block's input; run it again in backward (less memory, more time)
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin)  # (B, T, C)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
            if self.cfg.n_experts and self.cfg.aux_loss_coef:  # keep the experts' load balanced
                loss = loss + self.cfg.aux_loss_coef * sum(b.mlp.aux_loss for b in self.layers) / self.cfg.n_layer
        return logits, loss

    def moe_stats(self) -> dict[str, float]:
        """The last forward's mixture-of-experts figures: the mean load-balancing loss over the layers,
        the largest ratio of the busiest to the idlest expert's load in a layer, the share of token slots
        dropped (empty for a dense model)."""
        moes = [b.mlp for b in self.layers if isinstance(b.mlp, MoE)]
        if not moes:
            return {}
        return {"aux_loss": sum(float(m.aux_loss.detach()) for m in moes) / len(moes),
                "expert_load_ratio": max(float(m.load.max() / m.load.min().clamp(min=1)) for m in moes),
                "dropped": sum(m.dropped for m in moes) / len(moes)}

    # ------------------------------------------------------------------ accounting
    def num_params(self, non_embedding: bool = False, active: bool = False) -> int:
        """Parameters counted once (a tied head is not counted twice). With
        ``non_embedding=True`` the embedding table is left out (the usual scaling-law N); with
        ``active=True`` a mixture of experts counts only the ``top_k`` experts a token uses."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
        if active and self.cfg.n_experts:
            n -= self.cfg.n_layer * (self.cfg.n_experts - self.cfg.top_k) * 3 * self.cfg.d_model * self.cfg.ffn_hidden
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward = 3 x forward), PaLM-style.

        6 x (parameters that take part in a matmul: every linear layer, the head
        included, the embedding lookup not) + 12 x n_layer x d_model x T for the
        attention scores and their weighted sum (counted for the full T x T matrix).
        """
        cfg = self.cfg
        T = seq_len or cfg.max_seq_len
        ffn = 3 * cfg.d_model * cfg.ffn_hidden  # a mixture of experts: top_k experts and the router
        ffn = ffn * cfg.top_k + cfg.d_model * cfg.n_experts if cfg.n_experts else ffn
        inner = cfg.ssm_expand * cfg.d_model  # a state-space block: its projections (the scan not counted)
        ssm = cfg.d_model * (2 * inner + 2 * cfg.ssm_state + cfg.n_head) + inner * cfg.d_model
        n_ssm = len(cfg.ssm_layers)
        n_attn = cfg.n_layer - n_ssm
        n_matmul = n_attn * 4 * cfg.d_model**2 + n_ssm * ssm + cfg.n_layer * ffn + cfg.d_model * cfg.vocab_size
        return 6.0 * n_matmul + 12.0 * n_attn * cfg.d_model * T

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled tokens to ``idx`` (B, T); no KV cache (see
        notebook 13). ``temperature=0`` is greedy. Stops early if every row hit ``eos_id``."""
        was_training = self.training
        self.eval()
        done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            context = idx[:, -self.cfg.max_seq_len :]
            logits, _ = self(context)
            nxt = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            if eos_id is not None:
                done |= nxt.squeeze(1) == eos_id
                if bool(done.all()):
                    break
        self.train(was_training)
        return idx


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row from ``logits`` (B, V): temperature, then top-k, then top-p
    (nucleus: the smallest set of tokens whose probabilities sum to at least ``top_p``)."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # tokens after the nucleus is full
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)
