"""Triton's failures turned into this service's errors, at the boundary: nothing above knows Triton's messages."""

from __future__ import annotations

import re

import grpc

from ..errors import BackendUnavailable, DeadlineExceeded, ServiceError, TritonFailure


def convert(code: grpc.StatusCode | None, details: str) -> ServiceError:
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return BackendUnavailable("model backend unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("deadline exceeded while waiting for the model")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendUnavailable("model backend overloaded")
    return answer_error(f"{code} {details}")


def rpc_error(exc: grpc.aio.AioRpcError) -> ServiceError:
    return convert(exc.code(), exc.details() or "")


# What Triton's Python backend answers while a model instance's stub process is dead: the model is
# not usable there until Triton restarts (the supervisor does), so the batch may be retried.
_STUB_DOWN = re.compile(r"[Ss]tub process.*(not healthy|unhealthy)")


def answer_error(message: str) -> ServiceError:
    if _STUB_DOWN.search(message):
        error: ServiceError = BackendUnavailable("model backend unavailable")
        error.__cause__ = TritonFailure(message)
        return error
    return TritonFailure(f"triton error: {message}")


def describe(cause: BaseException) -> str:
    """A failure's cause in one line, for the log."""
    if isinstance(cause, grpc.aio.AioRpcError):
        return f"{cause.code().name}: {cause.details()}"
    return repr(cause)
