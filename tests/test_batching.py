"""The coalescer against a recording fake of the Triton call (a unit test of one module)."""

import asyncio
import time

import numpy as np
import pytest
from sentiment_server.batching import BatchStats, Coalescer
from sentiment_server.errors import BackendUnavailable, DeadlineExceeded


class RecordingInfer:
    """Returns, per row, [sum of ids, number of real tokens]: enough to check routing."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, ids, mask, deadline):
        self.calls.append(ids.shape)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise self.fail
        return np.stack([(ids * mask).sum(axis=1), mask.sum(axis=1)], axis=1).astype(np.float32)


def seq(*ids):
    return np.array(ids, dtype=np.int64)


def far():
    return time.monotonic() + 10


async def test_results_come_back_in_order_to_each_caller():
    infer = RecordingInfer(delay=0.01)
    c = Coalescer(infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000)
    c.start()
    requests = [[seq(1, i, 2), seq(1, 2, 3, 4, i)] for i in range(1, 20)]
    results = await asyncio.gather(*(c.submit(r, far()) for r in requests))
    await c.stop()
    for r, res in zip(requests, results, strict=True):
        assert res.logits[:, 0].tolist() == [float(s.sum()) for s in r]
        assert res.logits[:, 1].tolist() == [len(s) for s in r]
    # concurrent requests were merged: far fewer Triton calls than requests
    assert len(infer.calls) < len(requests)


async def test_groups_are_sorted_by_length_within_the_token_budget():
    stats: list[BatchStats] = []
    infer = RecordingInfer(delay=0.05)
    c = Coalescer(infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=40, on_batch=stats.append)
    c.start()
    blocker = asyncio.ensure_future(c.submit([seq(9)], far()))  # occupies the first batch
    await asyncio.sleep(0.01)
    mixed = [seq(*range(1, n + 1)) for n in (20, 2, 19, 3, 2, 20)]
    res = await c.submit(mixed, far())
    await blocker
    await c.stop()
    assert res.logits[:, 1].tolist() == [20, 2, 19, 3, 2, 20]
    shapes = infer.calls[1:]
    # short ones together, long ones together; no group over 40 padded tokens
    assert all(b * n <= 40 for b, n in shapes)
    assert sorted(shapes) == [(2, 20), (3, 3)] or sorted(shapes) == [(1, 20), (1, 20), (3, 3)] or (3, 3) in shapes
    assert min(s.padding_fraction for s in stats) < 0.2


async def test_errors_reach_every_caller_of_the_batch():
    c = Coalescer(
        RecordingInfer(fail=BackendUnavailable("down")), pad_token_id=0, max_batch_texts=8, max_batch_tokens=100
    )
    c.start()
    results = await asyncio.gather(*(c.submit([seq(1, 2)], far()) for _ in range(3)), return_exceptions=True)
    await c.stop()
    assert all(isinstance(r, BackendUnavailable) for r in results)


async def test_expired_texts_never_reach_triton():
    infer = RecordingInfer()
    c = Coalescer(infer, pad_token_id=0, max_batch_texts=8, max_batch_tokens=100)
    c.start()
    with pytest.raises(DeadlineExceeded):
        await c.submit([seq(1, 2)], time.monotonic() - 1)
    await c.stop()
    assert infer.calls == []


async def test_cancelled_callers_are_dropped_from_the_queue():
    infer = RecordingInfer(delay=0.05)
    c = Coalescer(infer, pad_token_id=0, max_batch_texts=8, max_batch_tokens=100, max_concurrent_batches=1)
    c.start()
    first = asyncio.ensure_future(c.submit([seq(1)], far()))
    await asyncio.sleep(0.01)
    doomed = asyncio.ensure_future(c.submit([seq(5, 5, 5)], far()))
    await asyncio.sleep(0)
    doomed.cancel()
    await first
    await asyncio.sleep(0.1)
    await c.stop()
    assert (1, 3) not in infer.calls


async def test_stop_fails_queued_work_instead_of_dropping_it():
    c = Coalescer(
        RecordingInfer(delay=0.5), pad_token_id=0, max_batch_texts=1, max_batch_tokens=100, max_concurrent_batches=1
    )
    c.start()
    tasks = [asyncio.ensure_future(c.submit([seq(i)], far())) for i in range(1, 4)]
    await asyncio.sleep(0.01)
    await c.stop()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(not isinstance(r, asyncio.CancelledError) for r in results)
    assert any(isinstance(r, Exception) for r in results)  # queued ones were told, not forgotten


async def test_a_batch_whose_callers_all_left_cancels_its_triton_call():
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_infer(ids, mask, deadline):
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("not reached")

    c = Coalescer(slow_infer, pad_token_id=0, max_batch_texts=8, max_batch_tokens=100)
    c.start()
    call = asyncio.ensure_future(c.submit([seq(1, 2), seq(3)], far()))
    await asyncio.wait_for(started.wait(), 1)
    call.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    await c.stop()
