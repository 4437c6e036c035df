"""A selective state-space mixer (Mamba-2's SSD, minimal) to stand in for attention in some blocks.

Taught in notebook 03 ("Beyond the Transformer"), where the recurrence is written as a loop and
checked against :func:`ssd_scan`. Each head keeps a state ``h`` (``head_dim x d_state``) that every token
updates and reads::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        (decay, then write)
    y_t = h_t C_t + D * x_t                                  (read)

``dt``, ``B`` and ``C`` are computed from the token itself ("selective": the model decides per token how
much to forget and what to write and read); ``A < 0`` is one learned scalar per head. Memory per token is
constant (no cache that grows with the context) and the cost is linear in T. :func:`ssd_scan` computes
the same outputs in chunks: within a chunk as a masked, decayed ``C B^T`` product (attention-like, a
matmul), across chunks by passing the state on. A block of a hybrid model (Jamba-style) runs this mixer
where the others run attention (``GPTConfig.ssm_layers``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SSMMixer", "ssd_scan", "ssm_recurrence"]

#: ``cfg`` is a ``model.GPTConfig``, typed loosely so that this module needs nothing from model.
_GPTConfig = Any


def _segsum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = x[..., j+1] + ... + x[..., i]`` for ``j <= i``, ``-inf`` above the diagonal."""
    T = x.size(-1)
    cs = torch.cumsum(x, dim=-1)
    out = cs[..., :, None] - cs[..., None, :]
    keep = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    return out.masked_fill(~keep, float("-inf"))


def ssd_scan(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """The recurrence of the module docstring, chunked. ``x`` (B, T, H, P) inputs already scaled by
    ``dt``; ``a`` (B, T, H) log-decays ``dt * A`` (<= 0); ``b``, ``c`` (B, T, N), shared by the heads.
    Returns ``y`` (B, T, H, P) without the ``D`` skip. T is padded to a multiple of ``chunk``."""
    Bsz, T, H, P = x.shape
    pad = (-T) % chunk
    if pad:
        x, a = F.pad(x, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        b, c = F.pad(b, (0, 0, 0, pad)), F.pad(c, (0, 0, 0, pad))
    n = x.size(1) // chunk
    x = x.view(Bsz, n, chunk, H, P)
    b, c = b.view(Bsz, n, chunk, -1), c.view(Bsz, n, chunk, -1)
    a = a.view(Bsz, n, chunk, H).permute(0, 3, 1, 2)  # (B, H, n, L)
    a_cum = torch.cumsum(a, dim=-1)
    # 1. within each chunk: y_t = sum_{s<=t} (C_t . B_s) exp(a_{s+1} + ... + a_t) x_s
    decay = torch.exp(_segsum(a))  # (B, H, n, L, L)
    y = torch.einsum("bcln,bcsn,bhcls,bcshp->bclhp", c, b, decay, x)
    # 2. the state each chunk leaves behind, then 3. passed from chunk to chunk with its decay
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (B, H, n, L)
    states = torch.einsum("bcln,bhcl,bclhp->bchpn", b, to_end, x)  # (B, n, H, P, N)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    across = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (B, H, n+1, n+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", across, states)[:, :-1]  # the state entering each chunk
    # 4. what each token reads from the state that entered its chunk
    y = y + torch.einsum("bcln,bchpn,bhcl->bclhp", c, states, torch.exp(a_cum))
    return y.reshape(Bsz, n * chunk, H, P)[:, :T]


def ssm_recurrence(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The same as :func:`ssd_scan`, one token at a time (the definition; slow)."""
    Bsz, T, H, P = x.shape
    h = x.new_zeros(Bsz, H, P, b.size(-1))
    ys = []
    for t in range(T):
        h = torch.exp(a[:, t])[..., None, None] * h + x[:, t, :, :, None] * b[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", h, c[:, t]))
    return torch.stack(ys, dim=1)


class SSMMixer(nn.Module):
    """A Mamba-2-style mixer: in-projection to (z, x, B, C, dt), a short causal depthwise convolution over
    (x, B, C), the selective scan over ``n_head`` heads, a SiLU gate by z, and the out-projection."""

    def __init__(self, cfg: _GPTConfig):
        super().__init__()
        self.d_inner, self.n_state, self.n_head = cfg.ssm_expand * cfg.d_model, cfg.ssm_state, cfg.n_head
        if self.d_inner % self.n_head:
            raise ValueError(f"ssm_expand * d_model = {self.d_inner} must be divisible by n_head = {self.n_head}.")
        conv_dim = self.d_inner + 2 * self.n_state
        self.in_proj = nn.Linear(cfg.d_model, self.d_inner + conv_dim + self.n_head, bias=False)
        self.conv = nn.Conv1d(conv_dim, conv_dim, kernel_size=4, groups=conv_dim, padding=3)
        self.dt_bias = nn.Parameter(torch.log(torch.expm1(torch.linspace(1e-3, 1e-1, self.n_head))))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, self.n_head)))  # A = -exp(A_log)
        self.D = nn.Parameter(torch.ones(self.n_head))
        self.o_proj = nn.Linear(self.d_inner, cfg.d_model, bias=False)

    def forward(self, u: torch.Tensor, *_rope: Any) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        Bsz, T, _ = u.shape
        z, xbc, dt = self.in_proj(u).split([self.d_inner, self.d_inner + 2 * self.n_state, self.n_head], dim=-1)
        xbc = F.silu(self.conv(xbc.transpose(1, 2))[..., :T].transpose(1, 2))  # causal: the last 3 outputs cut
        x, b, c = xbc.split([self.d_inner, self.n_state, self.n_state], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias)  # (B, T, H) step sizes, > 0
        x = x.float().view(Bsz, T, self.n_head, -1)
        y = ssd_scan(x * dt[..., None], -torch.exp(self.A_log) * dt, b.float(), c.float())
        y = y + self.D[:, None] * x
        y = y.reshape(Bsz, T, self.d_inner) * F.silu(z.float())
        return self.o_proj(y.to(u.dtype))
