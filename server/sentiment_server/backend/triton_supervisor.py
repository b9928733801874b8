"""Keeps the embedded tritonserver alive: restarts with backoff, and a crash budget.

The supervisor restarts tritonserver when it exits on its own, and when one of
its Python-backend stubs dies (Triton would fail that model instance's
requests until restarted, so the supervisor kills it first). Each restart is
one log line with the exit code or signal, a backoff that doubles with each
crash in the window (from `first_backoff_s` up to `max_backoff_s`), a start on
the same ports, and a report (`on_restart`). Health needs nothing from here:
the front-end's readiness poll sees the model go and come back. More than
`max_restarts` crashes within `window_s` means something is wrong that a
restart does not fix: `run` raises `TritonGaveUp`, and the caller drains and
exits non-zero so that systemd, compose or Kubernetes take over.

A model load or unload (a rollout) replaces model instances, and the stubs
of the replaced ones exit, sometimes seconds after the load returns: a stub
that was alive during `expecting_stub_exits` may exit up to
`STUB_EXIT_GRACE_S` after it without counting as a crash. Stubs started
later are watched as always.

Every poll reads the known stubs' /proc entries only; a walk over every
process, which is what finds new stubs, runs after a model change and every
`STUB_RESCAN_S` (it would cost the event loop milliseconds at every poll).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .triton_process import EmbeddedTriton, TritonLaunchError, describe_exit

log = logging.getLogger(__name__)

# Triton finalizes a replaced instance after its load call returns, once the instance's requests are done.
STUB_EXIT_GRACE_S = 60.0
# How often to look for stubs that started unseen (a model change and a restart of Triton look themselves).
STUB_RESCAN_S = 5.0


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
        model_name: str | None,
        policy: RestartPolicy,
        ready_timeout_s: float,
        poll_s: float = 0.2,
    ) -> None:
        """Create it as soon as Triton has the model ready: the stubs it sees then are watched from then on."""
        self._triton = triton
        self._model_name = model_name
        self._ready_timeout_s = ready_timeout_s
        self._policy = policy
        self._poll_s = poll_s
        self._first_stubs = triton.stub_pids()
        self._model_changes = 0  # loads or unloads under way
        self._changed_at = float("-inf")
        self._replaceable: set[int] = set()  # stubs alive during a model change: they may exit
        self._rescan_at = time.monotonic() + STUB_RESCAN_S

    @contextmanager
    def expecting_stub_exits(self) -> Iterator[None]:
        """Around a model load or unload: the stubs of the instances it replaces exit, and that is no crash."""
        self._model_changes += 1
        self._replaceable |= self._triton.stub_pids()
        try:
            yield
        finally:
            self._model_changes -= 1
            self._changed_at = self._rescan_at = time.monotonic()  # the change started new stubs
            self._replaceable |= self._triton.stub_pids()

    def _replaced(self, dead: set[int]) -> set[int]:
        """The stubs of `dead` that a model change replaced (not crashed)."""
        if self._model_changes > 0:
            return dead  # instances starting and stopping: a load that fails ends here too
        if time.monotonic() - self._changed_at >= STUB_EXIT_GRACE_S:
            self._replaceable.clear()
        return dead & self._replaceable

    async def run(self, on_restart: Callable[[], None] = lambda: None) -> None:
        """Watch until cancelled; raises TritonGaveUp once the crash budget is spent."""
        crashes: deque[float] = deque()
        stubs = self._first_stubs  # seen since the last (re)start
        while True:
            await asyncio.sleep(self._poll_s)
            code = self._triton.returncode
            if code is None:
                alive = self._alive_stubs(stubs)
                dead = stubs - alive
                stubs |= alive
                replaced = self._replaced(dead)
                if replaced:
                    log.info(
                        "tritonserver pid %s: stub(s) %s of replaced model instances exited",
                        self._triton.pid,
                        sorted(replaced),
                    )
                    stubs -= replaced
                    dead -= replaced
                if not dead:
                    continue
                await asyncio.sleep(self._poll_s)  # stubs also exit when Triton dies: was it Triton?
                code = self._triton.returncode
                if code is None:
                    log.error(
                        "tritonserver pid %s lost its stub process(es) %s: killing it", self._triton.pid, sorted(dead)
                    )
                    self._triton.kill()
                    code = self._triton.returncode
                    assert code is not None
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
            on_restart()
            stubs = await self._stubs_once_ready()

    def _alive_stubs(self, known: set[int]) -> set[int]:
        """The stubs alive now: those of `known`, and any new ones when a look for them is due."""
        now = time.monotonic()
        if now < self._rescan_at:
            return self._triton.stub_pids(among=known)
        self._rescan_at = now + STUB_RESCAN_S
        return self._triton.stub_pids()

    async def _stubs_once_ready(self) -> set[int]:
        """The stubs of a restarted Triton once its model is ready (stubs come and go while it loads).

        A Triton that exits meanwhile is seen by the next poll; one that is not ready in time is killed.
        """
        try:
            await asyncio.to_thread(self._triton.wait_ready, self._model_name, self._ready_timeout_s)
        except TritonLaunchError as exc:
            log.error("restarted tritonserver is not ready: %s", str(exc).splitlines()[0])
            self._triton.kill()
        return self._triton.stub_pids()
