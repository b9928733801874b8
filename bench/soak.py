"""Soak test: steady closed-loop load for a long time, watching memory and file descriptors.

    python bench/soak.py --duration-s 600 [--concurrency 16] [--target host:port] [--full-size]

Without --target it builds a tiny (or --full-size) random-weight checkpoint in a
temporary directory, exports it, and starts an embedded Triton and a
`sentiment-server serve` front-end on 127.0.0.1 (bench/procs.py), all stopped by
pid at the end, on an error or on Ctrl-C/SIGTERM.

The load: `--concurrency` callers in a closed loop over one channel (all but
`--streams` of them unary Classify calls with 1-8 mixed texts and varied
options, now and then a Tokenize; the others ClassifyStream calls of 50
messages each, one message in flight), plus one caller that opens a fresh
channel for every call (connection churn, twice a second). `--cancel-fraction`
(5 %) of the unary calls are cancelled by their caller at a random moment in
flight, and a stream is cancelled with that probability after each message it
writes, before the answer; those count as cancelled, not failed. `--client
python`: the unary calls go through the project's AsyncSentimentClient
(default retries) instead of a bare stub.

Every `--interval-s` (10 s) it samples the front-end's, Triton's and Triton's
Python backend stubs' RSS (/proc/PID/status VmRSS), open file descriptors
(/proc/PID/fd) and threads, with the calls, errors and p50/p99 of the interval.
After the warm-up (default: the first 60 s or 10 % of the run, whichever is
shorter) it reports the growth of RSS and fds (first sample after the warm-up
vs the last, the floor of RSS, and a least-squares slope), prints it as a table and
writes bench/results/soak.json, and a chart of the samples next to it (bench/soak_plot.py:
soak.png). Exit code 1 when any call failed (130 when
interrupted without failures).

Chaos mode (`--chaos-every-s S`, without --target): one supervised
`sentiment-server up --port 0` child instead (its stderr in up.log in the kept
log directory, a copy of Triton's log next to it; stopped by pid on every way
out, SIGTERM then SIGKILL). From the end of the warm-up, every S seconds, it
SIGKILLs alternately the current tritonserver (a child of `up`) and one of its
Python backend stubs (children of tritonserver), tritonserver first, and polls
grpc.health.v1 Check("") on the front-end every 0.1 s: the kill's recovery
time is the first SERVING after NOT_SERVING (SERVING within 10 s without any
NOT_SERVING: the health never dropped; nothing within 60 s: not recovered).
One line per kill. The sampled processes follow the restarts (up, its current
tritonserver child, that one's children: found again at every sample). At the
end it reads `sentiment_triton_restarts_total` from the front-end's /metrics
and counts up's "died with" / "lost its stub" log lines; the kills, their
recovery times (median, max), the metric and the counts go into the summary,
written to bench/results/chaos.json unless --output says otherwise. Calls have
the 30 s deadline: the front-end holds batches while Triton restarts, so none
should fail. Exit code 1 also when a kill did not recover.

    python bench/soak.py --duration-s 660 --chaos-every-s 60 --warmup-s 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
from procs import HOST, SENTIMENT_SERVER, FrontEnd, children
from soak_plot import plot

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "soak.json"
CHAOS_RESULTS = ROOT / "bench" / "results" / "chaos.json"
MODEL_NAME = "sentiment"  # the name bench/procs.py serves
STREAM_MESSAGES = 50
CHURN_PERIOD_S = 0.5
HEALTH_POLL_S = 0.1  # chaos: how often the front-end's health is checked after a kill
NOT_SERVING_WINDOW_S = 10.0  # chaos: a health that stays SERVING this long after a kill never dropped
RECOVERY_CAP_S = 60.0  # chaos: not SERVING again by then: the kill did not recover
CHAOS_MAX_RESTARTS = 1000  # chaos: `up`'s crash budget, never spent by a run
CHAOS_RESTART_WINDOW_S = 60.0
log = logging.getLogger("bench.soak")

# Odd but valid texts mixed into the corpus: non-Latin scripts, emoji sequences, controls.
ODD_TEXTS = (
    "שלום עולם, זה סרט נהדר",
    "هذا الفيلم رائع جدا",
    "👨\u200d👩\u200d👧\u200d👦 family night 🏳️\u200d🌈",
    "good\x00movie",
    "Ünïcödé ñ façade — “quoted” …",
    "这部电影很好看",
)


# --------------------------------------------------------------------------- process sampling


@dataclass(frozen=True)
class ProcStats:
    rss_kb: int
    # VmRSS = RssAnon (heap: what leaks) + RssFile (mapped files) + RssShmem (shared memory; the Python
    # backend's /dev/shm pool counts here as its pages are touched, bounded by the pool's size).
    rss_anon_kb: int
    rss_shmem_kb: int
    fds: int
    threads: int
    pids: int  # how many processes were summed (the backend stubs are several)


def _status_fields(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def proc_stats(pids: list[int]) -> ProcStats | None:
    """Summed VmRSS (and its anonymous and shared-memory parts), open fds and threads; None if none is alive."""
    rss = anon = shmem = fds = threads = alive = 0
    for pid in pids:
        try:
            status = _status_fields(pid)
            count = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        rss += int(status.get("VmRSS", "0 kB").split()[0])
        anon += int(status.get("RssAnon", "0 kB").split()[0])
        shmem += int(status.get("RssShmem", "0 kB").split()[0])
        threads += int(status.get("Threads", "0"))
        fds += count
        alive += 1
    return ProcStats(rss, anon, shmem, fds, threads, alive) if alive else None


def process_table() -> dict[int, tuple[int, str]]:
    """Every live process: pid -> (parent pid, name); zombies (dead, not yet reaped) left out."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        state, parent = text[text.rfind(")") + 1 :].split()[:2]
        if state != "Z":
            table[int(stat.parent.name)] = (int(parent), name)
    return table


