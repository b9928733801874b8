"""The workloads: fixed, seeded corpora with known token counts.

Words are whole-word entries of the uncased WordPiece vocabulary (ids 1996 to
7999: frequent English words), so a text of n words is exactly n + 2 tokens
([CLS] and [SEP]) and every path sees exactly the same token counts.

- `short`: like the seed's sentences, 12 to 20 tokens (mean 16).
- `mixed`: 10 to 256 tokens, uniform (mean 133).
- `long`: 500 to 5,000 tokens, uniform (mean 2,750): longer than the model's
  512, classified as sliding windows (`windowed`), not cut.

Lengths are drawn in shuffled blocks of 64 (`long`: 16) that each cover the
whole range evenly, so any prefix (the in-process paths measure one) has the
corpus's mix of lengths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

SEED = 20240611
FIRST_WORD_ID, LAST_WORD_ID = 1996, 8000
SPECIAL_TOKENS = 2  # [CLS] ... [SEP]
BLOCK = 64
LONG_BLOCK = 16  # long texts cost seconds each: short samples must still cover the range
WINDOWED = frozenset({"long"})  # workloads classified as sliding windows (TRUNCATION_STRATEGY_WINDOW)


@dataclass(frozen=True)
class Workload:
    name: str
    texts: tuple[str, ...]
    lengths: tuple[int, ...]  # tokens per text, special tokens included

    @property
    def windowed(self) -> bool:
        return self.name in WINDOWED

    @property
    def mean_tokens(self) -> float:
        return sum(self.lengths) / len(self.lengths)

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.texts)} texts, {min(self.lengths)}-{max(self.lengths)} tokens "
            f"(mean {self.mean_tokens:.0f})"
            + (", as sliding windows (the service's defaults)" if self.windowed else "")
        )


def vocabulary_words(tokenizer_json: Path) -> list[str]:
    vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab()
    return sorted(
        (w for w, i in vocab.items() if FIRST_WORD_ID <= i < LAST_WORD_ID and w.isascii() and w.isalpha()),
        key=lambda w: vocab[w],
    )


def _texts(words: list[str], lengths: list[int], rng: random.Random) -> list[str]:
    texts = []
    for tokens in lengths:
        sentence = " ".join(rng.choice(words) for _ in range(tokens - SPECIAL_TOKENS))
        texts.append(sentence[0].upper() + sentence[1:] + ".")  # "." is one more token: drop a word for it
    return texts


def _stratified(rng: random.Random, low: int, high: int, count: int, size: int = BLOCK) -> list[int]:
    """`count` lengths in [low, high]: each block of `size` spreads evenly over the range, shuffled."""
    lengths: list[int] = []
    while len(lengths) < count:
        span = high - low + 1
        block = [low + int((i + rng.random()) * span / size) for i in range(size)]
        rng.shuffle(block)
        lengths.extend(block)
    return lengths[:count]


def build(name: str, tokenizer_json: Path, size: int | None = None) -> Workload:
    """`short`, `mixed` or `long`; the same texts on every run and every machine."""
    rng = random.Random(f"{SEED}-{name}")
    words = vocabulary_words(tokenizer_json)
    if name == "short":
        lengths = _stratified(rng, 12, 20, size or 2048)
    elif name == "mixed":
        lengths = _stratified(rng, 10, 256, size or 1024)
    elif name == "long":
        lengths = _stratified(rng, 500, 5000, size or 256, LONG_BLOCK)
    else:
        raise ValueError(f"unknown workload {name!r}")
    # One word fewer: the final "." is a token of its own.
    texts = _texts(words, [n - 1 for n in lengths], rng)
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_truncation()  # count every token of a long text, whatever tokenizer.json says
    counted = [len(e.ids) for e in tok.encode_batch(texts)]
    if counted != lengths:
        raise AssertionError(f"{name}: token counts differ from the plan (vocabulary changed?)")
    return Workload(name, tuple(texts), tuple(lengths))
