"""Run the real `tritonserver` binary from the nvidia-pytriton wheel as a child process.

The wheel ships Triton 2.51 (`pytriton/tritonserver/bin/tritonserver`), its
Python backend (`backends/python`) and one backend stub per Python version
(`python_backend_stubs/<major.minor>/triton_python_backend_stub`). Triton
expects the stub inside the backend directory, so a backend directory is
assembled once in a cache folder (never inside site-packages):

    <cache>/triton-backends/pytriton-<version>-py<major.minor>/python/
        libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub

The stub is an embedded CPython linked against the shared libpython of that
version; it finds the virtual environment (and its torch) through the
`python3` first on PATH, so the launcher puts this interpreter's bin/ first.

    with EmbeddedTriton(repository) as triton:   # free ports, 127.0.0.1
        triton.wait_ready("sentiment", timeout_s=120)
        client = tritonclient.grpc.InferenceServerClient(triton.grpc_url)

Requires the `embedded` extra (nvidia-pytriton) and tritonclient[grpc].
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import json
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

logger = logging.getLogger(__name__)

CACHE_ENV = "SENTIMENT_CACHE_DIR"
DEFAULT_HOST = "127.0.0.1"
_READY_POLL_S = 0.2
_MARKER = ".prepared.json"


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


class TritonLaunchError(RuntimeError):
    """The embedded Triton cannot be prepared, started, or did not become ready."""


def _dying_with_launcher(args: list[str]) -> list[str]:
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


def child_pids(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (Linux /proc); a zombie (dead, not yet reaped) is not live."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]  # the name before ")" may hold spaces
        except (OSError, ValueError):
            continue
        if parent == str(pid) and state != "Z":
            children.add(int(stat.parent.name))
    return children


def describe_exit(code: int) -> str:
    """'exit code 1' or 'signal SIGKILL', as a returncode reads."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


# --------------------------------------------------------------------------- the wheel


