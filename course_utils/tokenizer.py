"""The course's tokenizer: byte-level BPE trained with ``tokenizers``, used as a transformers tokenizer.

Taught in notebook 01 (sections "A fast tokenizer with the library" and "Special
tokens and the chat template"). :mod:`course_utils.bpe` is the same algorithm written
out by hand; this module trains it at library speed on the course corpus and wraps it
as a ``PreTrainedTokenizerFast`` with:

- special tokens: ``<|endoftext|>`` (starts and ends every document; the BOS and EOS
  token), ``<|pad|>``, and the chat roles ``<|system|>``, ``<|user|>``,
  ``<|assistant|>`` with ``<|end|>`` closing every turn;
- a chat template (:data:`CHAT_TEMPLATE`) whose assistant turns sit inside
  ``{% generation %}`` markers, so SFT (notebook 04, trl's ``assistant_only_loss``)
  computes the loss on the assistant's tokens only.

Every notebook gets it with :func:`load_or_build_tokenizer` (cached artifact).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from course_utils.artifacts import load_or_build
from course_utils.bpe import GPT4_SPLIT_PATTERN, SPACED_NUMBERS_PATTERN
from course_utils.settings import Settings, get_settings

__all__ = [
    "BOS",
    "CHAT_TEMPLATE",
    "END_OF_TURN",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "TokenizerConfig",
    "corpus_key",
    "encode_chat",
    "encode_documents",
    "escape_special_tokens",
    "load_or_build_tokenizer",
    "train_tokenizer",
    "wrap_tokenizer",
]

EOS = "<|endoftext|>"  # document boundary: BOS and EOS of the base model
BOS = EOS
PAD = "<|pad|>"  # padding for batches (never trained on)
END_OF_TURN = "<|end|>"  # closes every chat turn; a chat model stops on it
SPECIAL_TOKENS = [EOS, PAD, "<|system|>", "<|user|>", "<|assistant|>", END_OF_TURN]

#: Chat format: ``<|endoftext|><|user|>\n...<|end|>\n<|assistant|>\n...<|end|>\n``.
#: The assistant's content and its ``<|end|>`` are inside ``{% generation %}`` so that
#: ``apply_chat_template(..., return_assistant_tokens_mask=True)`` marks exactly the
#: tokens SFT learns to produce.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|assistant|>\n' }}"
    "{%- generation -%}{{ message['content'] + '<|end|>' }}{%- endgeneration -%}"
    "{{ '\n' }}"
    "{%- elif message['role'] in ['system', 'user'] -%}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- else -%}"
    "{{ raise_exception('Unknown role ' + message['role'] + ': use system, user or assistant.') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)


@dataclass
class TokenizerConfig:
    """What the course tokenizer is trained on and how (its artifact key)."""

    vocab_size: int = 4096  # total ids: 256 bytes + merges + special tokens
    min_frequency: int = 2  # a pair must occur this often to be merged
    pattern: str = SPACED_NUMBERS_PATTERN  # pre-tokenization regex (course_utils.bpe; GPT-4's own is GPT4_SPLIT_PATTERN)
    source: str | None = None  # corpus source passed to data.load_corpus (None: the course world)
    max_documents: int | None = None  # train on the first N documents only (None: all)


def _hf_backend(vocab_size: int, pattern: str, special_tokens: list[str]):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    *,
    min_frequency: int = 2,
    pattern: str = GPT4_SPLIT_PATTERN,
    special_tokens: list[str] | None = None,
    show_progress: bool = False,
):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on ``texts`` (special tokens get ids 0..k-1)."""
    from tokenizers import pre_tokenizers, trainers

    special_tokens = list(SPECIAL_TOKENS if special_tokens is None else special_tokens)
    tok = _hf_backend(vocab_size, pattern, special_tokens)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no unknown token
        show_progress=show_progress,
    )
    tok.train_from_iterator(_batches(texts), trainer=trainer)
    return tok


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def wrap_tokenizer(tok):
    """A transformers ``PreTrainedTokenizerFast`` around a ``tokenizers.Tokenizer``, with
    the course's special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS, PAD)],
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def corpus_key(settings: Settings | None = None, source: str | None = None) -> str:
    """What identifies the training text in artifact keys: the course corpus's own cache
    key (it changes with the world, the corpus version and its size), or ``source``."""
    if source is not None:
        return str(source)
    from course_utils.data import corpus_folder

    return corpus_folder(settings).name


def load_or_build_tokenizer(settings: Settings | None = None, config: TokenizerConfig | None = None):
    """The course tokenizer (``PreTrainedTokenizerFast``), trained on the course corpus's
    training split the first time and cached as an artifact ("tokenizer")."""
    from transformers import AutoTokenizer

    settings = settings or get_settings()
    config = config or TokenizerConfig()

    def build(folder: Path) -> None:
        from course_utils.data import load_corpus

        docs = load_corpus("train", settings=settings, source=config.source)
        if config.max_documents:
            docs = docs[: config.max_documents]
        tok = train_tokenizer(
            docs, config.vocab_size, min_frequency=config.min_frequency, pattern=config.pattern
        )
        wrap_tokenizer(tok).save_pretrained(folder)

    key = {"tokenizer": dataclasses.asdict(config), "corpus": corpus_key(settings, config.source)}
    path = load_or_build("tokenizer", key, build, settings=settings)
    return AutoTokenizer.from_pretrained(path)


def encode_documents(tokenizer, docs: list[str]):
    """One int32 tensor: ``<|endoftext|> doc <|endoftext|> doc ...`` (EOS separates documents).

    The token stream that pretraining draws its windows from (notebook 02)."""
    import torch

    eos = tokenizer.eos_token_id
    out: list[int] = []
    for start in range(0, len(docs), 512):
        for ids in tokenizer(docs[start : start + 512], add_special_tokens=False)["input_ids"]:
            out.append(eos)
            out.extend(ids)
    out.append(eos)
    return torch.tensor(out, dtype=torch.int32)


# ---------------------------------------------------------------------- chat text that cannot forge turns
_SLOT = "\ue000{}\ue001"  # private-use characters around a message's index: what the template renders
_SLOT_RE = re.compile("\ue000(\\d+)\ue001")


def encode_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of ``messages`` in ``tokenizer``'s chat template, each message's text encoded as
    *plain text*.

    Tokenizing the rendered template as one string turns ``<|assistant|>`` or ``<|end|>`` typed by a
    user, or planted in a retrieved page, into the control tokens themselves: the text forges a turn.
    Here the template is rendered with a placeholder for each message, its own markers are encoded as
    usual (special tokens stay special) and every message's text with ``split_special_tokens=True``
    (a special-token string stays characters). For text without such strings the ids are the same as
    ``tokenizer(apply_chat_template(messages, tokenize=False))`` (tests check it on the SFT set).
    Works with any tokenizer whose template passes message text through unchanged.
    """
    slots = [{**m, "content": _SLOT.format(i)} for i, m in enumerate(messages)]
    text = tokenizer.apply_chat_template(slots, tokenize=False, add_generation_prompt=add_generation_prompt)
    ids: list[int] = []
    at, seen = 0, []
    for match in _SLOT_RE.finditer(text):
        if match.start() > at:
            ids += tokenizer(text[at : match.start()], add_special_tokens=False)["input_ids"]
        i = int(match.group(1))
        seen.append(i)
        ids += tokenizer(messages[i]["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        at = match.end()
    if at < len(text):
        ids += tokenizer(text[at:], add_special_tokens=False)["input_ids"]
    if sorted(seen) != list(range(len(messages))):
        raise ValueError("The chat template does not render each message's text exactly once: "
                         "encode_chat cannot keep message text apart from the template's markers.")
    return ids


def escape_special_tokens(text: str, tokenizer) -> str:
    """``text`` with every special-token string broken by a word joiner (U+2060) after its first
    character, for interfaces that take a prompt as text (a LangChain pipeline): ``<|end|>`` in a
    passage stays characters the model reads instead of ending the turn. Prefer :func:`encode_chat`
    where you build the token ids yourself."""
    for token in sorted(tokenizer.all_special_tokens, key=len, reverse=True):
        if len(token) > 1 and token in text:
            text = text.replace(token, token[0] + "\u2060" + token[1:])
    return text
