"""Triton's model repository API: which versions are ready, and loading a model's versions anew.

In explicit model control, a load makes Triton serve the versions named by
the model's config.pbtxt now: versions it adds are loaded, versions it drops
are unloaded once their requests are done, and the versions it keeps go on
answering throughout.
"""

from __future__ import annotations

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .triton_client import TritonTLS, open_channel
from .triton_errors import rpc_error


class TritonRepository:
    def __init__(self, url: str, tls: TritonTLS | None = None) -> None:
        self.url = url
        self._channel = open_channel(url, tls)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def ready_versions(self, model_name: str, timeout_s: float) -> list[str]:
        """The versions of `model_name` Triton has ready, oldest first."""
        request = service_pb2.RepositoryIndexRequest(ready=True)
        try:
            index = await self._stub.RepositoryIndex(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc
        versions = {m.version for m in index.models if m.name == model_name and m.state == "READY" and m.version}
        return sorted(versions, key=int)

    async def load(self, model_name: str, timeout_s: float) -> None:
        """(Re)load `model_name` at its config's version policy; raises with Triton's reason on failure."""
        request = service_pb2.RepositoryModelLoadRequest(model_name=model_name)
        try:
            await self._stub.RepositoryModelLoad(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc

    async def close(self) -> None:
        await self._channel.close()
