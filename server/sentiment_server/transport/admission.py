"""Bounded admission: a fixed budget of requests and texts in flight.

Beyond it a call is refused at once with RESOURCE_EXHAUSTED instead of joining
an unbounded queue, so admitted calls keep their latency under overload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import Overloaded


class Admission:
    def __init__(self, max_requests: int, max_texts: int) -> None:
        self.max_requests = max_requests
        self.max_texts = max_texts
        self.requests = 0
        self.texts = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def admit(self, texts: int) -> Iterator[None]:
        # Single event loop: check-and-increment needs no lock.
        if self.requests + 1 > self.max_requests:
            raise Overloaded(f"server is at its limit of {self.max_requests} requests in flight; retry later")
        if self.texts + texts > self.max_texts and self.texts > 0:
            raise Overloaded(f"server is at its limit of {self.max_texts} texts in flight; retry later")
        self.requests += 1
        self.texts += texts
        self._idle.clear()
        try:
            yield
        finally:
            self.requests -= 1
            self.texts -= texts
            if self.requests == 0:
                self._idle.set()

    async def wait_idle(self, timeout_s: float) -> None:
        """Until no admitted call is left, or the timeout."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
