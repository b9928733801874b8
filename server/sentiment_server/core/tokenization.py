"""Step 1: texts (or text pairs) -> token ids, with the model's own tokenizer.json.

Reproduces the fast tokenizer's `tokenizer(texts, padding=True,
truncation=True)`: same special tokens, same truncation (to the model's
maximum or a smaller per-request limit; `longest_first` for pairs), right
padding with the pad id. With a window stride it gives what
`return_overflowing_tokens=True, stride=...` gives: the text cut into
overlapping windows, special tokens in each.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from ..errors import InvalidInput

IdArray = npt.NDArray[np.int64]
Pair = tuple[str, str]  # (text, text_pair)


@dataclass(frozen=True)
class EncodedText:
    ids: IdArray  # unpadded, special tokens included
    truncated: bool
    tokens: tuple[str, ...] = ()
    type_ids: IdArray | None = None  # segment ids, for a model that takes them
    # Windowed: the windows after this one, and the text tokens (special tokens not counted) each covers.
    overflowing: tuple[EncodedText, ...] = ()
    start_token: int = 0
    end_token: int = 0

    @property
    def windows(self) -> tuple[EncodedText, ...]:
        return (self, *self.overflowing)


class TextTokenizer:
    """Thread-safe encoder; one configured `Tokenizer` per (max_length, stride), made on first use.

    `type_ids`: also give segment ids (for a model that takes token_type_ids).
    """

    def __init__(self, tokenizer_json: Path, max_length: int, pad_token_id: int, type_ids: bool = False) -> None:
        self._source = Tokenizer.from_file(str(tokenizer_json)).to_str()
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.type_ids = type_ids
        self._configured: dict[tuple[int, int], Tokenizer] = {}
        self._lock = threading.Lock()
        processor = self._tokenizer(max_length, 0).post_processor
        self.num_special_tokens = processor.num_special_tokens_to_add(False) if processor else 0
        self._num_special_in_pair = processor.num_special_tokens_to_add(True) if processor else 0

    def _tokenizer(self, max_length: int, stride: int) -> Tokenizer:
        key = (max_length, stride)
        tok = self._configured.get(key)  # made once per key: the lock only guards making it
        if tok is not None:
            return tok
        with self._lock:
            tok = self._configured.get(key)
            if tok is None:
                tok = Tokenizer.from_str(self._source)
                tok.no_padding()
                tok.enable_truncation(max_length=max_length, stride=stride)  # longest_first for pairs
                self._configured[key] = tok
            return tok

    def resolve_max_length(self, requested: int) -> int:
        """The per-request limit: 0 means the model's maximum."""
        if requested == 0:
            return self.max_length
        if requested > self.max_length:
            raise InvalidInput(f"max_length {requested} exceeds the model's maximum of {self.max_length}")
        if requested <= self.num_special_tokens:
            raise InvalidInput(f"max_length must be greater than {self.num_special_tokens} (the special tokens)")
        return requested

    def resolve_stride(self, max_length: int, requested: int | None) -> int:
        """Tokens shared by consecutive windows: by default a quarter of a window's text tokens."""
        window = self.resolve_max_length(max_length)
        room = window - self.num_special_tokens
        if requested is None:
            return room // 4
        if requested >= room:
            raise InvalidInput(
                f"stride {requested} must be below {room}: the text tokens a window of {window} holds "
                f"({self.num_special_tokens} of its tokens are special tokens)"
            )
        return requested

    def encode(
        self,
        inputs: Sequence[str] | Sequence[Pair],
        max_length: int = 0,
        with_tokens: bool = False,
        window_stride: int | None = None,
    ) -> list[EncodedText]:
        """One EncodedText per input; `window_stride` (single texts): windows instead of truncation."""
        max_length = self.resolve_max_length(max_length)
        tok = self._tokenizer(max_length, window_stride or 0)
        encodings: list[Encoding] = (
            [_encode_one(tok, inputs[0])]  # no trip through the parallel batch machinery
            if len(inputs) == 1
            else tok.encode_batch(list(inputs), add_special_tokens=True)
        )
        if window_stride is None:
            specials = self._num_special_in_pair if isinstance(inputs[0], tuple) else self.num_special_tokens
            return [self._encoded(e, with_tokens, bool(e.overflowing), specials) for e in encodings]
        return [self._windowed(e, with_tokens, window_stride) for e in encodings]

    def _encoded(self, e: Encoding, with_tokens: bool, truncated: bool, specials: int, start: int = 0) -> EncodedText:
        return EncodedText(
            ids=np.asarray(e.ids, dtype=np.int64),
            truncated=truncated,
            tokens=tuple(e.tokens) if with_tokens else (),
            type_ids=np.asarray(e.type_ids, dtype=np.int64) if self.type_ids else None,
            start_token=start,
            end_token=start + len(e.ids) - specials,
        )

    def _windowed(self, first: Encoding, with_tokens: bool, stride: int) -> EncodedText:
        """The fast tokenizer's windows: each starts `stride` text tokens before the previous one ends."""
        windows = []
        start = 0
        for e in (first, *first.overflowing):
            window = self._encoded(e, with_tokens, False, self.num_special_tokens, start)
            windows.append(window)
            start = window.end_token - stride
        head, *rest = windows
        return EncodedText(head.ids, False, head.tokens, head.type_ids, tuple(rest), head.start_token, head.end_token)


def _encode_one(tok: Tokenizer, text: str | Pair) -> Encoding:
    if isinstance(text, tuple):
        return tok.encode(text[0], text[1], add_special_tokens=True)
    return tok.encode(text, add_special_tokens=True)


def pad_batch(sequences: list[IdArray], pad_token_id: int) -> tuple[IdArray, IdArray]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both int64 [batch, length]."""
    if len(sequences) == 1:  # a lone text: nothing to pad
        ids = np.asarray(sequences[0], dtype=np.int64).reshape(1, -1)
        return ids, np.ones_like(ids)
    length = max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_type_ids(type_ids: list[IdArray], length: int) -> IdArray:
    """Segment ids right-padded with 0 to `length`: int64 [batch, length]."""
    out = np.zeros((len(type_ids), length), dtype=np.int64)
    for row, seq in enumerate(type_ids):
        out[row, : len(seq)] = seq
    return out
