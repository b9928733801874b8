"""The admin port: rollout and rollback, on loopback only, behind the API key when one is set.

It is a server of its own, never the public port: whoever reaches it can
change what every caller gets answered with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from sentiment.v1 import admin_pb2 as pb
from sentiment.v1 import admin_pb2_grpc as pb_grpc

from ..core.rollout import Switched
from ..errors import ServiceError, to_status
from .auth import ApiKeyInterceptor

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)

ADMIN_HOST = "127.0.0.1"


class VersionSwitch(Protocol):
    """What the admin port drives: one front-end's `Rollouts`, or the parent of several workers."""

    async def rollout(self, name: str, version: str = "", allow_label_change: bool = False) -> Switched: ...

    async def rollback(self, name: str, allow_label_change: bool = False) -> Switched: ...


class ModelAdminServicer(pb_grpc.ModelAdminServiceServicer):
    def __init__(self, rollouts: VersionSwitch) -> None:
        self.rollouts = rollouts

    async def _answer(self, method: str, context: Context, switch: Callable[[], Awaitable[Switched]]) -> Switched:
        try:
            switched = await switch()
        except Exception as exc:
            code, message = to_status(exc)
            log.error("admin %s refused: %s %s", method, code.name, message if isinstance(exc, ServiceError) else exc)
            await context.abort(code, message)
        log.info("admin %s: model %s %s -> %s", method, switched.model, switched.previous_version, switched.version)
        return switched

    async def Rollout(self, request: pb.RolloutRequest, context: Context) -> pb.RolloutResponse:
        s = await self._answer(
            "Rollout",
            context,
            lambda: self.rollouts.rollout(request.model, request.version, request.allow_label_change),
        )
        return pb.RolloutResponse(model=s.model, previous_version=s.previous_version, model_version=s.version)

    async def Rollback(self, request: pb.RollbackRequest, context: Context) -> pb.RollbackResponse:
        s = await self._answer(
            "Rollback", context, lambda: self.rollouts.rollback(request.model, request.allow_label_change)
        )
        return pb.RollbackResponse(model=s.model, previous_version=s.previous_version, model_version=s.version)


async def _refuse(method: str, context: Context, error: ServiceError) -> None:
    await context.abort(*to_status(error))


def admin_server(rollouts: VersionSwitch, port: int, api_key: str) -> tuple[grpc.aio.Server, int]:
    """The admin server bound to loopback (not started yet) and its port."""
    interceptors = [ApiKeyInterceptor(api_key, _refuse)] if api_key else []
    server = grpc.aio.server(interceptors=interceptors)
    pb_grpc.add_ModelAdminServiceServicer_to_server(ModelAdminServicer(rollouts), server)  # type: ignore[no-untyped-call]
    return server, server.add_insecure_port(f"{ADMIN_HOST}:{port}")
