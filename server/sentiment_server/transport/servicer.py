"""The service's RPCs: each call's request id, admission, deadline, the pipeline, and the one refusal path.

The conversions between protobuf messages and the pipeline's types are in `messages`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .. import tracing
from ..core.pipeline import Timings
from ..core.served_models import ServedModels, ServedVersion
from ..errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    ServiceError,
    ShuttingDown,
    TritonFailure,
    to_status,
)
from . import messages
from .admission import Admission
from .metrics import Metrics
from .registration import MALFORMED, MALFORMED_MESSAGE

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STREAM_WINDOW = 64  # stream messages processed concurrently; responses still leave in order

T = TypeVar("T")
Work = Callable[[Any, ServedVersion, str], Awaitable[T]]  # (request, its model's version, request id) -> response

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class DeadlinePolicy:
    cap_s: float  # longest any Triton call may take
    margin_s: float  # kept back from the caller's deadline to send the reply

    def deadline(self, context: Context) -> float:
        budget = self.cap_s
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - self.margin_s)
        if budget <= 0:
            raise DeadlineExceeded("deadline too short to classify")
        return time.monotonic() + budget


class _Refusal(Exception):
    """A call's refusal: its status, its caller-facing message and its request id."""

    def __init__(self, code: grpc.StatusCode, message: str, rid: str) -> None:
        super().__init__(message)
        self.code, self.message, self.rid = code, message, rid

    async def abort(self, context: Context) -> None:
        await context.abort(self.code, self.message, trailing_metadata=((REQUEST_ID_KEY, self.rid),))


@dataclass(frozen=True)
class _RefusedEarly:
    """Stands in for the request of a call refused before its handler ran."""

    error: ServiceError


def request_id(metadata: Iterable[tuple[str, Any]]) -> str:
    """The caller's x-request-id when it is safe to log, else a fresh one (32 hex digits, like uuid4().hex)."""
    for key, value in metadata:
        if key == REQUEST_ID_KEY and isinstance(value, str) and _SAFE_REQUEST_ID.match(value):
            return value
    return secrets.token_hex(16)


