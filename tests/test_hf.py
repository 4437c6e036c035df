"""Export to transformers and back (course_utils.hf, notebook 02)."""

import pytest
import torch

from course_utils.hf import export_hf, gpt_from_llama, load_hf, logits_max_diff, to_llama
from course_utils.model import GPT, GPTConfig
from course_utils.tokenizer import train_tokenizer, wrap_tokenizer


@pytest.fixture(scope="module")
def tok():
    texts = [f"Orin Tallow was born in Vessary in year {i}." for i in range(300)]
    return wrap_tokenizer(train_tokenizer(texts, 300))


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def model(request):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=300, max_seq_len=32, n_layer=2, n_head=2, d_model=32, ffn_hidden=64,
                    tie_embeddings=request.param)
    m = GPT(cfg)
    with torch.no_grad():  # make the norms non-trivial so a mix-up of weights shows
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return m.eval()


def test_export_load_same_logits_and_generate(model, tok, tmp_path):
    export_hf(model, tmp_path, tok)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    hf_model, hf_tok = load_hf(tmp_path)
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    idx = torch.tensor([hf_tok("Orin Tallow was born in")["input_ids"]])
    assert logits_max_diff(model, hf_model, idx) < 1e-4
    idx = torch.randint(0, 300, (3, 32))
    assert logits_max_diff(model, hf_model, idx) < 1e-4
    out = hf_model.generate(idx[:1, :5], max_new_tokens=6, do_sample=False)
    ours = model.generate(idx[:1, :5], 6, temperature=0)
    assert torch.equal(out[:, : ours.shape[1]], ours[:, : out.shape[1]])
    assert hf_model.generation_config.eos_token_id == [tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")]


def test_round_trip_back_to_our_model(model):
    hf_model = to_llama(model)
    back = gpt_from_llama(hf_model)
    idx = torch.randint(0, 300, (2, 20))
    torch.testing.assert_close(back(idx)[0], model(idx)[0])


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="course export-hf"):
        load_hf(tmp_path / "nothing")
