"""The course tokenizer (course_utils.tokenizer, notebook 01)."""

import random

import pytest

from course_utils.tokenizer import CHAT_TEMPLATE, END_OF_TURN, SPECIAL_TOKENS, train_tokenizer, wrap_tokenizer


def _texts(n=800, seed=0):
    rng = random.Random(seed)
    names = ["Orin Tallow", "Mara Quill", "Dessa Reed", "Tom Vale"]
    towns = ["Vessary", "Tessel", "Harrowgate"]
    return [
        f"{rng.choice(names)} was born in {rng.choice(towns)}. The guild met {rng.randint(2, 99)} times."
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    wrap_tokenizer(train_tokenizer(_texts(), 400)).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # exactly what later notebooks load


def test_special_tokens_have_fixed_ids_and_roles(tok):
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == list(range(len(SPECIAL_TOKENS)))
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"
    assert tok.pad_token_id == 1 and tok.pad_token_id != tok.eos_token_id
    assert len(tok) == 400
    ids = tok("a<|end|>b")["input_ids"]
    assert tok.convert_tokens_to_ids(END_OF_TURN) in ids


@pytest.mark.parametrize(
    "text", ["Orin Tallow was born in Vessary.", "東京は晴れ", "🙂👍🏽 emoji", "x  =\t1\n\n  y", "def f():\n    return 1\n"]
)
def test_round_trip(tok, text):
    assert tok.decode(tok(text)["input_ids"]) == text


def test_chat_template_marks_only_the_assistant(tok):
    assert tok.chat_template == CHAT_TEMPLATE
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where was Orin Tallow born?"},
        {"role": "assistant", "content": "In Vessary."},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|endoftext|><|system|>\n") and text.endswith("In Vessary.<|end|>\n")
    out = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    picked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(picked) == "In Vessary.<|end|>"
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")


def test_unknown_role_is_a_clear_error(tok):
    with pytest.raises(Exception, match="Unknown role"):
        tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_library_tokenizer_matches_hand_written_bpe_on_its_merges():
    from course_utils.bpe import train_bpe

    text = "\n".join(_texts(300))
    ours = train_bpe(text, 320, special_tokens=["<|endoftext|>"])
    lib = ours.to_hf_tokenizer()
    assert lib.encode(text).ids == ours.encode(text)