def direct_children(pid: int, table: Mapping[int, tuple[int, str]]) -> list[int]:
    return sorted(child for child, (parent, _) in table.items() if parent == pid)


def descendants(pid: int, table: Mapping[int, tuple[int, str]]) -> list[int]:
    out = []
    for child in direct_children(pid, table):
        out.append(child)
        out.extend(descendants(child, table))
    return out


def current_triton(up_pid: int, table: Mapping[int, tuple[int, str]]) -> int | None:
    """The tritonserver `up` runs now (its other child is the group reaper, a Python process)."""
    tritons = [pid for pid in direct_children(up_pid, table) if table[pid][1] == "tritonserver"]
    return tritons[-1] if tritons else None


@dataclass
class Roles:
    """Which pids to watch: the front-end, Triton, and Triton's children (Python backend stubs).

    `supervised`: the front-end is `sentiment-server up`, which restarts Triton; Triton and its stubs are
    found again, as its current tritonserver child and that one's descendants, every time.
    """

    front_end: int | None = None
    triton: int | None = None
    supervised: bool = False

    def groups(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        if self.supervised and self.front_end:
            table = process_table()
            triton = current_triton(self.front_end, table)
            out["front-end"] = [self.front_end]
            out["triton"] = [triton] if triton else []  # [] while it restarts: printed as "-"
            out["triton-stubs"] = descendants(triton, table) if triton else []
            return out
        if self.front_end:
            out["front-end"] = [self.front_end]
        if self.triton:
            out["triton"] = [self.triton]
            out["triton-stubs"] = list(children(self.triton))
        return out


# --------------------------------------------------------------------------- load


@dataclass
class Stats:
    """What the callers record; the sampler takes the interval's latencies each time."""

    calls: int = 0
    errors: int = 0
    by_code: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    interval_s: list[float] = field(default_factory=list)
    all_s: list[float] = field(default_factory=list)
    texts: int = 0
    stopping: bool = False  # set on Ctrl-C/SIGTERM: calls cut short then are not failures
    after_stop: Counter[str] = field(default_factory=Counter)
    cancelled: Counter[str] = field(default_factory=Counter)  # cancelled by their caller on purpose

    def ok(self, kind: str, seconds: float, texts: int) -> None:
        self.calls += 1
        self.texts += texts
        self.by_code["OK"] += 1
        self.by_kind[kind] += 1
        self.interval_s.append(seconds)
        self.all_s.append(seconds)

    def failed(self, kind: str, code: str, details: str) -> None:
        if self.stopping:
            self.after_stop[code] += 1
            return
        self.calls += 1
        self.errors += 1
        self.by_code[code] += 1
        self.by_kind[kind] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append(f"{kind}: {code}: {details[:200]}")
        log.warning("%s failed: %s %s", kind, code, details[:200])


def percentile_ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


class Load:
    """The callers. `cancel_fraction` of unary calls are cancelled at a random moment in flight, and a stream
    is cancelled with that chance after each message, its answer still to come; `python_client`: unary calls
    go through the project's `AsyncSentimentClient` (its default retries) instead of a bare stub."""

    def __init__(
        self,
        target: str,
        texts: list[str],
        stats: Stats,
        timeout_s: float,
        seed: int = 0,
        cancel_fraction: float = 0.0,
        python_client: bool = False,
    ) -> None:
        from sentiment.v1 import sentiment_pb2 as pb

        self.pb = pb
        self.target = target
        self.texts = texts
        self.stats = stats
        self.timeout_s = timeout_s
        self.rng = random.Random(seed)
        self.cancel_fraction = cancel_fraction
        self.python_client = python_client

    def _classify_request(self) -> Any:
        pb = self.pb
        n = self.rng.choice((1, 1, 1, 2, 4, 8))
        return pb.ClassifyRequest(
            texts=self.rng.sample(self.texts, n),
            top_k=self.rng.choice((0, 0, 1, 2)),
            return_logits=self.rng.random() < 0.3,
            truncation=pb.TruncationOptions(max_length=self.rng.choice((0, 0, 0, 64))),
        )

    async def _unary(self, stub: Any, client: Any, request: Any, tokenize: bool) -> None:
        """One call through the bare stub or the project's client; raises what either raises."""
        if client is not None:
            if tokenize:
                await client.tokenize(list(request.texts), timeout=self.timeout_s)
                return
            result = await client.classify(list(request.texts), top_k=request.top_k,
                                           return_logits=request.return_logits,
                                           max_length=request.truncation.max_length,
                                           timeout=self.timeout_s)  # fmt: skip
            if len(result.results) != len(request.texts):
                raise AssertionError("one result per text")
        elif tokenize:
            await stub.Tokenize(self.pb.TokenizeRequest(texts=request.texts), timeout=self.timeout_s)
        else:
            response = await stub.Classify(request, timeout=self.timeout_s)
            if len(response.results) != len(request.texts):
                raise AssertionError("one result per text")

    async def unary_caller(self, stub: Any, client: Any, until: float, stop: asyncio.Event) -> None:
        from sentiment_client import SentimentError

        while time.monotonic() < until and not stop.is_set():
            tokenize = self.rng.random() < 0.05
            request = self._classify_request()
            kind = "Tokenize" if tokenize else "Classify"
            cancel_after_s = self.rng.uniform(0.0, 0.05) if self.rng.random() < self.cancel_fraction else None
            started = time.monotonic()
            call = asyncio.ensure_future(self._unary(stub, client, request, tokenize))
            try:
                done, _ = await asyncio.wait({call}, timeout=cancel_after_s)
                if not done:  # cancelled by its caller while in flight: the server must cope, not count it
                    call.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, SentimentError):
                        await call
                    self.stats.cancelled[kind] += 1
                    continue
                call.result()
                self.stats.ok(kind, time.monotonic() - started, len(request.texts))
            except grpc.aio.AioRpcError as exc:
                self.stats.failed(kind, exc.code().name, exc.details() or "")
                await asyncio.sleep(0.05)  # a failing server is no reason to spin
            except SentimentError as exc:
                self.stats.failed(kind, exc.code.name, exc.message)
                await asyncio.sleep(0.05)
            except AssertionError as exc:
                self.stats.failed(kind, "BAD_RESPONSE", str(exc))

    async def stream_caller(self, stub: Any, until: float, stop: asyncio.Event) -> None:
        """Streams of STREAM_MESSAGES messages, one in flight; each message's round trip is one call.

        After each message written, with probability `cancel_fraction`, the stream is cancelled before its
        answer comes (most streams end that way).
        """
        pb = self.pb
        stream_deadline_s = max(self.timeout_s, 5 * 60)
        while time.monotonic() < until and not stop.is_set():
            opened = time.monotonic()
            call = stub.ClassifyStream(timeout=stream_deadline_s)
            cancelled = False
            try:
                for i in range(STREAM_MESSAGES):
                    if time.monotonic() >= until or stop.is_set():
                        break
                    if time.monotonic() - opened > stream_deadline_s - 2 * self.timeout_s:
                        break  # end it cleanly, as a client must, before its deadline cuts a message short
                    request = self._classify_request()
                    started = time.monotonic()
                    await call.write(pb.ClassifyStreamRequest(request=request, correlation_id=str(i)))
                    if self.rng.random() < self.cancel_fraction:
                        cancelled = True
                        break
                    response = await asyncio.wait_for(call.read(), self.timeout_s)
                    if response is grpc.aio.EOF or response.correlation_id != str(i):
                        self.stats.failed("ClassifyStream", "BAD_RESPONSE", f"message {i}: {response!r}"[:200])
                        break
                    self.stats.ok("ClassifyStream", time.monotonic() - started, len(request.texts))
                if cancelled:
                    call.cancel()
                    self.stats.cancelled["ClassifyStream"] += 1
                    continue
                await call.done_writing()
                if await call.read() is not grpc.aio.EOF:
                    self.stats.failed("ClassifyStream", "BAD_RESPONSE", "a response after the last message")
                if (code := await call.code()) != grpc.StatusCode.OK:
                    self.stats.failed("ClassifyStream", code.name, await call.details())
            except grpc.aio.AioRpcError as exc:
                self.stats.failed("ClassifyStream", exc.code().name, exc.details() or "")
                await asyncio.sleep(0.05)
            except TimeoutError:
                self.stats.failed("ClassifyStream", "CLIENT_TIMEOUT", "no response in time")
                call.cancel()

    async def churn_caller(self, until: float, stop: asyncio.Event) -> None:
        """A fresh channel (a new TCP connection) per call: connection set-up and tear-down must not leak."""
        from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

        while time.monotonic() < until and not stop.is_set():
            started = time.monotonic()
            request = self._classify_request()
            try:
                async with grpc.aio.insecure_channel(self.target) as channel:
                    stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
                    await stub.Classify(request, timeout=self.timeout_s)
                self.stats.ok("Classify(new channel)", time.monotonic() - started, len(request.texts))
            except grpc.aio.AioRpcError as exc:
                self.stats.failed("Classify(new channel)", exc.code().name, exc.details() or "")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), CHURN_PERIOD_S)

    async def run(self, concurrency: int, streams: int, duration_s: float, stop: asyncio.Event) -> list[Any]:
        from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
        from sentiment_client import AsyncSentimentClient, ClientOptions

        until = time.monotonic() + duration_s
        async with contextlib.AsyncExitStack() as stack:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(self.target))
            stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]
            client = None
            if self.python_client:
                options = ClientOptions(target=self.target, timeout_s=self.timeout_s)
                client = await stack.enter_async_context(AsyncSentimentClient(options=options))
            callers = [self.stream_caller(stub, until, stop) for _ in range(streams)]
            callers += [self.unary_caller(stub, client, until, stop) for _ in range(concurrency - streams)]
            callers.append(self.churn_caller(until, stop))
            return await asyncio.gather(*callers, return_exceptions=True)


