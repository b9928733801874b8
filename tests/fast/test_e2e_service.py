"""The service through gRPC, around the fake backend: Tokenize (the seed's ids), GetModelInfo, health,
reflection, status codes, stream order."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from fake_backend import InProcessServer, fake_info, fake_logits, fake_model, health_statuses
from grpc_health.v1 import health_pb2
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import SentimentClient, SentimentError
from sentiment_server.core.inference import ServedModel
from sentiment_server.model_artifact import INFO_FILE, MULTI_LABEL, SINGLE_LABEL, TOKENIZER_FILE
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file

SEED = json.loads((Path(__file__).resolve().parents[1] / "data" / "seed_pipeline.json").read_text())
MODEL_MAX_LENGTH = 512  # what `export` writes for the test checkpoints (tests/test_export.py)
# The real tier's three test models (tests/conftest.py MODELS): name -> (labels, problem_type).
MODELS = {
    "sentiment": (("NEGATIVE", "POSITIVE"), SINGLE_LABEL),
    "emotion3": (("anger", "joy", "calm"), SINGLE_LABEL),
    "topics4": (("sports", "politics", "tech", "music"), MULTI_LABEL),
}
UNKNOWN: Any = 7  # not in the enum: proto3 keeps unknown values, the server must refuse them
REJECT = pb.TRUNCATION_STRATEGY_REJECT


@pytest.fixture(scope="module")
def service() -> Iterator[InProcessServer]:
    with InProcessServer(model=fake_model(max_length=MODEL_MAX_LENGTH)) as started:
        yield started


def test_tokenize_reproduces_the_seed_ids(service: InProcessServer) -> None:
    with SentimentClient(service.target) as client:
        results = client.tokenize(SEED["texts"], pad=True)
    assert [list(r.input_ids) for r in results] == SEED["input_ids"]
    assert [list(r.attention_mask) for r in results] == SEED["attention_mask"]
    assert results[1].tokens == ("[CLS]", "i", "hate", "this", "so", "much", "!", "[SEP]")


def _exported(repository: Path, name: str, labels: tuple[str, ...], problem_type: str) -> ServedModel:
    """A model version directory as `export` leaves it, minus the weights: model_info.json and tokenizer.json."""
    version = repository / name / "1"
    version.mkdir(parents=True)
    info = fake_info(
        labels,
        problem_type,
        MODEL_MAX_LENGTH,
        model_name=name,
        source=f"checkpoints/{name}",
        backend="python",
        fingerprint="0" * 64,
    )
    (version / INFO_FILE).write_text(info.to_json())
    shutil.copy(bundled_tokenizer_file(), version / TOKENIZER_FILE)
    return ServedModel.load(repository, name)


def test_model_info_describes_the_model_in_the_repository(tmp_path: Path) -> None:
    """What export writes (checked in tests/test_export.py) is what GetModelInfo reports."""
    for name, (labels, problem_type) in MODELS.items():
        model = _exported(tmp_path, name, labels, problem_type)
        with InProcessServer(model=model) as server, SentimentClient(server.target) as client:
            info = client.model_info()
        assert info.model_name == name
        assert list(info.labels) == list(labels)
        assert info.problem_type == problem_type
        assert info.max_sequence_length == 512
        assert (info.backend, info.dtype, info.demo) == ("python", "fp32", False)


def test_health_is_serving_for_the_server_and_the_service(service: InProcessServer) -> None:
    assert health_statuses(service.target) == [health_pb2.HealthCheckResponse.SERVING] * 2


def test_reflection_lists_the_services(service: InProcessServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(service.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"sentiment.v1.SentimentService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        ({"texts": []}, "at least one text"),
        ({"texts": ["fine", ""]}, "texts[1] is empty"),
        ({"texts": ["   \t\n"]}, "whitespace"),
        (
            {"texts": ["x"], "truncation": pb.TruncationOptions(strategy=UNKNOWN)},
            "unknown truncation strategy",
        ),
        ({"texts": ["x"], "truncation": pb.TruncationOptions(max_length=100_000)}, "exceeds the model's maximum"),
        ({"texts": ["word " * 600], "truncation": pb.TruncationOptions(strategy=REJECT)}, "REJECT"),
    ],
)
def test_bad_input_is_invalid_argument_with_a_clear_message(
    service: InProcessServer, request_kwargs: dict[str, Any], message: str
) -> None:
    with grpc.insecure_channel(service.target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(**request_kwargs), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(info.value.details())
    assert message in details
    assert "Traceback" not in details
    assert dict(info.value.trailing_metadata())["x-request-id"]  # type: ignore[arg-type,index]


def test_too_many_texts_is_refused_before_tokenizing(service: InProcessServer) -> None:
    with SentimentClient(service.target) as client, pytest.raises(SentimentError) as info:
        client.classify(["x"] * 10_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "too many texts" in info.value.message


def _expected_logits(service: InProcessServer, texts: list[str]) -> list[list[float]]:
    """The fake model's logits for each text alone (no padding)."""
    rows = []
    for encoded in service.model.tokenizer.encode(texts):
        ids = encoded.ids.reshape(1, -1)
        rows.append(fake_logits(ids, np.ones_like(ids), service.backend.num_labels)[0].tolist())
    return rows


def test_stream_answers_in_order(service: InProcessServer) -> None:
    """Streamed messages run concurrently and share padded batches, unary calls do not: the same answers, exactly."""
    batches = [[f"text number {i}", "I hate this so much!"] for i in range(20)]
    sent = len(service.backend.batches)
    service.backend.delay_s = 0.02  # while the first batches run, the next messages gather into one
    try:
        with SentimentClient(service.target) as client:
            streamed = list(client.classify_stream(batches, return_logits=True))
    finally:
        service.backend.delay_s = 0.0
    assert max(texts for texts, _ in service.backend.batches[sent:]) > 2  # messages did share a batch
    with SentimentClient(service.target) as client:
        unary = [client.classify(b, return_logits=True) for b in batches]
    assert len(streamed) == len(batches)
    for batch, s, u in zip(batches, streamed, unary, strict=True):
        assert [(r.label, r.score, r.scores) for r in s.results] == [(r.label, r.score, r.scores) for r in u.results]
        # Each answer belongs to its own message: the fake's logits are a function of the text's ids.
        assert [list(r.logits) for r in s.results] == _expected_logits(service, batch)
        assert [list(r.logits) for r in u.results] == _expected_logits(service, batch)


def test_response_carries_request_id_and_timings(service: InProcessServer) -> None:
    service.backend.delay_s = 0.001  # a model call that takes measurable time
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code
            response, call = stub.Classify.with_call(
                pb.ClassifyRequest(texts=["hello"]), metadata=(("x-request-id", "abc-123"),), timeout=10
            )
    finally:
        service.backend.delay_s = 0.0
    assert response.request_id == "abc-123"
    assert dict(call.trailing_metadata())["x-request-id"] == "abc-123"
    assert response.timings.total_us >= response.timings.inference_us > 0
    assert response.model_name == "sentiment" and response.model_version == "1"
