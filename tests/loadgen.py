"""A bounded load generator for the production tests: loopback only, stops by itself."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Call:
    started: float  # time.monotonic()
    ended: float
    code: grpc.StatusCode
    details: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


async def classify_once(
    stub: pb_grpc.SentimentServiceStub, texts: list[str], timeout_s: float, metadata: tuple[tuple[str, str], ...] = ()
) -> Call:
    started = time.monotonic()
    try:
        await stub.Classify(pb.ClassifyRequest(texts=texts), timeout=timeout_s, metadata=metadata)
        return Call(started, time.monotonic(), grpc.StatusCode.OK)
    except grpc.aio.AioRpcError as exc:
        return Call(started, time.monotonic(), exc.code(), exc.details() or "")


async def run_load(
    target: str,
    *,
    duration_s: float,
    concurrency: int,
    timeout_s: float = 2.0,
    texts: list[str] | None = None,
    stop: asyncio.Event | None = None,
    max_calls: int = 20_000,
) -> list[Call]:
    """`concurrency` closed-loop callers for `duration_s` (or until `stop`), at most `max_calls` calls."""
    texts = texts or ["I hate this so much!"]
    calls: list[Call] = []
    until = time.monotonic() + duration_s
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)

        async def caller() -> None:
            while time.monotonic() < until and len(calls) < max_calls and not (stop and stop.is_set()):
                call = await classify_once(stub, texts, timeout_s)
                calls.append(call)
                if call.code != grpc.StatusCode.OK:
                    await asyncio.sleep(0.05)  # a failing server is not a reason to spin

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return calls


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
