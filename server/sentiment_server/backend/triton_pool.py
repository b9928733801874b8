"""Batches spread over one or more Triton endpoints, retried while Triton is unavailable."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import numpy as np
import numpy.typing as npt

from .. import tracing
from ..errors import BackendUnavailable, ModelMismatch, ServiceError
from ..model_artifact import ModelInfo
from .triton_client import TritonEndpoint

log = logging.getLogger(__name__)

_RETRY_FIRST_BACKOFF_S = 0.05
_RETRY_MAX_BACKOFF_S = 1.0


class TritonPool:
    """Spreads batches over one or more Triton endpoints; skips the ones not ready.

    Inference is idempotent, so a batch that failed with UNAVAILABLE is retried:
    at once on another endpoint (or a fresh stream on the same one), then with
    backoff while Triton comes back (a restart), for up to `retry_s` and never
    past the caller's deadline.
    """

    def __init__(self, endpoints: list[TritonEndpoint], retry_s: float = 0.0) -> None:
        if not endpoints:
            raise ValueError("at least one Triton endpoint is needed")
        self.endpoints = endpoints
        self.retry_s = retry_s
        self.output_name = ""
        self._info: ModelInfo | None = None
        self._checked: set[TritonEndpoint] = set()
        self._rejected: set[TritonEndpoint] = set()

    @property
    def replicas(self) -> int:
        return len(self.endpoints)

    @property
    def instances(self) -> int:
        """As many per endpoint as the checked ones report (they serve one model, so one config)."""
        return max((e.instances for e in self._checked), default=1) * self.replicas

    @property
    def any_ready(self) -> bool:
        return any(e.ready for e in self.endpoints)

    async def refresh(self, timeout_s: float) -> bool:
        """Probe every endpoint; an endpoint seen ready for the first time is checked before use."""
        await asyncio.gather(*(e.is_model_ready(timeout_s) for e in self.endpoints))
        for endpoint in self.endpoints:
            if endpoint.ready and endpoint.needs_probe and self.output_name:
                endpoint.ready = await endpoint.probe(self.output_name, timeout_s)
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
        token_type_ids: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float32]:
        """`deadline` is a time.monotonic() instant. Runs in the context of the batch's first caller, whose
        trace context (when tracing) goes to Triton as W3C headers. `token_type_ids` only for a model
        that takes them."""
        give_up = min(deadline, time.monotonic() + self.retry_s)
        tried: set[TritonEndpoint] = set()
        for attempt in itertools.count():
            endpoint = self._pick(tried) or self._pick(set())
            try:
                if endpoint is None:
                    raise BackendUnavailable("model backend unavailable")
                tried.add(endpoint)
                return await endpoint.infer(
                    self.output_name,
                    input_ids,
                    attention_mask,
                    deadline - time.monotonic(),
                    tracing.current_headers(),
                    token_type_ids=token_type_ids,
                )
            except BackendUnavailable:
                # The first retry goes at once (another endpoint, or a fresh stream); later ones wait for Triton.
                if attempt == 0:
                    delay, limit = 0.0, deadline
                else:
                    delay, limit = min(_RETRY_MAX_BACKOFF_S, _RETRY_FIRST_BACKOFF_S * 2 ** (attempt - 1)), give_up
                if time.monotonic() + delay >= limit:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.endpoints))
