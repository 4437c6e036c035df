"""What this machine computes at: the precision to train in and the peak FLOP/s that MFU is measured
against. Taught in notebook 02 ("Your machine's peak"); :mod:`course_utils.pretrain` uses both."""

from __future__ import annotations

import time

import torch

__all__ = ["autocast_dtype", "cpu_native_bf16", "measure_peak_flops"]


def autocast_dtype(device: str, precision: str = "auto") -> torch.dtype:
    """bf16 if asked for or (``auto``) if the device runs bf16 matmuls faster than fp32, else fp32.

    On a CPU "faster" is measured (a 512^3 matmul in each precision, cached per process):
    with AVX512-BF16 or AMX bf16 wins several times over; without them it is emulated and loses.
    """
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}.")
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device == "cpu":
        if not getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)():
            return torch.float32
        # oneDNN "supports" bf16 on any AVX-512 CPU, but without AVX512-BF16 or AMX it is
        # emulated and ~3x *slower* than fp32 (measured on an Ice Lake Xeon): measure, don't assume.
        bf16 = measure_peak_flops(torch.bfloat16, "cpu", n=512, repeats=2)
        fp32 = measure_peak_flops(torch.float32, "cpu", n=512, repeats=2)
        return torch.bfloat16 if bf16 > 1.3 * fp32 else torch.float32
    return torch.float32


def cpu_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag in /proc/cpuinfo);
    None where the flags cannot be read (not Linux). Without them oneDNN emulates bf16, slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


_PEAKS: dict[tuple[str, str, int], float] = {}


def measure_peak_flops(dtype: torch.dtype = torch.bfloat16, device: str = "cpu", n: int = 2048, repeats: int = 2) -> float:
    """FLOP/s of this machine on a big square matmul in ``dtype``: the "peak" of MFU.

    The best of ``repeats`` timed runs (other processes only ever make it slower).
    Cached per process.
    """
    key = (str(dtype), device, n)
    if key in _PEAKS:
        return _PEAKS[key]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = 0.0
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - start))
    _PEAKS[key] = best
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
