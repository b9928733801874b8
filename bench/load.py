"""Closed-loop load: N callers, each sending its next call as soon as the last one returns.

Only calls that *finish* inside the measurement window count (after a
warm-up), so throughput is sentences finished per second in steady state and
the latencies are those of the same calls. Calls still open when the window
closes are cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

CallFn = Callable[[int], Awaitable[int]]  # (work item index) -> sentences classified


@dataclass
class Measurement:
    sentences: int = 0
    calls: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    foreign_cpu: float | None = None  # cores other people's processes used meanwhile (in-process paths)

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else float("nan")

    def merge(self, other: Measurement) -> Measurement:
        return Measurement(
            self.sentences + other.sentences,
            self.calls + other.calls,
            self.seconds + other.seconds,
            self.latencies_s + other.latencies_s,
            self.errors + other.errors,
        )


async def closed_loop(call: CallFn, concurrency: int, warmup_s: float, measure_s: float) -> Measurement:
    counter = itertools.count()
    result = Measurement()
    started = time.perf_counter()
    window_start = started + warmup_s
    window_end = window_start + measure_s

    async def worker() -> None:
        while time.perf_counter() < window_end:
            t0 = time.perf_counter()
            try:
                sentences = await call(next(counter))
            except asyncio.CancelledError:
                raise
            except Exception:
                result.errors += 1
                if result.errors > 10:
                    raise
                continue
            t1 = time.perf_counter()
            if window_start <= t1 <= window_end:
                result.sentences += sentences
                result.calls += 1
                result.latencies_s.append(t1 - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        # When the window is over, the calls still open do not count: they are cancelled.
        await asyncio.wait(tasks, timeout=warmup_s + measure_s + 0.05)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, asyncio.CancelledError)]
    if failures:
        raise failures[0]
    result.seconds = measure_s
    return result


def timed_batches(run_batch: Callable[[int], int], batches: int, min_s: float = 0.0) -> Measurement:
    """In-process: run batch 0..batches-1 in whole passes (at least one), until `min_s` has passed.

    Whole passes only: a pass cut short would weigh its first batches more (in a
    sample sorted by length, the shortest texts).
    """
    result = Measurement()
    started = time.perf_counter()
    for index in itertools.count():
        if index and index % batches == 0 and time.perf_counter() - started >= min_s:
            break
        t0 = time.perf_counter()
        result.sentences += run_batch(index % batches)
        result.latencies_s.append(time.perf_counter() - t0)
        result.calls += 1
    result.seconds = time.perf_counter() - started
    return result