# --------------------------------------------------------------------------- chaos


class SupervisedUp(FrontEnd):
    """`sentiment-server up --port 0` as a child process: the front-end and the Triton it supervises.

    Its port is read from its first stdout line, its stderr goes to up.log in `log_dir`; `stop` sends
    SIGTERM and, after `stop_timeout_s`, SIGKILL (Triton and its stubs die with it: PDEATHSIG, group reaper).
    """

    def __init__(
        self,
        repository: Path,
        log_dir: Path,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 40.0,
    ) -> None:
        self.log_path = log_dir / "up.log"
        self.stop_timeout_s = stop_timeout_s  # up drains (10 s) and then stops Triton (up to 10 s)
        self._log = self.log_path.open("w")
        command = [
            *SENTIMENT_SERVER,
            "up",
            "--host",
            HOST,
            "--port",
            "0",
            "--admin-port",
            "0",
            "--metrics-port",
            "0",  # any free port, read from its log: a port chosen here could be the one up then gives Triton
            "--model-repository",
            str(repository),
            "--triton-max-restarts",
            str(CHAOS_MAX_RESTARTS),
            "--triton-restart-window-s",
            str(CHAOS_RESTART_WINDOW_S),
            *args,
        ]
        log.info("up: %s (log %s)", " ".join(command[3:]), self.log_path)
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        try:
            self.target = self._read_target(timeout_s=300)
            ports = re.findall(r"metrics on http://[^ ]+:(\d+)/metrics", self.log_path.read_text(errors="replace"))
            if not ports:
                raise RuntimeError(f"up did not log its metrics port; see {self.log_path}")
            self.metrics_port = int(ports[-1])
        except BaseException:  # SIGTERM/Ctrl-C while it starts: it must not outlive us
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            log.info("stopping up (pid %s)", self.process.pid)
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("up (pid %s) still running %.0f s after SIGTERM: SIGKILL", self.process.pid,
                            self.stop_timeout_s)  # fmt: skip
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()

    def triton_log(self) -> Path | None:
        """Triton's log, from up's "started tritonserver pid N: ..., log PATH" line (the same file on restarts)."""
        paths = re.findall(r"started tritonserver pid \d+: .*, log (\S+)", self.log_path.read_text(errors="replace"))
        return Path(paths[-1]) if paths else None

    def keep_triton_log(self, log_dir: Path) -> Path | None:
        """A copy of Triton's log in `log_dir`: up deletes Triton's own log directory on a clean stop."""
        source = self.triton_log()
        if source is None or not source.exists():
            return None
        copy = log_dir / "tritonserver.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(source, copy)
            return copy
        return None

    def log_counts(self) -> dict[str, int]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return {
            "died_with": text.count(" died with "),
            "lost_its_stub": text.count(" lost its stub "),
            "giving_up": text.count("giving up"),
            "not_ready_after_restart": text.count("restarted tritonserver is not ready"),
        }


