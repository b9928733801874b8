"""Bounded admission: a fixed budget of requests and texts in flight.

Beyond it a call is refused at once with RESOURCE_EXHAUSTED instead of joining
an unbounded queue, so admitted calls keep their latency under overload.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Overloaded


class Admission:
    def __init__(self, max_requests: int, max_texts: int) -> None:
        self.max_requests = max_requests
        self.max_texts = max_texts
        self.requests = 0
        self.texts = 0

    @contextmanager
    def admit(self, texts: int) -> Iterator[None]:
        # Single event loop: check-and-increment needs no lock.
        if self.requests + 1 > self.max_requests:
            raise Overloaded(f"server is at its limit of {self.max_requests} requests in flight; retry later")
        if self.texts + texts > self.max_texts and self.texts > 0:
            raise Overloaded(f"server is at its limit of {self.max_texts} texts in flight; retry later")
        self.requests += 1
        self.texts += texts
        try:
            yield
        finally:
            self.requests -= 1
            self.texts -= texts
