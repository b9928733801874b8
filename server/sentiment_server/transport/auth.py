"""Per-call API key: checked before any work; health stays open for probes.

A refused call is answered by the servicer's `refuse`, like every other
refusal: UNAUTHENTICATED with the request id, the metric and the access log.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ..errors import ServiceError, Unauthenticated

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
    Refuse = Callable[[str, Context, ServiceError], Awaitable[None]]  # (method, context, error)

API_KEY_HEADER = "x-api-key"
_EXEMPT_PREFIX = "/grpc.health.v1.Health/"


def _provided_key(details: grpc.HandlerCallDetails) -> bytes:
    for key, value in details.invocation_metadata or ():
        if key == API_KEY_HEADER:
            return value.encode() if isinstance(value, str) else bytes(value)
        if key == "authorization" and isinstance(value, str) and value.lower().startswith("bearer "):
            return value[7:].strip().encode()
    return b""


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, api_key: str, refuse: Refuse) -> None:
        self._key = api_key.encode()
        self._refuse = refuse

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or method.startswith(_EXEMPT_PREFIX)
            or hmac.compare_digest(_provided_key(handler_call_details), self._key)
        ):
            return handler
        name = method.rsplit("/", 1)[-1]

        async def deny(request: Any, context: Context) -> None:
            await self._refuse(name, context, Unauthenticated("missing or invalid API key"))

        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(deny)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(deny)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)
