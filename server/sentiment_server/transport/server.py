"""The front-end's gRPC server: built around an injected backend, started, drained.

`create_server` wires the request path (servicer, admission, coalescer,
pipeline, health, metrics) around whatever `InferenceBackend` it is given:
the Triton pool in production (`service.start_front_end`), a fake in tests.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from ..core.batching import Coalescer
from ..core.inference import InferenceBackend, ServedModel
from ..core.pipeline import ClassificationPipeline, Limits
from ..core.result_cache import ResultCache
from ..settings import ServeSettings
from .admission import Admission
from .auth import ApiKeyInterceptor
from .health import SERVICE_NAME, HealthWatcher
from .metrics import Metrics
from .registration import add_sentiment_service
from .servicer import DeadlinePolicy, SentimentServicer

log = logging.getLogger(__name__)

PORT_CLOSE_GRACE_S = 1.0  # for the calls gRPC still holds once the admitted ones are done


def _server_credentials(settings: ServeSettings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert:
        return None
    key = Path(settings.tls_key).read_bytes()
    cert = Path(settings.tls_cert).read_bytes()
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


@dataclass
class FrontEnd:
    """A running front-end: its server, port and the parts tests and `up` need to reach."""

    server: grpc.aio.Server
    port: int
    servicer: SentimentServicer
    health: HealthWatcher
    coalescer: Coalescer
    backend: InferenceBackend
    metrics: Metrics
    metrics_http: Any = None  # prometheus_client's HTTP server when --metrics-port is set

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING first, refuse new calls, let calls in flight finish within the grace period."""
        await self.health.shutdown()
        self.servicer.accepting = False  # new calls: UNAVAILABLE "shutting down", which clients retry elsewhere
        until = time.monotonic() + grace_s
        admission = self.servicer.admission
        await admission.wait_idle(grace_s)
        log.info("draining done: %d admitted calls still in flight as the port closes", admission.requests)
        # Every admitted call is done. What gRPC still holds was refused or never reached a handler (a call that
        # arrives as the port closes): it gets a moment, then CANCELLED, rather than the rest of the grace period.
        await self.server.stop(min(PORT_CLOSE_GRACE_S, max(0.0, until - time.monotonic())))
        await self.coalescer.stop()
        await self.backend.close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()


def _coalescer(settings: ServeSettings, backend: InferenceBackend, model: ServedModel, metrics: Metrics) -> Coalescer:
    return Coalescer(
        backend.infer,
        pad_token_id=model.info.pad_token_id,
        max_batch_texts=settings.max_batch_texts,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000.0,
        max_concurrent_batches=settings.max_concurrent_batches * backend.replicas,
        batch_overhead_tokens=settings.batch_overhead_tokens,
        on_batch=metrics.observe_batch,
    )


def _grpc_server(
    settings: ServeSettings, servicer: SentimentServicer, health: HealthWatcher
) -> tuple[grpc.aio.Server, int]:
    """The gRPC server with the services registered and its port bound (not started yet)."""
    interceptors = [ApiKeyInterceptor(settings.api_key, servicer.refuse)] if settings.api_key else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ],
    )
    add_sentiment_service(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
    address = f"{settings.host}:{settings.port}"
    credentials = _server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    return server, port


async def create_server(settings: ServeSettings, backend: InferenceBackend, model: ServedModel) -> FrontEnd:
    """Build and start the front-end around `backend` and `model`; `settings.port` 0 binds any free port.

    The backend is expected ready (its readiness is polled from here on for health).
    """
    metrics = Metrics()
    coalescer = _coalescer(settings, backend, model, metrics)
    coalescer.start()
    cache = None
    if settings.result_cache_entries > 0:
        cache = ResultCache(settings.result_cache_entries, on_lookup=metrics.observe_cache)
        metrics.cache_entries.set_function(cache.__len__)
    pipeline = ClassificationPipeline(
        model.info,
        model.tokenizer,
        coalescer,
        Limits(
            settings.max_texts_per_request,
            settings.max_chars_per_text,
            settings.max_windows_per_text,
            settings.max_windows_per_request,
        ),
        cache,
    )
    servicer = SentimentServicer(
        pipeline,
        Admission(settings.max_inflight_requests, settings.max_inflight_texts),
        DeadlinePolicy(cap_s=settings.triton_timeout_s, margin_s=settings.deadline_margin_ms / 1000.0),
        metrics,
        access_log=settings.access_log,
    )
    health = HealthWatcher(backend, settings.health_poll_s)
    server, port = _grpc_server(settings, servicer, health)
    http_server = None
    if settings.metrics_port >= 0:
        http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, http_server.server_port)
    await health.start()
    await server.start()
    info = model.info
    log.info(
        "serving %s (%s, %s, %d labels%s) on %s:%d",
        info.model_name,
        info.source,
        info.dtype,
        len(info.labels),
        ", DEMO MODEL: random weights" if info.demo else "",
        settings.host,
        port,
    )
    return FrontEnd(server, port, servicer, health, coalescer, backend, metrics, http_server)
