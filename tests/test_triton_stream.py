"""TritonEndpoint's inference streams, against a real embedded Triton."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sentiment_server.backend.triton_client import TritonEndpoint
from sentiment_server.backend.triton_process import EmbeddedTriton
from sentiment_server.errors import BackendUnavailable
from sentiment_server.model_artifact import LOGITS

pytestmark = pytest.mark.triton

TRACED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}  # sends it unary


def batch(rows: int, length: int, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    ids = np.random.default_rng(seed).integers(1000, 2000, size=(rows, length), dtype=np.int64)
    return ids, np.ones_like(ids)


async def test_concurrent_batches_on_streams_get_their_own_rows(triton: EmbeddedTriton):
    endpoint = TritonEndpoint(triton.grpc_url, "sentiment")
    unary_only = TritonEndpoint(triton.grpc_url, "sentiment", streams=False)  # --no-triton-streams
    try:
        assert await endpoint.is_model_ready(5.0)
        batches = [batch(rows, length, seed) for seed, (rows, length) in enumerate([(1, 5), (3, 9), (6, 4), (2, 12)])]
        streamed = await asyncio.gather(*(endpoint.infer(LOGITS, ids, mask, 10.0) for ids, mask in batches))
        assert len(endpoint._streams) == len(batches)  # on streams, one batch at a time each
        for (ids, mask), logits in zip(batches, streamed, strict=True):
            traced = await endpoint.infer(LOGITS, ids, mask, 10.0, headers=TRACED)
            unary = await unary_only.infer(LOGITS, ids, mask, 10.0)
            assert logits.shape == (len(ids), 2)
            np.testing.assert_allclose(logits, traced, atol=1e-5)  # answers matched to their requests
            np.testing.assert_allclose(logits, unary, atol=1e-5)
        assert endpoint.in_flight == 0 and len(endpoint._streams) == len(batches) and not unary_only._streams
    finally:
        await asyncio.gather(endpoint.close(), unary_only.close())


async def test_the_stream_fails_fast_when_triton_dies_and_lets_a_stopping_triton_exit(model_repository: Path):
    ids, mask = batch(2, 6, 0)
    killed = EmbeddedTriton(model_repository, grpc_port=0, metrics_port=0)
    stopping = EmbeddedTriton(model_repository, grpc_port=0, metrics_port=0)
    for server in (killed, stopping):
        server.start()
    try:
        for server in (killed, stopping):
            server.wait_ready("sentiment", timeout_s=120)
        dead, idle = TritonEndpoint(killed.grpc_url, "sentiment"), TritonEndpoint(stopping.grpc_url, "sentiment")
        for endpoint in (dead, idle):
            assert (await endpoint.infer(LOGITS, ids, mask, 10.0)).shape == (2, 2)  # the stream is open

        # A dead Triton: the call on the stream and the next one (a new stream) fail at once, not at their deadline.
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await dead.infer(LOGITS, ids, mask, 30.0)
            assert time.monotonic() - started < 5.0

        # A stopping Triton waits for open streams: the health check closes the stream once the model is gone.
        assert stopping.pid is not None
        os.kill(stopping.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while await idle.is_model_ready(1.0):
            assert time.monotonic() < deadline, "the model stayed ready after SIGTERM"
            await asyncio.sleep(0.2)
        assert idle._streams == []
        while stopping.is_running():
            assert time.monotonic() < deadline, "Triton did not exit with the stream closed"
            await asyncio.sleep(0.2)
        await asyncio.gather(dead.close(), idle.close())
    finally:
        killed.stop()
        stopping.stop()


async def test_interrupted_batches_never_leave_a_broken_stream_behind(triton: EmbeddedTriton):
    """Callers cancelled mid-write and deadlines that expire during the first write: afterwards every batch works.

    A stream interrupted this way once stayed open and idle, so every later batch was handed the same broken
    stream and failed with UNAVAILABLE while Triton itself answered (a black hole).
    """
    import random

    from sentiment_server.backend.triton_pool import TritonPool

    endpoint = TritonEndpoint(triton.grpc_url, "sentiment")
    pool = TritonPool([endpoint])
    rng = random.Random(11)
    small, large = batch(1, 6, 1), batch(32, 300, 2)
    try:
        assert await pool.refresh(5.0)
        pool.output_name = LOGITS
        pool._checked.add(endpoint)

        async def interrupted(i: int) -> None:
            ids, mask = large if i % 3 == 0 else small
            deadline = time.monotonic() + rng.choice([0.0005, 0.002, 5.0])
            call = asyncio.ensure_future(pool.infer(ids, mask, deadline))
            await asyncio.sleep(rng.uniform(0, 0.003))
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)

        for _ in range(15):
            await asyncio.gather(*(interrupted(i) for i in range(16)))
            logits = await pool.infer(*small, time.monotonic() + 10)
            assert logits.shape == (1, 2)
        assert all(stream.is_idle for stream in endpoint._streams if stream.is_open)
    finally:
        await pool.close()
