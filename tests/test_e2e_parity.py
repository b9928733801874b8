"""Classify through the real service equals transformers' pipeline on the same checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, Service, start_service
from sentiment_client import SentimentClient

pytestmark = pytest.mark.triton

TEXTS = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "ok",
    "The plot was thin, but the acting carried it.",
    "Absolutely wonderful experience, would recommend to everyone!!!",
    "Terrible. Just terrible.",
    "😀😀😀 best day ever 🎉",
    "👨‍👩‍👧‍👦 family trip",
    "这部电影非常好看",
    "日本語のテキストです。",
    "!!!???...",
    "#$%^&*()",
    "Ünïcödé àccents façade naïve",
    "مرحبا بالعالم",
    "text\twith\ttabs\nand newlines",
    "a",
    "The quick brown fox jumps over the lazy dog " * 3,
    "UPPER CASE SHOUTING",
    "numbers 1234567890 and 3.14159",
    "don't won't can't shouldn't",
    "long " * 700,  # truncated at 512 tokens
    "word " * 511,  # exactly at the limit after special tokens
]


def pipeline_scores(checkpoint, texts):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(checkpoint), top_k=None, device="cpu")
    return clf(texts, truncation=True)


@pytest.fixture(scope="module")
def every_model(triton: object, model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One front-end serving every test model at once (`--models` empty: the whole repository)."""
    logs = tmp_path_factory.mktemp("every-model")
    started = start_service(model_repository, "sentiment", triton.grpc_url, logs, "--models", "")  # type: ignore[attr-defined]
    yield started
    assert started.stop() == 0, started.log.read_text()[-2000:]


def assert_pipeline_parity(name: str, got, checkpoint) -> None:
    expected = pipeline_scores(checkpoint, TEXTS)
    assert len(got) == len(TEXTS)
    for text, result, reference in zip(TEXTS, got, expected, strict=True):
        by_label = {s.label: s.score for s in result.scores}
        ref = {r["label"]: r["score"] for r in reference}
        assert set(by_label) == set(ref) == set(MODELS[name][0])
        np.testing.assert_allclose([by_label[k] for k in ref], list(ref.values()), atol=1e-5, err_msg=text[:40])
        assert result.label == reference[0]["label"]
        assert [s.score for s in result.scores] == sorted((s.score for s in result.scores), reverse=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_probabilities_equal_the_transformers_pipeline(name, services: dict[str, Service], checkpoints):
    with SentimentClient(services[name].target) as client:
        got = client.classify(TEXTS, timeout=120).results
    assert_pipeline_parity(name, got, checkpoints[name])


def test_one_front_end_serves_every_model_with_parity(every_model: Service, checkpoints):
    with SentimentClient(every_model.target) as client:
        listed = client.list_models()
        assert listed.default_model == "sentiment"
        assert set(MODELS) <= {m.name for m in listed.models}
        for name in MODELS:
            result = client.classify(TEXTS, model=name, timeout=120)
            assert (result.model_name, result.model_version) == (name, "1")
            assert_pipeline_parity(name, result.results, checkpoints[name])
            assert client.model_info(model=name).labels == MODELS[name][0]


def test_truncation_is_reported(service: Service):
    with SentimentClient(service.target) as client:
        long_result, short_result = client.classify(["long " * 700, "short"]).results
    assert long_result.truncated and long_result.num_tokens == 512
    assert not short_result.truncated and short_result.num_tokens == 3


def test_top_k_and_logits(services: dict[str, Service]):
    with SentimentClient(services["emotion3"].target) as client:
        full = client.classify(["I hate this so much!"], return_logits=True).results[0]
        top1 = client.classify(["I hate this so much!"], top_k=1).results[0]
    assert len(full.scores) == 3 and len(full.logits) == 3
    assert len(top1.scores) == 1 and top1.logits == ()
    assert top1.scores[0].label == full.label
    logits = np.array(full.logits)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose([probs[s.label_id] for s in full.scores], [s.score for s in full.scores], atol=1e-6)


def test_multi_label_uses_sigmoid(services: dict[str, Service]):
    with SentimentClient(services["topics4"].target) as client:
        result = client.classify(["sports and tech news"], return_logits=True).results[0]
    logits = np.array(result.logits)
    np.testing.assert_allclose(
        [1 / (1 + np.exp(-logits[s.label_id])) for s in result.scores], [s.score for s in result.scores], atol=1e-6
    )


def test_max_length_option_truncates_shorter(service: Service):
    with SentimentClient(service.target) as client:
        result = client.classify(["one two three four five six"], max_length=4).results[0]
    assert result.truncated and result.num_tokens == 4
