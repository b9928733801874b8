"""Several front-end processes on one port: started, supervised and drained by a parent.

One Python process tops out near one core of gRPC work; a GPU answers faster
than that. `serve --workers N` (and `up`) runs N copies of the front-end, each
with its own event loop, coalescer and Triton channels, all listening on the
same port through SO_REUSEPORT, so the kernel spreads new connections over
them. The parent holds the port (a bound, never-listening socket) so that a
restarted worker gets the same one, restarts a worker that dies (backoff and
a crash budget, as for Triton), and on SIGTERM lets every worker drain.

A worker is `sentiment-server serve` with its settings in SENTIMENT_*
variables; the parent's admission limits are split between the workers. It
dies with the parent (PR_SET_PDEATHSIG), and it reports its ports on stdout:
the public one, then its private loopback admin and metrics ports, through
which the parent rolls versions out and merges the metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .backend.triton_process import describe_exit, dying_with_launcher
from .backend.triton_supervisor import RestartPolicy
from .settings import ServeSettings, env_name

log = logging.getLogger(__name__)

WORKER_ENV = "SENTIMENT_WORKER"  # the worker's number, for its log lines
_SERVING = re.compile(r"serving on \S+:(\d+)")
_ADMIN = re.compile(r"admin \(rollout, rollback\) on 127\.0\.0\.1:(\d+)")
_METRICS = re.compile(r"metrics on \S+:(\d+)")


async def first_failure(*watches: Coroutine[Any, Any, None]) -> None:
    """Run the watches together until cancelled; the first one to fail ends them all with its exception."""
    tasks = [asyncio.ensure_future(w) for w in watches]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class WorkersGaveUp(RuntimeError):
    """Workers died more often than the restart budget allows."""


def models_on_gpu(repository: Path, names: list[str]) -> bool:
    """Whether any of the models was exported for a GPU (its config asks Triton for KIND_GPU instances)."""
    return any("KIND_GPU" in (repository / name / "config.pbtxt").read_text(encoding="utf-8") for name in names)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and never listening: it keeps the port for the workers
    (port 0 picks a free one), and the kernel hands connections only to the workers' listening sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_settings(settings: ServeSettings, port: int, count: int) -> ServeSettings:
    """One worker's settings: the shared port, one process, private admin and metrics ports when the parent
    serves those, its share of the admission limits, and no Triton model control. With model control the parent
    loads each version and switches every worker; a worker that followed Triton on its own would switch to a
    version the parent has only begun to try, so it does not follow."""
    return dataclasses.replace(
        settings,
        port=port,
        workers="1",
        admin_port=0 if settings.admin_port >= 0 else -1,
        metrics_port=0 if settings.metrics_port >= 0 else -1,
        triton_model_control=False,
        version_poll_s=0.0 if settings.triton_model_control else settings.version_poll_s,
        max_inflight_requests=math.ceil(settings.max_inflight_requests / count),
        max_inflight_texts=math.ceil(settings.max_inflight_texts / count),
    )


def settings_environment(settings: ServeSettings) -> dict[str, str]:
    """`settings` as the SENTIMENT_* variables `settings_from` reads back."""
    return {env_name(f.name): str(getattr(settings, f.name)) for f in dataclasses.fields(settings)}


class Worker:
    """One worker process and the ports it reported."""

    def __init__(self, number: int, environment: dict[str, str]) -> None:
        self.number = number
        self._environment = environment
        self.process: asyncio.subprocess.Process | None = None
        self.admin_port = -1
        self.metrics_port = -1
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, timeout_s: float) -> None:
        """Start the process and wait until it serves (it printed its ports)."""
        self.admin_port = self.metrics_port = -1  # a restarted worker has new ones
        self.process = await asyncio.create_subprocess_exec(
            *dying_with_launcher([sys.executable, "-m", "sentiment_server.cli", "serve"]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env={**self._environment, WORKER_ENV: str(self.number), "PYTHONUNBUFFERED": "1"},
        )
        try:
            await asyncio.wait_for(self._read_ports(), timeout_s)
        except BaseException:
            await self.kill()
            raise
        log.info("worker %d (pid %d) serving", self.number, self.process.pid)

    async def _read_ports(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        stdout = self.process.stdout
        wants_admin = self._environment[env_name("admin_port")] != "-1"
        wants_metrics = self._environment[env_name("metrics_port")] != "-1"
        serving = False
        while not (
            serving and (self.admin_port >= 0 or not wants_admin) and (self.metrics_port >= 0 or not wants_metrics)
        ):
            line = (await stdout.readline()).decode(errors="replace")
            if not line:
                code = await self.process.wait()
                raise RuntimeError(f"worker {self.number} exited with {describe_exit(code)} before serving")
            if _SERVING.search(line):
                serving = True
            elif match := _ADMIN.search(line):
                self.admin_port = int(match.group(1))
            elif match := _METRICS.search(line):
                self.metrics_port = int(match.group(1))
        self._drain = asyncio.get_running_loop().create_task(self._discard_stdout(stdout))

    @staticmethod
    async def _discard_stdout(stdout: asyncio.StreamReader) -> None:
        while await stdout.readline():  # a worker prints nothing more; a full pipe must never block it
            pass

    async def wait(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(sig)

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()


class WorkerPool:
    """N workers on one port; `run` restarts the ones that die, `stop` drains them all."""

    def __init__(self, settings: ServeSettings, count: int, policy: RestartPolicy | None = None) -> None:
        self.settings = settings
        self.count = count
        self.policy = policy or RestartPolicy()
        self._reservation = reserve_port(settings.host, settings.port)
        self.port: int = self._reservation.getsockname()[1]
        environment = settings_environment(worker_settings(settings, self.port, count))
        self.workers = [Worker(number, environment) for number in range(1, count + 1)]
        self._crashes: deque[float] = deque()
        self._stopping = False

    async def start(self) -> None:
        """Start every worker; fails (and stops the ones started) if any does not come up."""
        try:
            await asyncio.gather(*(w.start(self.settings.startup_timeout_s + 30) for w in self.workers))
        except BaseException:
            await asyncio.gather(*(w.kill() for w in self.workers if w.process is not None))
            self._reservation.close()
            raise

    async def run(self, on_restart: Callable[[], None] = lambda: None) -> None:
        """Watch until cancelled; raises WorkersGaveUp once the crash budget is spent."""
        await first_failure(*(self._keep(w, on_restart) for w in self.workers))

    async def _keep(self, worker: Worker, on_restart: Callable[[], None]) -> None:
        while True:
            code = await worker.wait()
            if self._stopping:
                return
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes[0] < now - self.policy.window_s:
                self._crashes.popleft()
            if len(self._crashes) > self.policy.max_restarts:
                raise WorkersGaveUp(
                    f"front-end workers died {len(self._crashes)} times in {self.policy.window_s:.0f}s, "
                    f"last worker {worker.number} (pid {worker.pid}) with {describe_exit(code)}; giving up"
                )
            backoff = self.policy.backoff_s(len(self._crashes))
            log.error(
                "worker %d (pid %s) died with %s; restarting in %.1fs",
                worker.number,
                worker.pid,
                describe_exit(code),
                backoff,
            )
            await asyncio.sleep(backoff)
            try:
                await worker.start(self.settings.startup_timeout_s + 30)
            except Exception as exc:
                log.error("worker %d did not come back: %s", worker.number, exc)
                continue  # its exit is the next crash
            on_restart()

    async def stop(self, grace_s: float) -> None:
        """SIGTERM every worker (each drains its calls within `grace_s`), then SIGKILL what is left."""
        self._stopping = True
        for worker in self.workers:
            worker.signal(signal.SIGTERM)
        alive = [w for w in self.workers if w.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.wait() for w in alive)), grace_s + 5.0)
        except TimeoutError:
            log.error("workers still running %.0fs after SIGTERM: killing them", grace_s + 5.0)
        await asyncio.gather(*(w.kill() for w in alive))
        self._reservation.close()
