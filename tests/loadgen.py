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


SETTLED_S = 0.5  # a call sent this long before SIGTERM has reached its handler, even on a loaded 2-core machine


def check_drained(calls: list[Call], signalled_at: float, log_text: str, processes: int = 1) -> None:
    """SIGTERM's drain as callers see it: nothing admitted is lost; what was refused was never admitted.

    A call sent shortly before the signal may still wait in the server's transport (its event loop lags
    on a loaded machine): it is refused with UNAVAILABLE "server is shutting down" before admission, which
    a caller retries elsewhere. Every call sent well before the signal is answered.
    """
    before = [c for c in calls if c.started < signalled_at]
    refused = [c for c in before if c.code != grpc.StatusCode.OK]
    assert all(c.code == grpc.StatusCode.UNAVAILABLE and "shutting down" in c.details for c in refused), {
        (c.code, c.details) for c in refused
    }
    settled = [c for c in before if c.started < signalled_at - SETTLED_S]
    assert settled and all(c.code == grpc.StatusCode.OK for c in settled)
    # Nothing admitted was cut off: each process closed its port only once no admitted call was left.
    assert log_text.count("draining done: 0 admitted calls still in flight") == processes
    # Calls sent after the signal were refused ("shutting down", or the port closed), or, racing the port's
    # closing inside gRPC, CANCELLED before admission.
    after = {c.code for c in calls if c.started > signalled_at}
    assert after <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
