"""`up` supervises its Triton: restarts after a crash, gives up after the crash budget, leaves no orphans."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import sentiment_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sentiment_client import SentimentClient

pytestmark = pytest.mark.triton

SERVING = health_pb2.HealthCheckResponse.SERVING


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent to reap it."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Up:
    process: subprocess.Popen[str]
    target: str
    log: Path

    def text(self) -> str:
        return self.log.read_text()

    def triton_pids(self) -> list[int]:
        return [int(p) for p in re.findall(r"started tritonserver pid (\d+)", self.text())]

    def wait_log(self, pattern: str, timeout_s: float = 90) -> re.Match[str]:
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            match = re.search(pattern, self.text())
            if match:
                return match
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the log:\n{self.text()[-3000:]}")

    def health(self) -> int:
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
            try:
                return int(stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status)
            except grpc.RpcError:
                return -1


def _start_up(repository: Path, log: Path, *extra: str) -> Up:
    with log.open("w") as err:
        process = subprocess.Popen(
            sentiment_server(
                "up", "--port", "0", "--admin-port", "0", "--metrics-port", "0", "--model-repository", str(repository),
                *extra,
            ),
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert process.stdout is not None
    match = re.search(r"serving on ([\d.]+:\d+)", process.stdout.readline())
    if not match:
        process.kill()
        process.wait()
        raise AssertionError(log.read_text()[-3000:])
    return Up(process, match.group(1), log)


@pytest.fixture
def repository(model_repository: Path, tmp_path: Path) -> Path:
    """A repository with the sentiment model only: one model to load makes each restart quicker."""
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "sentiment", repo / "sentiment")
    return repo


@pytest.fixture
def up(repository: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Up]:
    extra = getattr(request, "param", ())
    started = _start_up(repository, tmp_path / "up.log", *extra)
    yield started
    if started.process.poll() is None:
        started.process.send_signal(signal.SIGTERM)
        started.process.wait(timeout=60)
    for pid in started.triton_pids():
        assert not _alive(pid)


def _wait_health(up: Up, status: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if up.health() == status:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"health never became {status}:\n{up.text()[-3000:]}")


def test_a_killed_triton_is_restarted_and_health_follows(up: Up) -> None:
    assert up.health() == SERVING
    [first] = up.triton_pids()
    os.kill(first, signal.SIGKILL)
    _wait_health(up, health_pb2.HealthCheckResponse.NOT_SERVING, 10)
    back_after = _wait_health(up, SERVING, 90)
    print(f"SERVING again {back_after:.1f}s after NOT_SERVING")
    up.wait_log(rf"tritonserver pid {first} died with signal SIGKILL; restarting in")
    assert len(up.triton_pids()) == 2 and _alive(up.triton_pids()[1])
    with SentimentClient(up.target) as client:
        assert client.classify(["back again"]).results[0].label in ("NEGATIVE", "POSITIVE")
    port = int(up.wait_log(r"metrics on http://[\d.]+:(\d+)/metrics").group(1))
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "sentiment_triton_restarts_total 1.0" in metrics


def test_a_killed_stub_makes_up_restart_triton(up: Up) -> None:
    """Triton itself would keep failing the dead stub's model instance: the supervisor restarts it."""
    [triton] = up.triton_pids()
    stub = min(_children(triton))
    os.kill(stub, signal.SIGKILL)
    up.wait_log(rf"tritonserver pid {triton} lost its stub process\(es\) \[{stub}\]: killing it")
    _wait_health(up, health_pb2.HealthCheckResponse.NOT_SERVING, 10)
    _wait_health(up, SERVING, 90)
    assert len(up.triton_pids()) == 2
    with SentimentClient(up.target) as client:
        labels = [client.classify([f"text {i}"]).results[0].label for i in range(10)]  # both instances answer
    assert set(labels) <= {"NEGATIVE", "POSITIVE"}


@pytest.mark.parametrize("up", [("--triton-max-restarts", "1", "--grace-s", "2")], indirect=True)
def test_up_gives_up_after_the_crash_budget_with_a_non_zero_exit(up: Up) -> None:
    os.kill(up.triton_pids()[0], signal.SIGKILL)
    up.wait_log(r"started tritonserver pid \d+(?s:.*)started tritonserver pid \d+")
    os.kill(up.triton_pids()[1], signal.SIGKILL)
    assert up.process.wait(timeout=60) == 1
    assert "died 2 times in 300s" in up.text() and "giving up" in up.text()


def test_sigkill_of_up_leaves_no_process_behind_and_a_new_up_works(up: Up, repository: Path, tmp_path: Path) -> None:
    [triton] = up.triton_pids()
    stubs = _children(triton)
    assert stubs, "the Python backend runs the model in stub processes"
    up.process.kill()
    up.process.wait()
    until = time.monotonic() + 5
    while any(_alive(pid) for pid in [triton, *stubs]) and time.monotonic() < until:
        time.sleep(0.05)
    assert not [pid for pid in [triton, *stubs] if _alive(pid)]
    again = _start_up(repository, tmp_path / "again.log")
    try:
        with SentimentClient(again.target) as client:
            assert client.classify(["a second up"]).results
    finally:
        again.process.send_signal(signal.SIGTERM)
        assert again.process.wait(timeout=60) == 0
