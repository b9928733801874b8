"""Step 3: logits -> probabilities -> ranked labels. Pure NumPy.

Follows `transformers`' text-classification pipeline: sigmoid for
multi-label models (and single-logit models), softmax otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .model_artifact import MULTI_LABEL

FloatArray = npt.NDArray[np.float64]


def softmax(logits: npt.ArrayLike) -> FloatArray:
    """Row-wise softmax; subtracting the row max keeps exp() finite for any logits."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    out: FloatArray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def sigmoid(logits: npt.ArrayLike) -> FloatArray:
    """Element-wise logistic function without overflow for large |x|."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    out: FloatArray = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out


def uses_sigmoid(problem_type: str, num_labels: int) -> bool:
    return problem_type == MULTI_LABEL or num_labels == 1


def probabilities(logits: npt.ArrayLike, problem_type: str) -> FloatArray:
    x = np.asarray(logits, dtype=np.float64)
    return sigmoid(x) if uses_sigmoid(problem_type, x.shape[-1]) else softmax(x)


@dataclass(frozen=True)
class RankedLabel:
    label_id: int
    label: str
    score: float


def rank(probs: npt.ArrayLike, labels: list[str], top_k: int) -> list[list[RankedLabel]]:
    """Per row, the top_k labels (0 = all), highest score first; ties keep id order."""
    p = np.asarray(probs, dtype=np.float64)
    k = len(labels) if top_k <= 0 else min(top_k, len(labels))
    order = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    # Plain Python numbers: indexing NumPy arrays element by element costs more than the sort.
    return [
        [RankedLabel(i, labels[i], row[i]) for i in idx] for row, idx in zip(p.tolist(), order.tolist(), strict=True)
    ]