def _summary_s(values: list[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2) if values else None,
        "max": round(max(values), 2) if values else None,
    }


@dataclass
class Chaos:
    """Kills tritonserver and its stubs, alternately, every `every_s` from the end of the warm-up, and times
    each recovery through the front-end's health."""

    every_s: float
    warmup_s: float
    duration_s: float
    up_pid: int
    metrics: Callable[[], dict[str, float]]
    kills: list[dict[str, Any]] = field(default_factory=list)
    restarts_metric: float | None = None

    def kill_times(self) -> list[float]:
        """Seconds into the run; the last one leaves at least half a period of load after it."""
        times, at = [], self.warmup_s
        while at <= self.duration_s - self.every_s / 2:
            times.append(at)
            at += self.every_s
        return times

    def victim(self, kind: str) -> int | None:
        table = process_table()
        triton = current_triton(self.up_pid, table)
        if kind == "triton" or triton is None:
            return triton
        stubs = direct_children(triton, table)
        return stubs[0] if stubs else None

    def restarts(self) -> float | None:
        try:
            return self.metrics().get("sentiment_triton_restarts_total")
        except OSError as exc:
            log.warning("cannot read the front-end's /metrics: %s", exc)
            return None

    async def run(self, started: float, target: str, done: asyncio.Event, stop: asyncio.Event) -> None:
        from grpc_health.v1 import health_pb2_grpc

        times = self.kill_times()
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
            for i, at in enumerate(times):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), max(0.0, started + at - time.monotonic()))
                if done.is_set() or stop.is_set():
                    break
                kind = "triton" if i % 2 == 0 else "stub"
                pid = self.victim(kind)
                record: dict[str, Any] = {"n": i + 1, "t_s": round(time.monotonic() - started, 1), "kind": kind,
                                          "pid": pid}  # fmt: skip
                if pid is None:
                    record["note"] = f"no {kind} process to kill"
                else:
                    try:
                        os.kill(pid, signal.SIGKILL)
                        record.update(await self.recovery(health, time.monotonic(), stop))
                    except ProcessLookupError:
                        record["note"] = f"{kind} pid {pid} was gone already"
                record["restarts_metric"] = await asyncio.to_thread(self.restarts)
                self.kills.append(record)
                print(self.describe(record, len(times)), flush=True)

    async def recovery(self, health: Any, killed_at: float, stop: asyncio.Event) -> dict[str, Any]:
        """Health Check("") every 0.1 s from the kill: when it went NOT_SERVING and when SERVING again."""
        from grpc_health.v1 import health_pb2

        not_serving_at: float | None = None
        first_serving_at: float | None = None
        statuses: Counter[str] = Counter()
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as exc:
                status = f"error {exc.code().name}"
            now = time.monotonic()
            statuses[status] += 1
            if status != "SERVING":
                if not_serving_at is None:
                    not_serving_at = now
            elif not_serving_at is not None:
                return {
                    "recovered": True,
                    "saw_not_serving": True,
                    "not_serving_after_s": round(not_serving_at - killed_at, 2),
                    "recovery_s": round(now - killed_at, 2),
                    "health_answers": dict(statuses),
                }
            elif first_serving_at is None:
                first_serving_at = now
            if not_serving_at is None and first_serving_at is not None and now - killed_at >= NOT_SERVING_WINDOW_S:
                return {  # the health never dropped: SERVING straight away
                    "recovered": True,
                    "saw_not_serving": False,
                    "not_serving_after_s": None,
                    "recovery_s": round(first_serving_at - killed_at, 2),
                    "health_answers": dict(statuses),
                }
            if now - killed_at >= RECOVERY_CAP_S or stop.is_set():
                return {
                    "recovered": False,
                    "saw_not_serving": not_serving_at is not None,
                    "not_serving_after_s": None if not_serving_at is None else round(not_serving_at - killed_at, 2),
                    "recovery_s": None,
                    "health_answers": dict(statuses),
                }
            await asyncio.sleep(HEALTH_POLL_S)

    @staticmethod
    def describe(k: dict[str, Any], total: int) -> str:
        head = f"kill {k['n']}/{total} at {k['t_s']:.0f} s: {k['kind']} pid {k['pid']}"
        if "note" in k:
            return f"{head}: {k['note']}"
        if not k["recovered"]:
            return f"{head}: NOT SERVING again within {RECOVERY_CAP_S:.0f} s; health answers {k['health_answers']}"
        drop = (f"NOT_SERVING after {k['not_serving_after_s']:.1f} s" if k["saw_not_serving"]
                else "health never left SERVING")  # fmt: skip
        return f"{head}: {drop}, SERVING after {k['recovery_s']:.1f} s; restarts metric {k['restarts_metric']}"

    def summary(self, up: SupervisedUp, up_exit_code: int | None, triton_log: Path | None) -> dict[str, Any]:
        recovered = [k for k in self.kills if k.get("recovered")]
        return {
            "every_s": self.every_s,
            "kills_planned": len(self.kill_times()),
            "kills": self.kills,
            "recovery_s": _summary_s([k["recovery_s"] for k in recovered]),
            "recovery_s_by_kind": {
                kind: _summary_s([k["recovery_s"] for k in recovered if k["kind"] == kind])
                for kind in ("triton", "stub")
            },
            "not_recovered": sum(1 for k in self.kills if k.get("recovered") is False),
            "restarts_metric": self.restarts_metric,
            "up_log_lines": up.log_counts(),
            "up_log": str(up.log_path),
            "triton_log": str(triton_log) if triton_log else None,
            "up_exit_code": up_exit_code,
        }


