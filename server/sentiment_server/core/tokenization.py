"""Step 1: texts -> token ids, with the model's own tokenizer.json.

Reproduces `tokenizer(texts, padding=True, truncation=True)` of the fast
tokenizer: same special tokens, same truncation (to the model's maximum or a
smaller per-request limit), right padding with the pad id.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from ..errors import InvalidInput

IdArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EncodedText:
    ids: IdArray  # unpadded, special tokens included
    truncated: bool
    tokens: tuple[str, ...] = ()


class TextTokenizer:
    """Thread-safe encoder; one configured `Tokenizer` per max_length, made on first use."""

    def __init__(self, tokenizer_json: Path, max_length: int, pad_token_id: int) -> None:
        self._source = Tokenizer.from_file(str(tokenizer_json)).to_str()
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self._by_length: dict[int, Tokenizer] = {}
        self._lock = threading.Lock()
        probe = self._tokenizer(max_length)
        self.num_special_tokens = probe.post_processor.num_special_tokens_to_add(False) if probe.post_processor else 0

    def _tokenizer(self, max_length: int) -> Tokenizer:
        tok = self._by_length.get(max_length)  # made once per length: the lock only guards making it
        if tok is not None:
            return tok
        with self._lock:
            tok = self._by_length.get(max_length)
            if tok is None:
                tok = Tokenizer.from_str(self._source)
                tok.no_padding()
                tok.enable_truncation(max_length=max_length)
                self._by_length[max_length] = tok
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

    def encode(self, texts: list[str], max_length: int = 0, with_tokens: bool = False) -> list[EncodedText]:
        tok = self._tokenizer(self.resolve_max_length(max_length))
        encodings: list[Encoding] = (
            [tok.encode(texts[0], add_special_tokens=True)]  # no trip through the parallel batch machinery
            if len(texts) == 1
            else tok.encode_batch(texts, add_special_tokens=True)
        )
        return [
            EncodedText(
                ids=np.asarray(e.ids, dtype=np.int64),
                truncated=bool(e.overflowing),
                tokens=tuple(e.tokens) if with_tokens else (),
            )
            for e in encodings
        ]


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
