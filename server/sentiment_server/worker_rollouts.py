"""Rollout and rollback across front-end workers: every worker switches, or none stays switched.

The parent of the workers answers the admin port. With model control it
loads the new version in Triton next to the old one, asks every worker to
switch (each checks the version, switches and drains, as a single front-end
does; a worker never loads or unloads in Triton), and unloads the old version
once all have. If any worker refuses, the ones that switched go back, the new
version is unloaded, and the refusal is the answer. Without model control (a
Triton someone else manages) the same happens without the loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import grpc
from sentiment.v1 import admin_pb2, admin_pb2_grpc

from .core.rollout import Switched
from .core.served_models import VersionHistory, not_served
from .errors import InvalidInput, ModelNotFound, RolloutRefused, ServiceError
from .model_artifact import serving_versions
from .service import TritonVersions

log = logging.getLogger(__name__)

_ERRORS: dict[grpc.StatusCode, type[ServiceError]] = {
    grpc.StatusCode.NOT_FOUND: ModelNotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
}


class WorkerRollouts:
    def __init__(
        self,
        admin_ports: Callable[[], list[int]],
        models: list[str],
        default_model: str,
        versions: TritonVersions | None,
        api_key: str = "",
    ) -> None:
        """`admin_ports`: the workers' admin ports now; `versions`: Triton model control, if the parent has it."""
        self._admin_ports = admin_ports
        self._models = models
        self._default = default_model
        self._versions = versions
        self._metadata = (("x-api-key", api_key),) if api_key else ()
        self._history = VersionHistory()
        self._lock = asyncio.Lock()

    def _name(self, requested: str) -> str:
        name = requested or self._default
        if name not in self._models:
            raise not_served(name, self._models)
        return name

    async def rollout(self, name: str, version: str = "", allow_label_change: bool = False) -> Switched:
        name = self._name(name)
        request = admin_pb2.RolloutRequest(model=name, version=version, allow_label_change=allow_label_change)
        async with self._lock:
            if self._versions is None:
                return await self._everywhere("Rollout", request)
            current = serving_versions(self._versions.repository, name)[-1]
            target = version or self._versions.newest_version(name) or current
            return await self._loaded_everywhere(name, current, target, request)

    async def rollback(self, name: str, allow_label_change: bool = False) -> Switched:
        name = self._name(name)
        async with self._lock:
            if self._versions is None:
                request: Any = admin_pb2.RollbackRequest(model=name, allow_label_change=allow_label_change)
                return await self._everywhere("Rollback", request)
            current = serving_versions(self._versions.repository, name)[-1]
            target = self._history.previous(name) or self._versions.older_version(name, current)
            if target is None:
                raise RolloutRefused(f"model {name!r} has no version before {current} to roll back to")
            request = admin_pb2.RolloutRequest(model=name, version=target, allow_label_change=allow_label_change)
            return await self._loaded_everywhere(name, current, target, request)

    async def _loaded_everywhere(self, name: str, current: str, target: str, request: Any) -> Switched:
        """Load `target` next to `current` in Triton, switch every worker, unload what no worker serves."""
        assert self._versions is not None
        if target == current:
            return await self._everywhere("Rollout", request)
        model = self._versions.read(name, target)
        await (await self._versions.start(model, current)).close()
        try:
            switched = await self._everywhere("Rollout", request)
        except BaseException:
            await self._versions.retire(name, target, current)
            raise
        await self._versions.retire(name, current, target)
        self._history.switched(name, current, target)
        return switched

    async def _everywhere(self, method: str, request: Any) -> Switched:
        """`method` on every worker; when one refuses, those that switched go back and its refusal is raised."""
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in self._admin_ports()]
        try:
            stubs: list[Any] = [admin_pb2_grpc.ModelAdminServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
            answers = await asyncio.gather(
                *(getattr(stub, method)(request, metadata=self._metadata) for stub in stubs), return_exceptions=True
            )
            refusals = [a for a in answers if isinstance(a, BaseException)]
            if not refusals:
                first: Any = answers[0]
                return Switched(first.model, first.previous_version, first.model_version)
            back = [
                stub.Rollout(
                    admin_pb2.RolloutRequest(model=a.model, version=a.previous_version, allow_label_change=True),
                    metadata=self._metadata,
                )
                for stub, a in zip(stubs, answers, strict=True)
                if not isinstance(a, BaseException) and a.previous_version != a.model_version
            ]
            for failed in await asyncio.gather(*back, return_exceptions=True):
                if isinstance(failed, BaseException):
                    log.error("a worker did not go back to its previous version: %s", failed)
            raise _service_error(refusals[0])
        finally:
            await asyncio.gather(*(c.close() for c in channels))


def _service_error(refusal: BaseException) -> ServiceError:
    if isinstance(refusal, grpc.aio.AioRpcError):
        kind = _ERRORS.get(refusal.code(), RolloutRefused)
        return kind(refusal.details() or "refused")
    return RolloutRefused(f"a worker could not be asked: {refusal}")