def print_chaos(chaos: dict[str, Any]) -> None:
    print(f"\nchaos: a kill every {chaos['every_s']:.0f} s, {len(chaos['kills'])} of {chaos['kills_planned']} done")
    print(
        f"{'#':>3} {'t(s)':>6} {'kind':<7} {'pid':>8} {'NOT_SERVING after s':>20} {'SERVING after s':>16} {'restarts':>9}"
    )
    for k in chaos["kills"]:
        drop = "-" if k.get("not_serving_after_s") is None else f"{k['not_serving_after_s']:.2f}"
        back = "-" if k.get("recovery_s") is None else f"{k['recovery_s']:.2f}"
        restarts = "-" if k.get("restarts_metric") is None else f"{k['restarts_metric']:.0f}"
        print(f"{k['n']:>3} {k['t_s']:>6.0f} {k['kind']:<7} {k['pid']!s:>8} {drop:>20} {back:>16} {restarts:>9}"
              + (f"  {k['note']}" if "note" in k else ""))  # fmt: skip
    r = chaos["recovery_s"]
    by_kind = "; ".join(
        f"{kind} median {v['median']} s, max {v['max']} s" for kind, v in chaos["recovery_s_by_kind"].items()
    )
    print(f"recovery: median {r['median']} s, max {r['max']} s ({by_kind}); not recovered: {chaos['not_recovered']}")
    print(f"sentiment_triton_restarts_total {chaos['restarts_metric']}; up's log: {chaos['up_log_lines']}; "
          f"up exit code {chaos['up_exit_code']}\nlogs: {chaos['up_log']}, {chaos['triton_log']}")  # fmt: skip


# --------------------------------------------------------------------------- the run