class SentimentServicer(pb_grpc.SentimentServiceServicer):
    def __init__(
        self,
        models: ServedModels,
        admission: Admission,
        deadlines: DeadlinePolicy,
        metrics: Metrics,
        access_log: bool = False,
    ) -> None:
        self.models = models
        self.access_log = access_log
        self.admission = admission
        self.deadlines = deadlines
        self.metrics = metrics
        self.accepting = True
        self._stages = metrics.stages()

    async def _handle(self, method: str, context: Context, request: Any, work: Work[T]) -> T:
        """A unary call: `_run`, and its refusal answered as the call's status."""
        try:
            return await self._run(method, context, request, work)
        except _Refusal as refusal:
            await refusal.abort(context)
            raise  # unreachable: abort raises

    async def _run(self, method: str, context: Context, request: Any, work: Work[T]) -> T:
        """Every call, and every refusal, passes here: request id, admission, the error table, metrics, log.

        A refusal is raised as `_Refusal`, for the RPC's own handler to answer: a stream's failing message
        must wait for the responses ahead of it.
        """
        metadata = context.invocation_metadata() or ()
        rid = request_id(metadata)
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        started = time.monotonic()
        code = grpc.StatusCode.OK
        texts = 0
        model = ""  # the metrics' label: only a model this service serves
        try:
            if request is MALFORMED:
                raise InvalidInput(MALFORMED_MESSAGE)
            if isinstance(request, _RefusedEarly):
                raise request.error
            if not self.accepting:
                raise ShuttingDown("server is shutting down")
            served = self.models.get(messages.model_in(request))
            model = served.name
            texts = messages.texts_in(request)
            with (
                self.admission.admit(texts),
                tracing.server_span(method, metadata, rid),
            ):
                self.metrics.in_flight.inc()
                try:
                    return await work(request, served, rid)
                finally:
                    self.metrics.in_flight.dec()
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = to_status(exc)
            if code == grpc.StatusCode.INTERNAL:  # ours to fix: keep the detail, never send it
                log.error("request %s %s failed: %r", rid, method, exc, exc_info=not isinstance(exc, TritonFailure))
            else:
                log.debug("request %s %s: %s %s", rid, method, code.name, message)
            if isinstance(exc, (BackendUnavailable, TritonFailure)):
                self.metrics.triton_errors.labels(kind=type(exc).__name__).inc()
            raise _Refusal(code, message, rid) from exc
        finally:
            elapsed = time.monotonic() - started
            # Metrics are kept once the reply is on its way, not on the caller's path.
            asyncio.get_running_loop().call_soon(self.metrics.count_request, method, code.name, model, elapsed)
            if self.access_log:
                log.info(
                    "request %s %s %s model=%s texts=%d %.1fms", rid, method, code.name, model, texts, elapsed * 1000
                )

    async def refuse(self, method: str, context: Context, error: ServiceError) -> None:
        """A call refused before it reaches a handler (the API-key check): answered like any other refusal."""

        async def never(request: Any, served: ServedVersion, rid: str) -> None:
            raise AssertionError("a call refused early has no work")

        await self._handle(method, context, _RefusedEarly(error), never)

    async def _classify(
        self, request: pb.ClassifyRequest, served: ServedVersion, context: Context, rid: str
    ) -> pb.ClassifyResponse:
        texts = messages.inputs(request)
        options = messages.classify_options(request)
        output = await served.pipeline.classify(texts, options, self.deadlines.deadline(context))
        asyncio.get_running_loop().call_soon(self._observe, output.timings, served.name, len(texts))
        return messages.classify_response(output, rid, served.name, served.version)

    def _observe(self, t: Timings, model: str, texts: int) -> None:
        stages = self._stages
        stages.tokenize.observe(t.tokenize_s)
        stages.queue.observe(t.queue_s)
        stages.triton.observe(t.inference_s)
        stages.total.observe(t.total_s)
        self.metrics.count_texts(model, texts)

    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        return await self._handle(
            "Classify", context, request, lambda r, served, rid: self._classify(r, served, context, rid)
        )

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[pb.ClassifyStreamResponse]:
        """Messages are classified concurrently (a bounded window) and answered in order.

        The first failing message ends the stream with its status; the responses
        before it have been sent.
        """
        window = asyncio.Semaphore(_STREAM_WINDOW)
        queue: asyncio.Queue[asyncio.Task[pb.ClassifyStreamResponse] | None] = asyncio.Queue()

        async def one(message: Any) -> pb.ClassifyStreamResponse:
            response = await self._run(
                "ClassifyStream",
                context,
                message,
                lambda m, served, rid: self._classify(m.request, served, context, rid),
            )
            return pb.ClassifyStreamResponse(response=response, correlation_id=message.correlation_id)

        async def read() -> None:
            try:
                async for message in request_iterator:
                    await window.acquire()
                    queue.put_nowait(asyncio.ensure_future(one(message)))
                    if message is MALFORMED:
                        break  # the input ends there: that message fails the stream in its turn
            finally:
                queue.put_nowait(None)  # the end, however reading ended

        reader = asyncio.ensure_future(read())
        try:
            while (task := await queue.get()) is not None:
                try:
                    yield await task
                except _Refusal as refusal:  # its turn: the responses ahead of it are out
                    await refusal.abort(context)
                finally:
                    window.release()
            await reader  # re-raises what ended the reading, e.g. a malformed message
        finally:
            reader.cancel()
            while not queue.empty():
                pending = queue.get_nowait()
                if pending is not None:
                    pending.cancel()

    async def Tokenize(self, request: pb.TokenizeRequest, context: Context) -> pb.TokenizeResponse:
        async def work(request: pb.TokenizeRequest, served: ServedVersion, rid: str) -> pb.TokenizeResponse:
            options = request.truncation
            pipeline = served.pipeline
            encoded = await pipeline.tokenize(
                messages.inputs(request), options.max_length, messages.truncation(options), messages.stride(options)
            )
            return messages.tokenize_response(encoded, request.pad, pipeline.tokenizer.pad_token_id, rid)

        return await self._handle("Tokenize", context, request, work)

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context: Context) -> pb.GetModelInfoResponse:
        async def work(request: pb.GetModelInfoRequest, served: ServedVersion, rid: str) -> pb.GetModelInfoResponse:
            return messages.model_info_response(served.info)

        return await self._handle("GetModelInfo", context, request, work)

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        async def work(request: pb.ListModelsRequest, served: ServedVersion, rid: str) -> pb.ListModelsResponse:
            return messages.list_models_response(self.models.current(), self.models.default)

        return await self._handle("ListModels", context, request, work)
