"""Keeps the embedded tritonserver alive: restarts with backoff, and a crash budget.

When tritonserver exits on its own, the supervisor logs one line with the exit
code or signal, waits (the backoff doubles with each crash in the window, from
`first_backoff_s` up to `max_backoff_s`), starts it again on the same ports,
and reports the restart. Health needs nothing from here: the front-end's
readiness poll sees the model go and come back. More than `max_restarts`
crashes within `window_s` means something is wrong that a restart does not fix:
`run` raises `TritonGaveUp`, and the caller drains and exits non-zero so that
systemd, compose or Kubernetes take over.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .triton_process import EmbeddedTriton, describe_exit

log = logging.getLogger(__name__)


class TritonGaveUp(RuntimeError):
    """tritonserver crashed more often than the restart budget allows."""


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # within window_s; one more crash and the supervisor gives up
    window_s: float = 300.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def backoff_s(self, crashes_in_window: int) -> float:
        return float(min(self.max_backoff_s, self.first_backoff_s * 2 ** max(0, crashes_in_window - 1)))


class TritonSupervisor:
    def __init__(
        self,
        triton: EmbeddedTriton,
        policy: RestartPolicy,
        on_restart: Callable[[], None] = lambda: None,
        poll_s: float = 0.2,
    ) -> None:
        self._triton = triton
        self._policy = policy
        self._on_restart = on_restart
        self._poll_s = poll_s
        self.restarts = 0

    async def run(self) -> None:
        """Watch until cancelled; raises TritonGaveUp once the crash budget is spent."""
        crashes: deque[float] = deque()
        while True:
            await asyncio.sleep(self._poll_s)
            code = self._triton.returncode
            if code is None:
                continue
            now = time.monotonic()
            crashes.append(now)
            while crashes[0] < now - self._policy.window_s:
                crashes.popleft()
            pid = self._triton.pid
            if len(crashes) > self._policy.max_restarts:
                raise TritonGaveUp(
                    f"tritonserver (pid {pid}) died {len(crashes)} times in {self._policy.window_s:.0f}s, "
                    f"last with {describe_exit(code)}; giving up (log: {self._triton.log_path})"
                )
            backoff = self._policy.backoff_s(len(crashes))
            log.error(
                "tritonserver pid %s died with %s; restarting in %.1fs (crash %d of %d allowed in %.0fs)",
                pid,
                describe_exit(code),
                backoff,
                len(crashes),
                self._policy.max_restarts,
                self._policy.window_s,
            )
            await asyncio.sleep(backoff)
            self._triton.restart()
            self.restarts += 1
            self._on_restart()
