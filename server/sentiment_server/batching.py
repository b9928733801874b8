"""Coalescing: texts from concurrent requests become shared Triton batches.

Triton's dynamic batcher only merges requests of the same shape, so
variable-length traffic would never batch there. Here every text waits in one
queue; when a batch slot is free the queue's head (up to `max_batch_texts`) is
taken, sorted by length and cut into groups whose padded size stays within
`max_batch_tokens`, so padding wastes little compute. Results go back to each
caller in its own order. While all slots are busy the queue fills, so batches
grow with load without a fixed wait (`max_wait_s` can add one).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .errors import DeadlineExceeded, ShuttingDown, TritonFailure
from .tokenization import IdArray, pad_batch

Logits = npt.NDArray[np.float32]
InferFn = Callable[[IdArray, IdArray, float], Awaitable[Logits]]  # (ids, mask, monotonic deadline)


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
    logits: Logits  # [texts, labels], in submission order
    queue_s: float  # longest wait of any text before its batch left
    inference_s: float  # longest Triton call among the text's batches


@dataclass
class _Pending:
    ids: IdArray
    deadline: float
    enqueued: float
    future: asyncio.Future[tuple[Logits, float, float]] = field(repr=False)


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
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        self._infer = infer
        self._pad = pad_token_id
        self._max_texts = max(1, max_batch_texts)
        self._max_tokens = max(1, max_batch_tokens)
        self._max_wait = max(0.0, max_wait_s)
        self._slots = asyncio.Semaphore(max(1, max_concurrent_batches))
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def queued_texts(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="coalescer")

    async def stop(self) -> None:
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
        self._wakeup.set()
        try:
            rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            for item in items:  # a cancelled caller's texts are skipped, not sent
                item.future.cancel()
            raise
        return SubmitResult(
            logits=np.stack([r[0] for r in rows]),
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
            if self._max_wait > 0:
                await self._linger()
            groups = self._take()
            if not groups:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._dispatch(groups))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _linger(self) -> None:
        """Wait up to max_wait after the oldest text for the batch to fill."""
        until = self._queue[0].enqueued + self._max_wait if self._queue else 0.0
        while len(self._queue) < self._max_texts:
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[list[_Pending]]:
        """Take the queue's head and cut it, sorted by length, into groups within the token budget."""
        now = time.monotonic()
        taken: list[_Pending] = []
        while self._queue and len(taken) < self._max_texts:
            item = self._queue.popleft()
            if item.future.done():
                continue  # caller gone
            if item.deadline <= now:  # an expired deadline never reaches Triton
                item.future.set_exception(DeadlineExceeded("deadline exceeded while queued"))
                continue
            taken.append(item)
        taken.sort(key=lambda item: len(item.ids))
        groups: list[list[_Pending]] = []
        for item in taken:
            if groups and (len(groups[-1]) + 1) * len(item.ids) <= self._max_tokens:
                groups[-1].append(item)
            else:
                groups.append([item])
        return groups

    async def _dispatch(self, groups: list[list[_Pending]]) -> None:
        try:
            await asyncio.gather(*(self._run_group(group) for group in groups))
        finally:
            self._slots.release()

    async def _run_group(self, group: list[_Pending]) -> None:
        live = [item for item in group if not item.future.done()]
        if not live:
            return
        input_ids, attention_mask = pad_batch([item.ids for item in live], self._pad)
        started = time.monotonic()
        call = asyncio.ensure_future(self._infer(input_ids, attention_mask, max(item.deadline for item in live)))

        def cancel_when_all_callers_left(_: object) -> None:
            if all(item.future.cancelled() for item in live):
                call.cancel()  # cancels the Triton request too

        for item in live:
            item.future.add_done_callback(cancel_when_all_callers_left)
        try:
            logits = await call
            if logits.shape[0] != len(live):
                raise TritonFailure(f"triton returned {logits.shape[0]} rows for {len(live)} texts")
        except asyncio.CancelledError:
            if call.cancelled() and not _current_task_cancelling():
                return  # every caller left
            raise
        except Exception as exc:  # every waiting caller gets the batch's error
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        took = time.monotonic() - started
        for row, item in enumerate(live):
            if not item.future.done():
                item.future.set_result((logits[row], started - item.enqueued, took))
        if self._on_batch is not None:
            real = int(attention_mask.sum())
            self._on_batch(BatchStats(len(live), real, int(attention_mask.size)))
