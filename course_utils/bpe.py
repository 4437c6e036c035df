"""Byte-level BPE written from scratch: pre-tokenization, merge training, encode, decode.

Taught in notebook 01 (sections "Bytes, not characters" to "Same merges, same tokens").
The course's real tokenizer is trained with the ``tokenizers`` library
(:mod:`course_utils.tokenizer`); this module is the readable version of what that
library does, fast enough to train on a 1 MB text in seconds.

The algorithm, GPT-2 style:

1. **Pre-tokenize** the text with a regex (:data:`GPT4_SPLIT_PATTERN`) into words,
   numbers, punctuation runs and whitespace, so that no merge ever crosses e.g. a
   word boundary. Special tokens (``<|endoftext|>``) are cut out first and never split.
2. **Bytes**: every pre-token becomes its UTF-8 bytes, ids 0..255. Any text, in any
   script, with emoji, is representable: there is no unknown token.
3. **Train**: repeatedly find the most frequent adjacent pair of ids (counted over
   the *unique* pre-tokens, weighted by how often each occurs) and replace it by a new
   id. Counts are updated incrementally: a merge only touches the words that contain
   the merged pair, so each step costs what it changes, not a re-scan of the corpus.
4. **Encode** a new text by applying the learned merges to each pre-token in the order
   they were learned (lowest rank first); **decode** by concatenating the bytes.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import regex

__all__ = [
    "SPACED_NUMBERS_PATTERN",
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "bytes_to_unicode",
    "train_bpe",
]

#: GPT-2's pre-tokenization regex: contractions, letter runs, digit runs, other
#: symbols, each optionally preceded by one space; whitespace runs on their own.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: GPT-4's (cl100k) regex: case-insensitive contractions, digits in groups of at most
#: three, newlines kept apart from spaces. The course's default.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)

#: GPT-4's regex with one change, a number keeps the space before it
#: (`` 1838`` is `` 183`` + ``8``, not `` `` + ``183`` + ``8``), as a word does. With a bare space
#: before every number, the token that precedes each number's first digits is the same space
#: everywhere, so a model copying a number from a passage cannot tell the numbers apart by
#: what comes before them. The course tokenizer's default (``TokenizerConfig.pattern``): notebook 01
#: shows the two splits, ``benchmarks/base_models.py`` compares base models built with each (on its own
#: it did not make the learner model copy numbers; with drills that ask numbers first it did).
SPACED_NUMBERS_PATTERN = GPT4_SPLIT_PATTERN.replace(r"|\p{N}{1,3}|", r"| ?\p{N}{1,3}|")


def _longest_first(special_tokens: list[str]) -> list[str]:
    """Special tokens in the order a regex alternation must try them: when one is a prefix of
    another (``<|endoftext|>``, ``<|endoftext|><|endoftext|>``), the longer must win."""
    return sorted(special_tokens, key=len, reverse=True)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from the 256 byte values to printable characters.

    The ``tokenizers`` library stores byte-level vocabularies with these characters
    (a space is ``Ġ``, a newline ``Ċ``), which is how :meth:`BPETokenizer.to_hf_files`
    writes our merges in its format.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def _merge_word(word: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """Replace every non-overlapping occurrence of ``pair`` in ``word`` by ``new_id``."""
    out: list[int] = []
    i, n = 0, len(word)
    a, b = pair
    while i < n:
        if i < n - 1 and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@dataclass
class BPETokenizer:
    """A trained byte-level BPE: merges in rank order, the vocabulary, special tokens.

    Ids 0..255 are the bytes; merge ``i`` creates id ``256 + i``; special tokens come
    after the merges. Build one with :func:`train_bpe`.
    """

    merges: list[tuple[int, int]]  # learned pairs, in the order learned (= rank)
    special_tokens: list[str] = field(default_factory=list)  # never split, never merged
    pattern: str = GPT4_SPLIT_PATTERN  # pre-tokenization regex

    def __post_init__(self) -> None:
        self.ranks = {pair: i for i, pair in enumerate(self.merges)}
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        for i, (a, b) in enumerate(self.merges):
            self.vocab[256 + i] = self.vocab[a] + self.vocab[b]
        first_special = 256 + len(self.merges)
        self.special_ids = {s: first_special + i for i, s in enumerate(self.special_tokens)}
        self.special_by_id = {i: s for s, i in self.special_ids.items()}
        self._split = regex.compile(self.pattern)
        self._special_split = (
            regex.compile("(" + "|".join(regex.escape(s) for s in _longest_first(self.special_tokens)) + ")")
            if self.special_tokens
            else None
        )
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        """Bytes + merges + special tokens."""
        return 256 + len(self.merges) + len(self.special_tokens)

    # ------------------------------------------------------------------ encode
    def _encode_word(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids = list(word.encode("utf-8"))
        while len(ids) > 1:
            # the pair learned earliest among those present is merged first
            best = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            rank = self.ranks.get(best)
            if rank is None:
                break
            ids = list(_merge_word(tuple(ids), best, 256 + rank))
        if len(self._cache) < 200_000:
            self._cache[word] = ids
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as plain text."""
        out: list[int] = []
        for word in self._split.findall(text):
            out.extend(self._encode_word(word))
        return out

    def encode(self, text: str) -> list[int]:
        """Encode ``text``; special-token strings in it become their single ids."""
        if self._special_split is None:
            return self.encode_ordinary(text)
        out: list[int] = []
        for part in self._special_split.split(text):
            if part in self.special_ids:
                out.append(self.special_ids[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text (invalid UTF-8 from a cut multi-byte char becomes U+FFFD)."""
        chunks: list[bytes] = []
        for i in ids:
            if i in self.special_by_id:
                chunks.append(self.special_by_id[i].encode("utf-8"))
            else:
                chunks.append(self.vocab[i])
        return b"".join(chunks).decode("utf-8", errors="replace")

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each id as readable text (bytes that are not valid UTF-8 alone shown escaped)."""
        out = []
        for i in ids:
            if i in self.special_by_id:
                out.append(self.special_by_id[i])
            else:
                raw = self.vocab[i]
                try:
                    out.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    out.append(repr(raw)[2:-1])
        return out

    # ------------------------------------------------------------------ save / export
    def save(self, path: str | Path) -> Path:
        """Write merges, special tokens and pattern as JSON."""
        path = Path(path)
        data = {"merges": self.merges, "special_tokens": self.special_tokens, "pattern": self.pattern}
        path.write_text(json.dumps(data))
        return path

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read what :meth:`save` wrote."""
        data = json.loads(Path(path).read_text())
        return cls([tuple(m) for m in data["merges"]], data["special_tokens"], data["pattern"])

    def to_hf_tokenizer(self):
        """The same merges as a ``tokenizers.Tokenizer`` (byte-level BPE, same regex).

        Used in notebook 01 to check that the library encodes exactly like we do when
        it is given our merges.
        """
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

        b2u = bytes_to_unicode()

        def as_unicode(raw: bytes) -> str:
            return "".join(b2u[b] for b in raw)

        vocab = {as_unicode(self.vocab[i]): i for i in range(256 + len(self.merges))}
        merges = [(as_unicode(self.vocab[a]), as_unicode(self.vocab[b])) for a, b in self.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(self.pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        if self.special_tokens:
            # added in id order, so they get the ids our encoder uses
            tok.add_special_tokens(self.special_tokens)
        return tok


def _count_words(texts: Iterable[str], pattern: str, special_tokens: list[str]) -> Counter[str]:
    split = regex.compile(pattern)
    special = (
        regex.compile("|".join(regex.escape(s) for s in _longest_first(special_tokens))) if special_tokens else None
    )
    counts: Counter[str] = Counter()
    for text in texts:
        parts = special.split(text) if special is not None else [text]
        for part in parts:
            counts.update(split.findall(part))
    return counts


def train_bpe(
    texts: str | Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Iterable[str] = (),
    pattern: str = GPT4_SPLIT_PATTERN,
    min_frequency: int = 2,
    verbose: bool = False,
) -> BPETokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``texts``.

    Counts pairs once over the unique pre-tokens (weighted by frequency), then keeps
    those counts up to date after every merge by touching only the words that contain
    the merged pair; a heap with lazy deletion finds the most frequent pair.
    Ties are broken by the smaller pair, so training is deterministic.
    Stops early if no pair occurs at least ``min_frequency`` times.
    """
    special_tokens = list(special_tokens)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(f"vocab_size={vocab_size} is smaller than 256 bytes + {len(special_tokens)} special tokens.")
    if isinstance(texts, str):
        texts = [texts]
    word_counts = _count_words(texts, pattern, special_tokens)

    # unique words as lists of ids, with their frequencies
    words: list[list[int]] = [list(w.encode("utf-8")) for w in word_counts]
    freqs: list[int] = list(word_counts.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> ids of words holding it
    for wi, (w, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += f
            where[pair].add(wi)

    # max-heap of (-count, pair); entries go stale when counts change and are skipped
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -neg:
            continue  # stale entry
        if -neg < min_frequency:
            break
        new_id = 256 + len(merges)
        merges.append(pair)
        changed: set[tuple[int, int]] = set()
        a, b = pair
        for wi in where.pop(pair, ()):
            w = words[wi]
            if len(w) < 2:
                continue
            f = freqs[wi]
            # remove the word's old pairs, merge, add its new pairs
            for p in zip(w, w[1:]):
                pair_counts[p] -= f
                changed.add(p)
            new_w = list(_merge_word(tuple(w), pair, new_id))
            words[wi] = new_w
            for p in zip(new_w, new_w[1:]):
                pair_counts[p] += f
                where[p].add(wi)
                changed.add(p)
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_counts.pop(p, None)
        if verbose and len(merges) % 500 == 0:
            print(f"  {len(merges)} merges", flush=True)
    return BPETokenizer(merges, special_tokens, pattern)
