"""Byte-level BPE from scratch (course_utils.bpe, notebook 01)."""

import random
import time

import pytest

from course_utils.bpe import GPT2_SPLIT_PATTERN, BPETokenizer, bytes_to_unicode, train_bpe

SAMPLES = [
    "Hello, world! The river Lune runs past Tessel.",
    "東京は晴れです。日本語のテキスト",
    "emoji: 🙂👍🏽🇯🇵 and a family 👨‍👩‍👧",
    "def f(x):\n\treturn x ** 2  # code\n",
    "odd   whitespace \t\t\n\n\r\n  trailing   ",
    "",
    "a<|endoftext|>b<|endoftext|>",
]


def _corpus(n=3000, seed=0):
    rng = random.Random(seed)
    names = ["Alda", "Borin", "Cela", "Doran", "Elsa", "Fenn"]
    towns = ["Marrow", "Tessel", "Quillby", "Ostrand"]
    lines = []
    for _ in range(n):
        lines.append(
            f"{rng.choice(names)} was born in {rng.choice(towns)} in {rng.randint(100, 999)}; "
            f"she walked {rng.randint(2, 90)} miles to {rng.choice(towns)}.\n"
        )
    return "".join(lines)


@pytest.fixture(scope="module")
def tok():
    return train_bpe(_corpus(), 600, special_tokens=["<|endoftext|>", "<|end|>"])


def test_bytes_to_unicode_is_a_bijection():
    m = bytes_to_unicode()
    assert sorted(m) == list(range(256))
    assert len(set(m.values())) == 256
    assert m[ord(" ")] == "Ġ"


def test_training_learns_the_requested_number_of_merges(tok):
    assert tok.vocab_size == 600
    assert len(tok.merges) == 600 - 256 - 2
    # the first merges are frequent pairs of the corpus, and later tokens are longer
    assert max(len(v) for v in tok.vocab.values()) >= 6


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_tokens_are_never_split(tok):
    ids = tok.encode("x<|endoftext|>y")
    assert tok.special_ids["<|endoftext|>"] in ids
    assert tok.encode_ordinary("<|endoftext|>") != [tok.special_ids["<|endoftext|>"]]
    # special strings in the training text never become merges
    assert all(b"<|" not in v or len(v) <= 2 for v in tok.vocab.values())


def test_compression_beats_bytes(tok):
    text = _corpus(200, seed=1)
    assert len(text.encode()) / len(tok.encode(text)) > 2.5


def test_same_merges_same_tokens_as_the_library(tok):
    hf = tok.to_hf_tokenizer()
    for text in SAMPLES + [_corpus(50, seed=2)]:
        assert hf.encode(text).ids == tok.encode(text), text


def test_gpt2_pattern_and_save_load(tok, tmp_path):
    t2 = train_bpe(_corpus(500), 300, pattern=GPT2_SPLIT_PATTERN)
    assert t2.decode(t2.encode(SAMPLES[2])) == SAMPLES[2]
    path = tok.save(tmp_path / "bpe.json")
    again = BPETokenizer.load(path)
    assert again.encode(SAMPLES[0]) == tok.encode(SAMPLES[0])


def test_training_is_incremental_fast():
    text = _corpus(12000, seed=3)  # ~0.9 MB
    start = time.perf_counter()
    t = train_bpe(text, 1024)
    assert time.perf_counter() - start < 20
    assert len(t.merges) > 300


def test_too_small_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="smaller than 256"):
        train_bpe("abc", 200)


def test_the_longest_special_token_wins_when_one_is_a_prefix_of_another():
    double = "<|endoftext|><|endoftext|>"
    tok = train_bpe(_corpus(300), 300, special_tokens=["<|endoftext|>", double])
    assert tok.encode("a" + double + "b")[1:-1] == [tok.special_ids[double]]
    assert tok.encode("<|endoftext|>x") [0] == tok.special_ids["<|endoftext|>"]
