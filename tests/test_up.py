"""`sentiment-server up` on a machine without the Hub: demo model, embedded Triton, front-end, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, sentiment_server
from sentiment_client import SentimentClient

pytestmark = pytest.mark.triton


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_serves_a_labelled_demo_model_without_the_hub_then_the_real_one(tmp_path: Path, checkpoints):
    # A closed local port stands in for the Hub: the connection is refused at once.
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "PYTHONUNBUFFERED": "1"}
    err_path = tmp_path / "up.err"
    with err_path.open("w") as err:
        up = subprocess.Popen(
            sentiment_server("up", "--port", "0", "--admin-port", "0", "--model-repository", str(tmp_path / "repo")),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=tmp_path,
        )
    try:
        assert up.stdout is not None
        line = up.stdout.readline()
        match = re.search(r"serving on ([\d.]+:\d+)", line)
        assert match, err_path.read_text()[-3000:]
        target = match.group(1)
        log = err_path.read_text()
        warnings = [x for x in log.splitlines() if "DEMO model" in x]
        assert len(warnings) == 1 and "cannot reach the Hugging Face Hub" in warnings[0]
        triton_pid = int(re.search(r"started tritonserver pid (\d+)", log).group(1))  # type: ignore[union-attr]

        client = [str(BIN / "sentiment-client"), "--target", target]
        out = subprocess.run(
            [*client, "classify", "I hate this so much!"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert "I hate this so much!" in out and "demo model with random weights" in out
        info = subprocess.run(
            [*client, "info", "--json"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        assert '"demo": true' in info
        health = subprocess.run([*client, "health"], capture_output=True, text=True, timeout=60)
        assert health.returncode == 0 and "SERVING" in health.stdout
    finally:
        os.kill(up.pid, signal.SIGINT)  # Ctrl-C stops both
        code = up.wait(timeout=60)
    assert code == 0, err_path.read_text()[-3000:]
    deadline = time.monotonic() + 10
    while _pid_alive(triton_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_alive(triton_pid)

    # Next time, with a real (local) checkpoint: the demo model is replaced, not served again.
    with err_path.open("w") as err:
        up = subprocess.Popen(
            sentiment_server(
                "up", "--port", "0", "--admin-port", "0", "--model-repository", str(tmp_path / "repo"), "--checkpoint",
                str(checkpoints["emotion3"]),
            ),
            stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=tmp_path,
        )  # fmt: skip
    try:
        assert up.stdout is not None
        match = re.search(r"serving on ([\d.]+:\d+)", up.stdout.readline())
        assert match, err_path.read_text()[-3000:]
        with SentimentClient(match.group(1)) as sentiment:
            served = sentiment.model_info()
    finally:
        os.kill(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
    assert not served.demo and list(served.labels) == ["anger", "joy", "calm"]


def test_up_exports_and_serves_several_checkpoints(tmp_path: Path, checkpoints) -> None:
    """`--checkpoint name=dir,name=dir`: each exported under its name, all served; the first is the default."""
    pairs = f"emotion={checkpoints['emotion3']},topics={checkpoints['topics4']}"
    err_path = tmp_path / "up.err"
    with err_path.open("w") as err:
        up = subprocess.Popen(
            sentiment_server(
                "up", "--port", "0", "--admin-port", "0", "--model-repository", str(tmp_path / "repo"),
                "--checkpoint", pairs, "--instance-count", "1",
            ),
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        assert up.stdout is not None
        match = re.search(r"serving on ([\d.]+:\d+)", up.stdout.readline())
        assert match, err_path.read_text()[-3000:]
        with SentimentClient(match.group(1)) as client:
            listed = client.list_models()
            topics = client.classify(["sports and tech"], model="topics")
            default = client.classify(["I am happy"])
    finally:
        os.kill(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0, err_path.read_text()[-3000:]
    assert listed.default_model == "emotion" and [m.name for m in listed.models] == ["emotion", "topics"]
    assert {s.label for s in topics.results[0].scores} == {"sports", "politics", "tech", "music"}
    assert default.model_name == "emotion"
