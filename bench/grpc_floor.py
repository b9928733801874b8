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
from typing import Any

import grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc


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


async def measure(direct: str, proxied: str, calls: int, gap_s: float) -> None:
    request = pb.ClassifyRequest(texts=["I've been waiting for a HuggingFace course my whole life."])
    stubs = [pb_grpc.SentimentServiceStub(grpc.aio.insecure_channel(t)) for t in (direct, proxied)]  # type: ignore[no-untyped-call]
    times: list[list[float]] = [[], []]
    for index in range(calls + 200):  # the first 200 warm up
        for who in (0, 1) if index % 2 == 0 else (1, 0):
            if gap_s:
                await asyncio.sleep(gap_s)  # idle, as while the model computes
            started = time.perf_counter()
            await stubs[who].Classify(request)
            if index >= 200:
                times[who].append(time.perf_counter() - started)
    diffs = sorted(b - a for a, b in zip(*times, strict=True))
    print(f"direct p50 {1000 * statistics.median(times[0]):.3f} ms, through a no-op grpc.aio proxy p50 "
          f"{1000 * statistics.median(times[1]):.3f} ms: the hop costs {1000 * diffs[len(diffs) // 2]:.3f} ms "
          f"(median of {calls} paired differences)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="idle time before each call (concurrency 1 waits ~35 ms on the model)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.upstream))
        return 0
    echo, echo_target = start(None)
    processes = [echo]
    try:
        proxy, proxy_target = start(echo_target)
        processes.append(proxy)
        asyncio.run(measure(echo_target, proxy_target, args.calls, args.gap_ms / 1000))
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGTERM)
            process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
