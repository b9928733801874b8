"""Per-call API key: checked before any work; health stays open for probes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]

API_KEY_HEADER = "x-api-key"
_EXEMPT_PREFIX = "/grpc.health.v1.Health/"


def _provided_key(details: grpc.HandlerCallDetails) -> bytes:
    for key, value in details.invocation_metadata or ():
        if key == API_KEY_HEADER:
            return value.encode() if isinstance(value, str) else bytes(value)
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip().encode()
    return b""


async def _deny(request: Any, context: Context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")


async def _deny_stream(request_iterator: Any, context: Context) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str) -> None:
        self._key = api_key.encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        if method.startswith(_EXEMPT_PREFIX) or hmac.compare_digest(_provided_key(handler_call_details), self._key):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is not None and handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(_deny_stream)
        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(_deny)
        return grpc.unary_unary_rpc_method_handler(_deny)
