"""Long texts as windows: each window's logits, then one answer per text."""

from __future__ import annotations

from enum import Enum

from .postprocess import probabilities


class Aggregation(Enum):
    MEAN = "mean"  # probabilities, weighted by each window's tokens
    MEAN_LOGITS = "mean_logits"  # logits, weighted the same way, then softmax or sigmoid
    MAX = "max"  # the most confident window


def aggregate(
    rows: list[list[float]], weights: list[int], problem_type: str, how: Aggregation
) -> tuple[list[float], list[float]]:
    """(probabilities, logits) of one text from its windows' logits rows, weighted by `weights`.

    A single window is returned as it is, so a text that fits one window gets
    exactly the answer it gets without windows.
    """
    probs = probabilities(rows, problem_type)
    if len(rows) == 1:
        return probs[0], rows[0]
    if how is Aggregation.MAX:
        best = max(range(len(rows)), key=lambda i: max(probs[i]))  # the first of equals
        return probs[best], rows[best]
    logits = _weighted_mean(rows, weights)
    if how is Aggregation.MEAN_LOGITS:
        return probabilities([logits], problem_type)[0], logits
    return _weighted_mean(probs, weights), logits


def _weighted_mean(rows: list[list[float]], weights: list[int]) -> list[float]:
    total = sum(weights)
    return [sum(w * row[j] for w, row in zip(weights, rows, strict=True)) / total for j in range(len(rows[0]))]
