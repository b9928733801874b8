"""Switching a model to another version without dropping a call.

A rollout starts the new version next to the old one (the `VersionSource`
loads it in Triton and waits until it answers), replays the texts its export
recorded and compares the logits (which also warms it), then switches new
calls to it at once (`ServedModels.switch`). Calls already running finish on
the old version; once they are done the old version is closed and unloaded.
A version that fails any step is never switched to: the old one keeps
serving and the refusal says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import RolloutRefused, ServiceError
from .inference import InferenceBackend, ServedModel
from .pipeline import ClassifyOptions
from .served_models import ServedModels, ServedVersion

log = logging.getLogger(__name__)

WARM_UP_TEXT = "A short sentence to warm the new version up."  # for exports that recorded no texts
REPLAY_TIMEOUT_S = 60.0


class VersionSource(Protocol):
    """Where versions come from: the model repository and Triton in production, fakes in tests."""

    def newest_version(self, model_name: str) -> str | None:
        """The newest version the repository holds."""
        ...

    def older_version(self, model_name: str, version: str) -> str | None:
        """The newest version the repository holds below `version`."""
        ...

    def read(self, model_name: str, version: str) -> ServedModel:
        """`version`'s tokenizer and description; raises RolloutRefused."""
        ...

    async def start(self, model: ServedModel, serving: str) -> InferenceBackend:
        """Have `model`'s version answering next to `serving`; raises RolloutRefused."""
        ...

    async def retire(self, model_name: str, version: str, serving: str) -> None:
        """`version` is no longer used: unload it, keep `serving`."""
        ...


@dataclass(frozen=True)
class Switched:
    model: str
    previous_version: str
    version: str


class Rollouts:
    def __init__(
        self,
        models: ServedModels,
        source: VersionSource,
        build: Callable[[ServedModel, InferenceBackend], ServedVersion],
        drain_timeout_s: float,
    ) -> None:
        self.models = models
        self.source = source
        self.build = build
        self.drain_timeout_s = drain_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def rollout(self, name: str, version: str = "", allow_label_change: bool = False) -> Switched:
        """Switch `name` ("" = the default model) to `version` ("" = the newest in the repository)."""
        current = self.models.get(name)
        target = version or self.source.newest_version(current.name)
        if target is None:
            raise RolloutRefused(f"model {current.name!r} has no version in the model repository")
        return await self._switch(current.name, target, allow_label_change)

    async def rollback(self, name: str, allow_label_change: bool = False) -> Switched:
        """Switch `name` back to the version it answered with before (else the next older one)."""
        current = self.models.get(name)
        target = self.models.previous_version(current.name) or self.source.older_version(current.name, current.version)
        if target is None:
            raise RolloutRefused(f"model {current.name!r} has no version before {current.version} to roll back to")
        return await self._switch(current.name, target, allow_label_change)

    async def _switch(self, name: str, target: str, allow_label_change: bool) -> Switched:
        async with self._locks.setdefault(name, asyncio.Lock()):
            current = self.models.get(name)
            if target == current.version:
                return Switched(name, current.version, target)
            new = await self._start(current, target, allow_label_change)
            old = self.models.switch(new)
            log.info("model %s: version %s answers new calls (was %s)", name, target, old.version)
            if not await old.drain(self.drain_timeout_s):
                log.warning(
                    "model %s: version %s still has calls after %.0fs; closing it",
                    name,
                    old.version,
                    self.drain_timeout_s,
                )
            await old.close()
            await self.source.retire(name, old.version, target)
            log.info("model %s: version %s unloaded", name, old.version)
            return Switched(name, old.version, target)

    async def _start(self, current: ServedVersion, target: str, allow_label_change: bool) -> ServedVersion:
        name = current.name
        model = self.source.read(name, target)
        _check_labels(current, model, allow_label_change)
        new = self.build(model, await self.source.start(model, current.version))
        try:
            await _replay_expectations(new)
        except BaseException as exc:
            await new.close()
            await self.source.retire(name, target, current.version)
            if isinstance(exc, ServiceError) and not isinstance(exc, RolloutRefused):
                raise RolloutRefused(f"model {name!r} version {target} failed its check: {exc}") from exc
            raise
        return new


def _check_labels(current: ServedVersion, new: ServedModel, allow_label_change: bool) -> None:
    old_labels, new_labels = set(current.info.labels), set(new.info.labels)
    if old_labels != new_labels and not allow_label_change:
        raise RolloutRefused(
            f"model {current.name!r} version {new.info.version} has labels {sorted(new_labels)}, version "
            f"{current.version} has {sorted(old_labels)}; pass allow_label_change to switch anyway"
        )


async def _replay_expectations(new: ServedVersion) -> None:
    """The texts the export recorded, through the new version's whole path: the same logits, or refused.

    One text per call, as they were recorded: nothing else reaches the new version yet, so each is a batch
    of its own (int8's dynamic quantization scales depend on the whole batch).
    """
    info = new.info
    deadline = time.monotonic() + REPLAY_TIMEOUT_S
    rows = []
    for text in info.expected_texts or [WARM_UP_TEXT]:
        output = await new.pipeline.classify([text], ClassifyOptions(return_logits=True), deadline)
        rows.append(output.results[0].logits)
    if not info.expected_texts:
        return
    got = np.array(rows, dtype=np.float64)
    expected = np.array(info.expected_logits, dtype=np.float64)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0.0, atol=info.expected_atol):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        raise RolloutRefused(
            f"model {info.model_name!r} version {info.version} answers its export's texts differently "
            f"(largest logit difference {worst:.3g}, allowed {info.expected_atol:g})"
        )
