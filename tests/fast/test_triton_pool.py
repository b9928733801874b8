"""TritonPool's choice of endpoint, with the Triton calls of each endpoint replaced (unit test of one module)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from sentiment_server.backend.triton_client import TritonEndpoint
from sentiment_server.backend.triton_pool import TritonPool
from sentiment_server.errors import BackendUnavailable, ModelMismatch
from sentiment_server.model_artifact import ModelInfo

INFO = ModelInfo("m", "src", ["a", "b"], "single_label_classification", 16, 0, "python", "fp32", "fp")


def endpoint(url: str, *, ready: bool, output: str = "logits__0", fails: bool | int = False) -> TritonEndpoint:
    """`fails`: every call fails (True), or the first `fails` calls do."""
    e = TritonEndpoint(url, "m")  # the channel connects lazily: nothing is dialled here
    e.calls = 0  # type: ignore[attr-defined]
    e.token_type_ids = []  # type: ignore[attr-defined]  # what each call was given

    async def is_model_ready(timeout_s: float) -> bool:
        e.ready = ready
        return ready

    async def check_model(info: ModelInfo, timeout_s: float = 10.0) -> str:
        return output

    async def infer(output_name, ids, mask, timeout_s, headers=None, token_type_ids=None):
        e.calls += 1  # type: ignore[attr-defined]
        e.token_type_ids.append(token_type_ids)  # type: ignore[attr-defined]
        if fails is True or e.calls <= fails:  # type: ignore[attr-defined]
            e.ready = False
            raise BackendUnavailable("down")
        return np.zeros((ids.shape[0], 2), dtype=np.float32)

    e.is_model_ready = is_model_ready  # type: ignore[method-assign]
    e.check_model = check_model  # type: ignore[method-assign]
    e.infer = infer  # type: ignore[method-assign]
    return e


def batch() -> tuple[Any, Any]:
    return np.ones((2, 3), dtype=np.int64), np.ones((2, 3), dtype=np.int64)


async def test_unavailable_endpoint_is_retried_on_another():
    dead, live = endpoint("dead:1", ready=True, fails=True), endpoint("live:1", ready=True)
    pool = TritonPool([dead, live])
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    dead.in_flight = -1  # make the dead one the first choice
    logits = await pool.infer(*batch(), time.monotonic() + 5)
    assert logits.shape == (2, 2)
    assert (dead.calls, live.calls) == (1, 1)  # type: ignore[attr-defined]


async def test_all_down_is_unavailable():
    pool = TritonPool([endpoint("a:1", ready=True, fails=True), endpoint("b:1", ready=True, fails=True)])
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    with pytest.raises(BackendUnavailable):
        await pool.infer(*batch(), time.monotonic() + 5)


async def test_an_endpoint_not_ready_at_start_is_checked_when_it_comes_up():
    up, later = endpoint("up:1", ready=True), endpoint("later:1", ready=False)
    pool = TritonPool([up, later])
    await pool.refresh(1.0)
    await pool.check_model(INFO)  # does not fail because `later` is down
    assert pool._pick(set()) is up
    later_ready = endpoint("later:1", ready=True)
    pool.endpoints[1] = later_ready
    await pool.refresh(1.0)
    up.in_flight = 5
    assert pool._pick(set()) is later_ready


async def test_an_endpoint_with_a_different_model_is_never_used():
    good, other = endpoint("good:1", ready=True), endpoint("other:1", ready=False, output="probs")
    pool = TritonPool([good, other])
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    pool.endpoints[1] = other = endpoint("other:1", ready=True, output="probs")
    await pool.refresh(1.0)  # logs the mismatch, keeps serving on `good`
    good.in_flight = 5
    assert pool._pick(set()) is good
    startup = TritonPool([endpoint("good:1", ready=True), endpoint("other:1", ready=True, output="probs")])
    await startup.refresh(1.0)
    with pytest.raises(ModelMismatch):  # at start-up a mismatch refuses to start
        await startup.check_model(INFO)


async def test_a_batch_keeps_retrying_while_triton_restarts_within_retry_s():
    restarting = endpoint("a:1", ready=True, fails=5)
    pool = TritonPool([restarting], retry_s=5.0)
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    logits = await pool.infer(*batch(), time.monotonic() + 5)
    assert logits.shape == (2, 2) and restarting.calls == 6  # type: ignore[attr-defined]


async def test_retries_stop_at_the_deadline_and_at_retry_s():
    for retry_s, deadline_s in ((5.0, 0.3), (0.3, 5.0)):
        pool = TritonPool([endpoint("a:1", ready=True, fails=True)], retry_s=retry_s)
        await pool.refresh(1.0)
        await pool.check_model(INFO)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await pool.infer(*batch(), started + deadline_s)
        assert time.monotonic() - started < 0.3 + 0.1


async def test_repeated_data_path_failures_keep_an_endpoint_unready_until_a_probe_inference_works():
    """ModelReady may say yes while batches fail: three failures in a row, and only a real inference counts."""
    flaky = endpoint("a:1", ready=True)
    pool = TritonPool([flaky])
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    probes: list[bool] = []

    async def probe(output_name: str, timeout_s: float) -> bool:
        works = len(probes) >= 1  # the first probe fails, the second works
        probes.append(works)
        if works:
            flaky.needs_probe = False
        return works

    flaky.probe = probe  # type: ignore[method-assign]
    for _ in range(3):
        await flaky._data_path_failed(BackendUnavailable("model backend unavailable"))
    assert flaky.needs_probe
    assert not await pool.refresh(1.0)  # ModelReady says yes; the probe fails: not ready
    assert await pool.refresh(1.0)  # the probe works: ready again
    assert probes == [False, True] and not flaky.needs_probe
    assert await pool.refresh(1.0) and probes == [False, True]  # no more probes once it works
    await pool.close()


async def test_token_type_ids_reach_the_endpoint_only_when_given():
    e = endpoint("a:1", ready=True)
    pool = TritonPool([e])
    await pool.refresh(1.0)
    await pool.check_model(INFO)
    ids, mask = batch()
    types = np.array([[0, 0, 1], [0, 1, 1]], dtype=np.int64)
    await pool.infer(ids, mask, time.monotonic() + 5)
    await pool.infer(ids, mask, time.monotonic() + 5, token_type_ids=types)
    assert e.token_type_ids[0] is None and e.token_type_ids[1] is types  # type: ignore[attr-defined]
    await pool.close()
