"""`serve --workers 2` on a real Triton: both workers serve one port, a killed one is replaced, SIGTERM drains all."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import Service, start_service
from loadgen import Call, check_drained, classify_once
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_server.backend.triton_process import child_pids

pytestmark = pytest.mark.triton

DEADLINE_S = 5.0
RECONNECTED_S = 4.0  # gRPC's first reconnect backoff (1 s, jitter 20 %) twice over, and then some


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections process `pid` holds on its local `port`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def start_workers(model_repository: Path, triton: object, tmp_path: Path, *extra: str) -> tuple[Service, str]:
    service = start_service(
        model_repository,
        "sentiment",
        triton.grpc_url,  # type: ignore[attr-defined]
        tmp_path,
        "--workers",
        "2",
        "--metrics-port",
        "0",
        *extra,  # type: ignore[attr-defined]
    )
    assert service.process.stdout is not None
    metrics_url = ""
    while not metrics_url:
        line = service.process.stdout.readline()
        assert line, service.log.read_text()[-3000:]
        if "metrics on " in line:
            metrics_url = f"http://{line.split('metrics on ')[1].strip()}/metrics"
    return service, metrics_url


def wait_for_workers(parent: int, count: int, timeout_s: float = 60) -> set[int]:
    until = time.monotonic() + timeout_s
    while len(pids := child_pids(parent)) != count:
        assert time.monotonic() < until, pids
        time.sleep(0.1)
    return pids


def wait_for_restarts(metrics_url: str, count: int, timeout_s: float = 60) -> None:
    until = time.monotonic() + timeout_s
    while metric(metrics_url, "sentiment_worker_restarts_total") != count:
        assert time.monotonic() < until
        time.sleep(0.1)


async def closed_loop(target: str, callers: int, stop: asyncio.Event) -> list[list[Call]]:
    """`callers` callers, each on its own connection (so the kernel spreads them over the workers); per caller
    its calls."""
    calls: list[list[Call]] = [[] for _ in range(callers)]

    async def caller(mine: list[Call]) -> None:
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)
            while not stop.is_set():
                mine.append(call := await classify_once(stub, ["I love this"], DEADLINE_S))
                if call.code != grpc.StatusCode.OK:
                    await asyncio.sleep(0.05)  # as a client with retries would

    await asyncio.gather(*(caller(mine) for mine in calls))
    return calls


def test_workers_share_the_port_and_each_serves(model_repository: Path, triton: object, tmp_path: Path):
    service, metrics_url = start_workers(model_repository, triton, tmp_path)
    port = int(service.target.rsplit(":", 1)[1])
    try:
        workers = wait_for_workers(service.process.pid, 2)
        channels = [
            grpc.insecure_channel(service.target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(16)
        ]
        try:
            for channel in channels:
                stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
                assert stub.Classify(pb.ClassifyRequest(texts=["good"]), timeout=DEADLINE_S).results
            held = {pid: connections_to(pid, port) for pid in workers}
        finally:
            for channel in channels:
                channel.close()
        assert sum(held.values()) >= 16 and all(held.values()), held  # the kernel gave each worker connections
        # One /metrics for both: every call counted once.
        assert metric(metrics_url, 'sentiment_requests_total{code="OK",method="Classify"') == 16
    finally:
        assert service.stop() == 0
    assert not child_pids(service.process.pid)


def test_killed_worker_is_replaced_and_the_other_keeps_answering(
    model_repository: Path, triton: object, tmp_path: Path
):
    service, metrics_url = start_workers(model_repository, triton, tmp_path)
    port = int(service.target.rsplit(":", 1)[1])

    async def scenario() -> tuple[list[list[Call]], int, float, float]:
        stop = asyncio.Event()
        load = asyncio.ensure_future(closed_loop(service.target, 8, stop))
        await asyncio.sleep(1.5)
        victim = min(wait_for_workers(service.process.pid, 2))
        held = connections_to(victim, port)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        await asyncio.to_thread(wait_for_restarts, metrics_url, 1)  # its replacement serves
        replaced_at = time.monotonic()
        await asyncio.sleep(1.5)
        stop.set()
        return await load, held, killed_at, replaced_at

    try:
        callers, held, killed_at, replaced_at = asyncio.run(scenario())
        assert len(wait_for_workers(service.process.pid, 2)) == 2
    finally:
        assert service.stop() == 0
    failing = [[c for c in calls if c.code != grpc.StatusCode.OK] for calls in callers]
    failing = [failed for failed in failing if failed]
    print(f"calls={sum(map(len, callers))} callers on the killed worker={held} callers that saw a failure="
          f"{len(failing)} replaced in {replaced_at - killed_at:.2f}s")  # fmt: skip
    # Callers connected to the other worker never fail. One connected to the killed worker loses the call in
    # flight there and reconnects to a live worker; if its first reconnect raced the dying worker's listening
    # socket (reset), its channel fails calls fast for one reconnect backoff (about a second) first.
    assert len(failing) <= held
    for failed in failing:
        assert all(c.code == grpc.StatusCode.UNAVAILABLE for c in failed), failed
        assert all(killed_at - DEADLINE_S <= c.ended <= killed_at + RECONNECTED_S for c in failed), failed
    assert all(
        c.code == grpc.StatusCode.OK for calls in callers for c in calls if c.started > killed_at + RECONNECTED_S
    )
    assert sum(1 for calls in callers for c in calls if c.started > replaced_at) > 20


def test_sigterm_drains_every_worker(model_repository: Path, triton: object, tmp_path: Path):
    service, _ = start_workers(model_repository, triton, tmp_path, "--grace-s", "10")

    async def scenario() -> tuple[list[Call], float]:
        stop = asyncio.Event()
        load = asyncio.ensure_future(closed_loop(service.target, 8, stop))
        await asyncio.sleep(1.5)
        os.kill(service.process.pid, signal.SIGTERM)
        signalled_at = time.monotonic()
        await asyncio.to_thread(service.process.wait, 30)
        stop.set()
        return [c for calls in await load for c in calls], signalled_at

    workers = wait_for_workers(service.process.pid, 2)
    try:
        calls, signalled_at = asyncio.run(scenario())
    finally:
        code = service.stop()
    assert code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    check_drained(calls, signalled_at, service.log.read_text(), processes=2)


def test_workers_die_with_a_killed_parent(model_repository: Path, triton: object, tmp_path: Path):
    service, _ = start_workers(model_repository, triton, tmp_path)
    workers = wait_for_workers(service.process.pid, 2)
    service.stop(signal.SIGKILL)
    until = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < until, "workers outlived their parent"
        time.sleep(0.05)
