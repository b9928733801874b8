"""The running service: Tokenize (the seed's ids), GetModelInfo, health, reflection, status codes."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from conftest import MODELS, SEED, Service
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import SentimentClient, SentimentError

pytestmark = pytest.mark.triton

UNKNOWN: Any = 7  # not in the enum: proto3 keeps unknown values, the server must refuse them
REJECT = pb.TRUNCATION_STRATEGY_REJECT


def test_tokenize_reproduces_the_seed_ids(service: Service):
    with SentimentClient(service.target) as client:
        results = client.tokenize(SEED["texts"], pad=True)
    assert [list(r.input_ids) for r in results] == SEED["input_ids"]
    assert [list(r.attention_mask) for r in results] == SEED["attention_mask"]
    assert results[1].tokens == ("[CLS]", "i", "hate", "this", "so", "much", "!", "[SEP]")


def test_model_info_describes_the_exported_model(services: dict[str, Service]):
    for name, (labels, problem_type) in MODELS.items():
        with SentimentClient(services[name].target) as client:
            info = client.model_info()
        assert info.model_name == name
        assert list(info.labels) == list(labels)
        assert info.problem_type == problem_type
        assert info.max_sequence_length == 512
        assert (info.backend, info.dtype, info.demo) == ("python", "fp32", False)


def test_health_is_serving_for_the_server_and_the_service(service: Service):
    with grpc.insecure_channel(service.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "sentiment.v1.SentimentService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(service: Service):
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
def test_bad_input_is_invalid_argument_with_a_clear_message(service: Service, request_kwargs, message):
    with grpc.insecure_channel(service.target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(**request_kwargs), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(info.value.details())
    assert message in details
    assert "Traceback" not in details
    assert dict(info.value.trailing_metadata())["x-request-id"]  # type: ignore[arg-type,index]


def test_too_many_texts_is_refused_before_tokenizing(service: Service):
    with SentimentClient(service.target) as client, pytest.raises(SentimentError) as info:
        client.classify(["x"] * 10_000)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "too many texts" in info.value.message


def test_stream_answers_in_order(service: Service):
    batches = [[f"text number {i}", "I hate this so much!"] for i in range(20)]
    with SentimentClient(service.target) as client:
        streamed = list(client.classify_stream(batches))
        unary = [client.classify(b) for b in batches]
    assert len(streamed) == len(batches)
    for s, u in zip(streamed, unary, strict=True):
        assert [(r.label, round(r.score, 6)) for r in s.results] == [(r.label, round(r.score, 6)) for r in u.results]


def test_response_carries_request_id_and_timings(service: Service):
    with grpc.insecure_channel(service.target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        response, call = stub.Classify.with_call(
            pb.ClassifyRequest(texts=["hello"]), metadata=(("x-request-id", "abc-123"),), timeout=10
        )
    assert response.request_id == "abc-123"
    assert dict(call.trailing_metadata())["x-request-id"] == "abc-123"
    assert response.timings.total_us >= response.timings.inference_us > 0
    assert response.model_name == "sentiment" and response.model_version == "1"
