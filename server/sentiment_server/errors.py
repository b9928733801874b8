"""One exception hierarchy and one table from error kind to gRPC status.

Every refusal the service makes, authentication and unparseable messages
included, raises one of these; the servicer turns it into a status with
`to_status` (the only reader of `STATUS_TABLE`). Only these exceptions'
messages reach callers; they are written for callers. Anything else becomes
INTERNAL with a generic message (the details go to the log with the request id).
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error whose message is safe to show to the caller."""


class InvalidInput(ServiceError):
    """The request itself is wrong: empty or too many texts, bad options, bytes that do not parse."""


class ModelNotFound(ServiceError):
    """The request names a model this service does not serve."""


class RolloutRefused(ServiceError):
    """A version cannot be switched to (it does not load, answers differently, or changes the labels)."""


class Unauthenticated(ServiceError):
    """The API key is missing or wrong."""


class Overloaded(ServiceError):
    """The admission limits are reached: retry later."""


class BackendUnavailable(ServiceError):
    """No model backend could take the batch: retry, here or elsewhere."""


class DeadlineExceeded(ServiceError):
    """The caller's deadline ran out (or was too short to start)."""


class ShuttingDown(ServiceError):
    """The server is draining: retry on another replica."""


class TritonFailure(ServiceError):
    """Triton answered with an error that is not about availability or time: ours to fix."""


class StartupError(Exception):
    """The front-end cannot start (said once, clearly, to the operator)."""


class ModelMismatch(StartupError):
    """Start-up check: Triton's model does not match the tokenizer or labels."""


class TritonNotReady(StartupError):
    """No Triton endpoint had the model ready within the start-up timeout."""


INTERNAL_MESSAGE = "internal error"
INFERENCE_FAILED_MESSAGE = "inference failed"

# Error kind -> status code. docs/operations.md has the same table (a test keeps them in step).
STATUS_TABLE: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotFound: grpc.StatusCode.NOT_FOUND,
    RolloutRefused: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    TritonFailure: grpc.StatusCode.INTERNAL,
}


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and caller-facing message for any exception."""
    for kind in type(exc).__mro__:
        code = STATUS_TABLE.get(kind)
        if code is not None:
            # A Triton failure's text is Triton's, not written for callers.
            return code, INFERENCE_FAILED_MESSAGE if isinstance(exc, TritonFailure) else str(exc)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
