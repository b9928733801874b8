"""Exact-match results: a text the model has seen (as the same token ids) skips Triton.

Keyed by token ids (and segment ids, for a model that takes them), not by the
raw text: the ids already hold the truncation length, and texts the tokenizer
treats alike share an entry. The value is the
model's logits row; top_k, return_logits and the activation apply afterwards.
One cache per pipeline, so per model version. A bounded LRU, off unless asked
for (`--result-cache-entries`): it keeps what callers sent (as token ids) in memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from .tokenization import IdArray


def cache_key(ids: IdArray, type_ids: IdArray | None) -> bytes:
    return ids.tobytes() if type_ids is None else ids.tobytes() + type_ids.tobytes()


class ResultCache:
    def __init__(self, max_entries: int, on_lookup: Callable[[int, int], None] | None = None) -> None:
        self.max_entries = max(1, max_entries)
        self._rows: OrderedDict[bytes, list[float]] = OrderedDict()
        self._on_lookup = on_lookup  # (hits, misses) per call, for metrics

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, keys: list[bytes]) -> list[list[float] | None]:
        """Each key's cached logits row (keys from `cache_key`), or None; a hit becomes the most recently used."""
        found: list[list[float] | None] = []
        for key in keys:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
            found.append(row)
        if self._on_lookup is not None:
            hits = sum(row is not None for row in found)
            self._on_lookup(hits, len(found) - hits)
        return found

    def put(self, keys: list[bytes], rows: list[list[float]]) -> None:
        for key, row in zip(keys, rows, strict=True):
            self._rows[key] = row
            self._rows.move_to_end(key)
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)
