"""Tracing: the caller's W3C context becomes the call's parent and reaches the batch's Triton call."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from sentiment_server import tracing
from sentiment_server.core.batching import Coalescer

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert tracing.configure(True)  # keeps the provider it finds
    yield exporter
    tracing.configure(False)


async def test_call_span_continues_the_callers_trace_and_reaches_triton(spans: InMemorySpanExporter):
    sent_to_triton: list[dict[str, str]] = []

    async def infer(ids, mask, deadline, type_ids=None):
        sent_to_triton.append(tracing.current_headers())  # what TritonPool.infer sends as metadata
        return np.zeros((ids.shape[0], 2), dtype=np.float32)

    coalescer = Coalescer(infer, pad_token_id=0, max_batch_texts=8, max_batch_tokens=100)
    coalescer.start()
    with tracing.server_span("Classify", [("traceparent", TRACEPARENT)], "rid-1") as span:
        await coalescer.submit([np.array([101, 7, 102])], time.monotonic() + 5)
        own_span_id = format(span.get_span_context().span_id, "016x")
    await coalescer.stop()

    (finished,) = [s for s in spans.get_finished_spans() if s.name.endswith("/Classify")]
    assert format(finished.context.trace_id, "032x") == TRACE_ID
    assert finished.parent is not None and format(finished.parent.span_id, "016x") == PARENT_ID
    assert (finished.attributes or {}).get("sentiment.request_id") == "rid-1"
    assert sent_to_triton == [{"traceparent": f"00-{TRACE_ID}-{own_span_id}-01"}]


def test_off_means_no_headers_and_no_spans():
    tracing.configure(False)
    with tracing.server_span("Classify", [("traceparent", TRACEPARENT)], "rid") as span:
        assert span is None
        assert tracing.current_headers() == {}
