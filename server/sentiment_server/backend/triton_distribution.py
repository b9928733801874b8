"""Find the nvidia-pytriton wheel's `tritonserver` and prepare its Python backend.

The wheel ships Triton 2.51 (`pytriton/tritonserver/bin/tritonserver`), its
Python backend (`backends/python`) and one backend stub per Python version
(`python_backend_stubs/<major.minor>/triton_python_backend_stub`). Triton
expects the stub inside the backend directory, so a backend directory is
assembled once in a cache folder (never inside site-packages):

    <cache>/triton-backends/pytriton-<version>-py<major.minor>/python/
        libtriton_python.so, triton_python_backend_utils.py, triton_python_backend_stub

The stub is an embedded CPython linked against the shared libpython of that
version (`check_libpython` says what to install when it is missing).
`check_repository` refuses a model repository this Triton could not load.
`triton_process` runs the binary.

Requires the `embedded` extra (nvidia-pytriton).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "SENTIMENT_CACHE_DIR"
_MARKER = ".prepared.json"


class TritonLaunchError(RuntimeError):
    """The embedded Triton cannot be prepared, started, or did not become ready."""


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
    """The installed wheel's Triton files for this Python; TritonLaunchError says what is missing."""
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
    """$SENTIMENT_CACHE_DIR, else ~/.cache/sentiment-server."""
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
