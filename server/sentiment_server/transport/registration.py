"""Register the servicer with request parsing that answers bad bytes with INVALID_ARGUMENT.

The generated `add_..._to_server` lets a message that fails to parse (invalid
UTF-8 in a string field, truncated bytes) surface as INTERNAL; a caller's bad
bytes are the caller's error, so they get INVALID_ARGUMENT with a clear message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from sentiment.v1 import sentiment_pb2 as pb

MALFORMED_MESSAGE = "request is not a valid protobuf message (strings must be valid UTF-8)"


class _Malformed:
    """Stands in for a request whose bytes did not parse."""


MALFORMED = _Malformed()


def _tolerant(parse: Callable[[bytes], Message]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:
            return MALFORMED

    return deserialize


def _unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if request is MALFORMED:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)
        return await behaviour(request, context)

    return handle


def _stream(behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        # A malformed message ends the input there; the stream fails with INVALID_ARGUMENT only
        # after the responses to the messages before it have been sent, in order, like any other
        # failing message. (Aborting here, inside the servicer's reader, lost those responses.)
        malformed = False

        async def checked() -> AsyncIterator[Any]:
            nonlocal malformed
            async for request in requests:
                if request is MALFORMED:
                    malformed = True
                    return
                yield request

        async for response in behaviour(checked(), context):
            yield response
        if malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MALFORMED_MESSAGE)

    return handle


def add_sentiment_service(servicer: Any, server: grpc.aio.Server) -> None:
    service = pb.DESCRIPTOR.services_by_name["SentimentService"]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(servicer, method.name)
        parse = _tolerant(request_cls.FromString)
        serialize = response_cls.SerializeToString
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _stream(behaviour), request_deserializer=parse, response_serializer=serialize
            )
        elif not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(behaviour), request_deserializer=parse, response_serializer=serialize
            )
        else:  # the contract has no such RPC today; refuse to register one silently
            raise NotImplementedError(f"{method.full_name}: only unary and bidi streaming RPCs are supported")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
