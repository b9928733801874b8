"""Versions rolled out and back on the real `up` (explicit model control), under load, without a failed call."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from conftest import sentiment_server
from sentiment_client import SentimentClient, SentimentError

pytestmark = pytest.mark.triton

TEXTS = ["I love this film", "what a waste of time", "it was fine", "best concert ever!", "meh", "never again"]
CALLERS = 16


@dataclass
class Up:
    process: subprocess.Popen[str]
    target: str
    admin: str
    log: Path

    def triton_url(self) -> str:
        match = re.search(r"started tritonserver pid \d+: gRPC (\S+),", self.log.read_text())
        assert match, self.log.read_text()[-3000:]
        return match.group(1)


def _export(checkpoint: Path, repository: Path) -> str:
    done = subprocess.run(
        sentiment_server(
            "export", "--checkpoint", str(checkpoint), "--model-repository", str(repository),
            "--model-name", "sentiment", "--torch-threads", "1", "--instance-count", "1",
        ),
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return done.stdout + done.stderr


def _switch(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sentiment_server(*args, "--admin-url", up.admin), capture_output=True, text=True, timeout=300)


def _reference(checkpoint: Path) -> dict[str, dict[str, float]]:
    from transformers import pipeline

    clf: Any = pipeline("text-classification", model=str(checkpoint), top_k=None, device="cpu")
    return {text: {r["label"]: r["score"] for r in rows} for text, rows in zip(TEXTS, clf(TEXTS), strict=True)}


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1; v2 with other weights and the other label order; v3 with another label set; v4 to be corrupted."""
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("versions")
    return {
        "1": build_tiny_checkpoint(root / "v1", labels=("NEGATIVE", "POSITIVE"), seed=21),
        "2": build_tiny_checkpoint(root / "v2", labels=("POSITIVE", "NEGATIVE"), seed=22),
        "3": build_tiny_checkpoint(root / "v3", labels=("BAD", "GOOD"), seed=23),
        "4": build_tiny_checkpoint(root / "v4", seed=24),
    }


