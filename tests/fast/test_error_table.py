"""Every kind of refusal takes the one path: its status, the x-request-id trailer, the metric, the access log."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fake_backend import InProcessServer, wait_until
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_server import errors
from sentiment_server.errors import BackendUnavailable, TritonFailure

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "k3y"
RID = "rid-from-the-caller"


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    with InProcessServer(api_key=API_KEY, access_log=True, max_inflight_requests=1, reflection=False) as started:
        yield started


def _classify(channel: grpc.Channel, texts: list[str], key: str = API_KEY, timeout: float = 5) -> grpc.RpcError:
    stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(
            pb.ClassifyRequest(texts=texts), metadata=(("x-api-key", key), ("x-request-id", RID)), timeout=timeout
        )
    return info.value


def _malformed(channel: grpc.Channel) -> grpc.RpcError:
    call: Any = channel.unary_unary("/sentiment.v1.SentimentService/Classify")
    with pytest.raises(grpc.RpcError) as info:
        call(b"\x0a\x02\xff\xfe", metadata=(("x-api-key", API_KEY), ("x-request-id", RID)), timeout=5)
    return info.value


def _overloaded(server: InProcessServer, channel: grpc.Channel) -> grpc.RpcError:
    stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
    with server.backend.stall():
        first = stub.Classify.future(
            pb.ClassifyRequest(texts=["holds the only slot"]), metadata=(("x-api-key", API_KEY),)
        )
        while server.front is not None and server.front.servicer.admission.requests == 0:
            threading.Event().wait(0.01)
        error = _classify(channel, ["one too many"])
    first.result(timeout=5)
    return error


def _shutting_down(server: InProcessServer, channel: grpc.Channel) -> grpc.RpcError:
    assert server.front is not None
    server.front.servicer.accepting = False
    return _classify(channel, ["late"])


def _backend_error(error: Exception) -> Callable[[InProcessServer, grpc.Channel], grpc.RpcError]:
    def call(server: InProcessServer, channel: grpc.Channel) -> grpc.RpcError:
        server.backend.error = error
        return _classify(channel, ["any"])

    return call


def _deadline(server: InProcessServer, channel: grpc.Channel) -> grpc.RpcError:
    with server.backend.stall():
        return _classify(channel, ["slow"], timeout=0.3)


CASES: dict[str, tuple[Callable[[InProcessServer, grpc.Channel], grpc.RpcError], grpc.StatusCode, str]] = {
    "invalid input": (lambda s, c: _classify(c, []), grpc.StatusCode.INVALID_ARGUMENT, "at least one text"),
    "malformed bytes": (lambda s, c: _malformed(c), grpc.StatusCode.INVALID_ARGUMENT, "not a valid protobuf"),
    "wrong api key": (lambda s, c: _classify(c, ["x"], key="wrong"), grpc.StatusCode.UNAUTHENTICATED, "API key"),
    "overloaded": (_overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, "requests in flight"),
    "shutting down": (_shutting_down, grpc.StatusCode.UNAVAILABLE, "shutting down"),
    "backend unavailable": (
        _backend_error(BackendUnavailable("model backend unavailable")),
        grpc.StatusCode.UNAVAILABLE,
        "backend unavailable",
    ),
    "triton failure": (
        _backend_error(TritonFailure("triton error: secret detail")),
        grpc.StatusCode.INTERNAL,
        "inference failed",
    ),
    "unexpected error": (_backend_error(RuntimeError("secret detail")), grpc.StatusCode.INTERNAL, "internal error"),
    "deadline": (_deadline, grpc.StatusCode.DEADLINE_EXCEEDED, ""),
}


@pytest.mark.parametrize("case", CASES)
def test_each_refusal_has_its_status_request_id_metric_and_log_line(
    server: InProcessServer, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sentiment_server")
    make_call, code, message = CASES[case]
    with grpc.insecure_channel(server.target) as channel:
        error = make_call(server, channel)
    assert error.code() == code, error
    assert message in (error.details() or "")
    assert "secret" not in (error.details() or "")
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailers.get("x-request-id") == RID
    assert server.front is not None
    registry = server.front.metrics.registry

    def counted() -> float:  # whatever the model label: a call refused before its model is known has none
        return sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "sentiment_requests_total"
            and (sample.labels["method"], sample.labels["code"]) == ("Classify", code.name)
        )

    assert wait_until(lambda: counted() >= 1)
    assert wait_until(lambda: any(f"request {RID} Classify {code.name}" in r.getMessage() for r in caplog.records))


def test_the_operations_doc_has_the_error_table_of_the_code() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", doc, flags=re.MULTILINE))
    assert rows == {kind.__name__: code.name for kind, code in errors.STATUS_TABLE.items()}


def test_every_service_error_has_a_row() -> None:
    def subclasses(cls: type[Any]) -> set[type[Any]]:
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    assert subclasses(errors.ServiceError) - {errors.ServiceError} == set(errors.STATUS_TABLE)
