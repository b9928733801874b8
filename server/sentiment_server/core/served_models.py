"""The models the front-end serves: per name, the version that answers new calls, switched atomically.

A call takes its `ServedVersion` once, at its start, and keeps it to the end:
its tokenizer, labels, coalescer and Triton version all come from that one
version, whatever a rollout switches meanwhile. A switched-out version is
drained (its calls finish) before it is closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import InvalidInput, ModelNotFound, ServiceError
from ..model_artifact import ModelInfo, model_name_problem
from .inference import InferenceBackend, ServedModel
from .pipeline import ClassificationPipeline

_DRAIN_POLL_S = 0.01


@dataclass(eq=False)
class ServedVersion:
    """One model version as served: its tokenizer and labels, its coalescer, its backend pinned to it."""

    model: ServedModel
    backend: InferenceBackend
    pipeline: ClassificationPipeline
    ready: bool = field(default=True)

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def name(self) -> str:
        return self.model.info.model_name

    @property
    def version(self) -> str:
        return self.model.info.version

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no call is using this version; False when some still are after `timeout_s`."""
        until = time.monotonic() + timeout_s
        while self.pipeline.in_flight:
            if time.monotonic() >= until:
                return False
            await asyncio.sleep(_DRAIN_POLL_S)
        return True

    async def refresh(self, timeout_s: float) -> bool:
        self.ready = await self.backend.refresh(timeout_s)
        return self.ready

    async def close(self) -> None:
        await self.pipeline.coalescer.stop()
        await self.backend.close()


def not_served(name: str, served: Iterable[str]) -> ServiceError:
    """The refusal for a model name this service does not serve: a malformed name, or an unknown one."""
    problem = model_name_problem(name)
    if problem is not None:
        return InvalidInput(problem)
    return ModelNotFound(f"no model named {name!r}; this service serves {', '.join(sorted(served))}")


class VersionHistory:
    """Per model, the versions switched away from, oldest first: what a rollback goes back to."""

    def __init__(self) -> None:
        self._history: dict[str, list[str]] = {}

    def switched(self, name: str, old: str, new: str) -> None:
        history = self._history.setdefault(name, [])
        if history and history[-1] == new:
            history.pop()  # a rollback: the version it went back to is no longer "before"
        else:
            history.append(old)

    def previous(self, name: str) -> str | None:
        history = self._history.get(name)
        return history[-1] if history else None


class ServedModels:
    """Name -> the version answering now; the default model answers calls that name none."""

    def __init__(self, versions: Iterable[ServedVersion], default: str = "") -> None:
        self._current = {v.name: v for v in versions}
        if not self._current:
            raise ValueError("at least one model is needed")
        self.default = default or min(self._current)
        if self.default not in self._current:
            raise ValueError(f"default model {self.default!r} is not among {sorted(self._current)}")
        self._history = VersionHistory()

    def get(self, name: str) -> ServedVersion:
        """The version answering `name` now ("" = the default model); INVALID_ARGUMENT or NOT_FOUND otherwise."""
        served = self._current.get(name or self.default)
        if served is None:
            raise not_served(name, self._current)
        return served

    def current(self) -> list[ServedVersion]:
        """Every model's current version, by name."""
        return [self._current[name] for name in sorted(self._current)]

    def switch(self, new: ServedVersion) -> ServedVersion:
        """New calls for `new.name` get `new` from now on; returns the version they got before."""
        old = self.get(new.name)
        self._current[new.name] = new
        self._history.switched(new.name, old.version, new.version)
        return old

    def previous_version(self, name: str) -> str | None:
        """The version `name` answered with before the current one, if this process switched it."""
        return self._history.previous(name)

    async def refresh(self, timeout_s: float) -> bool:
        """Probe every model's current version; True while all of them can answer."""
        ready = await asyncio.gather(*(v.refresh(timeout_s) for v in self._current.values()))
        return all(ready)

    async def close(self) -> None:
        await asyncio.gather(*(v.close() for v in self._current.values()))
