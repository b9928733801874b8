"""Coalescing: texts from concurrent requests become shared Triton batches.

Triton's dynamic batcher only merges requests of the same shape, so
variable-length traffic would never batch there. Here every text waits in one
queue, and a batch is formed whenever a batch slot is free
(`max_concurrent_batches`: one per model instance keeps Triton's own queue
empty, so it never piles several requests onto one instance).

A text's life, and the method for each stage:

    submit ──► queue ──► _form ──► _Batch ──► _send ──► answered (or failed)
                 ▲          │
                 └──────────┘  texts not chosen go back, planned again later

`_form` sorts the queue's head (up to `max_batch_texts`) by length, cuts it
into the groups that waste the least compute on padding (`plan_groups`, each
within `max_batch_tokens`), and takes the group holding the oldest text.
`_send` runs one batch on the slot its former holds: the Triton call, then,
before the batch's callers are answered, the next batch starts on the same
slot (`_next_on_slot`), so the instance that just finished never idles while
the event loop answers callers. Who forms a batch: a caller that finds the
coalescer idle forms and sends its own (no hop to another task, so a lone
caller waits for nothing); otherwise the coalescer's task (`_run`), which may
`_linger` up to `max_wait_s` for a batch to fill while another batch runs.

While all slots are busy the queue fills, so batches grow with load without a
fixed wait. Results go back to each caller in its own order.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeadlineExceeded, ShuttingDown, TritonFailure
from .batch_costs import FILL_TOKENS_PER_OVERHEAD, PLANNING_OVERHEAD_TOKENS, PassCostModel
from .batch_planning import BatchStats, plan_groups
from .inference import Logits
from .tokenization import IdArray, pad_batch, pad_type_ids

# (ids, mask, monotonic deadline, token_type_ids or None): InferenceBackend.infer
InferFn = Callable[[IdArray, IdArray, float, IdArray | None], Coroutine[Any, Any, Logits]]


@dataclass(frozen=True)
class SubmitResult:
    logits: list[list[float]]  # per text, in submission order: one row of logits
    queue_s: float  # longest wait of any text before its batch left
    inference_s: float  # longest Triton call among the text's batches


@dataclass
class _Queued:
    """One text waiting for its batch; its caller awaits `future`: (logits row, queue s, Triton s)."""

    ids: IdArray
    type_ids: IdArray | None  # segment ids, for a model that takes them
    deadline: float
    enqueued: float
    future: asyncio.Future[tuple[list[float], float, float]] = field(repr=False)
    # The caller's context (its trace span, when tracing): a batch's Triton call runs in its first caller's.
    context: contextvars.Context = field(default_factory=contextvars.copy_context, repr=False)


class _Batch:
    """One Triton request: the texts it carries, padded, and the callers waiting for them."""

    def __init__(self, texts: list[_Queued], pad_token_id: int) -> None:
        self.texts = texts
        self.input_ids, self.attention_mask = pad_batch([t.ids for t in texts], pad_token_id)
        self.token_type_ids = (
            None
            if texts[0].type_ids is None
            else pad_type_ids([t.type_ids for t in texts if t.type_ids is not None], self.input_ids.shape[1])
        )
        self.deadline = max(t.deadline for t in texts)
        self.started = 0.0
        self.took = 0.0  # seconds from send to answer

    def cancel_when_abandoned(self, task: asyncio.Task[None]) -> None:
        """Cancel `task` (and so its Triton call) once every caller has gone."""

        def check(_: object) -> None:
            if all(t.future.cancelled() for t in self.texts):
                task.cancel()

        for text in self.texts:
            text.future.add_done_callback(check)

    def answer(self, logits: Logits) -> None:
        self.took = took = time.monotonic() - self.started
        # Plain Python rows: what is left per text is a few numbers, cheaper without NumPy.
        for row, text in zip(logits.tolist(), self.texts, strict=True):
            if not text.future.done():
                text.future.set_result((row, self.started - text.enqueued, took))

    def fail(self, error: Exception) -> None:
        for text in self.texts:
            if not text.future.done():
                text.future.set_exception(error)

    def stats(self) -> BatchStats:
        mask = self.attention_mask
        return BatchStats(len(mask), int(mask.sum()), int(mask.size))


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
        batch_overhead_tokens: int | None = PLANNING_OVERHEAD_TOKENS,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        """`batch_overhead_tokens`: a pass's fixed cost in padded tokens, for planning; None: learned
        from the batches' times, starting from the model's own (PassCostModel)."""
        self._infer = infer
        self._pad = pad_token_id
        self._max_texts = max(1, max_batch_texts)
        self._max_tokens = max(1, max_batch_tokens)
        self._max_wait = max(0.0, max_wait_s)
        self._slots = asyncio.Semaphore(max(1, max_concurrent_batches))
        self._costs = (
            PassCostModel(PLANNING_OVERHEAD_TOKENS, self._max_tokens) if batch_overhead_tokens is None else None
        )
        self._fixed_overhead = max(0, batch_overhead_tokens or 0)
        self._on_batch = on_batch
        self._queue: deque[_Queued] = deque()
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # batches sent from tasks of their own
        self._in_flight = 0  # batches formed and not finished
        self._stopping = False

    @property
    def queued_texts(self) -> int:
        return len(self._queue)

    @property
    def overhead_tokens(self) -> int:
        """The planning overhead now: the set figure, or the learned one."""
        return self._fixed_overhead if self._costs is None else self._costs.overhead_tokens

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="coalescer")

    async def stop(self) -> None:
        """Batches already sent finish; nothing new is sent; queued texts fail with ShuttingDown."""
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            text = self._queue.popleft()
            if not text.future.done():
                text.future.set_exception(ShuttingDown("server is shutting down"))

    async def submit(
        self, sequences: list[IdArray], deadline: float, type_ids: list[IdArray] | None = None
    ) -> SubmitResult:
        """Queue the texts, wait for their rows. `deadline` is a time.monotonic() instant.

        `type_ids`: each text's segment ids, for a model that takes them (then for every text).
        """
        if self._runner is None or self._runner.done():
            raise ShuttingDown("server is shutting down")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        segments: list[IdArray | None] = [None] * len(sequences) if type_ids is None else list(type_ids)
        texts = [
            _Queued(ids, types, deadline, now, loop.create_future())
            for ids, types in zip(sequences, segments, strict=True)
        ]
        idle = not self._in_flight and not self._queue and not self._slots.locked()
        self._queue.extend(texts)
        try:
            if idle:
                await self._send_own()
            else:
                self._wakeup.set()
            if len(texts) == 1:
                rows = [await texts[0].future]
            else:
                rows = await asyncio.gather(*(text.future for text in texts))
        except BaseException:
            for text in texts:  # a cancelled caller's texts are skipped, not sent
                text.future.cancel()
            raise
        return SubmitResult(
            logits=[r[0] for r in rows],
            queue_s=max(r[1] for r in rows),
            inference_s=max(r[2] for r in rows),
        )

    async def _send_own(self) -> None:
        """The coalescer is idle: form and send the caller's batch in the caller's own task.

        The caller's cancellation then cancels the Triton call directly.
        """
        await self._slots.acquire()  # free: returns without suspending
        batch = self._form()
        if self._queue:
            self._wakeup.set()  # texts of this request left for later batches
        if batch is None:  # expired before it was sent
            self._slots.release()
        else:
            await self._send(batch)

    async def _run(self) -> None:
        """The coalescer's task: forms batches whenever texts wait and a slot is free."""
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._slots.acquire()
            if self._max_wait > 0 and self._in_flight:
                await self._linger()
            batch = self._form()
            if batch is None:
                self._slots.release()
            else:
                self._launch(batch)

    def _filled(self) -> bool:
        """A pass's worth of texts or tokens is queued: waiting for more is pointless."""
        if len(self._queue) >= self._max_texts:
            return True
        enough = FILL_TOKENS_PER_OVERHEAD * max(1, self.overhead_tokens)
        total = 0
        for text in self._queue:
            total += len(text.ids)
            if total >= enough:
                return True
        return False

    async def _linger(self) -> None:
        """While another batch runs, wait up to max_wait for this one to fill.

        Stops early once it is filled, or when nothing is in flight any more
        (the model would otherwise sit idle).
        """
        until = time.monotonic() + self._max_wait
        while self._in_flight and not self._filled():
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

    def _form(self) -> _Batch | None:
        """Plan the queue's head; take the group holding the oldest text, put the rest back.

        None when every text taken was abandoned or expired. A formed batch counts as in flight.
        """
        now = time.monotonic()
        taken: list[_Queued] = []  # in arrival order
        while self._queue and len(taken) < self._max_texts:
            text = self._queue.popleft()
            if text.future.done():
                continue  # caller gone
            if text.deadline <= now:  # an expired deadline never reaches Triton
                text.future.set_exception(DeadlineExceeded("deadline exceeded while queued"))
                continue
            taken.append(text)
        if not taken:
            return None
        group = taken if len(taken) == 1 else self._oldest_group(taken)
        if len(group) < len(taken):
            chosen = {id(text) for text in group}
            self._queue.extendleft(reversed([text for text in taken if id(text) not in chosen]))
        self._in_flight += 1
        return _Batch(group, self._pad)

    def _oldest_group(self, taken: list[_Queued]) -> list[_Queued]:
        by_length = sorted(taken, key=lambda text: len(text.ids))
        sizes = plan_groups(
            [len(text.ids) for text in by_length],
            max_texts=self._max_texts,
            max_tokens=self._max_tokens,
            overhead_tokens=self.overhead_tokens,
        )
        start = 0
        for size in sizes:
            group = by_length[start : start + size]
            if any(text is taken[0] for text in group):
                return group
            start += size
        raise AssertionError("the groups cover every text")

    def _launch(self, batch: _Batch) -> None:
        """Send `batch` from a task of its own, in its first caller's context.

        The task is created here, synchronously, so that its Triton call goes out
        before whatever else the event loop has queued (replies to callers).
        """
        task = asyncio.get_running_loop().create_task(self._send(batch), context=batch.texts[0].context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        batch.cancel_when_abandoned(task)

    async def _send(self, batch: _Batch) -> None:
        """Run `batch` on the slot its former holds, answer its callers, and pass the slot on."""
        next_batch = None
        batch.started = time.monotonic()
        try:
            logits = await self._infer(batch.input_ids, batch.attention_mask, batch.deadline, batch.token_type_ids)
            if logits.shape[0] != len(batch.texts):
                raise TritonFailure(f"triton returned {logits.shape[0]} rows for {len(batch.texts)} texts")
            next_batch = self._next_on_slot()
            if next_batch is not None:
                self._launch(next_batch)
            batch.answer(logits)
            if self._on_batch is not None or self._costs is not None:
                # After the replies are on their way: not on any caller's path.
                asyncio.get_running_loop().call_soon(self._record, batch)
        except Exception as exc:  # every waiting caller gets the batch's error
            batch.fail(exc)
        finally:
            self._in_flight -= 1
            if next_batch is None:
                self._slots.release()
            self._wakeup.set()  # a lingering batch stops waiting once nothing is in flight
        if next_batch is not None:
            await asyncio.sleep(0)  # the next batch goes out before this task's caller carries on

    def _record(self, batch: _Batch) -> None:
        stats = batch.stats()
        if self._costs is not None:
            self._costs.observe(stats.padded_tokens, batch.took)
        if self._on_batch is not None:
            self._on_batch(stats)

    def _next_on_slot(self) -> _Batch | None:
        """The batch to start on the slot a returning batch frees; None: release the slot instead.

        None too when the next batch should linger to fill (the coalescer's task does that).
        """
        if self._stopping or not self._queue:
            return None
        if self._max_wait > 0 and self._in_flight > 1 and not self._filled():
            return None
        return self._form()
