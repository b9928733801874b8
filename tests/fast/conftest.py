"""The fast tier: no Triton, no torch. The front-end runs in-process on port 0 around a fake backend."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from fake_backend import InProcessServer
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    with InProcessServer() as started:
        yield started


@pytest.fixture
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code
