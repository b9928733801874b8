"""A real `sentiment-server serve` process: graceful drain on SIGTERM, and its flags for metrics and logs.

Admission under overload, draining by FrontEnd.stop, and the content of the
metrics and the access log are checked in-process in
tests/fast/test_overload_metrics.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import Service, start_service
from loadgen import check_drained, run_load
from sentiment_client import SentimentClient, SentimentError
from sentiment_server.backend.triton_process import free_port

pytestmark = pytest.mark.triton

TEXTS = ["a longer text that keeps the model busy for a little while " * 8] * 4


async def test_sigterm_drains_calls_in_flight(triton, model_repository: Path, tmp_path: Path):
    service = start_service(model_repository, "sentiment", triton.grpc_url, tmp_path, "--grace-s", "10")
    load = asyncio.ensure_future(
        run_load(service.target, duration_s=8, concurrency=16, timeout_s=5, texts=TEXTS, max_calls=5000)
    )
    await asyncio.sleep(1.5)
    sent_at = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(service.process.wait, 20)
    exited_at = time.monotonic()
    calls = await load
    assert code == 0, service.log.read_text()[-2000:]
    refused = [c for c in calls if c.started < sent_at and c.code != grpc.StatusCode.OK]
    print(f"calls before SIGTERM refused={len(refused)} drain took {exited_at - sent_at:.2f}s")
    check_drained(calls, sent_at, service.log.read_text())
    assert exited_at - sent_at < 10 + 5


def test_metrics_port_and_json_access_log_of_the_process(triton, model_repository: Path, tmp_path: Path):
    """--metrics-port, --access-log and --log-format json reach the process: every line it logs is JSON."""
    port = free_port()
    service: Service = start_service(
        model_repository,
        "sentiment",
        triton.grpc_url,
        tmp_path,
        "--metrics-port",
        str(port),
        "--access-log",
        "--log-format",
        "json",
    )
    try:
        with SentimentClient(service.target) as client:
            for _ in range(3):
                client.classify(["I hate this so much!", "fine"])
            with pytest.raises(SentimentError) as failed:
                client.classify([""])
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        assert service.stop() == 0
    assert 'sentiment_requests_total{code="OK",method="Classify",model="sentiment"} 3.0' in text
    assert 'sentiment_texts_total{model="sentiment"} 6.0' in text
    entries = [json.loads(line) for line in service.log.read_text().splitlines() if line.strip()]
    messages = [e["message"] for e in entries]
    assert all({"ts", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(
        m.startswith(f"request {failed.value.request_id} Classify INVALID_ARGUMENT model=sentiment texts=1")
        for m in messages
    )
    assert sum(" Classify OK model=sentiment texts=2 " in m for m in messages) == 3
