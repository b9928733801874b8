"""Step 2: the only module that talks to Triton.

It speaks Triton's gRPC protocol with tritonclient's generated messages and
one grpc.aio channel per endpoint. Batches travel on open `ModelStreamInfer`
calls, one batch per call at a time (see `_InferStream`). Triton's errors are
turned into this service's errors here, at the boundary, so nothing above this
module knows Triton's messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .. import tracing
from ..errors import BackendUnavailable, DeadlineExceeded, ModelMismatch, ServiceError, TritonFailure
from ..model_artifact import ATTENTION_MASK, INPUT_IDS, ModelInfo

log = logging.getLogger(__name__)

_RETRY_FIRST_BACKOFF_S = 0.05
_RETRY_MAX_BACKOFF_S = 1.0
_CAUSE_LOG_INTERVAL_S = 5.0  # an endpoint's failures are logged at most this often
_PROBE_AFTER_FAILURES = 3  # consecutive data-path failures that make an endpoint prove itself again

# Reconnect fast after a Triton restart (gRPC's default backoff grows to 120 s),
# and notice a dead peer through keepalive instead of waiting on TCP.
CHANNEL_ARGS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class TritonTLS:
    """PEM files; None: the system's roots, and no client certificate."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            read(self.root_certificates), read(self.private_key), read(self.certificate_chain)
        )


