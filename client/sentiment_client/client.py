"""Sync and asyncio clients for sentiment.v1.SentimentService (plus grpc.health.v1 Health)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

from .errors import SentimentError
from .options import ClientOptions, create_aio_channel, create_channel
from .retry import remaining_s, retry_delay
from .types import ClassifyResult, ModelInfo, ModelList, TokenizedText

if TYPE_CHECKING:
    from typing import Self

# "window": long texts as overlapping windows whose answers are aggregated (single texts only).
Truncation = Literal["truncate", "reject", "window"]
PairTruncation = Literal["truncate", "reject"]
Aggregation = Literal["mean", "mean_logits", "max"]
Texts = str | Iterable[str]  # a single string is one text
TextPairs = Iterable[tuple[str, str]]  # (text, text_pair), classified together

_R = TypeVar("_R")
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_STRATEGIES = {
    "truncate": pb.TRUNCATION_STRATEGY_TRUNCATE,
    "reject": pb.TRUNCATION_STRATEGY_REJECT,
    "window": pb.TRUNCATION_STRATEGY_WINDOW,
}
_AGGREGATIONS = {
    "mean": pb.WINDOW_AGGREGATION_MEAN,
    "mean_logits": pb.WINDOW_AGGREGATION_MEAN_LOGITS,
    "max": pb.WINDOW_AGGREGATION_MAX,
}


def _texts(texts: Texts) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _pairs(pairs: TextPairs) -> list[pb.TextPair]:
    out = []
    for pair in pairs:
        # A bare string would unpack into characters: ("ab", "cd") is not a list of pairs.
        if isinstance(pair, str) or len(pair) != 2:
            raise TypeError(f"each pair must be a (text, text_pair) tuple, got {pair!r}")
        out.append(pb.TextPair(text=pair[0], text_pair=pair[1]))
    return out


def _truncation(
    max_length: int,
    truncation: Truncation,
    stride: int | None = None,
    aggregation: Aggregation | None = None,
) -> pb.TruncationOptions:
    """`stride` None stays unset (the server's default); `aggregation` None is the server's default (mean)."""
    return pb.TruncationOptions(
        strategy=_STRATEGIES[truncation],
        max_length=max_length,
        stride=stride,
        aggregation=pb.WINDOW_AGGREGATION_UNSPECIFIED if aggregation is None else _AGGREGATIONS[aggregation],
    )


def _classify_request(
    texts: Texts = (),
    *,
    pairs: TextPairs = (),
    top_k: int,
    return_logits: bool,
    truncation: pb.TruncationOptions,
    return_windows: bool = False,
    model: str = "",
) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(
        texts=_texts(texts),
        pairs=_pairs(pairs),
        top_k=top_k,
        return_logits=return_logits,
        truncation=truncation,
        return_windows=return_windows,
        model=model,
    )


def _tokenize_request(
    texts: Texts = (), *, pairs: TextPairs = (), pad: bool, truncation: pb.TruncationOptions, model: str = ""
) -> pb.TokenizeRequest:
    return pb.TokenizeRequest(texts=_texts(texts), pairs=_pairs(pairs), pad=pad, truncation=truncation, model=model)


def _status_name(response: health_pb2.HealthCheckResponse) -> str:
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name


def _options(target: str | None, options: ClientOptions | None) -> ClientOptions:
    options = options or ClientOptions()
    return replace(options, target=target) if target else options


class SentimentClient:
    """Blocking client. `with SentimentClient("host:50051") as c: c.classify(["I love it"])`.

    Unary calls retry on UNAVAILABLE (see `ClientOptions`) within one overall deadline:
    `timeout` per call, else `options.timeout_s`. Failures raise `SentimentError`.
    `model` names one of the server's models (`list_models`); "" is its default model, and an
    unknown name raises `SentimentError` with code NOT_FOUND.
    """

    def __init__(self, target: str | None = None, *, options: ClientOptions | None = None) -> None:
        self.options = _options(target, options)
        self._channel = create_channel(self.options)
        self._stub = pb_grpc.SentimentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._metadata = self.options.metadata()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, method: Callable[..., _R], request: object, timeout: float | None) -> _R:
        deadline = time.monotonic() + (self.options.timeout_s if timeout is None else timeout)
        for attempt in itertools.count(1):
            try:
                return method(request, timeout=remaining_s(deadline), metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = SentimentError.from_rpc_error(rpc_error)
                delay = retry_delay(error, attempt, deadline, self.options)
                if delay is None:
                    raise error from rpc_error
                time.sleep(delay)
        raise AssertionError("unreachable")

    def classify(
        self,
        texts: Texts,
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        aggregation: Aggregation | None = None,
        return_windows: bool = False,
        model: str = "",
        timeout: float | None = None,
    ) -> ClassifyResult:
        """One result per text. `stride`, `aggregation` and `return_windows` apply to truncation "window"."""
        request = _classify_request(
            texts,
            top_k=top_k,
            return_logits=return_logits,
            truncation=_truncation(max_length, truncation, stride, aggregation),
            return_windows=return_windows,
            model=model,
        )
        return self._classify(request, timeout)

    def classify_pairs(
        self,
        pairs: TextPairs,
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: PairTruncation = "truncate",
        model: str = "",
        timeout: float | None = None,
    ) -> ClassifyResult:
        """One result per (text, text_pair), each pair one sequence (NLI, cross-encoders)."""
        request = _classify_request(
            pairs=pairs,
            top_k=top_k,
            return_logits=return_logits,
            truncation=_truncation(max_length, truncation),
            model=model,
        )
        return self._classify(request, timeout)

    def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> ClassifyResult:
        response: pb.ClassifyResponse = self._unary(self._stub.Classify, request, timeout)
        return ClassifyResult.from_proto(response)

    def classify_stream(
        self,
        requests: Iterable[Texts],
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        aggregation: Aggregation | None = None,
        return_windows: bool = False,
        model: str = "",
        timeout: float | None = None,
    ) -> Iterator[ClassifyResult]:
        """One result per batch of texts, in order, over one ClassifyStream call.

        Not retried; `timeout` bounds the whole stream (None: no deadline).
        """
        options = _truncation(max_length, truncation, stride, aggregation)
        stream_requests = (
            pb.ClassifyStreamRequest(
                request=_classify_request(
                    texts,
                    top_k=top_k,
                    return_logits=return_logits,
                    truncation=options,
                    return_windows=return_windows,
                    model=model,
                ),
                correlation_id=str(i),
            )
            for i, texts in enumerate(requests)
        )
        call = self._stub.ClassifyStream(stream_requests, timeout=timeout, metadata=self._metadata)
        try:
            for response in call:
                yield ClassifyResult.from_proto(response.response)
        except grpc.RpcError as rpc_error:
            raise SentimentError.from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()

    def tokenize(
        self,
        texts: Texts,
        *,
        pad: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> list[TokenizedText]:
        """The ids Classify sees; with truncation "window" each result's `overflowing` holds its other windows."""
        request = _tokenize_request(texts, pad=pad, truncation=_truncation(max_length, truncation, stride), model=model)
        return self._tokenize(request, timeout)

    def tokenize_pairs(
        self,
        pairs: TextPairs,
        *,
        pad: bool = False,
        max_length: int = 0,
        truncation: PairTruncation = "truncate",
        model: str = "",
        timeout: float | None = None,
    ) -> list[TokenizedText]:
        request = _tokenize_request(pairs=pairs, pad=pad, truncation=_truncation(max_length, truncation), model=model)
        return self._tokenize(request, timeout)

    def _tokenize(self, request: pb.TokenizeRequest, timeout: float | None) -> list[TokenizedText]:
        response: pb.TokenizeResponse = self._unary(self._stub.Tokenize, request, timeout)
        return [TokenizedText.from_proto(t) for t in response.results]

    def model_info(self, *, model: str = "", timeout: float | None = None) -> ModelInfo:
        """The named model (`model` "": the server's default)."""
        request = pb.GetModelInfoRequest(model=model)
        response: pb.GetModelInfoResponse = self._unary(self._stub.GetModelInfo, request, timeout)
        return ModelInfo.from_proto(response)

    def list_models(self, *, timeout: float | None = None) -> ModelList:
        """Every model the server serves, sorted by name, and its default one."""
        response: pb.ListModelsResponse = self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return ModelList.from_proto(response)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name: "SERVING", "NOT_SERVING", "UNKNOWN" or "SERVICE_UNKNOWN"."""
        request = health_pb2.HealthCheckRequest(service=service)
        return _status_name(self._unary(self._health, request, timeout))


class AsyncSentimentClient:
    """asyncio client with the same methods as `SentimentClient`, awaited.

    `async with AsyncSentimentClient("host:50051") as c: await c.classify(["I love it"])`.
    """

    def __init__(self, target: str | None = None, *, options: ClientOptions | None = None) -> None:
        self.options = _options(target, options)
        self._channel = create_aio_channel(self.options)
        self._stub = pb_grpc.SentimentServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._health = self._channel.unary_unary(
            _HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        self._metadata = self.options.metadata()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, method: Callable[..., Awaitable[_R]], request: object, timeout: float | None) -> _R:
        deadline = time.monotonic() + (self.options.timeout_s if timeout is None else timeout)
        for attempt in itertools.count(1):
            try:
                return await method(request, timeout=remaining_s(deadline), metadata=self._metadata)
            except grpc.RpcError as rpc_error:
                error = SentimentError.from_rpc_error(rpc_error)
                delay = retry_delay(error, attempt, deadline, self.options)
                if delay is None:
                    raise error from rpc_error
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def classify(
        self,
        texts: Texts,
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        aggregation: Aggregation | None = None,
        return_windows: bool = False,
        model: str = "",
        timeout: float | None = None,
    ) -> ClassifyResult:
        request = _classify_request(
            texts,
            top_k=top_k,
            return_logits=return_logits,
            truncation=_truncation(max_length, truncation, stride, aggregation),
            return_windows=return_windows,
            model=model,
        )
        return await self._classify(request, timeout)

    async def classify_pairs(
        self,
        pairs: TextPairs,
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: PairTruncation = "truncate",
        model: str = "",
        timeout: float | None = None,
    ) -> ClassifyResult:
        request = _classify_request(
            pairs=pairs,
            top_k=top_k,
            return_logits=return_logits,
            truncation=_truncation(max_length, truncation),
            model=model,
        )
        return await self._classify(request, timeout)

    async def _classify(self, request: pb.ClassifyRequest, timeout: float | None) -> ClassifyResult:
        response: pb.ClassifyResponse = await self._unary(self._stub.Classify, request, timeout)
        return ClassifyResult.from_proto(response)

    async def classify_stream(
        self,
        requests: Iterable[Texts] | AsyncIterable[Texts],
        *,
        top_k: int = 0,
        return_logits: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        aggregation: Aggregation | None = None,
        return_windows: bool = False,
        model: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[ClassifyResult]:
        """Async version of `SentimentClient.classify_stream`; `requests` may be async."""

        options = _truncation(max_length, truncation, stride, aggregation)

        async def stream_requests() -> AsyncIterator[pb.ClassifyStreamRequest]:
            batches = requests if isinstance(requests, AsyncIterable) else _aiter(requests)
            i = 0
            async for texts in batches:
                request = _classify_request(
                    texts,
                    top_k=top_k,
                    return_logits=return_logits,
                    truncation=options,
                    return_windows=return_windows,
                    model=model,
                )
                yield pb.ClassifyStreamRequest(request=request, correlation_id=str(i))
                i += 1

        call = self._stub.ClassifyStream(stream_requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                yield ClassifyResult.from_proto(response.response)
        except grpc.RpcError as rpc_error:
            raise SentimentError.from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()

    async def tokenize(
        self,
        texts: Texts,
        *,
        pad: bool = False,
        max_length: int = 0,
        truncation: Truncation = "truncate",
        stride: int | None = None,
        model: str = "",
        timeout: float | None = None,
    ) -> list[TokenizedText]:
        request = _tokenize_request(texts, pad=pad, truncation=_truncation(max_length, truncation, stride), model=model)
        return await self._tokenize(request, timeout)

    async def tokenize_pairs(
        self,
        pairs: TextPairs,
        *,
        pad: bool = False,
        max_length: int = 0,
        truncation: PairTruncation = "truncate",
        model: str = "",
        timeout: float | None = None,
    ) -> list[TokenizedText]:
        request = _tokenize_request(pairs=pairs, pad=pad, truncation=_truncation(max_length, truncation), model=model)
        return await self._tokenize(request, timeout)

    async def _tokenize(self, request: pb.TokenizeRequest, timeout: float | None) -> list[TokenizedText]:
        response: pb.TokenizeResponse = await self._unary(self._stub.Tokenize, request, timeout)
        return [TokenizedText.from_proto(t) for t in response.results]

    async def model_info(self, *, model: str = "", timeout: float | None = None) -> ModelInfo:
        request = pb.GetModelInfoRequest(model=model)
        response: pb.GetModelInfoResponse = await self._unary(self._stub.GetModelInfo, request, timeout)
        return ModelInfo.from_proto(response)

    async def list_models(self, *, timeout: float | None = None) -> ModelList:
        response: pb.ListModelsResponse = await self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return ModelList.from_proto(response)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        return _status_name(await self._unary(self._health, request, timeout))


async def _aiter(items: Iterable[Texts]) -> AsyncIterator[Texts]:
    for item in items:
        yield item
