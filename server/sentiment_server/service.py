"""Production wiring: the model from the repository, the Triton pool, the gRPC front-end around them."""

from __future__ import annotations

import asyncio
import logging
import time

from .backend.triton_client import TritonEndpoint, TritonTLS
from .backend.triton_pool import TritonPool
from .core.inference import ServedModel
from .errors import TritonNotReady
from .model_artifact import ModelInfo
from .settings import ServeSettings
from .transport.server import FrontEnd, create_server

log = logging.getLogger(__name__)


def triton_pool(settings: ServeSettings) -> TritonPool:
    tls = (
        TritonTLS(
            root_certificates=settings.triton_tls_ca or None,
            private_key=settings.triton_tls_key or None,
            certificate_chain=settings.triton_tls_cert or None,
        )
        if settings.triton_tls or settings.triton_tls_ca
        else None
    )
    urls = [u.strip() for u in settings.triton_url.split(",") if u.strip()]
    return TritonPool(
        [TritonEndpoint(url, settings.model_name, tls=tls, streams=settings.triton_streams) for url in urls],
        retry_s=settings.triton_retry_s,
    )


async def wait_for_triton(pool: TritonPool, info: ModelInfo, timeout_s: float) -> None:
    """Wait until some endpoint has the model ready, then check it matches the tokenizer and labels."""
    until = time.monotonic() + timeout_s
    while not await pool.refresh(timeout_s=1.0):
        if time.monotonic() > until:
            urls = ", ".join(e.url for e in pool.endpoints)
            raise TritonNotReady(f"Triton at {urls} has no ready model {info.model_name!r} after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)
    await pool.check_model(info)


async def start_front_end(settings: ServeSettings) -> FrontEnd:
    """Read the model, wait for Triton to serve it, then start the front-end on it."""
    model = ServedModel.load(settings.model_repository, settings.model_name)
    pool = triton_pool(settings)
    try:
        await wait_for_triton(pool, model.info, settings.startup_timeout_s)
        front = await create_server(settings, pool, model)
    except BaseException:
        await pool.close()
        raise
    log.info("model %s via Triton %s", settings.model_name, settings.triton_url)
    return front
