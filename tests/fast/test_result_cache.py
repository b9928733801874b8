"""The result cache: its LRU bound (unit), and a front-end answering repeats from it (through gRPC and /metrics)."""

from __future__ import annotations

import urllib.request

import numpy as np
from fake_backend import InProcessServer, fake_logits
from sentiment_client import SentimentClient
from sentiment_server.core.result_cache import ResultCache, cache_key


def ids(*values: int) -> bytes:
    return cache_key(np.array(values, dtype=np.int64), None)


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


def test_a_repeated_text_is_answered_from_the_cache() -> None:
    texts = ["I hate this so much!", "What a lovely day."]
    with InProcessServer(result_cache_entries=8, metrics_port=0) as server:
        assert server.front is not None and server.front.metrics_http is not None
        port = server.front.metrics_http.server_port
        with SentimentClient(server.target) as client:
            first = client.classify(texts, return_logits=True)
            again = client.classify([texts[1], texts[0], "Something new."], return_logits=True, top_k=1)
            repeat = client.classify(texts, return_logits=True)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        batches = list(server.backend.batches)
        encoded = server.model.tokenizer.encode(texts)
    for result, row in zip(first.results, encoded, strict=True):  # the first answers came from the model
        want = fake_logits(row.ids[None, :], np.ones_like(row.ids)[None, :], 2)[0]
        np.testing.assert_allclose(result.logits, want, rtol=1e-6)
    assert first.results[0].logits != first.results[1].logits  # so a swapped cache row would show
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
    assert sum(rows for rows, _ in batches) == 3  # the model saw each distinct text once


def test_segment_ids_are_part_of_the_key() -> None:
    same_ids = np.array([101, 7, 102, 8, 102], dtype=np.int64)
    one_text, pair = np.zeros(5, dtype=np.int64), np.array([0, 0, 0, 1, 1], dtype=np.int64)
    assert len({cache_key(same_ids, None), cache_key(same_ids, one_text), cache_key(same_ids, pair)}) == 3
