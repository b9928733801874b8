"""How the supervisor sees Triton's stubs: live children from /proc, a walk over every process only when due."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any, cast

import pytest
from sentiment_server.backend import triton_supervisor
from sentiment_server.backend.triton_process import child_pids
from sentiment_server.backend.triton_supervisor import RestartPolicy, TritonSupervisor


def test_child_pids_sees_live_children_and_not_zombies() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = os.getpid()
        assert child.pid in child_pids(me)
        assert child_pids(me, among=[child.pid, 1]) == {child.pid}  # pid 1 is no child of this process
        child.kill()
        until = time.monotonic() + 10
        while child_pids(me, among=[child.pid]) and time.monotonic() < until:
            time.sleep(0.01)
        assert os.path.exists(f"/proc/{child.pid}")  # not waited for yet: a zombie
        assert child.pid not in child_pids(me)  # and a zombie is not live
    finally:
        child.kill()
        child.wait()


class _Triton:
    """Stub processes by number; counts the walks over every process."""

    def __init__(self, stubs: set[int]) -> None:
        self.stubs = stubs
        self.walks = 0
        self.returncode = None
        self.pid = 10

    def stub_pids(self, among: Iterable[int] | None = None) -> set[int]:
        if among is None:
            self.walks += 1
            return set(self.stubs)
        return self.stubs & set(among)


async def _polls(supervisor: TritonSupervisor, n: int, poll_s: float) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(supervisor.run(), timeout=n * poll_s)


def _supervisor(triton: _Triton) -> TritonSupervisor:
    return TritonSupervisor(cast(Any, triton), None, RestartPolicy(), 1.0, poll_s=0.01)


def test_polls_read_the_known_stubs_and_look_for_new_ones_after_a_model_change() -> None:
    triton = _Triton({11, 12})
    supervisor = _supervisor(triton)
    assert triton.walks == 1  # the stubs it starts with
    asyncio.run(_polls(supervisor, 10, 0.01))
    assert triton.walks == 1
    with supervisor.expecting_stub_exits():  # a model change starts new stubs
        triton.stubs = {12, 13}
    walks = triton.walks
    asyncio.run(_polls(supervisor, 10, 0.01))
    assert triton.walks == walks + 1  # the next poll looked for them once


def test_a_look_for_new_stubs_is_due_every_rescan_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_supervisor, "STUB_RESCAN_S", 0.02)
    triton = _Triton({11, 12})
    asyncio.run(_polls(_supervisor(triton), 20, 0.01))
    assert 3 <= triton.walks <= 12  # a poll every 10 ms, a look due every other one
