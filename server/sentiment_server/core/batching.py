"""Coalescing: texts from concurrent requests become shared Triton batches.

Triton's dynamic batcher only merges requests of the same shape, so
variable-length traffic would never batch there. Here every text waits in one
queue. When a batch slot is free (`max_concurrent_batches` Triton requests in
flight per endpoint: one per model instance keeps Triton's own queue empty,
so it never piles several requests onto one instance), the queue's head (up
to `max_batch_texts`) is sorted by length and cut into the groups that waste
the least compute on padding (`plan_groups`, each within `max_batch_tokens`);
the group holding the oldest text leaves as one Triton request, the others go
back to the queue and are planned again, with the newcomers, when the next
slot frees. Results go back to each caller in its own order.

While all slots are busy the queue fills, so batches grow with load without a
fixed wait. When a slot frees while another batch is still running and less
than a pass's worth of work is queued, the batch waits up to `max_wait_s` for
more texts (the callers of the batch that just finished send their next texts
a moment later); with nothing in flight it leaves at once, so a lone caller
never waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DeadlineExceeded, ShuttingDown, TritonFailure
from .tokenization import IdArray, pad_batch

Logits = npt.NDArray[np.float32]
InferFn = Callable[[IdArray, IdArray, float], Coroutine[Any, Any, Logits]]  # (ids, mask, monotonic deadline)

# What one forward pass costs beyond its padded tokens, in tokens: reading
# every weight once and launching every op. Measured for DistilBERT on CPU
# (2 cores): a pass of n texts padded to L tokens takes about (32 + n*L)
# token-times. On a GPU a pass is nearly free per token and costly per launch:
# use thousands there, so that each take stays one group.
BATCH_OVERHEAD_TOKENS = 32
# The coalescer plans with less than that. It sends one group and plans the
# rest again with the texts that arrive meanwhile, so tighter groups now leave
# a better choice later. 64 callers of one short text, `bench/serve_ab.py`
# against 32: padding 3.9 % instead of 8.8 %, throughput 1-2 % higher (the
# rounds' noise is about as large); mixed lengths and int8 did not change.
PLANNING_OVERHEAD_TOKENS = 12
# Queued tokens that make waiting for company pointless: a pass this size
# spends about a tenth of its time on the fixed overhead.
FILL_TOKENS_PER_OVERHEAD = 8


def plan_groups(lengths: Sequence[int], *, max_texts: int, max_tokens: int, overhead_tokens: int) -> list[int]:
    """Cut texts sorted by length into consecutive groups of least total cost; returns the group sizes.

    A group of n texts runs padded to its longest, L, and costs
    `overhead_tokens + n * L`. Each group holds at most `max_texts` texts and
    `max_tokens` padded tokens (a single text always fits). Dynamic
    programming over the cut points: O(len(lengths) * max_texts).
    """
    count = len(lengths)
    best = [0.0] + [float("inf")] * count  # best[j]: cheapest cost of the first j texts
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        longest = lengths[j - 1]
        fits = max(1, min(max_texts, max_tokens // max(1, longest)))
        for i in range(max(0, j - fits), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    sizes: list[int] = []
    j = count
    while j > 0:
        sizes.append(j - cut[j])
        j = cut[j]
    return sizes[::-1]


def _current_task_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(frozen=True)
class BatchStats:
    texts: int
    real_tokens: int
    padded_tokens: int

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass(frozen=True)
class SubmitResult:
    logits: list[list[float]]  # per text, in submission order: one row of logits
    queue_s: float  # longest wait of any text before its batch left
    inference_s: float  # longest Triton call among the text's batches


@dataclass
class _Pending:
    ids: IdArray
    deadline: float
    enqueued: float
    future: asyncio.Future[tuple[list[float], float, float]] = field(repr=False)
    # The caller's context (its trace span, when tracing): the batch's Triton call runs in its first caller's.
    context: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)


class Coalescer:
    def __init__(
        self,
        infer: InferFn,
        *,
        pad_token_id: int,
        max_batch_texts: int,
        max_batch_tokens: int,
        max_wait_s: float = 0.0,
        max_concurrent_batches: int = 2,
        batch_overhead_tokens: int = PLANNING_OVERHEAD_TOKENS,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._infer = infer
        self._pad = pad_token_id
        self._max_texts = max(1, max_batch_texts)
        self._max_tokens = max(1, max_batch_tokens)
        self._max_wait = max(0.0, max_wait_s)
        self._slots = asyncio.Semaphore(max(1, max_concurrent_batches))
        self._overhead = max(0, batch_overhead_tokens)
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._in_flight = 0  # batches dispatched and not finished
        self._stopping = False

    @property
    def queued_texts(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="coalescer")

    async def stop(self) -> None:
        self._stopping = True  # batches already sent finish; nothing new is sent
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await asyncio.gather(*self._batches, return_exceptions=True)
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ShuttingDown("server is shutting down"))

    async def submit(self, sequences: list[IdArray], deadline: float) -> SubmitResult:
        if self._runner is None or self._runner.done():
            raise ShuttingDown("server is shutting down")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Pending(seq, deadline, now, loop.create_future()) for seq in sequences]
        self._queue.extend(items)
        idle = not self._in_flight and len(self._queue) == len(items) and not self._slots.locked()
        try:
            if idle:
                # Nothing else queued or in flight: plan and send from here, without
                # waking the coalescer's task (saves event-loop hops for a lone caller).
                await self._slots.acquire()  # free: returns without suspending
                group = self._take()
                if self._queue:
                    self._wakeup.set()  # texts of this request left for later batches
                if group:
                    # In this task, not a new one: two fewer event-loop hops for a lone caller.
                    self._in_flight += 1
                    await self._dispatch(self._launch(group, inline=True))
                else:  # expired before it was sent
                    self._slots.release()
            else:
                self._wakeup.set()
            if len(items) == 1:
                rows = [await items[0].future]
            else:
                rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:  # a cancelled caller's texts are skipped, not sent
                item.future.cancel()
            raise
        return SubmitResult(
            logits=[r[0] for r in rows],
            queue_s=max(r[1] for r in rows),
            inference_s=max(r[2] for r in rows),
        )

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            if self._max_wait > 0 and self._in_flight:
                await self._linger()
            group = self._take()
            if not group:
                self._slots.release()
                continue
            self._start(group)

    def _start(self, group: list[_Pending]) -> None:
        """Send `group` as one Triton request now; the slot held for it is released when it is done.

        The Triton call is created here, synchronously, so that it goes out
        before whatever else the event loop has queued (replies to callers).
        """
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._dispatch(self._launch(group)))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _queued_tokens(self, enough: int) -> int:
        total = 0
        for item in self._queue:
            total += len(item.ids)
            if total >= enough:
                break
        return total

    async def _linger(self) -> None:
        """While another batch runs, wait up to max_wait for this one to fill.

        Stops early when a pass's worth of tokens is queued, or when nothing is
        in flight any more (the model would otherwise sit idle).
        """
        until = time.monotonic() + self._max_wait
        enough = FILL_TOKENS_PER_OVERHEAD * max(1, self._overhead)
        while self._in_flight and len(self._queue) < self._max_texts and self._queued_tokens(enough) < enough:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation (stop()) that races with the event being set.
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self) -> list[_Pending]:
        """Plan the queue's head; take the group holding the oldest text, put the rest back."""
        now = time.monotonic()
        taken: list[_Pending] = []  # in arrival order
        while self._queue and len(taken) < self._max_texts:
            item = self._queue.popleft()
            if item.future.done():
                continue  # caller gone
            if item.deadline <= now:  # an expired deadline never reaches Triton
                item.future.set_exception(DeadlineExceeded("deadline exceeded while queued"))
                continue
            taken.append(item)
        if len(taken) <= 1:
            return taken
        oldest = taken[0]
        by_length = sorted(taken, key=lambda item: len(item.ids))
        sizes = plan_groups(
            [len(item.ids) for item in by_length],
            max_texts=self._max_texts,
            max_tokens=self._max_tokens,
            overhead_tokens=self._overhead,
        )
        start = 0
        for size in sizes:
            group = by_length[start : start + size]
            if any(item is oldest for item in group):
                break
            start += size
        chosen = {id(item) for item in group}
        self._queue.extendleft(reversed([item for item in taken if id(item) not in chosen]))
        return group

    def _record_batch(self, mask: IdArray) -> None:
        assert self._on_batch is not None
        self._on_batch(BatchStats(len(mask), int(mask.sum()), int(mask.size)))

    def _hand_over(self) -> bool:
        """On a batch's return, start the next one on its slot before its callers are answered.

        Answering a batch's callers takes the event loop a while; meanwhile the
        model instance that ran it would sit idle. Returns False (the slot is
        released as usual) when the queue is empty or the next batch should
        wait to fill.
        """
        if self._stopping or not self._queue:
            return False
        enough = FILL_TOKENS_PER_OVERHEAD * max(1, self._overhead)
        if self._max_wait > 0 and self._in_flight > 1 and self._queued_tokens(enough) < enough:
            return False  # the coalescer's task lets it fill a little
        group = self._take()
        if not group:
            return False
        self._start(group)
        return True

    def _launch(self, group: list[_Pending], inline: bool = False) -> _Launched | None:
        """Start the group's Triton call; `inline`: the caller of a lone request awaits it in its own task."""
        live = [item for item in group if not item.future.done()]
        if not live:
            return None
        input_ids, attention_mask = pad_batch([item.ids for item in live], self._pad)
        request = self._infer(input_ids, attention_mask, max(item.deadline for item in live))
        if inline:  # the caller's own cancellation cancels the call directly
            return _Launched(live, request, time.monotonic(), attention_mask)
        call = asyncio.get_running_loop().create_task(request, context=live[0].context)

        def cancel_when_all_callers_left(_: object) -> None:
            if all(item.future.cancelled() for item in live):
                call.cancel()  # cancels the Triton request too

        for item in live:
            item.future.add_done_callback(cancel_when_all_callers_left)
        return _Launched(live, call, time.monotonic(), attention_mask)

    async def _dispatch(self, launched: _Launched | None) -> None:
        handed_over = False
        try:
            if launched is not None:
                handed_over = await self._finish(launched)
        finally:
            self._in_flight -= 1
            if not handed_over:
                self._slots.release()
            self._wakeup.set()  # a lingering batch stops waiting once nothing is in flight

    async def _finish(self, launched: _Launched) -> bool:
        """Wait for the Triton call and answer its callers; returns whether the slot went to a next batch."""
        live, call, started = launched.live, launched.call, launched.started
        try:
            logits = await call
            if logits.shape[0] != len(live):
                raise TritonFailure(f"triton returned {logits.shape[0]} rows for {len(live)} texts")
        except asyncio.CancelledError:
            if isinstance(call, asyncio.Task) and call.cancelled() and not _current_task_cancelling():
                return False  # every caller left
            raise
        except Exception as exc:  # every waiting caller gets the batch's error
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return False
        took = time.monotonic() - started
        handed_over = self._hand_over()
        # Plain Python rows: what is left per text is a few numbers, cheaper without NumPy.
        for row, item in zip(logits.tolist(), live, strict=True):
            if not item.future.done():
                item.future.set_result((row, started - item.enqueued, took))
        if self._on_batch is not None:  # after the replies are on their way: not on any caller's path
            asyncio.get_running_loop().call_soon(self._record_batch, launched.attention_mask)
        if handed_over and not isinstance(call, asyncio.Task):
            await asyncio.sleep(0)  # inline: let the next batch go out before this caller carries on
        return handed_over


@dataclass
class _Launched:
    """A batch whose Triton call is on its way."""

    live: list[_Pending]
    call: asyncio.Task[Logits] | Coroutine[Any, Any, Logits]  # a coroutine when run inline
    started: float
    attention_mask: IdArray
