"""The result cache: its LRU bound (unit), and a real service answering repeats from it (end to end)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import start_service
from sentiment_client import SentimentClient
from sentiment_server.backend.triton_process import free_port
from sentiment_server.core.result_cache import ResultCache
from sentiment_server.core.tokenization import IdArray


def ids(*values: int) -> IdArray:
    return np.array(values, dtype=np.int64)


def test_holds_at_most_its_bound_and_drops_the_least_recently_used() -> None:
    lookups: list[tuple[int, int]] = []
    cache = ResultCache(2, on_lookup=lambda hits, misses: lookups.append((hits, misses)))
    cache.put([ids(1, 2), ids(3)], [[0.1, 0.9], [0.5, 0.5]])
    assert cache.get([ids(1, 2), ids(4)]) == [[0.1, 0.9], None]  # (1, 2) is now the most recent
    cache.put([ids(5)], [[0.7, 0.3]])
    assert len(cache) == 2
    assert cache.get([ids(3), ids(1, 2), ids(5)]) == [None, [0.1, 0.9], [0.7, 0.3]]
    assert lookups == [(1, 1), (2, 1)]
    assert cache.get([ids(1)]) == [None]  # a prefix is another sequence


@pytest.mark.triton
def test_a_repeated_text_is_answered_from_the_cache(triton, model_repository: Path, tmp_path: Path) -> None:
    port = free_port()
    service = start_service(
        model_repository,
        "sentiment",
        triton.grpc_url,
        tmp_path,
        "--result-cache-entries",
        "8",
        "--metrics-port",
        str(port),
    )
    texts = ["I hate this so much!", "What a lovely day."]
    try:
        with SentimentClient(service.target) as client:
            first = client.classify(texts, return_logits=True)
            again = client.classify([texts[1], texts[0], "Something new."], return_logits=True, top_k=1)
            repeat = client.classify(texts, return_logits=True)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        assert service.stop() == 0
    assert [r.logits for r in again.results[:2]] == [first.results[1].logits, first.results[0].logits]
    assert [(r.label, r.score) for r in again.results[:2]] == [
        (first.results[1].label, first.results[1].score),
        (first.results[0].label, first.results[0].score),
    ]
    assert len(again.results[0].scores) == 1  # top_k still applies to a cached row
    assert repeat.results == first.results
    assert repeat.timings.inference_us == 0  # every text was cached: no Triton call
    assert first.timings.inference_us > 0
    assert "sentiment_result_cache_hits_total 4.0" in text
    assert "sentiment_result_cache_misses_total 3.0" in text
    assert "sentiment_result_cache_entries 3.0" in text
