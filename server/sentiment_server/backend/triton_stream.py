"""One open `ModelStreamInfer` call to Triton, carrying one batch at a time."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc

from ..errors import BackendUnavailable, DeadlineExceeded, ServiceError
from .triton_errors import answer_error, rpc_error


class InferStream:
    """One open `ModelStreamInfer` call: how batches travel to Triton.

    Why not a unary call per batch: a unary call costs gRPC a new HTTP/2 stream
    and six operations, and the event loop hears of each through grpc's poller
    thread; a message on an open stream is one write and one read (bench/serve_ab.py
    measures the difference). Triton answers a stream's requests in the order
    they came, so one stream carries one batch at a time (a short batch must
    not wait behind a long one on the other instance): the endpoint keeps one
    stream per batch in flight.

    A batch that ends in any way but with Triton's answer (its caller gave up,
    its deadline passed, the write failed) closes its stream: a half-written
    stream would fail every later batch, and an abandoned batch still running
    in Triton would delay the next one on that stream. Answers are matched to
    requests by id all the same.
    """

    def __init__(self, stub: Any) -> None:
        self._call = stub.ModelStreamInfer()
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._started = False  # a first message went out
        self._closed = False
        self._reader = asyncio.get_running_loop().create_task(self._read_answers(), name="triton-stream")

    @property
    def is_open(self) -> bool:
        return not self._closed and not self._reader.done()

    @property
    def is_idle(self) -> bool:
        return not self._waiting

    async def infer(self, request: Any, timeout_s: float) -> Any:
        """Send `request` (its id is set here); its ModelInferResponse, or the converted error.

        Called on an idle stream only, so writes never overlap (grpc.aio takes one at a time).
        """
        request.id = str(next(self._ids))
        answer = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = answer
        try:
            async with asyncio.timeout(timeout_s):
                await self._write(request)
                return await answer
        except TimeoutError:
            raise DeadlineExceeded("deadline exceeded while waiting for the model") from None
        finally:
            self._waiting.pop(request.id, None)
            if not answer.done():
                answer.cancel()
                self.close()  # interrupted before Triton answered: never hand this stream out again
            elif not answer.cancelled():
                answer.exception()  # seen: asyncio would log it as never retrieved

    async def _write(self, request: Any) -> None:
        """A failed send means the stream is gone and the batch never reached Triton: UNAVAILABLE, so
        the pool may retry it elsewhere. (Writing on a stream whose Triton just died can fail as
        INTERNAL "Internal error from Core", which the status table would have called a model error.)"""
        try:
            if self._started:
                await self._call.write(request)
                return
            # Until the call's first message is out, grpc.aio's write() waits for the call to start,
            # and that wait never ends when the call fails first (Triton down): race it against the
            # reader, which ends with the call.
            write = asyncio.ensure_future(self._call.write(request))
            try:
                await asyncio.wait((write, self._reader), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not write.done():
                    write.cancel()
            if write.cancelled():
                raise BackendUnavailable("model backend unavailable")
            write.result()
            self._started = True
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise BackendUnavailable("model backend unavailable") from exc

    async def _read_answers(self) -> None:
        error: ServiceError = BackendUnavailable("model backend unavailable")
        try:
            while True:
                answer = await self._call.read()
                if answer is grpc.aio.EOF:
                    break
                waiting = self._waiting.pop(answer.infer_response.id, None)
                if waiting is None or waiting.done():
                    continue  # its caller gave up
                if answer.error_message:
                    waiting.set_exception(answer_error(answer.error_message))
                else:
                    waiting.set_result(answer.infer_response)
                # The caller answers its own caller before the next read is posted:
                # posting it first delayed that reply.
                await asyncio.sleep(0)
        except grpc.aio.AioRpcError as exc:
            error = rpc_error(exc)
            error.__cause__ = exc
        finally:
            self._fail_waiting(error)

    def _fail_waiting(self, error: ServiceError) -> None:
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(error)
        self._waiting.clear()

    def close(self) -> None:
        """Ends the call (Triton waits for open streams before it exits) and fails what still waits.

        Here, not only in the reader: a reader cancelled before it first ran never runs its `finally`.
        """
        self._closed = True
        self._call.cancel()
        self._reader.cancel()
        self._fail_waiting(BackendUnavailable("model backend unavailable"))
