"""Production wiring: the models from the repository, Triton pools per model version, the front-end around them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from .backend.triton_client import TritonEndpoint, TritonTLS
from .backend.triton_pool import TritonPool
from .backend.triton_repository import TritonRepository
from .core.inference import InferenceBackend, ServedModel
from .core.rollout import Rollouts
from .errors import RolloutRefused, ServiceError, StartupError, TritonNotReady
from .model_artifact import ModelInfo, model_names, model_versions, set_serving_versions
from .settings import ServeSettings
from .transport.server import FrontEnd, create_server

log = logging.getLogger(__name__)


def _tls(settings: ServeSettings) -> TritonTLS | None:
    if not (settings.triton_tls or settings.triton_tls_ca):
        return None
    return TritonTLS(
        root_certificates=settings.triton_tls_ca or None,
        private_key=settings.triton_tls_key or None,
        certificate_chain=settings.triton_tls_cert or None,
    )


def _urls(settings: ServeSettings) -> list[str]:
    return [u.strip() for u in settings.triton_url.split(",") if u.strip()]


def triton_pool(settings: ServeSettings, model_name: str, version: str = "") -> TritonPool:
    """Batches for one model version (every request pins it), over every Triton endpoint."""
    tls = _tls(settings)
    return TritonPool(
        [
            TritonEndpoint(url, model_name, model_version=version, tls=tls, streams=settings.triton_streams)
            for url in _urls(settings)
        ],
        retry_s=settings.triton_retry_s,
    )


async def wait_for_triton(pool: TritonPool, info: ModelInfo, timeout_s: float) -> None:
    """Wait until some endpoint has the model ready, then check it matches the tokenizer and labels."""
    until = time.monotonic() + timeout_s
    while not await pool.refresh(timeout_s=1.0):
        if time.monotonic() > until:
            urls = ", ".join(e.url for e in pool.endpoints)
            raise TritonNotReady(
                f"Triton at {urls} has no ready model {info.model_name!r} version {info.version} after {timeout_s:.0f}s"
            )
        await asyncio.sleep(0.2)
    await pool.check_model(info)


def served_model_names(settings: ServeSettings) -> list[str]:
    """--models, or every model in the repository."""
    available = model_names(settings.model_repository)
    chosen = [n.strip() for n in settings.models.split(",") if n.strip()] or available
    missing = [n for n in chosen if n not in available]
    if missing or not chosen:
        raise StartupError(
            f"model repository {settings.model_repository} has no model {', '.join(missing) or 'at all'} "
            f"(it has: {', '.join(available) or 'none'})"
        )
    return chosen


def default_model(settings: ServeSettings, names: list[str]) -> str:
    """The model for calls that name none: --model-name when it is served, else the first served."""
    return settings.model_name if settings.model_name in names else names[0]


class TritonVersions:
    """Versions from the model repository, made ready in Triton.

    With model control (`up`), a rollout loads the new version next to the
    old one and unloads the old one afterwards, through config.pbtxt's
    version policy, which also makes the switch outlive a restart. Without
    it (a Triton someone else manages), a version must already be ready in
    Triton, and `follow` switches to a newer one as soon as it is.
    """

    def __init__(
        self,
        settings: ServeSettings,
        model_changes: Callable[[], AbstractContextManager[None]] = nullcontext,
    ) -> None:
        """`model_changes`: wraps each load in Triton (the supervisor's, for the stubs that exit then)."""
        self.settings = settings
        self._model_changes = model_changes
        self.repository = settings.model_repository
        self.control = settings.triton_model_control
        self._triton = TritonRepository(_urls(settings)[0], _tls(settings))
        self._refused: set[tuple[str, str]] = set()

    def newest_version(self, model_name: str) -> str | None:
        versions = model_versions(self.repository, model_name)
        return versions[-1] if versions else None

    def older_version(self, model_name: str, version: str) -> str | None:
        older = [v for v in model_versions(self.repository, model_name) if int(v) < int(version)]
        return older[-1] if older else None

    def read(self, model_name: str, version: str) -> ServedModel:
        if version not in model_versions(self.repository, model_name):
            raise RolloutRefused(f"model {model_name!r} has no version {version} in the model repository")
        try:
            return ServedModel.load(self.repository, model_name, version)
        except Exception as exc:
            raise RolloutRefused(f"model {model_name!r} version {version} cannot be read: {exc}") from exc

    async def start(self, model: ServedModel, serving: str) -> InferenceBackend:
        name, version = model.info.model_name, model.info.version
        timeout_s = self.settings.startup_timeout_s
        if self.control:
            try:
                await self._serve_only(name, [serving, version])
            except ServiceError as exc:
                await self.retire(name, version, serving)
                raise RolloutRefused(f"Triton cannot load model {name!r} version {version}: {exc}") from exc
        pool = triton_pool(self.settings, name, version)
        try:
            await wait_for_triton(pool, model.info, timeout_s)
        except (StartupError, ServiceError) as exc:
            await pool.close()
            await self.retire(name, version, serving)
            raise RolloutRefused(f"model {name!r} version {version} is not ready in Triton: {exc}") from exc
        return pool

    async def _serve_only(self, model_name: str, versions: list[str]) -> None:
        """config.pbtxt names `versions`, and Triton reloads the model so: new ones load, others unload."""
        set_serving_versions(self.repository, model_name, versions)
        with self._model_changes():
            await self._triton.load(model_name, self.settings.startup_timeout_s)

    async def retire(self, model_name: str, version: str, serving: str) -> None:
        if not self.control:
            return
        try:
            await self._serve_only(model_name, [serving])
        except ServiceError as exc:
            log.error("model %s: Triton did not unload version %s: %s", model_name, version, exc)

    async def follow(self, rollouts: Rollouts) -> None:
        """Switch each model as `version_to_follow` says, every `version_poll_s`."""
        ready_before: dict[str, set[str]] = {}
        while True:
            await asyncio.sleep(self.settings.version_poll_s)
            for served in rollouts.models.current():
                try:
                    ready = await self._triton.ready_versions(served.name, max(1.0, self.settings.health_poll_s))
                except ServiceError as exc:
                    log.debug("model %s: cannot look for new versions: %s", served.name, exc)
                    continue
                exported = set(model_versions(self.repository, served.name))
                usable = [v for v in ready if v in exported and (served.name, v) not in self._refused]
                target = version_to_follow(served.version, usable, ready_before.get(served.name))
                ready_before[served.name] = set(ready)
                if target is not None:
                    await self._follow_to(rollouts, served.name, target)

    async def _follow_to(self, rollouts: Rollouts, name: str, version: str) -> None:
        try:
            await rollouts.rollout(name, version)
        except RolloutRefused as exc:
            self._refused.add((name, version))  # said once; a person decides
            log.error("model %s: not switching to version %s, which Triton serves: %s", name, version, exc)

    async def close(self) -> None:
        await self._triton.close()


def version_to_follow(current: str, ready: list[str], ready_before: set[str] | None) -> str | None:
    """The version a front-end that follows Triton switches to, if any.

    `ready`: the versions Triton has ready now (oldest first) that the repository describes;
    `ready_before`: those of the previous look (None on the first). A newer version that has just become
    ready is followed; one that was ready already is not, so a rollback an operator made sticks. When
    Triton no longer has the current version ready, the newest ready one takes over.
    """
    if not ready:
        return None
    if current not in ready:
        return ready[-1]
    if ready_before is None:
        return None
    fresh = [v for v in ready if v not in ready_before and int(v) > int(current)]
    return fresh[-1] if fresh else None


async def start_front_end(
    settings: ServeSettings, model_changes: Callable[[], AbstractContextManager[None]] = nullcontext
) -> FrontEnd:
    """Read the models, wait for Triton to serve each, then start the front-end on them."""
    names = served_model_names(settings)
    default = default_model(settings, names)
    versions: list[tuple[ServedModel, InferenceBackend]] = []
    source = TritonVersions(settings, model_changes)
    try:
        for name in names:
            model = ServedModel.load(settings.model_repository, name)
            pool = triton_pool(settings, name, model.info.version)
            versions.append((model, pool))
            await wait_for_triton(pool, model.info, settings.startup_timeout_s)
        front = await create_server(settings, versions, source, default)
    except BaseException:
        await asyncio.gather(*(backend.close() for _, backend in versions), source.close())
        raise
    if not source.control and front.rollouts is not None and settings.version_poll_s > 0:
        front.background.append(asyncio.get_running_loop().create_task(source.follow(front.rollouts)))
    front.on_stop.append(source.close)
    log.info("models %s via Triton %s", ", ".join(names), settings.triton_url)
    return front
