"""The coalescer against a recording fake of the Triton call (a unit test of one module)."""

import asyncio
import time

import numpy as np
import pytest
from sentiment_server.core.batch_planning import BatchStats
from sentiment_server.core.batching import Coalescer
from sentiment_server.errors import BackendUnavailable, DeadlineExceeded


class RecordingInfer:
    """Returns, per row, [sum of ids, number of real tokens]: enough to check routing."""

    def __init__(self, delay: float = 0.0, fail: Exception | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, ids, mask, deadline, type_ids=None):
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
        assert [row[0] for row in res.logits] == [float(s.sum()) for s in r]
        assert [row[1] for row in res.logits] == [len(s) for s in r]
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
    assert [row[1] for row in res.logits] == [20, 2, 19, 3, 2, 20]
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

    async def slow_infer(ids, mask, deadline, type_ids=None):
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


# --------------------------------------------------------------------------- planning the groups


def _cost(lengths, sizes, overhead):
    total, start = 0, 0
    for size in sizes:
        total += overhead + size * lengths[start + size - 1]
        start += size
    return total


def _cheapest(lengths, max_texts, max_tokens, overhead):
    """Brute force over every way to cut the sorted list."""
    import itertools

    n = len(lengths)
    best = None
    for cuts in itertools.product((False, True), repeat=n - 1):
        sizes, size = [], 1
        for cut in cuts:
            if cut:
                sizes.append(size)
                size = 1
            else:
                size += 1
        sizes.append(size)
        start, ok = 0, True
        for s in sizes:
            if s > 1 and (s > max_texts or s * lengths[start + s - 1] > max_tokens):
                ok = False
            start += s
        if ok:
            cost = _cost(lengths, sizes, overhead)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_plan_groups_finds_the_cheapest_cut_within_the_limits(seed):
    import random

    from sentiment_server.core.batch_planning import plan_groups

    rng = random.Random(seed)
    lengths = sorted(rng.randint(3, 60) for _ in range(rng.randint(1, 10)))
    max_texts, max_tokens, overhead = rng.randint(1, 6), rng.randint(20, 200), rng.choice((0, 8, 32, 500))
    sizes = plan_groups(lengths, max_texts=max_texts, max_tokens=max_tokens, overhead_tokens=overhead)
    assert sum(sizes) == len(lengths) and all(s >= 1 for s in sizes)
    start = 0
    for s in sizes:
        assert s == 1 or (s <= max_texts and s * lengths[start + s - 1] <= max_tokens)
        start += s
    assert _cost(lengths, sizes, overhead) == _cheapest(lengths, max_texts, max_tokens, overhead)


def test_plan_groups_trades_padding_against_passes():
    from sentiment_server.core.batch_planning import plan_groups

    lengths = [10, 10, 11, 12, 100, 101, 250]
    # Passes cost nothing: no padding at all is cheapest.
    assert plan_groups(lengths, max_texts=64, max_tokens=10_000, overhead_tokens=0) == [2, 1, 1, 1, 1, 1]
    # Passes cost a lot (a GPU): one group, padding and all.
    assert plan_groups(lengths, max_texts=64, max_tokens=10_000, overhead_tokens=5000) == [7]
    # In between: short ones together, long ones apart.
    assert plan_groups(lengths, max_texts=64, max_tokens=10_000, overhead_tokens=32) == [4, 2, 1]
    assert plan_groups([], max_texts=8, max_tokens=100, overhead_tokens=32) == []


def test_the_python_model_plans_like_the_coalescer():
    """triton_python_model.py keeps its own copy (it imports nothing from sentiment_server)."""
    import ast
    import random

    from sentiment_server.backend import PYTHON_MODEL_SOURCE
    from sentiment_server.core import batch_planning

    source = PYTHON_MODEL_SOURCE.read_text()
    node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == "plan_groups")
    namespace: dict[str, object] = {}
    exec(compile(ast.Module([node], []), "triton_python_model.py", "exec"), namespace)
    copy = namespace["plan_groups"]
    rng = random.Random(7)
    for _ in range(200):
        lengths = sorted(rng.randint(1, 300) for _ in range(rng.randint(0, 40)))
        args = (rng.randint(1, 64), rng.randint(1, 5000), rng.choice((0, 16, 32, 64, 4096)))
        expected = batch_planning.plan_groups(lengths, max_texts=args[0], max_tokens=args[1], overhead_tokens=args[2])
        assert copy(lengths, *args) == expected  # type: ignore[operator]


# --------------------------------------------------------------------------- waiting for a batch to fill


async def test_a_lone_caller_never_waits_for_company():
    c = Coalescer(RecordingInfer(), pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000, max_wait_s=0.5)
    c.start()
    started = time.monotonic()
    for i in range(3):
        await c.submit([seq(1, i)], far())
    await c.stop()
    assert time.monotonic() - started < 0.25  # three calls, none waited the 0.5 s


async def test_while_the_model_is_busy_the_next_batch_waits_to_fill():
    infer = RecordingInfer(delay=0.3)
    c = Coalescer(
        infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000, max_wait_s=0.1, max_concurrent_batches=2
    )
    c.start()
    first = asyncio.ensure_future(c.submit([seq(1)], far()))  # busy for 0.3 s
    await asyncio.sleep(0.01)
    trickle = []
    for i in range(5):  # arrive one by one, 10 ms apart, while the first batch runs
        trickle.append(asyncio.ensure_future(c.submit([seq(2, i)], far())))
        await asyncio.sleep(0.01)
    await asyncio.gather(first, *trickle)
    await c.stop()
    assert infer.calls == [(1, 1), (5, 2)]  # one batch for the five, not five batches


