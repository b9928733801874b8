"""The parts of `serve --workers` that need no process: worker settings, the shared port, merged metrics."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, start_http_server
from sentiment_server.settings import ServeSettings, settings_from
from sentiment_server.transport.merged_metrics import MergedMetrics, SupervisorMetrics
from sentiment_server.workers import reserve_port, settings_environment, worker_settings


def test_worker_settings_split_the_limits_and_travel_as_environment() -> None:
    settings = ServeSettings(
        model_repository=Path("/models"), port=0, max_inflight_requests=513, max_inflight_texts=8192, metrics_port=9090
    )
    worker = worker_settings(settings, port=41000, count=2)
    assert (worker.port, worker.workers, worker.admin_port, worker.metrics_port) == (41000, "1", 0, 0)
    assert (worker.max_inflight_requests, worker.max_inflight_texts) == (257, 4096)
    assert worker.triton_model_control is False  # the parent loads and unloads
    assert worker.version_poll_s == settings.version_poll_s  # without control each worker follows Triton
    controlled = worker_settings(replace(settings, triton_model_control=True), port=41000, count=2)
    assert controlled.version_poll_s == 0  # the parent switches every worker; none follows on its own
    assert settings_from(ServeSettings, env=settings_environment(worker)) == worker
    assert worker_settings(ServeSettings(admin_port=-1), 1, 2).admin_port == -1  # off stays off


def test_the_reserved_port_is_shared_with_a_grpc_server() -> None:
    reservation = reserve_port("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        server = grpc.server(thread_pool=None)  # type: ignore[arg-type]
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port  # SO_REUSEPORT on both
        server.stop(0)
    finally:
        reservation.close()


def _worker_registry(calls: int, seconds: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("sentiment_requests", "RPCs", ["method"], registry=registry).labels(method="Classify").inc(calls)
    Histogram("sentiment_request_seconds", "latency", buckets=(0.1, 1.0), registry=registry).observe(seconds)
    return registry


def test_merged_metrics_add_up_the_workers_and_the_parent() -> None:
    servers = [
        start_http_server(0, addr="127.0.0.1", registry=_worker_registry(n, s)) for n, s in ((3, 0.05), (4, 0.5))
    ]
    parent = SupervisorMetrics()
    parent.worker_restarts.inc()
    urls = [f"http://127.0.0.1:{server.server_port}/metrics" for server, _ in servers]
    registry = CollectorRegistry()
    registry.register(MergedMetrics(parent.registry, lambda: [*urls, "http://127.0.0.1:9/metrics"]))  # one is gone
    try:
        text = generate_latest(registry).decode()
    finally:
        for server, thread in servers:
            server.shutdown()
            thread.join()
    lines = set(text.splitlines())
    assert 'sentiment_requests_total{method="Classify"} 7.0' in lines
    assert 'sentiment_request_seconds_bucket{le="0.1"} 1.0' in lines
    assert 'sentiment_request_seconds_bucket{le="1.0"} 2.0' in lines
    assert "sentiment_request_seconds_count 2.0" in lines
    assert "sentiment_worker_restarts_total 1.0" in lines and "sentiment_triton_restarts_total 0.0" in lines
    assert "_created" not in text
