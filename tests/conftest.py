"""Shared fixtures for both tiers.

The fast tier (tests/fast): a front-end in this process on port 0 around a fake
backend (`server`, `channel`, `stub`). The full tier: tiny checkpoints, a real
embedded Triton, real front-end processes. Everything binds 127.0.0.1 on free
ports and is stopped, by pid, by the fixture that started it. No network: the
checkpoints are built here.

One conftest.py for both: a second one in tests/fast would take the module
name `conftest` from this one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from fake_backend import InProcessServer

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = json.loads((Path(__file__).parent / "data" / "seed_pipeline.json").read_text())

# name -> (labels, problem_type): the binary sentiment model, custom labels, multi-label.
MODELS = {
    "sentiment": (("NEGATIVE", "POSITIVE"), "single_label_classification"),
    "emotion3": (("anger", "joy", "calm"), "single_label_classification"),
    "topics4": (("sports", "politics", "tech", "music"), "multi_label_classification"),
}


@pytest.fixture
def server() -> Iterator[InProcessServer]:
    """A front-end in this process around a fake backend (tests/fake_backend.py)."""
    from fake_backend import InProcessServer

    with InProcessServer() as started:
        yield started


@pytest.fixture
def channel(server: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code


def sentiment_server(*args: str) -> list[str]:
    return [str(BIN / "sentiment-server"), *args]


@dataclass
class Service:
    """A running `sentiment-server serve` process."""

    process: subprocess.Popen[str]
    target: str
    model_name: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        return self.process.wait(timeout=timeout)


def start_service(
    repository: Path, model_name: str, triton_url: str, log_dir: Path, *extra: str, timeout: float = 60
) -> Service:
    """Start `sentiment-server serve --port 0` and read the bound port from its first line."""
    log = log_dir / f"serve-{model_name}-{time.monotonic_ns()}.log"
    err = log.open("w")
    process = subprocess.Popen(
        sentiment_server(
            "serve",
            "--port",
            "0",
            "--model-repository",
            str(repository),
            "--model-name",
            model_name,
            "--models",
            model_name,
            "--admin-port",
            "0",
            "--triton-url",
            triton_url,
            *extra,
        ),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line or process.poll() is not None:
            break
    match = re.search(r"serving on ([\d.]+):(\d+)", line)
    if not match:
        process.kill()
        process.wait()
        raise RuntimeError(f"front-end did not start: {line!r}\n{log.read_text()[-3000:]}")
    return Service(process, f"{match.group(1)}:{match.group(2)}", model_name, log)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("checkpoints")
    return {
        name: build_tiny_checkpoint(root / name, labels=labels, problem_type=problem_type, seed=i)
        for i, (name, (labels, problem_type)) in enumerate(MODELS.items())
    }


@pytest.fixture(scope="session")
def model_repository(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All test models exported by the real `sentiment-server export` command."""
    repository = tmp_path_factory.mktemp("model_repository")
    for name, checkpoint in checkpoints.items():
        subprocess.run(
            sentiment_server(
                "export",
                "--checkpoint",
                str(checkpoint),
                "--model-repository",
                str(repository),
                "--model-name",
                name,
                "--torch-threads",
                "1",
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
    return repository


@pytest.fixture(scope="session")
def triton(model_repository: Path) -> Iterator[object]:
    """One embedded Triton serving every test model."""
    from sentiment_server.backend.triton_process import EmbeddedTriton

    with EmbeddedTriton(model_repository, grpc_port=0, metrics_port=0) as server:
        for name in MODELS:
            server.wait_ready(name, timeout_s=120)
        yield server


@pytest.fixture(scope="session")
def services(
    triton: object, model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Service]]:
    """One front-end process per test model, all on the shared Triton."""
    logs = tmp_path_factory.mktemp("logs")
    started = {
        name: start_service(model_repository, name, triton.grpc_url, logs)  # type: ignore[attr-defined]
        for name in MODELS
    }
    yield started
    for service in started.values():
        assert service.stop() == 0, service.log.read_text()[-2000:]


@pytest.fixture(scope="session")
def service(services: dict[str, Service]) -> Service:
    """The binary sentiment front-end."""
    return services["sentiment"]