async def test_the_wait_ends_when_nothing_is_in_flight():
    infer = RecordingInfer(delay=0.05)
    c = Coalescer(
        infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000, max_wait_s=5.0, max_concurrent_batches=2
    )
    c.start()
    first = asyncio.ensure_future(c.submit([seq(1)], far()))
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await c.submit([seq(2, 3)], far())  # lingers while the first runs, then leaves when it is done
    await first
    await c.stop()
    assert time.monotonic() - started < 1.0


async def test_stop_does_not_hang_on_a_batch_waiting_to_fill():
    infer = RecordingInfer(delay=0.2)
    c = Coalescer(
        infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000, max_wait_s=30.0, max_concurrent_batches=2
    )
    c.start()
    first = asyncio.ensure_future(c.submit([seq(1)], far()))
    await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(c.submit([seq(2)], far()))  # lingers: the first batch is running
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.wait_for(c.stop(), 5)
    assert time.monotonic() - started < 2
    await asyncio.gather(first, waiting, return_exceptions=True)


async def test_a_returning_batch_hands_its_slot_to_the_next_one():
    """At full load the next batch is sent before the returning batch's callers are answered."""
    order: list[str] = []

    async def infer(ids, mask, deadline, type_ids=None):
        order.append(f"sent {ids.shape[0]}")
        await asyncio.sleep(0.05)
        return np.zeros((ids.shape[0], 2), dtype=np.float32)

    c = Coalescer(infer, pad_token_id=0, max_batch_texts=2, max_batch_tokens=10_000, max_concurrent_batches=1)
    c.start()

    async def caller(i):
        await c.submit([seq(i, i)], far())
        order.append(f"answered {i}")

    await asyncio.gather(*(caller(i) for i in range(1, 5)))
    await c.stop()
    # the second batch left before the first batch's callers were answered
    assert order.index("sent 2", 1) < order.index("answered 1")


async def test_a_lone_callers_batch_runs_in_its_own_task_and_frees_the_slot_when_cancelled():
    tasks: list[asyncio.Task[object] | None] = []
    block = True

    async def infer(ids, mask, deadline, type_ids=None):
        tasks.append(asyncio.current_task())
        if block:
            await asyncio.sleep(10)
        return np.zeros((ids.shape[0], 2), dtype=np.float32)

    c = Coalescer(infer, pad_token_id=0, max_batch_texts=8, max_batch_tokens=100, max_concurrent_batches=1)
    c.start()
    call = asyncio.ensure_future(c.submit([seq(1, 2)], far()))
    await asyncio.sleep(0.01)
    assert tasks == [call]  # no task of its own: the caller's
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    block = False
    result = await asyncio.wait_for(c.submit([seq(3)], far()), 1)  # the only slot is free again
    assert np.shape(result.logits) == (1, 2)
    await c.stop()


# --------------------------------------------------------------------------- learning what a pass costs


def _learned(floor, ceiling, seconds_for, sizes):
    from sentiment_server.core.batch_costs import PassCostModel

    model = PassCostModel(floor, ceiling)
    for tokens in sizes:
        model.observe(tokens, seconds_for(tokens))
    return model.overhead_tokens


SIZES = [64 * (1 + i % 16) for i in range(256)]  # batches of 64 to 1,024 padded tokens


def test_the_learned_overhead_is_a_share_of_the_passes_fixed_time_over_a_tokens_time():
    # 80 ms a pass and 0.5 ms a token (a CPU): a pass costs as much as 160 tokens; the planner takes 12/32 of it.
    assert _learned(12, 8192, lambda t: 0.08 + 0.0005 * t, SIZES) == 60
    # The fit follows the recent batches: the same model after the host got twice as slow per token.
    assert _learned(12, 8192, lambda t: 0.08 + 0.001 * t, SIZES) == 30


def test_tokens_that_cost_nothing_make_every_take_one_batch_and_a_cheap_pass_keeps_the_floor():
    # A GPU or a tiny model: the time hardly moves with the tokens (or falls, in the noise).
    assert _learned(12, 8192, lambda t: 0.002 + 1e-9 * t, SIZES) == 8192
    assert _learned(12, 8192, lambda t: 0.002 - 1e-9 * t, SIZES) == 8192
    # A pass cheaper than the model's own overhead (a noisy intercept near 0): never below the floor.
    assert _learned(12, 8192, lambda t: 0.0001 + 0.001 * t, SIZES) == 12


def test_batches_all_of_one_size_teach_nothing():
    assert _learned(12, 8192, lambda t: 0.002, [640] * 256) == 12
    assert _learned(12, 8192, lambda t: 0.05 + 0.0005 * t, SIZES[:16]) == 12  # too few batches yet


async def test_a_coalescer_that_learns_stops_cutting_takes_when_passes_cost_the_same_whatever_their_size():
    infer = RecordingInfer(delay=0.02)  # every pass takes about as long, whatever it carries
    c = Coalescer(infer, pad_token_id=0, max_batch_texts=64, max_batch_tokens=10_000, batch_overhead_tokens=None)
    c.start()
    mixed = [seq(*range(1, n + 1)) for n in (2, 40, 3, 80, 5, 120)]  # as one batch: 470 padded tokens
    assert c.overhead_tokens == 12
    first = await c.submit(mixed, far())
    assert len(infer.calls) > 1  # the model's own overhead: short and long texts apart
    # Batches of different sizes, each as slow as the others: the planner learns that tokens are free.
    for n in range(48):
        await c.submit([seq(*range(1, 1 + n % 40 + 1))] * (1 + n % 8), far())
    # Far above the take's padding (the fake's own work per token, on a busy machine, keeps it off the ceiling).
    assert c.overhead_tokens > 2000
    infer.calls.clear()
    again = await c.submit(mixed, far())
    await c.stop()
    assert infer.calls == [(6, 120)]  # one pass, padding and all
    assert again.logits == first.logits
