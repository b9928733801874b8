"""Retry policy: UNAVAILABLE only, exponential backoff with full jitter, never past the deadline."""

from __future__ import annotations

import random
import time

import grpc

from .errors import SentimentError
from .options import ClientOptions


def backoff_s(attempt: int, options: ClientOptions) -> float:
    """Delay after failed attempt number `attempt` (1-based): uniform in [0, capped exponential)."""
    ceiling = options.initial_backoff_s * options.backoff_multiplier ** (attempt - 1)
    return random.uniform(0, min(ceiling, options.max_backoff_s))


def remaining_s(deadline: float) -> float:
    """Seconds left before `deadline` (a `time.monotonic()` value); raise once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise SentimentError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    return left


def retry_delay(error: SentimentError, attempt: int, deadline: float, options: ClientOptions) -> float | None:
    """How long to sleep before retrying after `error`, or None to give up."""
    if error.code != grpc.StatusCode.UNAVAILABLE or attempt >= options.max_attempts:
        return None
    delay = backoff_s(attempt, options)
    return delay if time.monotonic() + delay < deadline else None
