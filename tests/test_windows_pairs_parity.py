"""Windows and pairs through the real service (Triton, exported TorchScript) equal transformers.

Windows: the ids equal the fast tokenizer's overflowing windows, and the aggregated answers equal the eager
model run on those windows, aggregated the same way. Pairs: `pipeline({"text": a, "text_pair": b})` on a
DistilBERT (no segment ids) and on a BERT (segment ids) checkpoint.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import Service, sentiment_server, start_service
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

pytestmark = pytest.mark.triton

WINDOW = 32
NLI_LABELS = ("contradiction", "neutral", "entailment")
WORDS = tuple("the film was long but never dull and the cast did fine work with a thin script".split())  # noqa: SIM905

PAIRS = [
    ("A man is playing a guitar.", "Someone is making music."),
    ("A man is playing a guitar.", "Nobody is playing anything."),
    ("The cat sat on the mat.", "A cat is sitting."),
    ("The cat sat on the mat.", "A dog barks at the mailman every single morning. " * 40),  # the second is cut
    ("An orchestra of many players. " * 60, "Music."),  # the first is cut
    ("Both sides are long here. " * 50, "And this one is long as well. " * 50),  # both cut, longest first
    ("猫がマットの上に座った。", "猫が座っている。"),
    ("这部电影非常好看", "这部电影很无聊"),
    ("🐈 on a mat 🧶", "a cat 😺"),
    ("👨‍👩‍👧‍👦 family trip", "a family travels"),
    ("Ünïcödé àccents façade", "unicode accents facade"),
    ("مرحبا بالعالم", "hello world"),
    ("ok", "fine"),
    ("a", "b"),
    ("!!!???...", "#$%^&*()"),
    ("numbers 1234567890", "pi is 3.14159"),
    ("don't won't can't", "do will can"),
    ("text\twith\ttabs\nand newlines", "plain text"),
    ("UPPER CASE SHOUTING", "upper case shouting"),
    ("The quick brown fox jumps over the lazy dog.", "A fox jumps."),
    ("It rained all day.", "The weather was dry."),
    ("She bought apples and pears at the market.", "She went shopping."),
]


def _stub(target: str) -> tuple[grpc.Channel, pb_grpc.SentimentServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Service]]:
    """A tiny BERT (segment ids) exported by `sentiment-server export`, on its own Triton and front-end."""
    from sentiment_server.backend.triton_process import EmbeddedTriton
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("bert")
    checkpoint = build_tiny_checkpoint(root / "checkpoint", labels=NLI_LABELS, seed=11, architecture="bert")
    repository = root / "model_repository"
    export = sentiment_server("export", "--checkpoint", str(checkpoint), "--model-repository", str(repository),
                              "--model-name", "nli", "--torch-threads", "1")  # fmt: skip
    subprocess.run(export, check=True, capture_output=True, text=True, timeout=300)
    with EmbeddedTriton(repository, grpc_port=0, metrics_port=0) as triton:
        triton.wait_ready("nli", timeout_s=120)
        service = start_service(repository, "nli", triton.grpc_url, root)
        try:
            yield checkpoint, service
        finally:
            assert service.stop() == 0, service.log.read_text()[-2000:]


def _pair_parity(checkpoint: Path, target: str, labels: tuple[str, ...]) -> pb.GetModelInfoResponse:
    from transformers import AutoTokenizer, pipeline

    clf = pipeline("text-classification", model=str(checkpoint), top_k=None, device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    request_pairs = [pb.TextPair(text=a, text_pair=b) for a, b in PAIRS]
    channel, stub = _stub(target)
    with channel:
        response = stub.Classify(pb.ClassifyRequest(pairs=request_pairs), timeout=120)
        tokenized = stub.Tokenize(pb.TokenizeRequest(pairs=request_pairs), timeout=60)
        info: pb.GetModelInfoResponse = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    for (a, b), result, tokens in zip(PAIRS, response.results, tokenized.results, strict=True):
        reference = clf({"text": a, "text_pair": b}, top_k=None, truncation=True)
        expected = {r["label"]: r["score"] for r in reference}
        got = {s.label: s.score for s in result.scores}
        assert set(got) == set(expected) == set(labels)
        np.testing.assert_allclose([got[k] for k in expected], list(expected.values()), atol=1e-5, err_msg=a[:30])
        encoding = tokenizer(a, b, truncation=True)
        assert list(tokens.input_ids) == encoding["input_ids"]
        assert list(tokens.token_type_ids) == encoding.get("token_type_ids", [])
        assert result.num_tokens == len(encoding["input_ids"])
    return info


def test_pairs_on_bert_equal_the_pipeline_with_segment_ids(bert: tuple[Path, Service]) -> None:
    checkpoint, service = bert
    info = _pair_parity(checkpoint, service.target, NLI_LABELS)
    assert list(info.inputs) == ["input_ids", "attention_mask", "token_type_ids"]


def test_pairs_on_distilbert_equal_the_pipeline(services: dict[str, Service], checkpoints: dict[str, Path]) -> None:
    info = _pair_parity(checkpoints["sentiment"], services["sentiment"].target, ("NEGATIVE", "POSITIVE"))
    assert list(info.inputs) == ["input_ids", "attention_mask"]


def _text(tokens: int) -> str:
    rng = np.random.default_rng(tokens)
    return " ".join(rng.choice(WORDS, size=tokens))


def _eager_window_logits(checkpoint: Path, windows: list[list[int]]) -> np.ndarray[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    with torch.inference_mode():
        logits: np.ndarray[Any, Any] = np.concatenate(
            [model(input_ids=torch.tensor([ids])).logits.numpy() for ids in windows]
        )
    return logits


def _softmax(logits: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs: np.ndarray[Any, Any] = shifted / shifted.sum(axis=-1, keepdims=True)
    return probs


@pytest.mark.parametrize("stride", [None, 0, 16])
def test_windows_equal_the_eager_model_on_the_tokenizers_overflowing_windows(
    services: dict[str, Service], checkpoints: dict[str, Path], stride: int | None
) -> None:
    from transformers import AutoTokenizer

    checkpoint = checkpoints["sentiment"]
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    overlap = (WINDOW - 2) // 4 if stride is None else stride
    texts = [_text(n) for n in (10, 30, 31, 57, 120, 250, 400)]
    options = pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW, max_length=WINDOW)
    if stride is not None:
        options.stride = stride
    channel, stub = _stub(services["sentiment"].target)
    with channel:
        tokenized = stub.Tokenize(pb.TokenizeRequest(texts=texts, truncation=options), timeout=60)
        answers = {}
        for name, aggregation in pb.WindowAggregation.items():
            if aggregation:
                options.aggregation = aggregation  # type: ignore[assignment]
                request = pb.ClassifyRequest(texts=texts, return_logits=True, return_windows=True, truncation=options)
                answers[name] = stub.Classify(request, timeout=120).results
    for i, (text, tokens) in enumerate(zip(texts, tokenized.results, strict=True)):
        expected = tokenizer(text, truncation=True, max_length=WINDOW, stride=overlap, return_overflowing_tokens=True)
        windows = [list(tokens.input_ids), *(list(w.input_ids) for w in tokens.overflowing)]
        assert windows == expected["input_ids"]  # the fast tokenizer's windows, exactly
        logits = _eager_window_logits(checkpoint, windows)
        probs = _softmax(logits)
        weights = np.array([len(w) for w in windows], dtype=np.float64)[:, None]
        mean_logits = (weights * logits).sum(axis=0) / weights.sum()
        best = int(np.argmax(probs.max(axis=1)))
        reference = {
            "WINDOW_AGGREGATION_MEAN": ((weights * probs).sum(axis=0) / weights.sum(), mean_logits),
            "WINDOW_AGGREGATION_MEAN_LOGITS": (_softmax(mean_logits), mean_logits),
            "WINDOW_AGGREGATION_MAX": (probs[best], logits[best]),
        }
        for name, (expected_probs, expected_logits) in reference.items():
            result = answers[name][i]
            assert result.num_windows == len(windows) and not result.truncated
            got = np.array([s.score for s in sorted(result.scores, key=lambda s: s.label_id)])
            np.testing.assert_allclose(got, expected_probs, atol=1e-5, err_msg=f"{name}, {len(windows)} windows")
            np.testing.assert_allclose(result.logits, expected_logits, atol=1e-5)
            for window, row in zip(result.windows, probs, strict=True):
                np.testing.assert_allclose(
                    [s.score for s in sorted(window.scores, key=lambda s: s.label_id)], row, atol=1e-5
                )


def test_a_text_that_fits_one_window_gets_the_single_text_answer(services: dict[str, Service]) -> None:
    text = _text(20)
    channel, stub = _stub(services["emotion3"].target)
    with channel:
        window = pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW, max_length=WINDOW)
        windowed = stub.Classify(pb.ClassifyRequest(texts=[text], return_logits=True, truncation=window), timeout=60)
        plain = stub.Classify(pb.ClassifyRequest(texts=[text], return_logits=True), timeout=60)
    assert windowed.results[0].num_windows == 1
    np.testing.assert_allclose(windowed.results[0].logits, plain.results[0].logits, atol=1e-6)
    assert [s.label for s in windowed.results[0].scores] == [s.label for s in plain.results[0].scores]
