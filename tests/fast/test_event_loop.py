"""The front-end's event loop: uvloop when installed (auto), asyncio on request, a clear error otherwise."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
import uvloop
from sentiment_server import event_loop
from sentiment_server.settings import ServeSettings, UpSettings


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert ServeSettings().event_loop == UpSettings().event_loop == "auto"
    for name in ("auto", "uvloop"):
        assert issubclass(event_loop.run(_loop_type(), name), uvloop.Loop)


def test_asyncio_runs_on_the_default_loop() -> None:
    assert event_loop.loop_factory("asyncio") is None
    assert not issubclass(event_loop.run(_loop_type(), "asyncio"), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert event_loop.loop_factory("auto") is None
    with pytest.raises(ValueError, match="uvloop is not installed"):
        event_loop.loop_factory("uvloop")


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, uvloop, asyncio"):
        event_loop.loop_factory("trio")
