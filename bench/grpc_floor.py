"""The floor under the concurrency-1 overhead: what one Python grpc.aio hop in the middle costs.

`python bench/grpc_floor.py [--calls N] [--gap-ms MS]` starts, on 127.0.0.1, an echo server
(Classify answers an empty response at once) and a proxy that forwards each
Classify to the echo server with grpc.aio, the way the front-end forwards to
Triton, and does nothing else. It times, from one grpc.aio client, calls to
the echo server directly and through the proxy, alternating, and prints the
p50 of each and the median of the paired differences: the part of the
service's extra latency over Triton direct that is gRPC in Python itself,
before any tokenizing or batching. Both servers are stopped by pid on the way
out.

`--cpu` measures instead the proxy's CPU per call under closed-loop load
(`--concurrency`, `--texts`, `--seconds`): CPU seconds of the proxy's pid
from /proc over the measuring window, divided by the calls that finished in
it. `floor_cpu` does the same for bench/frontend.py, which puts the front-end's
CPU per call next to it. CPU seconds from /proc are the process's own, so
they hold on a shared machine; the calls/s beside them do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import grpc
from load import closed_loop
from machine import process_cpu_s
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

TEXT = "I've been waiting for a HuggingFace course my whole life."


class Echo(pb_grpc.SentimentServiceServicer):
    async def Classify(self, request: pb.ClassifyRequest, context: Any) -> pb.ClassifyResponse:
        return pb.ClassifyResponse()


class Proxy(pb_grpc.SentimentServiceServicer):
    def __init__(self, upstream: str) -> None:
        self.stub = pb_grpc.SentimentServiceStub(grpc.aio.insecure_channel(upstream))  # type: ignore[no-untyped-call]

    async def Classify(self, request: pb.ClassifyRequest, context: Any) -> pb.ClassifyResponse:
        response: pb.ClassifyResponse = await self.stub.Classify(request)
        return response


async def serve(upstream: str | None) -> None:
    server = grpc.aio.server()
    pb_grpc.add_SentimentServiceServicer_to_server(Proxy(upstream) if upstream else Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def start(upstream: str | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, __file__, "--serve", *(["--upstream", upstream] if upstream else [])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.search(r"serving on (\S+)", process.stdout.readline())
    if not match:
        process.kill()
        raise RuntimeError("server did not start")
    return process, match.group(1)


@dataclass(frozen=True)
class Hop:
    """Concurrency 1, alternating: the echo server called directly and through the proxy."""

    direct_p50_ms: float
    proxied_p50_ms: float
    hop_ms: float  # median of the paired differences
    calls: int

    def __str__(self) -> str:
        return (
            f"direct p50 {self.direct_p50_ms:.3f} ms, through a no-op grpc.aio proxy p50 {self.proxied_p50_ms:.3f} "
            f"ms: the hop costs {self.hop_ms:.3f} ms (median of {self.calls} paired differences)"
        )


async def measure(direct: str, proxied: str, calls: int, gap_s: float) -> Hop:
    request = pb.ClassifyRequest(texts=[TEXT])
    channels = [grpc.aio.insecure_channel(t) for t in (direct, proxied)]
    stubs = [pb_grpc.SentimentServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
    times: list[list[float]] = [[], []]
    for index in range(calls + 200):  # the first 200 warm up
        for who in (0, 1) if index % 2 == 0 else (1, 0):
            if gap_s:
                await asyncio.sleep(gap_s)  # idle, as while the model computes
            started = time.perf_counter()
            await stubs[who].Classify(request)
            if index >= 200:
                times[who].append(time.perf_counter() - started)
    await asyncio.gather(*(c.close() for c in channels))
    diffs = sorted(b - a for a, b in zip(*times, strict=True))
    return Hop(
        1000 * statistics.median(times[0]), 1000 * statistics.median(times[1]), 1000 * diffs[len(diffs) // 2], calls
    )


@dataclass
class FloorCell:
    """The pass-through proxy under closed-loop load: one (texts per call, concurrency) cell."""

    texts_per_call: int
    concurrency: int
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    proxy_cpu_s: float  # the proxy's own CPU seconds over the window (the floor)
    echo_cpu_s: float  # the echo server's, standing in for Triton
    client_cpu_s: float

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_call(self) -> float:
        return 1000 * self.proxy_cpu_s / self.calls if self.calls else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "calls_per_s": self.calls_per_s, "cpu_ms_per_call": self.cpu_ms_per_call}


async def cpu_window(groups: dict[str, list[int]], warmup_s: float, measure_s: float) -> dict[str, float]:
    """CPU seconds each group of pids used from `warmup_s` to `warmup_s + measure_s` from now.

    Scaled to exactly `measure_s` (the event loop may wake a few ms late under load), so it
    lines up with closed_loop's window, which starts at the same moment.
    """
    await asyncio.sleep(warmup_s)
    t0 = time.monotonic()
    before = {name: sum(process_cpu_s(pid) for pid in pids) for name, pids in groups.items()}
    await asyncio.sleep(measure_s)
    elapsed = max(1e-6, time.monotonic() - t0)
    after = {name: sum(process_cpu_s(pid) for pid in pids) for name, pids in groups.items()}
    return {name: (after[name] - before[name]) * measure_s / elapsed for name in groups}


async def _measure_cpu(
    proxied: str, pids: dict[str, list[int]], cells: list[tuple[int, int]], warmup_s: float, measure_s: float
) -> list[FloorCell]:
    channel = grpc.aio.insecure_channel(proxied)
    stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
    results = []
    try:
        for texts, concurrency in cells:
            request = pb.ClassifyRequest(texts=[TEXT] * texts)

            async def call(index: int, request: pb.ClassifyRequest = request) -> int:
                await stub.Classify(request, timeout=30)
                return 1

            load, cpu = await asyncio.gather(
                closed_loop(call, concurrency, warmup_s, measure_s), cpu_window(pids, warmup_s, measure_s)
            )
            results.append(
                FloorCell(
                    texts, concurrency, load.calls, load.seconds, load.percentile_ms(50), load.percentile_ms(99),
                    cpu["proxy"], cpu["echo"], cpu["client"],
                )
            )  # fmt: skip
    finally:
        await channel.close()
    return results


@contextmanager
def echo_and_proxy() -> Iterator[tuple[str, str, dict[str, list[int]]]]:
    """(echo target, proxy target, pids by role) of an echo server and a proxy in front; both stopped by pid."""
    processes: list[subprocess.Popen[str]] = []
    try:
        echo, echo_target = start(None)
        processes.append(echo)
        proxy, proxy_target = start(echo_target)
        processes.append(proxy)
        yield echo_target, proxy_target, {"proxy": [proxy.pid], "echo": [echo.pid], "client": [os.getpid()]}
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()


def floor_cpu(cells: list[tuple[int, int]], warmup_s: float, measure_s: float) -> list[FloorCell]:
    """Measure the proxy's CPU in each (texts per call, concurrency) cell."""
    with echo_and_proxy() as (_, proxy_target, pids):
        return asyncio.run(_measure_cpu(proxy_target, pids, cells, warmup_s, measure_s))


def floor_hop(calls: int, gap_s: float) -> Hop:
    """The latency one grpc.aio hop adds at concurrency 1, `gap_s` idle before each call."""
    with echo_and_proxy() as (echo_target, proxy_target, _):
        return asyncio.run(measure(echo_target, proxy_target, calls, gap_s))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="idle time before each call (concurrency 1 waits ~35 ms on the model)"
    )
    parser.add_argument("--cpu", action="store_true", help="measure the proxy's CPU per call under load instead")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="with --cpu")
    parser.add_argument("--texts", type=int, default=1, help="texts per call, with --cpu")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring window per cell, with --cpu")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.upstream))
        return 0
    if args.cpu:
        for cell in floor_cpu([(args.texts, c) for c in args.concurrency], min(3.0, args.seconds), args.seconds):
            print(f"texts {cell.texts_per_call} concurrency {cell.concurrency}: {cell.calls_per_s:.0f} calls/s, "
                  f"p50 {cell.p50_ms:.2f} ms, p99 {cell.p99_ms:.2f} ms, proxy CPU {cell.cpu_ms_per_call:.3f} ms/call")  # fmt: skip
        return 0
    print(floor_hop(args.calls, args.gap_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
