"""Register the servicer with request parsing that never fails a call by itself.

The generated `add_..._to_server` lets a message that fails to parse (invalid
UTF-8 in a string field, truncated bytes) surface as INTERNAL from inside
gRPC. Here such a message becomes `MALFORMED`, which the servicer refuses with
INVALID_ARGUMENT like any other bad request (request id, metric, log included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.message import Message
from sentiment.v1 import sentiment_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SentimentService"]
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


def add_sentiment_service(servicer: Any, server: grpc.aio.Server) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in SERVICE.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        behaviour = getattr(servicer, method.name)
        parse = _tolerant(request_cls.FromString)
        serialize = response_cls.SerializeToString
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=parse, response_serializer=serialize
            )
        elif not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=parse, response_serializer=serialize
            )
        else:  # the contract has no such RPC today; refuse to register one silently
            raise NotImplementedError(f"{method.full_name}: only unary and bidi streaming RPCs are supported")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
