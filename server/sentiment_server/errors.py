"""One exception hierarchy and one table from error kind to gRPC status.

Only these exceptions' messages reach callers; they are written for callers.
Anything else becomes INTERNAL with a generic message (the details go to the
log with the request id).
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error whose message is safe to show to the caller."""

    code = grpc.StatusCode.INTERNAL


class InvalidInput(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Overloaded(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class BackendUnavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ShuttingDown(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class StartupError(Exception):
    """The front-end cannot start (said once, clearly, to the operator)."""


class ModelMismatch(StartupError):
    """Start-up check: Triton's model does not match the tokenizer or labels."""


class TritonNotReady(StartupError):
    """No Triton endpoint had the model ready within the start-up timeout."""


class TritonFailure(ServiceError):
    """Triton answered with an error that is not about availability or time."""

    code = grpc.StatusCode.INTERNAL


INTERNAL_MESSAGE = "internal error"

# The documented table (README "Errors"): error kind -> status code.
STATUS_TABLE: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    TritonFailure: grpc.StatusCode.INTERNAL,
}


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and caller-facing message for any exception."""
    if isinstance(exc, TritonFailure):
        return grpc.StatusCode.INTERNAL, "inference failed"
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
