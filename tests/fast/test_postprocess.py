import numpy as np
import pytest
from sentiment_server.core.postprocess import probabilities, rank, sigmoid, softmax
from sentiment_server.model_artifact import MULTI_LABEL, SINGLE_LABEL, uses_sigmoid


def test_softmax_matches_definition_and_sums_to_one():
    logits = [[-1.5607, 1.6123], [4.1692, -3.3464]]
    probs = softmax(logits)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    # the seed's printed probabilities
    np.testing.assert_allclose(probs, [[0.040195, 0.95980], [0.99946, 0.00054418]], rtol=2e-4)  # 5 significant digits


def test_softmax_is_stable_for_extreme_logits():
    # TEI's "subtract the largest |logit|" turns [-100, 5] into NaN; subtracting the max does not.
    probs = softmax([[-100.0, 5.0], [1000.0, -1000.0], [-1e4, -1e4]])
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0)
    np.testing.assert_allclose(probs[2], [0.5, 0.5])


def test_sigmoid_is_stable_and_symmetric():
    x = [-1000.0, -20.0, 0.0, 20.0, 1000.0]
    s = sigmoid([x])[0]
    assert np.isfinite(s).all()
    np.testing.assert_allclose(np.add(s, sigmoid([[-v for v in x]])[0]), 1.0)
    assert s[2] == 0.5


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "expected"),
    [(SINGLE_LABEL, 2, False), (SINGLE_LABEL, 1, True), (MULTI_LABEL, 3, True), ("", 3, False)],
)
def test_activation_follows_transformers(problem_type, num_labels, expected):
    assert uses_sigmoid(problem_type, num_labels) is expected


def test_multi_label_probabilities_do_not_sum_to_one():
    probs = probabilities([[2.0, 2.0, -2.0]], MULTI_LABEL)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-np.array([[2.0, 2.0, -2.0]]))))


def test_rank_sorts_descending_and_honours_top_k():
    probs = [[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]]
    labels = ["a", "b", "c"]
    full = rank(probs, labels, 0)
    assert [[r.label for r in row] for row in full] == [["b", "c", "a"], ["a", "b", "c"]]  # ties keep id order
    top1 = rank(probs, labels, 1)
    assert [[(r.label_id, r.score) for r in row] for row in top1] == [[(1, 0.7)], [(0, 0.5)]]
    assert len(rank(probs, labels, 10)[0]) == 3  # top_k beyond the labels means all
