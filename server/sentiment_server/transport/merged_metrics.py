"""One /metrics for several worker processes: the parent sums what each worker exports.

Each worker keeps its own registry (nothing shared between processes, no
multiprocess files) and serves it on a private loopback port; the parent's
collector reads them all at scrape time and adds up samples with the same
name and labels, so a dashboard sees one service. Counters of a worker that
was restarted start again from zero, which Prometheus reads as a counter
reset, as for any restarted process. The `_created` families are left out: a
sum of timestamps means nothing.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from .metrics import triton_restarts_counter

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 2.0


class SupervisorMetrics:
    """What the parent itself counts, merged with the workers' metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.triton_restarts = triton_restarts_counter(self.registry)
        self.worker_restarts = Counter(
            "sentiment_worker_restarts", "restarts of front-end worker processes after one died", registry=self.registry
        )


class MergedMetrics(Collector):
    def __init__(self, local: CollectorRegistry, worker_urls: Callable[[], list[str]]) -> None:
        """`worker_urls`: the workers' /metrics addresses now (a restarted worker has a new one)."""
        self._local = local
        self._worker_urls = worker_urls

    def _expositions(self) -> Iterator[str]:
        yield generate_latest(self._local).decode()
        for url in self._worker_urls():
            try:
                with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                    yield response.read().decode()
            except OSError as exc:
                log.warning("metrics of worker at %s not read: %s", url, exc)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self._expositions():
            for family in text_string_to_metric_families(text):
                if family.name.endswith("_created"):  # the text format writes them as gauges of their own
                    continue
                if family.name not in families:
                    families[family.name] = Metric(family.name, family.documentation, family.type)
                    totals[family.name] = {}
                samples = totals[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sample.labels.items()))
                    samples[key] = samples.get(key, 0.0) + sample.value
        for name, merged in families.items():
            for (sample_name, labels), value in totals[name].items():
                merged.add_sample(sample_name, dict(labels), value)
            yield merged
