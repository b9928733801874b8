"""Run the real `tritonserver` binary from the nvidia-pytriton wheel as a child process.

`triton_distribution` finds the binary and prepares the Python backend
directory; `EmbeddedTriton` starts Triton on it, waits for readiness and stops
it. The Python backend stub finds the virtual environment (and its torch)
through the `python3` first on PATH, so the launcher puts this interpreter's
bin/ first. Triton dies with its launcher (PDEATHSIG through setpriv, and a
group reaper for the stubs).

Triton runs with explicit model control: at start it loads every model of the
repository (or the `models` given), each at the versions its config.pbtxt's
version_policy names; later loads (a rollout's new version) go through
Triton's repository API. A restart loads the same models again, at the
versions their configs name then.

    with EmbeddedTriton(repository) as triton:   # free ports, 127.0.0.1
        triton.wait_ready("sentiment", timeout_s=120)
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_url)

Requires the `embedded` extra (nvidia-pytriton) and tritonclient[grpc].
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .triton_distribution import (
    TritonDistribution,
    TritonLaunchError,
    check_libpython,
    check_repository,
    find_distribution,
    prepare_backend_dir,
)

# TritonLaunchError is raised by both modules; EmbeddedTriton's callers catch it from here.
__all__ = [
    "DEFAULT_HOST",
    "EmbeddedTriton",
    "TritonLaunchError",
    "child_pids",
    "describe_exit",
    "free_port",
    "free_ports",
    "model_process_environment",
    "remove_stale_shared_memory",
]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
_READY_POLL_S = 0.2

ONEDNN_PRIMITIVE_CACHE_CAPACITY = "8"
# The stubs' activations take a new shape with almost every batch. mimalloc (the `embedded` extra),
# preloaded into Triton and its stubs, keeps each size class apart, so a stub's memory settles at its
# high-water mark; never purging spares re-faulting those pages on every batch.
MIMALLOC_SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}
# Without it, glibc: its mmap threshold follows the largest block freed, so activations move between
# mmap and the heap and RSS wanders by tens of MB. A fixed threshold above them and a heap never
# trimmed keep the high-water mark instead, which still rises in steps as the heap fragments. Pinning
# the threshold low (every activation mapped and returned) costs a CPU model a third of its throughput.
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
_SHM_PREFIX = "sentiment-"  # the Python backend's /dev/shm regions of every embedded Triton start with it

# The group reaper: a tiny process that holds a pipe from the launcher and, once
# the pipe closes (the launcher stopped Triton, or died, even by SIGKILL), kills
# Triton's whole process group: the stubs too, which die with nobody else.
_REAPER = """
import os, signal, sys
sys.stdin.buffer.read()
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""


def dying_with_launcher(args: list[str]) -> list[str]:
    """`args` run through util-linux's setpriv, which sets PR_SET_PDEATHSIG and execs them: Triton gets
    SIGKILL when the thread that started it ends. (Not preexec_fn: Python code between fork and exec in a
    process with gRPC's threads has crashed the child.) Without setpriv the group reaper still covers it."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else args


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_shared_memory(shm_dir: Path = Path("/dev/shm")) -> list[Path]:
    """Delete Python-backend regions left by an embedded Triton whose launcher is gone (a crash)."""
    removed = []
    for region in shm_dir.glob(f"{_SHM_PREFIX}*"):
        match = re.match(rf"{_SHM_PREFIX}(\d+)-", region.name)
        if match and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                region.unlink()
                removed.append(region)
    if removed:
        logger.info("removed %d stale shared-memory regions of an earlier embedded Triton", len(removed))
    return removed


def child_pids(pid: int, among: Iterable[int] | None = None) -> set[int]:
    """The live processes whose parent is `pid` (Linux /proc); a zombie (dead, not yet reaped) is not live.

    `among`: only those of these pids, a read each instead of a walk over every process of the host.
    """
    candidates = (int(name) for name in os.listdir("/proc") if name.isdigit()) if among is None else among
    parent = str(pid).encode()
    return {child for child in candidates if _parent_if_live(child) == parent}


def _parent_if_live(pid: int) -> bytes | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state, parent = stat.read().rsplit(b")", 1)[1].split()[:2]  # the name before ")" may hold spaces
    except (OSError, ValueError):
        return None
    return None if state == b"Z" else parent


def describe_exit(code: int) -> str:
    """'exit code 1' or 'signal SIGKILL', as a returncode reads."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