@dataclass(frozen=True)
class TritonDistribution:
    """Where the nvidia-pytriton wheel keeps Triton's files."""

    version: str
    root: Path  # .../site-packages/pytriton/tritonserver
    binary: Path
    python_backend: Path
    stub: Path
    libs: tuple[Path, ...]  # bundled shared libraries (auditwheel's nvidia_pytriton.libs)

    @property
    def python_version(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"


def find_distribution() -> TritonDistribution:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonLaunchError(
            "the nvidia-pytriton wheel is not installed (it carries the tritonserver binary): "
            'pip install "sentiment-server[embedded]"'
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    try:
        version = importlib.metadata.version("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    dist = TritonDistribution(
        version=version,
        root=root,
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
        # Installed wheel: site-packages/nvidia_pytriton.libs; editable: tritonserver/external_libs.
        libs=tuple(p for p in (package.parent / "nvidia_pytriton.libs", root / "external_libs") if p.is_dir()),
    )
    if not dist.binary.is_file():
        raise TritonLaunchError(f"{dist.binary} is missing from the nvidia-pytriton wheel")
    if not (dist.python_backend / "libtriton_python.so").is_file():
        raise TritonLaunchError(f"{dist.python_backend}/libtriton_python.so is missing")
    if not dist.stub.is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").glob("*"))
        raise TritonLaunchError(
            f"nvidia-pytriton {version} has no Python backend stub for Python {pyver} "
            f"(it has {', '.join(have) or 'none'}); run the server with one of those versions"
        )
    return dist


def check_libpython(dist: TritonDistribution) -> None:
    """The stub links libpython3.X.so.1.0; say what to install when it is missing."""
    name = f"libpython{dist.python_version}.so.1.0"
    candidates = [name]
    candidates += [str(d / name) for d in dist.libs]
    candidates += [str(Path(sys.base_prefix) / "lib" / name)]
    errors = []
    for candidate in candidates:
        try:
            ctypes.CDLL(candidate)
            return
        except OSError as exc:
            errors.append(str(exc))
    raise TritonLaunchError(
        f"the Triton Python backend stub needs the shared library {name}, which is not "
        f"loadable here ({errors[0]}). Install it, e.g. on Debian/Ubuntu: "
        f"apt-get install libpython{dist.python_version}"
    )


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    return Path.home() / ".cache" / "sentiment-server"


def _fingerprint_sources(dist: TritonDistribution) -> dict[str, list[int]]:
    files = [*sorted(p for p in dist.python_backend.iterdir() if p.is_file()), dist.stub]
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def prepare_backend_dir(dist: TritonDistribution | None = None, cache_dir: Path | str | None = None) -> Path:
    """The `--backend-directory` for this Python: wheel's python backend + matching stub.

    Built once per pytriton version and Python version under
    `<cache_dir>/triton-backends/` (default ~/.cache/sentiment-server, or
    $SENTIMENT_CACHE_DIR), rebuilt when the wheel's files change. Assembled
    in a temporary directory and renamed into place, so concurrent launchers
    never see half a directory.
    """
    dist = dist or find_distribution()
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = base / "triton-backends" / f"pytriton-{dist.version}-py{dist.python_version}"
    wanted = _fingerprint_sources(dist)
    marker = target / _MARKER
    try:
        if json.loads(marker.read_text(encoding="utf-8")) == wanted:
            return target
    except (OSError, ValueError):
        pass

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        python = staging / "python"
        shutil.copytree(dist.python_backend, python, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        stub = python / "triton_python_backend_stub"
        shutil.copy2(dist.stub, stub)
        stub.chmod(0o755)
        (staging / _MARKER).write_text(json.dumps(wanted, sort_keys=True), encoding="utf-8")
        os.chmod(staging, 0o755)
        if target.exists():
            stale = target.parent / f".{target.name}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(target, stale)
            except FileNotFoundError:
                pass  # another launcher moved it first
            else:
                shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            # Another launcher won the race; use its directory if it is complete.
            if json.loads(marker.read_text(encoding="utf-8")) != wanted:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("prepared Triton backend directory %s (stub for Python %s)", target, dist.python_version)
    return target


_BACKEND_RE = re.compile(r'^\s*backend\s*:\s*"([^"]+)"', re.MULTILINE)


def check_repository(repository: Path, backend_dir: Path) -> None:
    """No hidden directories, and every model's backend in `backend_dir` (the wheel has only `python`).

    Triton would otherwise exit with "unable to find backend library"; this
    says what to do instead.
    """
    hidden = sorted(p.name for p in repository.iterdir() if p.name.startswith(".") and p.is_dir())
    if hidden:
        # Triton loads every directory of the repository as a model, hidden
        # ones too, and exits (--exit-on-error) when one is not a model.
        raise TritonLaunchError(
            f"the model repository {repository} holds hidden directories that Triton would try "
            f"to load as models: {', '.join(hidden)}; remove them (a '.<name>.export-*' directory "
            "is left by an interrupted export)"
        )
    for config in sorted(repository.glob("*/config.pbtxt")):
        try:
            match = _BACKEND_RE.search(config.read_text(encoding="utf-8"))
        except OSError:
            continue
        if match and not (backend_dir / match.group(1)).is_dir():
            raise TritonLaunchError(
                f"model {config.parent.name!r} uses the {match.group(1)!r} backend, which the embedded "
                "Triton (nvidia-pytriton wheel) does not have; it has only 'python'. Export it with "
                "backend=python, or serve it with the NGC tritonserver image (docker-compose)."
            )


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port free on `host` right now (the usual small race applies)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --------------------------------------------------------------------------- the process


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
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
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

    def stub_pids(self) -> set[int]:
        """The Python backend's stub processes (one per model instance), children of tritonserver."""
        return child_pids(self._process.pid) if self.is_running() and self._process is not None else set()

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
            "--model-control-mode=none",
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

        self.grpc_port = self._grpc_port_arg or free_port(self.host)
        self.metrics_port = self._metrics_port_arg or free_port(self.host)
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
                _dying_with_launcher(args),
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