def _convert(code: grpc.StatusCode | None, details: str) -> ServiceError:
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return BackendUnavailable("model backend unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("deadline exceeded while waiting for the model")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendUnavailable("model backend overloaded")
    return _answer_error(f"{code} {details}")


def _rpc_error(exc: grpc.aio.AioRpcError) -> ServiceError:
    return _convert(exc.code(), exc.details() or "")


# What Triton's Python backend answers while a model instance's stub process is dead: the model is
# not usable there until Triton restarts (the supervisor does), so the batch may be retried.
_STUB_DOWN = re.compile(r"[Ss]tub process.*(not healthy|unhealthy)")


def _answer_error(message: str) -> ServiceError:
    if _STUB_DOWN.search(message):
        error: ServiceError = BackendUnavailable("model backend unavailable")
        error.__cause__ = TritonFailure(message)
        return error
    return TritonFailure(f"triton error: {message}")


class _InferStream:
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
                    waiting.set_exception(_answer_error(answer.error_message))
                else:
                    waiting.set_result(answer.infer_response)
                # The caller answers its own caller before the next read is posted:
                # posting it first put about 0.1 ms on that reply's path.
                await asyncio.sleep(0)
        except grpc.aio.AioRpcError as exc:
            error = _rpc_error(exc)
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


@dataclass(eq=False)  # identity: endpoints live in sets
class TritonEndpoint:
    """One Triton server: readiness, model checks and inference for one model."""

    url: str
    model_name: str
    model_version: str = ""
    tls: TritonTLS | None = None
    streams: bool = True  # False: every batch is a unary call
    ready: bool = False
    in_flight: int = 0
    # Set after repeated data-path failures: the endpoint counts as ready again only once an inference works.
    needs_probe: bool = False
    _failures: int = field(default=0, init=False, repr=False)  # consecutive failed batches
    _last_cause_logged: float = field(default=float("-inf"), init=False, repr=False)
    _channel: grpc.aio.Channel = field(init=False, repr=False)
    _stub: Any = field(init=False, repr=False)
    _streams: list[_InferStream] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._open_channel()

    def _open_channel(self) -> None:
        if self.tls is None:
            self._channel = grpc.aio.insecure_channel(self.url, options=CHANNEL_ARGS)
        else:
            self._channel = grpc.aio.secure_channel(self.url, self.tls.credentials(), options=CHANNEL_ARGS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def is_model_ready(self, timeout_s: float) -> bool:
        request = service_pb2.ModelReadyRequest(name=self.model_name, version=self.model_version)
        try:
            self.ready = bool((await self._stub.ModelReady(request, timeout=timeout_s)).ready)
        except grpc.aio.AioRpcError:
            self.ready = False
        if not self.ready:
            self._close_streams()  # a Triton that is shutting down waits for them
        return self.ready

    async def check_model(self, info: ModelInfo, timeout_s: float = 10.0) -> str:
        """Verify Triton's model against the tokenizer and labels; return the output tensor name."""
        request = service_pb2.ModelMetadataRequest(name=self.model_name, version=self.model_version)
        try:
            meta = await self._stub.ModelMetadata(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise _rpc_error(exc) from exc
        inputs = {t.name: t for t in meta.inputs}
        for name in (INPUT_IDS, ATTENTION_MASK):
            if name not in inputs:
                raise ModelMismatch(f"{self.url}: model {self.model_name!r} has no input {name!r}: {sorted(inputs)}")
            if inputs[name].datatype != "INT64":
                raise ModelMismatch(f"{self.url}: input {name!r} is {inputs[name].datatype}, expected INT64")
        if len(meta.outputs) != 1:
            raise ModelMismatch(f"{self.url}: expected one output (logits), found {len(meta.outputs)}")
        out = meta.outputs[0]
        dims = [int(d) for d in out.shape]
        if out.datatype != "FP32" or not dims or dims[-1] != len(info.labels):
            raise ModelMismatch(
                f"{self.url}: output {out.name!r} is {out.datatype}{dims}, "
                f"expected FP32 with {len(info.labels)} labels ({', '.join(info.labels)})"
            )
        return str(out.name)

    def _request(
        self, output_name: str, input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> Any:
        request = service_pb2.ModelInferRequest(model_name=self.model_name, model_version=self.model_version)
        for name, array in ((INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask)):
            request.inputs.add(name=name, datatype="INT64", shape=array.shape)
            request.raw_input_contents.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        request.outputs.add(name=output_name)
        return request

    async def infer(
        self,
        output_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> npt.NDArray[np.float32]:
        """`headers` travel as gRPC metadata (the W3C trace context, when tracing): such a batch goes
        as a unary call, since a message on a stream cannot carry metadata of its own."""
        if timeout_s <= 0:
            raise DeadlineExceeded("deadline exceeded before inference")
        request = self._request(output_name, input_ids, attention_mask)
        self.in_flight += 1
        try:
            if headers or not self.streams:
                try:
                    response = await self._stub.ModelInfer(
                        request, metadata=tuple((headers or {}).items()), timeout=timeout_s
                    )
                except grpc.aio.AioRpcError as exc:
                    raise _rpc_error(exc) from exc
            else:
                response = await self._idle_stream().infer(request, timeout_s)
        except BackendUnavailable as exc:
            self.ready = False
            await self._data_path_failed(exc)
            raise
        finally:
            self.in_flight -= 1
        self._failures = 0
        return _logits(response, output_name, len(input_ids))

    async def _data_path_failed(self, error: BackendUnavailable) -> None:
        """Say why (at most every few seconds); after repeated failures start over with a new channel."""
        self._failures += 1
        now = time.monotonic()
        if now - self._last_cause_logged >= _CAUSE_LOG_INTERVAL_S:
            self._last_cause_logged = now
            cause = error.__cause__
            log.warning(
                "triton endpoint %s: batch failed (%s), %d in a row",
                self.url,
                _describe(cause) if cause is not None else error,
                self._failures,
            )
        if self._failures == _PROBE_AFTER_FAILURES:
            log.warning("triton endpoint %s: new channel and streams; not ready until an inference succeeds", self.url)
            self.needs_probe = True
            self._close_streams()
            old = self._channel
            self._open_channel()
            await old.close()

    async def probe(self, output_name: str, timeout_s: float) -> bool:
        """One tiny inference on a unary call: does the data path work, whatever ModelReady says?"""
        ids = np.zeros((1, 1), dtype=np.int64)
        try:
            await self._stub.ModelInfer(self._request(output_name, ids, np.ones_like(ids)), timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.warning("triton endpoint %s: probe inference failed: %s", self.url, _describe(exc))
            return False
        log.info("triton endpoint %s: probe inference succeeded", self.url)
        self.needs_probe = False
        self._failures = 0
        return True

    def _idle_stream(self) -> _InferStream:
        self._streams = [stream for stream in self._streams if stream.is_open]
        for stream in self._streams:
            if stream.is_idle:
                return stream
        stream = _InferStream(self._stub)  # as many as batches in flight: the coalescer bounds them
        self._streams.append(stream)
        return stream

    def _close_streams(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams = []

    async def close(self) -> None:
        self._close_streams()
        await self._channel.close()


def _describe(cause: BaseException) -> str:
    if isinstance(cause, grpc.aio.AioRpcError):
        return f"{cause.code().name}: {cause.details()}"
    return repr(cause)


def _logits(response: Any, output_name: str, rows: int) -> npt.NDArray[np.float32]:
    outputs = [i for i, out in enumerate(response.outputs) if out.name == output_name]
    if not outputs or len(response.raw_output_contents) <= outputs[0]:
        raise TritonFailure("triton returned no logits")
    out = response.outputs[outputs[0]]
    if out.datatype != "FP32" or len(out.shape) != 2 or out.shape[0] != rows:
        raise TritonFailure(f"triton returned {out.datatype}{list(out.shape)} logits for {rows} texts")
    return np.frombuffer(response.raw_output_contents[outputs[0]], dtype=np.float32).reshape(rows, int(out.shape[1]))


class TritonPool:
    """Spreads batches over one or more Triton endpoints; skips the ones not ready.

    Inference is idempotent, so a batch that failed with UNAVAILABLE is retried:
    at once on another endpoint (or a fresh stream on the same one), then with
    backoff while Triton comes back (a restart), for up to `retry_s` and never
    past the caller's deadline.
    """

    def __init__(self, endpoints: list[TritonEndpoint], retry_s: float = 0.0) -> None:
        if not endpoints:
            raise ValueError("at least one Triton endpoint is needed")
        self.endpoints = endpoints
        self.retry_s = retry_s
        self.output_name = ""
        self._info: ModelInfo | None = None
        self._checked: set[TritonEndpoint] = set()
        self._rejected: set[TritonEndpoint] = set()

    @property
    def replicas(self) -> int:
        return len(self.endpoints)

    @property
    def any_ready(self) -> bool:
        return any(e.ready for e in self.endpoints)

    async def refresh(self, timeout_s: float) -> bool:
        """Probe every endpoint; an endpoint seen ready for the first time is checked before use."""
        await asyncio.gather(*(e.is_model_ready(timeout_s) for e in self.endpoints))
        for endpoint in self.endpoints:
            if endpoint.ready and endpoint.needs_probe and self.output_name:
                endpoint.ready = await endpoint.probe(self.output_name, timeout_s)
        if self._info is not None:
            for endpoint in self.endpoints:
                if endpoint.ready and endpoint not in self._checked and endpoint not in self._rejected:
                    try:
                        await self._check(endpoint, self._info)
                    except ModelMismatch as exc:
                        log.error("not using Triton endpoint %s: %s", endpoint.url, exc)
                    except ServiceError:
                        endpoint.ready = False  # went away while being checked; next poll tries again
        return self.any_ready

    async def _check(self, endpoint: TritonEndpoint, info: ModelInfo) -> None:
        try:
            name = await endpoint.check_model(info)
            if self.output_name and name != self.output_name:
                raise ModelMismatch(f"{endpoint.url}: output {name!r}, other endpoints use {self.output_name!r}")
        except ModelMismatch:
            self._rejected.add(endpoint)  # a different model must never answer
            endpoint.ready = False
            raise
        self.output_name = name
        self._checked.add(endpoint)

    async def check_model(self, info: ModelInfo) -> None:
        """Check the endpoints that are ready now; the others are checked when they first become ready."""
        self._info = info
        for endpoint in self.endpoints:
            if endpoint.ready:
                await self._check(endpoint, info)

    def _pick(self, exclude: set[TritonEndpoint]) -> TritonEndpoint | None:
        usable = [e for e in self.endpoints if e in self._checked and e not in exclude]
        candidates = [e for e in usable if e.ready]
        if not candidates:
            # Nothing known ready: try a checked one anyway; the call itself is the freshest probe.
            candidates = usable
        return min(candidates, key=lambda e: e.in_flight) if candidates else None

    async def infer(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        deadline: float,
    ) -> npt.NDArray[np.float32]:
        """`deadline` is a time.monotonic() instant. Runs in the context of the batch's first caller, whose
        trace context (when tracing) goes to Triton as W3C headers."""
        give_up = min(deadline, time.monotonic() + self.retry_s)
        tried: set[TritonEndpoint] = set()
        for attempt in itertools.count():
            endpoint = self._pick(tried) or self._pick(set())
            try:
                if endpoint is None:
                    raise BackendUnavailable("model backend unavailable")
                tried.add(endpoint)
                return await endpoint.infer(
                    self.output_name, input_ids, attention_mask, deadline - time.monotonic(), tracing.current_headers()
                )
            except BackendUnavailable:
                # The first retry goes at once (another endpoint, or a fresh stream); later ones wait for Triton.
                if attempt == 0:
                    delay, limit = 0.0, deadline
                else:
                    delay, limit = min(_RETRY_MAX_BACKOFF_S, _RETRY_FIRST_BACKOFF_S * 2 ** (attempt - 1)), give_up
                if time.monotonic() + delay >= limit:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.endpoints))
