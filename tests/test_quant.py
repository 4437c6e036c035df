"""NF4 by hand (course_utils.quant): the code book, quantise/dequantise, memory, and
agreement with bitsandbytes' own NF4 on this CPU."""

from __future__ import annotations

import pytest
import torch

from course_utils import quant


def test_codebook_derived_from_the_normal_matches_the_paper():
    book = quant.nf4_codebook()
    assert book.shape == (16,)
    assert (book - quant.NF4_CODEBOOK).abs().max() < 1e-6
    assert book[0] == -1 and book[-1] == 1 and (book == 0).sum() == 1


def test_roundtrip_error_and_memory():
    torch.manual_seed(0)
    w = torch.randn(128, 256) * 0.02
    q = quant.quantize_nf4(w, blocksize=64)
    back = quant.dequantize_nf4(q)
    assert back.shape == w.shape
    # every value is a code value times its block's absmax: error at most half the widest gap
    assert (back - w).abs().max() <= 0.5 * 0.304 * q.absmax.max() + 1e-7
    report = quant.quantization_report(w)
    assert report["bits_per_weight"] == pytest.approx(4.5)  # 4 bits + one fp32 absmax per 64
    assert report["relative_error"] < 0.15
    assert report["nf4_bytes"] * 6 < report["fp32_bytes"]


def test_odd_sizes_and_exact_values():
    w = torch.tensor([[0.0, 1.0, -1.0], [0.5, -0.25, 0.0]])
    back = quant.dequantize_nf4(quant.quantize_nf4(w, blocksize=4))
    assert back.shape == w.shape
    assert back[0, 0] == 0 and back[0, 1] == 1 and back[0, 2] == -1  # 0 and the absmax are exact


def test_same_codes_as_bitsandbytes():
    torch.manual_seed(0)
    w = torch.randn(128, 256) * 0.02
    cmp = quant.compare_with_bitsandbytes(w)
    if not cmp["available"]:
        pytest.skip(cmp["reason"])
    assert cmp["codebook_max_diff"] < 1e-6
    assert cmp["same_codes"] == 1.0
    assert cmp["absmax_max_diff"] < 1e-6
    assert cmp["dequant_max_diff"] < 1e-6


def test_qlora_status_and_the_cuda_sentence(tmp_path):
    status = quant.qlora_status()
    assert status["path"] in ("gpu", "cpu") or status["path"].startswith("none")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA GPU"):
            quant.load_4bit_model(tmp_path, require_cuda=True)
