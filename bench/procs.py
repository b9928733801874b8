"""The processes a benchmark run starts: the embedded Triton and the gRPC front-end.

Both are started here and stopped here, by pid, on every way out (normal
end, exception, Ctrl-C, SIGTERM): `Processes` is a context manager and
`run.py` turns SIGTERM into an exception so its `finally` runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from sentiment_server.backend.triton_process import EmbeddedTriton

log = logging.getLogger("bench")
HOST = "127.0.0.1"
# The CLI as a module: works where the console script is not installed (the GPU check).
SENTIMENT_SERVER = [sys.executable, "-m", "sentiment_server.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class FrontEnd:
    """`sentiment-server serve --port 0` as a child process; its port is read from its first line.

    With `admin=True` its admin port (`--admin-port 0`: any free loopback port) is read too, from the
    line serve prints after the first one, into `admin_target`; otherwise that line is left unread.
    """

    admin_target: str | None = None  # "127.0.0.1:PORT" of the admin service (Rollout, Rollback), when asked

    def __init__(
        self,
        repository: Path,
        triton_url: str,
        log_dir: Path,
        args: Sequence[str] = (),
        *,
        admin: bool = False,
    ) -> None:
        self.metrics_port = free_port()
        self.log_path = log_dir / "frontend.log"
        self._log = self.log_path.open("w")
        command = [
            *SENTIMENT_SERVER,
            "serve",
            "--host",
            HOST,
            "--port",
            "0",
            "--admin-port",
            "0",
            "--model-repository",
            str(repository),
            "--triton-url",
            triton_url,
            "--metrics-port",
            str(self.metrics_port),
            "--log-level",
            "WARNING",
            *args,
        ]
        log.info("front-end: %s", " ".join(command[3:]))
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.target = self._read_target(timeout_s=120)
        if admin:
            self.admin_target = self._read_address(
                r"admin \(rollout, rollback\) on ([\d.]+):(\d+)", 30, "its admin port"
            )

    def _read_target(self, timeout_s: float) -> str:
        return self._read_address(r"serving on ([\d.]+):(\d+)", timeout_s, "")

    def _read_address(self, pattern: str, timeout_s: float, what: str) -> str:
        """HOST:PORT from the next stdout line, which must match `pattern` within `timeout_s`; else stopped, raised.

        The line is read by a helper thread, so a process that prints nothing cannot block past the timeout.
        """
        stdout = self.process.stdout
        assert stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        line = lines[0] if lines else ""
        match = re.search(pattern, line)
        if not match:
            self.stop()
            said = f" {what}" if what else ""
            raise RuntimeError(f"front-end did not start{said}: {line!r}\n{self.log_path.read_text()[-3000:]}")
        return f"{match.group(1)}:{match.group(2)}"

    def metrics(self) -> dict[str, float]:
        """The front-end's Prometheus counters (name{labels} -> value), read over 127.0.0.1."""
        import urllib.request

        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    values[name] = float(value)
        return values

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class Processes:
    """Embedded Triton + front-end for one model repository; everything stopped on exit."""

    def __init__(
        self,
        repository: Path,
        log_dir: Path,
        *,
        serve_args: Sequence[str] = (),
        triton_env: Mapping[str, str] | None = None,
        admin: bool = False,
    ) -> None:
        self.repository = repository
        self.log_dir = log_dir
        self.serve_args = list(serve_args)
        self.admin = admin  # the front-end's admin port is read too (FrontEnd.admin_target)
        self.triton_env = dict(triton_env or {})
        self.triton: EmbeddedTriton | None = None
        self.front: FrontEnd | None = None

    def __enter__(self) -> Processes:
        try:
            self.start_triton()
            self.start_front_end(self.serve_args)
        except BaseException:
            self.close()
            raise
        return self

    def start_triton(self) -> None:
        self.triton = EmbeddedTriton(self.repository, log_dir=self.log_dir, extra_env=self.triton_env)
        self.triton.start()
        log.info("tritonserver pid %s on %s", self.triton.pid, self.triton.grpc_url)
        self.triton.wait_ready("sentiment", timeout_s=300)

    def start_front_end(self, args: Sequence[str]) -> FrontEnd:
        """(Re)start the front-end with `args` (coalescing settings under test)."""
        assert self.triton is not None
        if self.front is not None:
            self.front.stop()
            self.front = None
        self.front = FrontEnd(self.repository, self.triton.grpc_url, self.log_dir, args, admin=self.admin)
        log.info("front-end pid %s on %s", self.front.process.pid, self.front.target)
        return self.front

    def child_pids(self) -> list[int]:
        """Every process of ours that does work: Triton, its backend stubs, the front-end."""
        pids = []
        if self.triton is not None and self.triton.pid is not None:
            pids.append(self.triton.pid)
            pids.extend(children(self.triton.pid))
        if self.front is not None:
            pids.append(self.front.process.pid)
        return pids

    def close(self) -> None:
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.triton is not None:
            self.triton.stop()
            self.triton = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def children(pid: int) -> Iterator[int]:
    """Every descendant of `pid` (Triton's Python backend stubs), from /proc."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return
    for child in text.split():
        yield int(child)
        yield from children(int(child))