def free_ports(count: int, host: str = DEFAULT_HOST) -> list[int]:
    """`count` different TCP ports free on `host` right now (the usual small race with others applies).

    All are held while they are chosen: ports asked for one at a time may come back the same.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on `host` right now (the usual small race applies)."""
    return free_ports(1, host)[0]


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def mimalloc_library() -> Path | None:
    """libmimalloc.so from the cmeel-mimalloc wheel, when it is installed."""
    try:
        dist = importlib.metadata.distribution("cmeel-mimalloc")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == "libmimalloc.so":
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def model_process_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The variables a process that runs the model gets on top of `env`: its allocator and oneDNN's cache.

    Values already in `env` win, an operator's LD_PRELOAD even when empty (then glibc, heap kept).
    """
    added: dict[str, str] = {}
    # oneDNN keeps a compiled primitive per input shape, and the model sees a new shape with
    # almost every batch: with its default capacity the stubs' memory keeps growing
    # (bench/results/soak*.json). A small cache keeps it flat.
    added["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = ONEDNN_PRIMITIVE_CACHE_CAPACITY
    mimalloc = mimalloc_library()
    preload = env.get("LD_PRELOAD", str(mimalloc) if mimalloc is not None else None)
    if preload is not None:
        added["LD_PRELOAD"] = preload
    on_mimalloc = mimalloc is not None and preload == str(mimalloc)
    added.update(MIMALLOC_SETTINGS if on_mimalloc else MALLOC_SETTINGS)
    return {name: env.get(name, value) for name, value in added.items()}


class EmbeddedTriton:
    """tritonserver as a child process in its own session (Ctrl-C is ours to handle)."""

    def __init__(
        self,
        model_repository: Path | str,
        *,
        host: str = DEFAULT_HOST,
        grpc_port: int = 0,
        metrics_port: int = 0,
        cache_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        log_verbose: int = 0,
        shm_default_byte_size: int | None = None,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        """`models`: the models to load at start (None: every model of the repository; empty: none)."""
        self.model_repository = Path(model_repository).resolve()
        self.models = tuple(models) if models is not None else None
        self.host = host
        self._grpc_port_arg = grpc_port
        self._metrics_port_arg = metrics_port
        self.cache_dir = cache_dir
        self._log_dir_arg = Path(log_dir) if log_dir is not None else None
        self.log_verbose = log_verbose
        self.shm_default_byte_size = shm_default_byte_size
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(extra_env or {})

        self.grpc_port = 0
        self.metrics_port = 0
        self.log_path: Path | None = None
        self._own_log_dir: Path | None = None
        self._log_file: BinaryIO | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._stopping = False

    # -- properties

    @property
    def grpc_url(self) -> str:
        if not self.grpc_port:
            raise TritonLaunchError("Triton has not been started")
        return f"{_format_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        if not self.metrics_port:
            raise TritonLaunchError("Triton has not been started")
        return f"http://{_format_host(self.host)}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stub_pids(self, among: Iterable[int] | None = None) -> set[int]:
        """The Python backend's stub processes (one per model instance), children of tritonserver.

        `among`: only those of these pids that still are (cheap: see child_pids).
        """
        return child_pids(self._process.pid, among) if self.is_running() and self._process is not None else set()

    def kill(self) -> None:
        """SIGKILL tritonserver (a stub died: Triton would keep failing that instance's requests)."""
        if self._process is not None and self.is_running():
            self._kill_group(self._process.pid)
            self._process.wait()

    # -- lifecycle

    def command(self, backend_dir: Path) -> list[str]:
        dist_binary = str(find_distribution().binary)
        args = [
            dist_binary,
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_dir}",
            # Explicit: models (and versions) can be loaded while it runs; these at start.
            "--model-control-mode=explicit",
            *self._load_model_args(),
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--log-verbose={self.log_verbose}",
            "--allow-http=false",
            "--allow-grpc=true",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            # A region name of our own: two embedded Tritons on one host never
            # share the Python backend's /dev/shm regions.
            f"--backend-config=python,shm-region-prefix-name={_SHM_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}",
        ]
        if self.shm_default_byte_size is not None:
            args.append(f"--backend-config=python,shm-default-byte-size={self.shm_default_byte_size}")
        args.extend(self.extra_args)
        return args

    def _load_model_args(self) -> list[str]:
        """Which models Triton loads at start, each at its config.pbtxt's version policy."""
        if self.models is None:
            return ["--load-model=*"]
        return [f"--load-model={name}" for name in self.models]

    def environment(self, dist: TritonDistribution) -> dict[str, str]:
        """The child's environment, built explicitly rather than inherited from the shell."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONEXECUTABLE")}
        # The stub's embedded Python finds its prefix (the venv, hence torch)
        # from the first `python3` on PATH.
        bin_dir = str(Path(sys.executable).parent)
        rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bin_dir]
        env["PATH"] = os.pathsep.join([bin_dir, *rest])
        # The backend and the stub are copies outside the wheel: their
        # $ORIGIN-relative RPATH no longer reaches the bundled libraries.
        libs = [str(p) for p in dist.libs]
        previous = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p not in libs]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *previous])
        env.update(model_process_environment(env))
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.is_running():
            raise TritonLaunchError(f"Triton is already running (pid {self.pid})")
        if not self.model_repository.is_dir():
            raise TritonLaunchError(f"model repository {self.model_repository} does not exist")
        dist = find_distribution()
        check_libpython(dist)
        if not (Path(sys.executable).parent / "python3").exists():
            logger.warning(
                "%s has no `python3`: the Triton Python backend stub may not find this environment",
                Path(sys.executable).parent,
            )
        backend_dir = prepare_backend_dir(dist, self.cache_dir)
        check_repository(self.model_repository, backend_dir)
        remove_stale_shared_memory()

        spare = free_ports(2, self.host)
        self.grpc_port = self._grpc_port_arg or spare[0]
        self.metrics_port = self._metrics_port_arg or next(port for port in spare if port != self.grpc_port)
        if self._log_dir_arg is not None:
            self._log_dir_arg.mkdir(parents=True, exist_ok=True)
            log_dir = self._log_dir_arg
        else:
            log_dir = self._own_log_dir = Path(tempfile.mkdtemp(prefix="sentiment-triton-"))
        self.log_path = log_dir / f"tritonserver-{self.grpc_port}.log"

        args = self.command(backend_dir)
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self._process = subprocess.Popen(
                dying_with_launcher(args),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(dist),
                cwd=str(log_dir),
                start_new_session=True,  # own process group: the terminal's Ctrl-C is not sent to it
                close_fds=True,
            )
        except OSError as exc:
            log_file.close()
            raise TritonLaunchError(f"cannot start {args[0]}: {exc}") from exc
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(self._process.pid)],
            stdin=subprocess.PIPE,
            start_new_session=True,  # survives its launcher's group being signalled: it must outlive the launcher
            close_fds=True,
        )
        self._log_file = log_file
        self._stopping = False
        atexit.register(self._atexit_stop)
        logger.info(
            "started tritonserver pid %d: gRPC %s, metrics %s, repository %s, log %s",
            self._process.pid,
            self.grpc_url,
            self.metrics_port,
            self.model_repository,
            self.log_path,
        )

    def wait_ready(self, model_name: str | None = None, timeout_s: float = 120.0) -> None:
        """Block until Triton (and `model_name`, if given) is ready.

        Fails fast, with the end of Triton's log, when the process exits.
        """
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        if self._process is None:
            raise TritonLaunchError("Triton has not been started")
        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        last_error = "not ready yet"
        try:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise TritonLaunchError(
                        f"tritonserver exited with code {code} before it was ready; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=2.0) and (
                        model_name is None or client.is_model_ready(model_name, client_timeout=2.0)
                    ):
                        logger.info(
                            "Triton ready at %s%s", self.grpc_url, f" (model {model_name!r})" if model_name else ""
                        )
                        return
                    last_error = "server or model not ready"
                except InferenceServerException as exc:
                    last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    raise TritonLaunchError(
                        f"Triton at {self.grpc_url} not ready after {timeout_s:.0f}s ({last_error}); "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(_READY_POLL_S)
        finally:
            client.close()

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code (None if never started)."""
        process = self._process
        if process is None:
            return None
        atexit.unregister(self._atexit_stop)
        self._stopping = True
        code = process.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                code = process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("tritonserver pid %d ignored SIGTERM for %.1fs: killing it", process.pid, grace_s)
                self._kill_group(process.pid)
                code = process.wait()
        self._discard_group()
        self._close_log(clean=code == 0)
        logger.info("tritonserver pid %d stopped (%s)", process.pid, describe_exit(code))
        return code

    def restart(self) -> None:
        """Start again after Triton died: the same ports (clients reconnect) and the same log file.

        Call from the thread that started it: the child dies with that thread.
        """
        if self.is_running():
            raise TritonLaunchError(f"Triton is still running (pid {self.pid})")
        self._discard_group()
        self._close_log(clean=False)
        self._grpc_port_arg, self._metrics_port_arg = self.grpc_port, self.metrics_port
        if self.log_path is not None:
            self._log_dir_arg = self.log_path.parent
        self.start()

    def _discard_group(self) -> None:
        """Whatever is left of Triton's process group (stubs of a killed Triton) goes, through the reaper."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            assert reaper.stdin is not None
            reaper.stdin.close()  # the reaper kills the group and exits
            try:
                reaper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # the group this launcher created (start_new_session)

    def _close_log(self, clean: bool) -> None:
        log_file = self._log_file
        self._log_file = None
        if log_file is not None:
            log_file.close()
        if clean and self._own_log_dir is not None:
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None
        elif self.log_path is not None and not clean:
            logger.info("Triton's log is kept at %s", self.log_path)

    def _atexit_stop(self) -> None:
        if self.is_running():
            self.stop(grace_s=5.0)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- context manager

    def __enter__(self) -> EmbeddedTriton:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
