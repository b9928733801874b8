"""Prometheus metrics of the front-end (one registry per server instance)."""

from __future__ import annotations

from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..core.batch_planning import BatchStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def triton_restarts_counter(registry: CollectorRegistry) -> Counter:
    """Counted by whoever supervises the embedded Triton: the front-end, or the parent of its workers."""
    return Counter("sentiment_triton_restarts", "restarts of the embedded Triton after it died", registry=registry)


class Stages(NamedTuple):
    """The stage histogram's children, bound once (a labels() lookup per call costs a few microseconds)."""

    tokenize: Any
    queue: Any
    triton: Any
    total: Any


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sentiment_requests", "RPCs by method, status code and model", ["method", "code", "model"], registry=r
        )
        self.texts = Counter("sentiment_texts", "texts classified, by model", ["model"], registry=r)
        self.latency = Histogram(
            "sentiment_request_seconds", "RPC latency by method", ["method"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "sentiment_stage_seconds",
            "time per stage (tokenize, queue, triton, total)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_texts = Histogram(
            "sentiment_batch_texts", "texts per Triton batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.padding = Histogram(
            "sentiment_batch_padding_fraction",
            "padded share of each Triton batch",
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
            registry=r,
        )
        self.in_flight = Gauge("sentiment_requests_in_flight", "admitted RPCs in flight", registry=r)
        self.triton_errors = Counter("sentiment_triton_errors", "failed Triton calls by kind", ["kind"], registry=r)
        self.triton_restarts = triton_restarts_counter(r)
        self.padded_tokens = Counter("sentiment_padded_tokens", "tokens sent to Triton, padding included", registry=r)
        self.real_tokens = Counter("sentiment_real_tokens", "tokens sent to Triton, padding excluded", registry=r)
        self.cache_hits = Counter("sentiment_result_cache_hits", "texts answered from the result cache", registry=r)
        self.cache_misses = Counter("sentiment_result_cache_misses", "texts the result cache did not hold", registry=r)
        self.cache_entries = Gauge("sentiment_result_cache_entries", "texts held in the result cache", registry=r)

        self._per_call: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._texts: dict[str, Any] = {}

    def stages(self) -> Stages:
        return Stages(*(self.stage.labels(stage=name) for name in Stages._fields))

    def count_request(self, method: str, code: str, model: str, seconds: float) -> None:
        """`model`: a served model's name, or "" for a call refused before its model was known."""
        key = (method, code, model)
        children = self._per_call.get(key)
        if children is None:  # a handful of (method, code, model) ever occur
            children = (self.requests.labels(method=method, code=code, model=model), self.latency.labels(method=method))
            self._per_call[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_texts(self, model: str, texts: int) -> None:
        child = self._texts.get(model)
        if child is None:
            child = self._texts[model] = self.texts.labels(model=model)
        child.inc(texts)

    def observe_cache(self, hits: int, misses: int) -> None:
        self.cache_hits.inc(hits)
        self.cache_misses.inc(misses)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_texts.observe(stats.texts)
        self.padding.observe(stats.padding_fraction)
        self.padded_tokens.inc(stats.padded_tokens)
        self.real_tokens.inc(stats.real_tokens)