@pytest.fixture(scope="module", params=["1", "2"], ids=lambda n: f"{n}-workers")
def up(
    versions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Up]:
    """With two workers the parent switches both (each call still wholly one version) before it answers.

    A short --version-poll-s: a front-end that followed Triton on its own would switch to a version the
    parent has only begun to try.
    """
    root = tmp_path_factory.mktemp("rollout")
    repository = root / "repo"
    _export(versions["1"], repository)
    log = root / "up.log"
    with log.open("w") as err:
        process = subprocess.Popen(
            sentiment_server(
                "up", "--port", "0", "--admin-port", "0", "--model-repository", str(repository),
                "--checkpoint", str(versions["1"]), "--max-concurrent-batches", "1", "--workers", request.param,
                "--version-poll-s", "0.05",
            ),
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    assert process.stdout is not None
    serving = re.search(r"serving on ([\d.]+:\d+)", process.stdout.readline())
    admin = re.search(r"admin \(rollout, rollback\) on ([\d.]+:\d+)", process.stdout.readline())
    if not (serving and admin):
        process.kill()
        process.wait()
        raise AssertionError(log.read_text()[-3000:])
    started = Up(process, serving.group(1), admin.group(1), log)
    started.repository = repository  # type: ignore[attr-defined]
    yield started
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()[-3000:]


def _ready_versions(up: Up) -> list[str]:
    client = triton_grpc.InferenceServerClient(up.triton_url())
    index = client.get_model_repository_index(as_json=True)
    return sorted(m["version"] for m in index.get("models", []) if m.get("state") == "READY")


def test_rollout_and_rollback_under_load(up: Up, versions: dict[str, Path]) -> None:
    expected = {"1": _reference(versions["1"]), "2": _reference(versions["2"])}
    staged = _export(versions["2"], up.repository)  # type: ignore[attr-defined]
    assert "staged as version 2" in staged
    answers: list[tuple[float, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def caller(i: int) -> None:
        with SentimentClient(up.target) as client:
            while not stop.is_set():
                text = TEXTS[(i + len(answers)) % len(TEXTS)]
                try:
                    result = client.classify([text], timeout=30)
                except SentimentError as exc:
                    failures.append(exc)
                    continue
                got = {s.label: s.score for s in result.results[0].scores}
                reference = expected[result.model_version][text]  # its version's answer, wholly
                assert set(got) == set(reference)
                np.testing.assert_allclose([got[k] for k in reference], list(reference.values()), atol=1e-5)
                answers.append((time.monotonic(), result.model_version))

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for t in callers:
        t.start()
    try:
        time.sleep(1)
        rolled = _switch(up, "rollout")
        assert rolled.returncode == 0, rolled.stderr
        assert "answers with version 2 (was 1)" in rolled.stdout
        switched = time.monotonic()
        assert _ready_versions(up) == ["2"]  # the old version unloaded once its calls were done
        time.sleep(1)
        assert {v for at, v in answers if at > switched} == {"2"}
        back = _switch(up, "rollback")
        assert back.returncode == 0, back.stderr
        assert "answers with version 1 (was 2)" in back.stdout
        switched = time.monotonic()
        assert _ready_versions(up) == ["1"]
        time.sleep(1)
        assert {v for at, v in answers if at > switched} == {"1"}
    finally:
        stop.set()
        for t in callers:
            t.join(60)
    assert failures == []
    assert {v for _, v in answers} == {"1", "2"}
    log = up.log.read_text()
    assert "lost its stub" not in log and "died with" not in log  # replaced instances are no crash


def test_a_version_with_other_labels_is_refused(up: Up, versions: dict[str, Path]) -> None:
    assert "staged as version 3" in _export(versions["3"], up.repository)  # type: ignore[attr-defined]
    refused = _switch(up, "rollout", "--version", "3")
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr and "labels ['BAD', 'GOOD']" in refused.stderr
    with SentimentClient(up.target) as client:
        assert client.classify(TEXTS).model_version == "1"


def test_a_version_that_cannot_load_is_refused(up: Up, versions: dict[str, Path]) -> None:
    repository: Path = up.repository  # type: ignore[attr-defined]
    assert "staged as version 4" in _export(versions["4"], repository)
    (repository / "sentiment" / "4" / "model.pt").write_bytes(b"not a TorchScript archive")
    refused = _switch(up, "rollout", "--version", "4")
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr and "cannot load model 'sentiment' version 4" in refused.stderr
    with SentimentClient(up.target) as client:
        assert client.classify(TEXTS).model_version == "1"
    assert _ready_versions(up) == ["1"]
    assert "versions: [1]" in (repository / "sentiment" / "config.pbtxt").read_text()


def test_serve_follows_an_external_triton_and_a_rollback_sticks(
    versions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """serve without model control: Triton (run here as someone else's) decides; the front-end follows."""
    from conftest import start_service
    from sentiment_server.backend.triton_process import EmbeddedTriton
    from sentiment_server.model_artifact import set_serving_versions

    root = tmp_path_factory.mktemp("follow")
    repository = root / "repo"
    _export(versions["1"], repository)
    assert "staged as version 2" in _export(versions["2"], repository)
    with EmbeddedTriton(repository) as triton:
        triton.wait_ready("sentiment", timeout_s=120)
        service = start_service(repository, "sentiment", triton.grpc_url, root, "--version-poll-s", "0.2")
        admin = re.search(r"admin \(rollout, rollback\) on ([\d.]+:\d+)", service.process.stdout.readline())  # type: ignore[union-attr]
        assert admin, service.log.read_text()[-3000:]
        control = triton_grpc.InferenceServerClient(triton.grpc_url)
        try:
            with SentimentClient(service.target) as client:

                def answering(version: str, timeout_s: float = 60) -> None:
                    until = time.monotonic() + timeout_s
                    while client.classify(TEXTS).model_version != version:
                        assert time.monotonic() < until, service.log.read_text()[-3000:]
                        time.sleep(0.1)

                assert client.classify(TEXTS).model_version == "1"
                set_serving_versions(repository, "sentiment", ["1", "2"])
                control.load_model("sentiment")  # what a polling Triton does on its own
                answering("2")
                back = subprocess.run(
                    sentiment_server("rollback", "--admin-url", admin.group(1)), capture_output=True, text=True
                )
                assert back.returncode == 0, back.stderr
                time.sleep(1)  # several looks at Triton, which still has version 2 ready
                assert client.classify(TEXTS).model_version == "1"
                set_serving_versions(repository, "sentiment", ["1"])
                control.load_model("sentiment")
                time.sleep(1)
                assert client.classify(TEXTS).model_version == "1"
        finally:
            assert service.stop() == 0, service.log.read_text()[-3000:]