@dataclass
class Soak:
    args: argparse.Namespace
    roles: Roles
    chaos: Chaos | None = None
    stats: Stats = field(default_factory=Stats)
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = 0.0
    last_calls: int = 0
    last_errors: int = 0

    def sample(self, phase: str) -> dict[str, Any]:
        now = time.monotonic()
        latencies, self.stats.interval_s = self.stats.interval_s, []
        row: dict[str, Any] = {
            "t_s": round(now - self.started, 1),
            "phase": phase,
            "calls": self.stats.calls,
            "errors": self.stats.errors,
            "interval_calls": self.stats.calls - self.last_calls,
            "interval_errors": self.stats.errors - self.last_errors,
            "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99),
            "processes": {},
        }
        self.last_calls, self.last_errors = self.stats.calls, self.stats.errors
        for name, pids in self.roles.groups().items():
            stats = proc_stats(pids)
            row["processes"][name] = None if stats is None else {**stats.__dict__, "pid_list": pids}
        self.samples.append(row)
        self._print_row(row)
        return row

    def _print_row(self, row: dict[str, Any]) -> None:
        if len(self.samples) == 1:
            print(
                f"{'t(s)':>6} {'phase':<7} {'calls':>8} {'err':>4} {'p50ms':>7} {'p99ms':>7}  "
                + "  ".join(f"{name + ' MB/fds/thr':>26}" for name in row["processes"]),
                flush=True,
            )
        cells = []
        for name in row["processes"]:
            p = row["processes"].get(name)
            cells.append(f"{'-':>26}" if p is None else f"{p['rss_kb'] / 1024:>14.1f}/{p['fds']:>5}/{p['threads']:>4}")
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}"
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        print(
            f"{row['t_s']:>6.0f} {row['phase']:<7} {row['calls']:>8} {row['errors']:>4} {p50:>7} {p99:>7}  "
            + "  ".join(cells),
            flush=True,
        )

    async def sampler(self, done: asyncio.Event) -> None:
        interval = self.args.interval_s
        n = 1
        while not done.is_set():
            wait = self.started + n * interval - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), max(0.0, wait))
            if done.is_set():
                break
            self.sample("load")
            n += 1

    async def run(self, target: str, texts: list[str]) -> bool:
        """The load and the sampling; True when interrupted (Ctrl-C / SIGTERM)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def interrupted() -> None:
            log.warning("interrupted: stopping the load")
            self.stats.stopping = True
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted)
        self.started = time.monotonic()
        self.sample("start")
        done = asyncio.Event()
        sampler = asyncio.create_task(self.sampler(done))
        chaos = None if self.chaos is None else asyncio.create_task(self.chaos.run(self.started, target, done, stop))
        load = Load(target, texts, self.stats, self.args.timeout_s, self.args.seed, self.args.cancel_fraction,
                    self.args.client == "python")  # fmt: skip
        outcomes = await load.run(self.args.concurrency, self.args.streams, self.args.duration_s, stop)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self.stats.failed("caller", "CRASH", repr(outcome))
        done.set()
        await sampler
        self.sample("end")
        if chaos is not None:  # a recovery still being timed finishes (60 s at most); no new kill
            try:
                await chaos
            except Exception:
                log.exception("the chaos task failed")
        # The load's channel is closed: after a moment the front-end should be back to its idle fds.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 3.0)
        self.sample("idle")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)  # asyncio puts back the defaults, SIG_DFL for SIGTERM:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # shut-down must stay interruptible, not killable
        return self.stats.stopping


FLOOR_SAMPLES = 12  # the floor of RSS: the least of this many samples at each end of the steady part


def growth(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, dict[str, Any]]:
    """Per process group: first sample after the warm-up vs the last under load, and the slope per minute.

    Also the floor's growth: the least of the last FLOOR_SAMPLES samples minus the least of the first ones.
    A batch in flight when a sample is taken adds its tensors to one sample (the stubs' RSS moves by tens of
    MB with the full-size model); what stays allocated raises the floor.
    """
    steady = [s for s in samples if s["phase"] in ("load", "end") and s["t_s"] >= warmup_s]
    out: dict[str, dict[str, Any]] = {}
    if len(steady) < 2:
        return out
    names = {name for s in steady for name, p in s["processes"].items() if p is not None}
    for name in sorted(names):
        points = [(s["t_s"], s["processes"][name]) for s in steady if s["processes"].get(name)]
        if len(points) < 2:
            continue
        t = np.array([p[0] for p in points]) / 60.0
        entry: dict[str, Any] = {"samples": len(points), "from_s": points[0][0], "to_s": points[-1][0]}
        for metric, scale in (
            ("rss_kb", 1 / 1024),
            ("rss_anon_kb", 1 / 1024),
            ("rss_shmem_kb", 1 / 1024),
            ("fds", 1.0),
            ("threads", 1.0),
        ):
            y = np.array([p[1][metric] for p in points], dtype=float) * scale
            key = metric.replace("_kb", "_mb")
            slope = float(np.polyfit(t, y, 1)[0]) if len(set(t)) > 1 else 0.0
            k = min(FLOOR_SAMPLES, len(y) // 2) or 1
            entry[key] = {
                "first": round(float(y[0]), 2),
                "last": round(float(y[-1]), 2),
                "max": round(float(y.max()), 2),
                "growth": round(float(y[-1] - y[0]), 2),
                "floor_growth": round(float(y[-k:].min() - y[:k].min()), 2),
                "slope_per_min": round(slope, 3),
                "slope_total": round(slope * float(t[-1] - t[0]), 2),  # the slope over the steady part
            }
        out[name] = entry
    return out


def print_growth(table: dict[str, dict[str, Any]], warmup_s: float) -> None:
    if not table:
        print("not enough samples after the warm-up for a growth table")
        return
    print(
        f"\ngrowth after the {warmup_s:.0f} s warm-up (first sample after it vs last; floor: least of the first "
        f"{FLOOR_SAMPLES} samples vs least of the last {FLOOR_SAMPLES}; slope = least squares, and over the run)"
    )
    header = (
        f"{'process':<13} {'RSS first MB':>12} {'last MB':>9} {'growth MB':>10} {'floor MB':>9} {'MB/min':>8} "
        f"{'slope MB':>9} {'anon MB/min':>11} {'shmem MB/min':>12} {'fds first':>9} {'last':>5} {'growth':>6} "
        f"{'fds/min':>8} {'threads':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, e in table.items():
        r, f, th = e["rss_mb"], e["fds"], e["threads"]
        anon, shmem = e["rss_anon_mb"]["slope_per_min"], e["rss_shmem_mb"]["slope_per_min"]
        print(
            f"{name:<13} {r['first']:>12.1f} {r['last']:>9.1f} {r['growth']:>+10.1f} {r['floor_growth']:>+9.1f} "
            f"{r['slope_per_min']:>+8.3f} {r['slope_total']:>+9.2f} {anon:>+11.3f} {shmem:>+12.3f} "
            f"{f['first']:>9.0f} {f['last']:>5.0f} {f['growth']:>+6.0f} {f['slope_per_min']:>+8.3f} "
            f"{th['first']:>4.0f}->{th['last']:<4.0f}"
        )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def corpus_texts(tokenizer_json: Path | None) -> list[str]:
    """bench/corpus.py's `mixed` workload (10-256 tokens) plus a few odd texts."""
    texts: list[str] = list(ODD_TEXTS)
    if tokenizer_json is not None:
        from corpus import build  # bench/ is on the path: `python bench/soak.py`, like run.py

        texts += list(build("mixed", tokenizer_json, size=512).texts)
    else:  # a remote target: no tokenizer here, plain sentences of varied length
        rng = random.Random(1)
        words = ["the", "movie", "was", "good", "bad", "great", "awful", "fine", "boring", "not", "very"]
        texts += [" ".join(rng.choice(words) for _ in range(rng.randint(3, 200))) for _ in range(512)]
    return texts


