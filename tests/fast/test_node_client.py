"""The Node.js client (client/node) against an in-process front-end, checked against the Python client."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_backend import FakeBackend, InProcessServer, fake_model
from sentiment_client import SentimentClient, SentimentError
from sentiment_server.model_artifact import MULTI_LABEL

ROOT = Path(__file__).resolve().parents[2]
SEED = json.loads((ROOT / "tests" / "data" / "seed_pipeline.json").read_text())
CLI = ROOT / "client" / "node" / "cli.js"
TEXTS = [
    *SEED["texts"],
    "ok",
    "Crème brûlée à Paris, 東京 and naïve café-goers; $12.50 per slice?!",
    "The plot was predictable, the acting wooden, and yet I could not stop watching. " * 60,
]

TOPICS = ("sports", "politics", "tech", "music")


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, InProcessServer]]:
    """The binary sentiment model and a multi-label one, each behind its own front-end."""
    with (
        InProcessServer() as sentiment,
        InProcessServer(FakeBackend(len(TOPICS)), fake_model(TOPICS, MULTI_LABEL)) as topics4,
    ):
        yield {"sentiment": sentiment, "topics4": topics4}


@pytest.fixture(scope="module")
def service(services: dict[str, InProcessServer]) -> InProcessServer:
    return services["sentiment"]


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("Node.js is not installed")
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules is missing @grpc/grpc-js: run `npm install` (scripts/bootstrap.sh does)")
    return executable


def run_cli(node: str, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CLI), "--target", target, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def classify_json(node: str, target: str, *args: str) -> dict[str, Any]:
    result = run_cli(node, target, "classify", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["sentiment", "topics4"])
def test_classify_matches_the_python_client(node: str, services: dict[str, InProcessServer], model: str) -> None:
    target = services[model].target
    got = classify_json(node, target, "--logits", "--", *TEXTS)
    with SentimentClient(target) as client:
        want = client.classify(TEXTS, return_logits=True)
    assert (got["model_name"], got["model_version"]) == (want.model_name, want.model_version)
    assert len(got["results"]) == len(want.results) == len(TEXTS)
    for mine, theirs in zip(got["results"], want.results, strict=True):
        assert mine["label"] == theirs.label
        assert mine["score"] == pytest.approx(theirs.score, abs=1e-6)
        assert [(s["label"], s["label_id"]) for s in mine["scores"]] == [(s.label, s.label_id) for s in theirs.scores]
        assert [s["score"] for s in mine["scores"]] == pytest.approx([s.score for s in theirs.scores], abs=1e-6)
        assert mine["logits"] == pytest.approx(list(theirs.logits), abs=1e-6)
        assert (mine["num_tokens"], mine["truncated"]) == (theirs.num_tokens, theirs.truncated)
    assert got["results"][-1]["truncated"] is True
    assert set(got["timings"]) == {"tokenize_us", "queue_us", "inference_us", "total_us"}


def test_top_k_and_table_output(node: str, service: InProcessServer) -> None:
    got = classify_json(node, service.target, "--top-k", "1", "I love it")
    assert len(got["results"][0]["scores"]) == 1
    assert got["results"][0]["logits"] == []
    table = run_cli(node, service.target, "classify", "I love it", "I hate it")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TEXT", "LABEL", "SCORE"] and len(rows) == 2


def test_health_and_model_info(node: str, service: InProcessServer) -> None:
    health = run_cli(node, service.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    unknown = run_cli(node, service.target, "health", "--service", "no.such.Service")
    with SentimentClient(service.target) as client:
        with pytest.raises(SentimentError) as python_error:
            client.health("no.such.Service")
        info = client.model_info()
    assert unknown.returncode == 2 and f"error: {python_error.value.code.name}:" in unknown.stderr
    mine = json.loads(run_cli(node, service.target, "info").stdout)
    assert mine["labels"] == list(info.labels)
    assert (mine["model_name"], mine["max_sequence_length"]) == (info.model_name, info.max_sequence_length)


def test_errors_carry_the_status_code(node: str, service: InProcessServer) -> None:
    with SentimentClient(service.target) as client, pytest.raises(SentimentError) as python_error:
        client.classify(["fine"], max_length=100_000)
    result = run_cli(node, service.target, "classify", "--max-length", "100000", "fine")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {python_error.value.code.name}:")
    usage = run_cli(node, service.target, "classify")
    assert usage.returncode == 2 and "usage:" in usage.stderr
