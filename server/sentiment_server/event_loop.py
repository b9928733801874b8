"""Which asyncio event loop the front-end runs on.

uvloop (libuv, in Cython) schedules callbacks and handles sockets in C where
asyncio's default loop runs Python: under many small calls it costs the
front-end less CPU per call (bench/frontend.py). `auto` takes it when it is
installed, as uvicorn's `--loop auto` does; `asyncio` is the way back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["EVENT_LOOPS", "loop_factory", "run"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `name` (None: asyncio's default loop); `uvloop` without it installed is an error."""
    if name not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, not {name!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ValueError("--event-loop uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], name: str) -> T:
    """asyncio.run(main) on the loop `name` asks for."""
    factory = loop_factory(name)
    logger.debug("event loop: %s", "uvloop" if factory is not None else "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
