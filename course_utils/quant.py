"""4-bit NormalFloat (NF4) quantisation written out, and QLoRA with bitsandbytes.

Taught in notebook 05 (section "QLoRA: 4-bit weights"). QLoRA keeps the frozen base
weights in 4 bits and trains LoRA adapters (in 16 or 32 bits) on top. The 4-bit format
is NF4:

1. cut the weight matrix, flattened, into blocks of ``blocksize`` numbers (64);
2. divide each block by its largest absolute value (``absmax``), so it lies in [-1, 1];
3. replace each number by the index (0..15) of the nearest of 16 code values, the
   :func:`nf4_codebook`: quantiles of a normal distribution, because trained weights are
   roughly normal, so each code is used about equally often;
4. store two indices per byte plus one absmax per block.

Dequantising is a table look-up times the block's absmax. :func:`compare_with_bitsandbytes`
checks our codes and values against bitsandbytes' own NF4 (which runs on this CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "NF4_CODEBOOK",
    "NF4Tensor",
    "compare_with_bitsandbytes",
    "dequantize_nf4",
    "load_4bit_model",
    "nf4_codebook",
    "qlora_status",
    "quantization_report",
    "quantize_nf4",
    "model_nf4_report",
    "qlora_model",
]

#: The 16 NF4 values, as printed in the QLoRA paper (Dettmers et al., 2023, appendix E)
#: and used by bitsandbytes.
NF4_CODEBOOK = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


def nf4_codebook(offset: float = 0.9677083) -> torch.Tensor:
    """The NF4 code values derived from the normal distribution (the paper's recipe).

    8 positive values: normal quantiles at probabilities evenly spaced from ``offset`` down
    to 0.5; 7 negative ones from the same recipe with 8 points; and an exact zero (so that
    zero weights and padding stay zero). Normalised to [-1, 1]. The asymmetry (8 positive,
    7 negative) is what lets 16 values include 0 exactly.
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (values / values.abs().max()).float()


@dataclass
class NF4Tensor:
    """A weight matrix in NF4: packed 4-bit codes, one absmax per block, the original shape."""

    packed: torch.Tensor  # uint8, two codes per byte (first code in the high nibble)
    absmax: torch.Tensor  # float32, one per block
    shape: tuple[int, ...]  # shape of the original tensor
    blocksize: int  # numbers per block

    def nbytes(self) -> int:
        """Storage in bytes: packed codes + absmax values (fp32)."""
        return self.packed.numel() * self.packed.element_size() + self.absmax.numel() * self.absmax.element_size()


def quantize_nf4(weight: torch.Tensor, blocksize: int = 64, codebook: torch.Tensor | None = None) -> NF4Tensor:
    """Quantise ``weight`` to NF4 block by block (see the module docstring)."""
    codebook = NF4_CODEBOOK if codebook is None else codebook
    flat = weight.detach().float().reshape(-1)
    n = flat.numel()
    pad = (-n) % blocksize
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    blocks = flat.view(-1, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1).clamp_min(1e-12)  # (n_blocks,)
    scaled = blocks / absmax[:, None]  # in [-1, 1]
    codes = (scaled[..., None] - codebook).abs().argmin(dim=-1).to(torch.uint8).reshape(-1)  # nearest code
    if codes.numel() % 2:
        codes = torch.cat([codes, codes.new_zeros(1)])
    packed = (codes[0::2] << 4) | codes[1::2]  # two 4-bit codes per byte
    return NF4Tensor(packed=packed, absmax=absmax, shape=tuple(weight.shape), blocksize=blocksize)


def unpack_codes(q: NF4Tensor) -> torch.Tensor:
    """The 4-bit code of every number (uint8, flattened, including block padding)."""
    return torch.stack([q.packed >> 4, q.packed & 0xF], dim=1).reshape(-1)


def dequantize_nf4(q: NF4Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
    """Back to float32: code value times its block's absmax."""
    codebook = NF4_CODEBOOK if codebook is None else codebook
    codes = unpack_codes(q)
    n = 1
    for d in q.shape:
        n *= d
    values = codebook[codes.long()][: len(q.absmax) * q.blocksize].view(-1, q.blocksize) * q.absmax[:, None]
    return values.reshape(-1)[:n].view(q.shape)


def quantization_report(weight: torch.Tensor, blocksize: int = 64) -> dict[str, float]:
    """Memory and error of NF4 on ``weight``: bytes in fp32 / bf16 / NF4, bits per weight,
    mean and max absolute error, and the error relative to the weights' mean magnitude."""
    q = quantize_nf4(weight, blocksize)
    back = dequantize_nf4(q)
    err = (back - weight.float()).abs()
    return {
        "numbers": weight.numel(),
        "fp32_bytes": weight.numel() * 4,
        "bf16_bytes": weight.numel() * 2,
        "nf4_bytes": q.nbytes(),
        "bits_per_weight": 8 * q.nbytes() / weight.numel(),
        "mean_abs_error": float(err.mean()),
        "max_abs_error": float(err.max()),
        "relative_error": float(err.mean() / weight.float().abs().mean()),
    }


def compare_with_bitsandbytes(weight: torch.Tensor, blocksize: int = 64) -> dict[str, Any]:
    """Quantise ``weight`` with our code and with ``bitsandbytes.functional.quantize_4bit``
    (NF4) and compare: share of identical codes, largest difference of the dequantised
    values, and of the absmax values. ``{"available": False, "reason": ...}`` if bitsandbytes
    cannot quantise on this machine."""
    try:
        import bitsandbytes.functional as bnbf

        packed, state = bnbf.quantize_4bit(weight.float().contiguous(), blocksize=blocksize, quant_type="nf4")
        theirs = bnbf.dequantize_4bit(packed, state).float()
    except Exception as exc:  # noqa: BLE001 - any failure means "not supported here"
        return {"available": False, "reason": f"bitsandbytes cannot quantise to NF4 here ({type(exc).__name__}: {exc})."}
    ours = quantize_nf4(weight, blocksize)
    their_codes = torch.stack([packed.reshape(-1) >> 4, packed.reshape(-1) & 0xF], dim=1).reshape(-1)
    n = min(len(their_codes), weight.numel())
    same = float((unpack_codes(ours)[:n] == their_codes[:n]).float().mean())
    return {
        "available": True,
        "codebook_max_diff": float((bnbf.get_4bit_type("nf4", device="cpu").float().cpu() - NF4_CODEBOOK).abs().max()),
        "same_codes": same,
        "dequant_max_diff": float((dequantize_nf4(ours) - theirs).abs().max()),
        "absmax_max_diff": float((ours.absmax - state.absmax.float().reshape(-1)).abs().max()),
        "bnb_bytes": packed.numel() * packed.element_size() + state.absmax.numel() * state.absmax.element_size(),
    }


def qlora_status() -> dict[str, Any]:
    """Where QLoRA can run: ``{"cuda": bool, "bitsandbytes": version or None, "path": ...}``."""
    try:
        import bitsandbytes

        version = bitsandbytes.__version__
    except Exception:  # noqa: BLE001
        version = None
    cuda = torch.cuda.is_available()
    if version is None:
        path = "none: install bitsandbytes to load models in 4 bits"
    elif cuda:
        path = "gpu"
    else:
        path = "cpu"
    return {"cuda": cuda, "bitsandbytes": version, "path": path}


def load_4bit_model(path: str | Path, compute_dtype: torch.dtype | None = None, require_cuda: bool = False):
    """Load a causal LM with its linear layers in NF4 (``BitsAndBytesConfig(load_in_4bit=True)``).

    On a GPU this is the QLoRA set-up; bitsandbytes >= 0.48 also runs it on a CPU (slowly).
    Raises a ``RuntimeError`` saying what to do when it cannot run here.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    status = qlora_status()
    if require_cuda and not status["cuda"]:
        raise RuntimeError(
            "QLoRA training at full speed needs a CUDA GPU, and torch sees none here: run this "
            "notebook on Colab (Runtime > Change runtime type > GPU) or use the CPU path below."
        )
    if status["bitsandbytes"] is None:
        raise RuntimeError("4-bit loading needs bitsandbytes: `pip install bitsandbytes`, then restart the kernel.")
    compute_dtype = compute_dtype or (torch.bfloat16 if status["cuda"] else torch.float32)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=compute_dtype)
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, quantization_config=config, dtype=compute_dtype, device_map={"": "cuda" if status["cuda"] else "cpu"},
        )
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(
            f"bitsandbytes {status['bitsandbytes']} could not load the model in 4 bits on this "
            f"{'GPU' if status['cuda'] else 'CPU'} ({type(exc).__name__}: {exc}). On a CPU, the sections that "
            f"quantise by hand still show what NF4 does; for QLoRA training use a CUDA GPU (e.g. Colab)."
        ) from exc


def model_nf4_report(model, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                     blocksize: int = 64) -> dict[str, float]:
    """NF4 applied to every target linear layer of ``model``: their bytes in fp32, bf16 and
    NF4, the whole model's size with them in NF4 (the rest in fp32), and the mean relative error."""
    from torch import nn

    fp32 = nf4 = 0
    errors = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            w = module.weight.detach()
            r = quantization_report(w, blocksize)
            fp32 += r["fp32_bytes"]
            nf4 += r["nf4_bytes"]
            errors.append(r["relative_error"])
    total = sum(p.numel() * 4 for p in model.parameters())
    return {
        "layers": len(errors),
        "linear_fp32_mb": fp32 / 2**20,
        "linear_bf16_mb": fp32 / 2 / 2**20,
        "linear_nf4_mb": nf4 / 2**20,
        "model_fp32_mb": total / 2**20,
        "model_with_nf4_mb": (total - fp32 + nf4) / 2**20,
        "mean_relative_error": sum(errors) / max(1, len(errors)),
    }


def qlora_model(path: str | Path, r: int = 8, require_cuda: bool = False):
    """QLoRA: the model at ``path`` loaded in NF4 (:func:`load_4bit_model`), prepared for
    k-bit training, with trainable LoRA adapters (rank ``r``) on its projections."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    from course_utils.lora import lora_config

    model = load_4bit_model(path, require_cuda=require_cuda)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(r))
