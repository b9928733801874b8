"""Step 2: the only module that talks to Triton (and imports tritonclient).

tritonclient's errors are turned into this service's errors here, at the
boundary, so nothing above this module knows Triton's messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from . import tracing
from .errors import BackendUnavailable, DeadlineExceeded, ModelMismatch, ServiceError, TritonFailure
from .model_artifact import ATTENTION_MASK, INPUT_IDS, ModelInfo

log = logging.getLogger(__name__)

# Reconnect fast after a Triton restart (gRPC's default backoff grows to 120 s),
# and notice a dead peer through keepalive instead of waiting on TCP.
CHANNEL_ARGS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class TritonTLS:
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None


def _convert(exc: InferenceServerException) -> Exception:
    status = str(exc.status() or "")
    if "UNAVAILABLE" in status:
        return BackendUnavailable("model backend unavailable")
    if "DEADLINE_EXCEEDED" in status:
        return DeadlineExceeded("deadline exceeded while waiting for the model")
    if "RESOURCE_EXHAUSTED" in status:
        return BackendUnavailable("model backend overloaded")
    return TritonFailure(f"triton error: {status} {exc.message()}")


@dataclass(eq=False)  # identity: endpoints live in sets
class TritonEndpoint:
    """One Triton server: readiness, model checks and inference for one model."""

    url: str
    model_name: str
    model_version: str = ""
    tls: TritonTLS | None = None
    ready: bool = False
    in_flight: int = 0
    _client: triton_aio.InferenceServerClient = field(init=False, repr=False)

    def __post_init__(self) -> None:
        tls = self.tls
        self._client = triton_aio.InferenceServerClient(
            self.url,
            ssl=tls is not None,
            root_certificates=tls.root_certificates if tls else None,
            private_key=tls.private_key if tls else None,
            certificate_chain=tls.certificate_chain if tls else None,
            channel_args=CHANNEL_ARGS,
        )

    async def is_model_ready(self, timeout_s: float) -> bool:
        try:
            ready = await self._client.is_model_ready(self.model_name, self.model_version, client_timeout=timeout_s)
        except InferenceServerException:
            ready = False
        self.ready = bool(ready)
        return self.ready

    async def check_model(self, info: ModelInfo, timeout_s: float = 10.0) -> str:
        """Verify Triton's model against the tokenizer and labels; return the output tensor name."""
        try:
            meta = await self._client.get_model_metadata(
                self.model_name, self.model_version, as_json=True, client_timeout=timeout_s
            )
        except InferenceServerException as exc:
            raise _convert(exc) from exc
        inputs = {t["name"]: t for t in meta.get("inputs", [])}
        for name in (INPUT_IDS, ATTENTION_MASK):
            if name not in inputs:
                raise ModelMismatch(f"{self.url}: model {self.model_name!r} has no input {name!r}: {sorted(inputs)}")
            if inputs[name]["datatype"] != "INT64":
                raise ModelMismatch(f"{self.url}: input {name!r} is {inputs[name]['datatype']}, expected INT64")
        outputs = meta.get("outputs", [])
        if len(outputs) != 1:
            raise ModelMismatch(f"{self.url}: expected one output (logits), found {len(outputs)}")
        out = outputs[0]
        dims = [int(d) for d in out.get("shape", [])]
        if out["datatype"] != "FP32" or not dims or dims[-1] != len(info.labels):
            raise ModelMismatch(
                f"{self.url}: output {out['name']!r} is {out['datatype']}{dims}, "
                f"expected FP32 with {len(info.labels)} labels ({', '.join(info.labels)})"
            )
        return str(out["name"])

    async def infer(
        self,
        output_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> npt.NDArray[np.float32]:
        """`headers` travel as gRPC metadata (the W3C trace context, when tracing)."""
        if timeout_s <= 0:
            raise DeadlineExceeded("deadline exceeded before inference")
        ids = InferInput(INPUT_IDS, list(input_ids.shape), "INT64")
        ids.set_data_from_numpy(input_ids)
        mask = InferInput(ATTENTION_MASK, list(attention_mask.shape), "INT64")
        mask.set_data_from_numpy(attention_mask)
        self.in_flight += 1
        try:
            result = await self._client.infer(
                self.model_name,
                [ids, mask],
                model_version=self.model_version,
                outputs=[InferRequestedOutput(output_name)],
                client_timeout=timeout_s,
                headers=dict(headers) if headers else None,
            )
        except InferenceServerException as exc:
            converted = _convert(exc)
            if isinstance(converted, BackendUnavailable):
                self.ready = False
            raise converted from exc
        finally:
            self.in_flight -= 1
        logits: npt.NDArray[np.float32] | None = result.as_numpy(output_name)
        if logits is None:
            raise TritonFailure("triton returned no logits")
        return logits.astype(np.float32, copy=False)

    async def close(self) -> None:
        await self._client.close()


class TritonPool:
    """Spreads batches over one or more Triton endpoints; skips the ones not ready.

    Inference is idempotent, so a batch that failed with UNAVAILABLE is retried
    once on another ready endpoint, inside the caller's deadline.
    """

    def __init__(self, endpoints: list[TritonEndpoint]) -> None:
        if not endpoints:
            raise ValueError("at least one Triton endpoint is needed")
        self.endpoints = endpoints
        self.output_name = ""
        self._info: ModelInfo | None = None
        self._checked: set[TritonEndpoint] = set()
        self._rejected: set[TritonEndpoint] = set()

    @property
    def any_ready(self) -> bool:
        return any(e.ready for e in self.endpoints)

    async def refresh(self, timeout_s: float) -> bool:
        """Probe every endpoint; an endpoint seen ready for the first time is checked before use."""
        await asyncio.gather(*(e.is_model_ready(timeout_s) for e in self.endpoints))
        if self._info is not None:
            for endpoint in self.endpoints:
                if endpoint.ready and endpoint not in self._checked and endpoint not in self._rejected:
                    try:
                        await self._check(endpoint, self._info)
                    except ModelMismatch as exc:
                        log.error("not using Triton endpoint %s: %s", endpoint.url, exc)
                    except ServiceError:
                        endpoint.ready = False  # went away while being checked; next poll tries again
        return self.any_ready

    async def _check(self, endpoint: TritonEndpoint, info: ModelInfo) -> None:
        try:
            name = await endpoint.check_model(info)
            if self.output_name and name != self.output_name:
                raise ModelMismatch(f"{endpoint.url}: output {name!r}, other endpoints use {self.output_name!r}")
        except ModelMismatch:
            self._rejected.add(endpoint)  # a different model must never answer
            endpoint.ready = False
            raise
        self.output_name = name
        self._checked.add(endpoint)

    async def check_model(self, info: ModelInfo) -> None:
        """Check the endpoints that are ready now; the others are checked when they first become ready."""
        self._info = info
        for endpoint in self.endpoints:
            if endpoint.ready:
                await self._check(endpoint, info)

    def _pick(self, exclude: set[TritonEndpoint]) -> TritonEndpoint | None:
        usable = [e for e in self.endpoints if e in self._checked and e not in exclude]
        candidates = [e for e in usable if e.ready]
        if not candidates:
            # Nothing known ready: try a checked one anyway; the call itself is the freshest probe.
            candidates = usable
        return min(candidates, key=lambda e: e.in_flight) if candidates else None

    async def infer(
        self,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        deadline: float,
    ) -> npt.NDArray[np.float32]:
        """`deadline` is a time.monotonic() instant. Runs in the context of the batch's first caller, whose
        trace context (when tracing) goes to Triton as W3C headers."""
        tried: set[TritonEndpoint] = set()
        while True:
            endpoint = self._pick(tried)
            if endpoint is None:
                raise BackendUnavailable("model backend unavailable")
            tried.add(endpoint)
            try:
                return await endpoint.infer(
                    self.output_name, input_ids, attention_mask, deadline - time.monotonic(), tracing.current_headers()
                )
            except BackendUnavailable:
                if deadline - time.monotonic() <= 0:
                    raise
                log.warning("triton endpoint %s unavailable; retrying on another", endpoint.url)

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.endpoints))
