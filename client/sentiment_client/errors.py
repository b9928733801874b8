"""The one exception type the client raises for failed calls."""

from __future__ import annotations

import grpc
from grpc import aio

REQUEST_ID_KEY = "x-request-id"


class SentimentError(Exception):
    """A failed RPC: its status code, message and (when the server sent one) request id."""

    def __init__(self, code: grpc.StatusCode, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> SentimentError:
        """Convert a sync or asyncio `grpc.RpcError`, reading `x-request-id` from its trailers."""
        if not isinstance(error, (grpc.Call, aio.AioRpcError)):
            return cls(grpc.StatusCode.UNKNOWN, str(error))
        request_id = None
        for key, value in error.trailing_metadata() or ():
            if key == REQUEST_ID_KEY:
                request_id = value.decode() if isinstance(value, bytes) else value
        return cls(error.code(), error.details() or "", request_id)
