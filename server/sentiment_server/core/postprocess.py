"""Step 3: logits -> probabilities -> ranked labels.

Follows `transformers`' text-classification pipeline: sigmoid for
multi-label models (and single-logit models), softmax otherwise. Plain Python
on rows of floats: a call has a few texts of a few labels, where NumPy's
per-call overhead costs more than the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..model_artifact import uses_sigmoid

Rows = Sequence[Sequence[float]]  # [texts][labels]


def softmax(logits: Rows) -> list[list[float]]:
    """Row-wise softmax; subtracting the row max keeps exp() finite for any logits."""
    out = []
    for row in logits:
        top = max(row)
        shifted = [math.exp(x - top) for x in row]
        total = sum(shifted)
        out.append([x / total for x in shifted])
    return out


def _logistic(x: float) -> float:
    """Without overflow for large |x|: exp() only ever sees -|x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sigmoid(logits: Rows) -> list[list[float]]:
    """Element-wise logistic function."""
    return [[_logistic(x) for x in row] for row in logits]


def probabilities(logits: Rows, problem_type: str) -> list[list[float]]:
    if not len(logits):
        return []
    return sigmoid(logits) if uses_sigmoid(problem_type, len(logits[0])) else softmax(logits)


@dataclass(frozen=True)
class RankedLabel:
    label_id: int
    label: str
    score: float


def rank(probs: Rows, labels: list[str], top_k: int) -> list[list[RankedLabel]]:
    """Per row, the top_k labels (0 = all), highest score first; ties keep id order (the sort is stable)."""
    k = len(labels) if top_k <= 0 else min(top_k, len(labels))
    ranked = []
    for row in probs:
        order = sorted(range(len(row)), key=lambda i: -row[i])[:k]
        ranked.append([RankedLabel(i, labels[i], float(row[i])) for i in order])
    return ranked
