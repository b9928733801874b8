"""The front-end's gRPC server: built around an injected backend, started, drained.

`create_server` wires the request path (servicer, admission, per model version
a coalescer and pipeline, health, metrics, the admin port) around whatever
`InferenceBackend`s it is given: Triton pools in production
(`service.start_front_end`), fakes in tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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
from ..core.rollout import Rollouts, VersionSource
from ..core.served_models import ServedModels, ServedVersion
from ..core_budget import is_auto, resolve_count
from ..settings import ServeSettings
from .admin import admin_server
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
    models: ServedModels
    metrics: Metrics
    rollouts: Rollouts | None = None
    admin: grpc.aio.Server | None = None
    admin_port: int = -1
    metrics_http: Any = None  # prometheus_client's HTTP server when --metrics-port is set
    background: list[asyncio.Task[None]] = field(default_factory=list)  # e.g. following Triton's versions
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # closed last

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING first, refuse new calls, let calls in flight finish within the grace period."""
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop(0)  # no rollout starts while draining
        await self.health.shutdown()
        self.servicer.accepting = False  # new calls: UNAVAILABLE "shutting down", which clients retry elsewhere
        until = time.monotonic() + grace_s
        admission = self.servicer.admission
        await admission.wait_idle(grace_s)
        log.info("draining done: %d admitted calls still in flight as the port closes", admission.requests)
        # Every admitted call is done. What gRPC still holds was refused or never reached a handler (a call that
        # arrives as the port closes): it gets a moment, then CANCELLED, rather than the rest of the grace period.
        await self.server.stop(min(PORT_CLOSE_GRACE_S, max(0.0, until - time.monotonic())))
        await self.models.close()
        for close in self.on_stop:
            await close()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()


def planning_overhead(value: str) -> int | None:
    """--batch-overhead-tokens as the coalescer takes it: None for auto (learned from the batches)."""
    return None if is_auto(value) else resolve_count(value, 0, "--batch-overhead-tokens")


def batches_in_flight(value: str, backend: InferenceBackend) -> int:
    """--max-concurrent-batches for one version's coalescer: auto, one per model instance behind `backend`
    (each instance always has its next batch, and Triton's queue stays empty); a number, that many per server."""
    if is_auto(value):
        return backend.instances
    return max(1, resolve_count(value, 0, "--max-concurrent-batches")) * backend.replicas


@dataclass(frozen=True)
class VersionBuilder:
    """A model version's request path: its own coalescer (batches never mix versions) and pipeline."""

    settings: ServeSettings
    metrics: Metrics

    def __call__(self, model: ServedModel, backend: InferenceBackend) -> ServedVersion:
        settings = self.settings
        coalescer = Coalescer(
            backend.infer,
            pad_token_id=model.info.pad_token_id,
            max_batch_texts=settings.max_batch_texts,
            max_batch_tokens=settings.max_batch_tokens,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_concurrent_batches=batches_in_flight(settings.max_concurrent_batches, backend),
            batch_overhead_tokens=planning_overhead(settings.batch_overhead_tokens),
            on_batch=self.metrics.observe_batch,
        )
        coalescer.start()
        cache = None
        if settings.result_cache_entries > 0:
            cache = ResultCache(settings.result_cache_entries, on_lookup=self.metrics.observe_cache)
        limits = Limits(
            settings.max_texts_per_request,
            settings.max_chars_per_text,
            settings.max_windows_per_text,
            settings.max_windows_per_request,
        )
        return ServedVersion(
            model, backend, ClassificationPipeline(model.info, model.tokenizer, coalescer, limits, cache)
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


async def create_server(
    settings: ServeSettings,
    versions: Sequence[tuple[ServedModel, InferenceBackend]],
    source: VersionSource | None = None,
    default_model: str = "",
) -> FrontEnd:
    """Build and start the front-end around one version of each model; `settings.port` 0 binds any free port.

    The backends are expected ready (their readiness is polled from here on for health). With a `source`,
    versions can be switched (`Rollouts`), on the admin port when `settings.admin_port` is not -1.
    """
    metrics = Metrics()
    build = VersionBuilder(settings, metrics)
    models = ServedModels([build(model, backend) for model, backend in versions], default_model)
    metrics.cache_entries.set_function(
        lambda: sum(len(v.pipeline.cache) for v in models.current() if v.pipeline.cache is not None)
    )
    servicer = SentimentServicer(
        models,
        Admission(settings.max_inflight_requests, settings.max_inflight_texts),
        DeadlinePolicy(cap_s=settings.triton_timeout_s, margin_s=settings.deadline_margin_ms / 1000.0),
        metrics,
        access_log=settings.access_log,
    )
    health = HealthWatcher(models, settings.health_poll_s)
    server, port = _grpc_server(settings, servicer, health)
    rollouts = admin = None
    admin_port = -1
    if source is not None:
        rollouts = Rollouts(models, source, build, drain_timeout_s=settings.triton_timeout_s + settings.grace_s)
        if settings.admin_port >= 0:
            admin, admin_port = admin_server(rollouts, settings.admin_port, settings.api_key)
    http_server = None
    if settings.metrics_port >= 0:
        http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, http_server.server_port)
    await health.start()
    await server.start()
    if admin is not None:
        await admin.start()
        log.info("admin (rollout, rollback) on 127.0.0.1:%d", admin_port)
    for served in models.current():
        info = served.info
        log.info(
            "serving %s version %s (%s, %s, %d labels%s)%s on %s:%d",
            info.model_name,
            info.version,
            info.source,
            info.dtype,
            len(info.labels),
            ", DEMO MODEL: random weights" if info.demo else "",
            " as the default model" if served.name == models.default else "",
            settings.host,
            port,
        )
    return FrontEnd(server, port, servicer, health, models, metrics, rollouts, admin, admin_port, http_server)
