"""grpc.health.v1 that follows Triton's model readiness.

A background task polls the served models' readiness; the front-end is SERVING
while every model's current version can answer (for Triton: at least one
endpoint has it ready), NOT_SERVING otherwise and from the first moment of shutdown.
Health.Watch streams the changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from sentiment.v1 import sentiment_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = sentiment_pb2.DESCRIPTOR.services_by_name["SentimentService"].full_name
SERVICES = ("", SERVICE_NAME)  # "" is the whole server


class Readiness(Protocol):
    async def refresh(self, timeout_s: float) -> bool:
        """Probe now; True while the models can answer."""
        ...


class HealthWatcher:
    def __init__(self, backend: Readiness, poll_s: float) -> None:
        self.servicer = health_aio.HealthServicer()
        self._backend = backend
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._stopped = False

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in SERVICES:
            await self.servicer.set(service, status)
        log.info("health: %s", "SERVING" if serving else "NOT_SERVING (model not ready)")

    async def check_once(self) -> bool:
        ready = await self._backend.refresh(timeout_s=max(0.2, self._poll_s))
        if not self._stopped:
            await self._set(ready)
        return ready

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # the watcher must outlive any single failed probe
                log.exception("health probe failed")
                await self._set(False)
            await asyncio.sleep(self._poll_s)

    async def start(self) -> None:
        await self.check_once()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="health-watcher")

    async def shutdown(self) -> None:
        """NOT_SERVING first, for good: load balancers stop sending before the drain."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._serving = None
        await self.servicer.enter_graceful_shutdown()