def build_repository(root: Path, full_size: bool, torch_threads: int) -> Path:
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
    from sentiment_server.tooling.export import export_model

    log.info("building a %s checkpoint and exporting it", "full-size" if full_size else "tiny")
    checkpoint = build_tiny_checkpoint(root / "checkpoint", full_size=full_size)
    repository = root / "model_repository"
    export_model(str(checkpoint), repository, model_name=MODEL_NAME, torch_threads=torch_threads)
    return repository


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM during set-up: unwind, so every `finally` stops its process


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration-s", type=float, default=600.0, help="length of the load (default 600)")
    p.add_argument("--concurrency", type=int, default=16, help="closed-loop callers, streams included (16)")
    p.add_argument("--streams", type=int, default=2, help="callers that use ClassifyStream (2)")
    p.add_argument("--target", help="host:port of a running front-end (default: start one here)")
    p.add_argument("--frontend-pid", type=int, help="with --target: sample this front-end process")
    p.add_argument("--triton-pid", type=int, help="with --target: sample this Triton process (and its stubs)")
    p.add_argument("--full-size", action="store_true", help="a DistilBERT-base-sized model instead of a tiny one")
    p.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per Triton instance (1)")
    p.add_argument(
        "--serve-arg", action="append", default=[], help="extra flag for `serve` (chaos: for `up`; repeatable)"
    )
    p.add_argument(
        "--triton-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for Triton and its stubs, e.g. MALLOC_ARENA_MAX=2 (repeatable;\n"
        "chaos: set for `up`, which passes it on to Triton)",
    )
    p.add_argument("--interval-s", type=float, default=10.0, help="sampling interval (10)")
    p.add_argument("--warmup-s", type=float, help="default: min(60, 10%% of the duration)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="deadline of one call (30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cancel-fraction",
        type=float,
        default=0.05,
        help="share of unary calls cancelled in flight; a stream's chance to be cancelled after each message (0.05)",
    )
    p.add_argument(
        "--client",
        choices=("grpc", "python"),
        default="grpc",
        help="unary calls through a bare grpc stub (no retries: every UNAVAILABLE counts) or through the\n"
        "project's AsyncSentimentClient with its default retries (grpc)",
    )
    p.add_argument(
        "--chaos-every-s",
        type=float,
        default=0.0,
        help="chaos mode: run `sentiment-server up` and SIGKILL its tritonserver and a stub, alternately,\n"
        "every this many seconds from the end of the warm-up (0 = off, the default)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="RESULTS",
        help="run nothing: read a saved run's JSON, recompute its growth table, rewrite it and its PNG",
    )
    p.add_argument(
        "--output",
        type=Path,
        help=f"JSON results (default {RESULTS.relative_to(ROOT)}; chaos: {CHAOS_RESULTS.relative_to(ROOT)})",
    )
    args = p.parse_args(argv)
    if not 0 <= args.streams < args.concurrency:
        p.error("--streams must be at least 0 and less than --concurrency")
    if args.duration_s <= 0 or args.interval_s <= 0:
        p.error("--duration-s and --interval-s must be positive")
    if (args.frontend_pid or args.triton_pid) and not args.target:
        p.error("--frontend-pid/--triton-pid go with --target")
    if any("=" not in item for item in args.triton_env):
        p.error("--triton-env takes NAME=VALUE")
    if args.triton_env and args.target:
        p.error("--triton-env goes with a Triton started here (no --target)")
    if not 0 <= args.cancel_fraction < 1:
        p.error("--cancel-fraction must be in [0, 1)")
    if args.chaos_every_s < 0:
        p.error("--chaos-every-s must not be negative")
    if args.chaos_every_s and args.target:
        p.error("--chaos-every-s starts its own `sentiment-server up` (no --target)")
    if args.warmup_s is None:
        args.warmup_s = min(60.0, 0.1 * args.duration_s)
    if args.output is None:
        args.output = CHAOS_RESULTS if args.chaos_every_s else RESULTS
    return args


def reanalyse(path: Path) -> int:
    """A saved run's growth table recomputed (the same samples, this version's statistics), and its PNG."""
    results = json.loads(path.read_text())
    warmup_s = results["config"]["warmup_s"]
    results["summary"]["growth"] = table = growth(results["samples"], warmup_s)
    print_growth(table, warmup_s)
    write_json(path, results)
    print(f"wrote {path} and {plot(results, path.with_suffix('.png'))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return reanalyse(args.from_json)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    front_log: Path | None = None
    front_code: int | None = None
    front_process: subprocess.Popen[str] | None = None
    up: SupervisedUp | None = None
    chaos: Chaos | None = None
    try:
        with contextlib.ExitStack() as stack:
            if args.target:
                target = args.target
                roles = Roles(args.frontend_pid, args.triton_pid)
                texts = corpus_texts(None)
            elif args.chaos_every_s:
                from sentiment_server.model_artifact import TOKENIZER_FILE, version_dir

                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentiment-soak-")))
                repository = build_repository(tmp, args.full_size, args.torch_threads)
                log_dir = Path(tempfile.mkdtemp(prefix="sentiment-chaos-logs-"))  # kept: read it when calls fail
                triton_env = dict(item.split("=", 1) for item in args.triton_env)
                up = supervised = SupervisedUp(repository, log_dir, args.serve_arg, env=triton_env)
                stack.callback(up.stop)
                # First on the way out, before up stops: a clean stop deletes Triton's log directory.
                stack.callback(lambda: supervised.keep_triton_log(log_dir))
                front_process = up.process
                target = up.target
                roles = Roles(up.process.pid, supervised=True)
                front_log = up.log_path
                chaos = Chaos(args.chaos_every_s, args.warmup_s, args.duration_s, up.process.pid, up.metrics)
                texts = corpus_texts(version_dir(repository, MODEL_NAME) / TOKENIZER_FILE)
                log.info("up pid %s on %s; logs in %s", up.process.pid, target, log_dir)
            else:
                from procs import Processes
                from sentiment_server.model_artifact import TOKENIZER_FILE, version_dir

                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentiment-soak-")))
                repository = build_repository(tmp, args.full_size, args.torch_threads)
                log_dir = Path(tempfile.mkdtemp(prefix="sentiment-soak-logs-"))  # kept: read it when calls fail
                triton_env = dict(item.split("=", 1) for item in args.triton_env)
                procs = stack.enter_context(
                    Processes(repository, log_dir, serve_args=args.serve_arg, triton_env=triton_env)
                )
                assert procs.front is not None and procs.triton is not None
                front = procs.front
                target = front.target
                roles = Roles(front.process.pid, procs.triton.pid)
                front_log = front.log_path
                front_process = front.process
                texts = corpus_texts(version_dir(repository, MODEL_NAME) / TOKENIZER_FILE)
                # Stopped in this order on the way out: front-end first, then Triton (Processes.close).
                stack.callback(lambda: log.info("stopping the front-end (pid %s) and Triton", front.process.pid))
            log.info(
                "soak: %s for %.0f s, %d callers (%d streaming) + 1 reconnecting, sampled every %.0f s, warm-up %.0f s",
                target,
                args.duration_s,
                args.concurrency,
                args.streams,
                args.interval_s,
                args.warmup_s,
            )
            soak = Soak(args, roles, chaos)
            load_avg_before = os.getloadavg()
            interrupted = asyncio.run(soak.run(target, texts))
            load_avg_after = os.getloadavg()
            if chaos is not None:
                chaos.restarts_metric = chaos.restarts()
        if front_process is not None:
            front_code = front_process.returncode
    except KeyboardInterrupt:
        print("interrupted during set-up or shut-down; every process started here was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)

    stats = soak.stats
    elapsed = soak.samples[-2]["t_s"] if len(soak.samples) >= 2 else 0.0  # the "end" sample
    table = growth(soak.samples, args.warmup_s)
    print_growth(table, args.warmup_s)
    if chaos is not None and table:
        print("(chaos: the triton and triton-stubs rows span restarts: first and last are different processes)")
    log_warnings = []
    if front_log is not None and front_log.exists():
        log_warnings = [line for line in front_log.read_text(errors="replace").splitlines() if " WARNING " in line
                        or " ERROR " in line or "Traceback" in line]  # fmt: skip
    summary = {
        "target": target,
        "interrupted": interrupted,
        "elapsed_s": elapsed,
        "calls": stats.calls,
        "errors": stats.errors,
        "texts": stats.texts,
        "calls_per_s": round(stats.calls / elapsed, 1) if elapsed else None,
        "texts_per_s": round(stats.texts / elapsed, 1) if elapsed else None,
        "p50_ms": percentile_ms(stats.all_s, 50),
        "p99_ms": percentile_ms(stats.all_s, 99),
        "max_ms": round(max(stats.all_s) * 1000, 1) if stats.all_s else None,
        "by_code": dict(stats.by_code),
        "by_kind": dict(stats.by_kind),
        "cancelled_by_caller": dict(stats.cancelled),
        "cut_short_by_interrupt": dict(stats.after_stop),
        "first_errors": stats.first_errors,
        "growth": table,
        "front_end_exit_code": front_code,
        "front_end_log_warnings": log_warnings[:50],
        "load_average_before": [round(x, 2) for x in load_avg_before],
        "load_average_after": [round(x, 2) for x in load_avg_after],
    }
    if chaos is not None and up is not None:
        kept = up.log_path.parent / "tritonserver.log"
        summary["chaos"] = chaos.summary(up, front_code, kept if kept.exists() else up.triton_log())
    idle, start = soak.samples[-1], soak.samples[0]
    for name in ("front-end", "triton"):
        a, b = start["processes"].get(name), idle["processes"].get(name)
        if a and b:
            summary[f"{name}_fds_idle_vs_start"] = [a["fds"], b["fds"]]
    results = {"config": config, "cpus": os.cpu_count(), "summary": summary, "samples": soak.samples}
    write_json(args.output, results)
    chart = plot(results, args.output.with_suffix(".png"))
    print(
        f"\n{stats.calls} calls ({summary['calls_per_s']}/s, {stats.texts} texts), {stats.errors} errors "
        f"{dict(stats.by_code)}; p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms; "
        f"front-end exit code {front_code}; {len(log_warnings)} warning lines in its log\n"
        f"wrote {args.output} and {chart}"
    )
    for line in stats.first_errors:
        print("  " + line)
    if "chaos" in summary:
        print_chaos(summary["chaos"])
    if stats.errors or summary.get("chaos", {}).get("not_recovered"):
        return 1
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
