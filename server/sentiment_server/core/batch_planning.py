"""Cutting texts sorted by length into the batches that waste the least compute on padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def plan_groups(lengths: Sequence[int], *, max_texts: int, max_tokens: int, overhead_tokens: int) -> list[int]:
    """Cut texts sorted by length into consecutive groups of least total cost; returns the group sizes.

    A group of n texts runs padded to its longest, L, and costs
    `overhead_tokens + n * L`. Each group holds at most `max_texts` texts and
    `max_tokens` padded tokens (a single text always fits). Dynamic
    programming over the cut points: O(len(lengths) * max_texts).
    """
    count = len(lengths)
    one_group = count * lengths[-1] if count else 0
    if 0 < count <= max_texts and one_group <= max_tokens and one_group - sum(lengths) <= overhead_tokens:
        return [count]  # a further group would cost an overhead and save at most this padding
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest cost of the first j texts
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        longest = lengths[j - 1]
        fits = max(1, min(max_texts, max_tokens // max(1, longest)))
        for i in range(max(0, j - fits), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    sizes: list[int] = []
    j = count
    while j > 0:
        sizes.append(j - cut[j])
        j = cut[j]
    return sizes[::-1]


@dataclass(frozen=True)
class BatchStats:
    texts: int
    real_tokens: int
    padded_tokens: int

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0
