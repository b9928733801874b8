"""Optional OpenTelemetry tracing (`--otel`): a span per call, W3C trace context in and out.

The caller's `traceparent` metadata becomes the parent of the call's span; the
Triton request of each batch carries the context of its first caller (the
coalescer runs the call in that caller's context), so Triton's own
OpenTelemetry traces (`--trace-config mode=opentelemetry`) join the caller's
trace. Without the `opentelemetry` packages, or without `--otel`, every
function here is a cheap no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

try:
    from opentelemetry import propagate, trace
except ImportError:  # tracing is an optional extra
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

_enabled = False


def configure(enabled: bool, service_name: str = "sentiment-frontend") -> bool:
    """Turn tracing on; with the SDK and the OTLP exporter installed, export spans (OTEL_EXPORTER_OTLP_*)."""
    global _enabled
    if not enabled:
        _enabled = False
        return False
    if trace is None:
        log.warning("--otel is set but opentelemetry-api is not installed: tracing stays off")
        return False
    _enabled = True
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        log.info("tracing on with the process's tracer provider (opentelemetry-sdk not installed)")
        return True
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return True  # someone (e.g. opentelemetry-instrument, a test) already configured it
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    except ImportError:
        log.warning("opentelemetry-exporter-otlp-proto-grpc is not installed: spans are not exported")
    trace.set_tracer_provider(provider)
    return True


def _tracer() -> Any:
    assert trace is not None
    return trace.get_tracer("sentiment_server")


@contextmanager
def server_span(method: str, metadata: Iterable[tuple[str, Any]], request_id: str) -> Iterator[Any]:
    """The span of one RPC, child of the caller's context when it sent one."""
    if not _enabled:
        yield None
        return
    assert propagate is not None and trace is not None
    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    with _tracer().start_as_current_span(
        f"sentiment.v1.SentimentService/{method}",
        context=propagate.extract(carrier),
        kind=trace.SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.method": method, "sentiment.request_id": request_id},
    ) as span:
        yield span


def current_headers() -> dict[str, str]:
    """The current trace context as W3C headers (empty when tracing is off)."""
    if not _enabled:
        return {}
    assert propagate is not None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier
