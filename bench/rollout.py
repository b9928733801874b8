"""service_rollout: a model version rollout under the benchmark's load, and the dip it causes.

`rollout_row` copies the benchmark's exported repository to a temporary
directory next to it (big files hard-linked where the filesystem allows,
config.pbtxt and model_info.json always real copies: the original is never
written) and stages version 2 there as a copy of version 1 (same files,
`"version": "2"` in its model_info.json; config.pbtxt serves version 1 only).
Identical weights still take the whole path of a real rollout: Triton loads
version 2 next to version 1, the front-end replays the export's texts on it,
switches new calls to it, lets version 1's calls finish, and unloads version 1.

On that copy it starts its own embedded Triton (explicit model control) and
`serve --triton-model-control --admin-port 0`, runs closed-loop load (16
callers, one text of the workload per Classify call) for a warm-up and a
baseline, calls the admin service's Rollout while the load goes on, and keeps
the load up a few seconds after Rollout returns. Every call's completion time,
its `model_version` or its error code is recorded. The row:

- sentences/s: the baseline, the median of the 1-s windows before the rollout;
- p50/p95/p99: the calls that finished while Rollout ran (the baseline's are notes);
- notes: the lowest 1-s window during the rollout over the baseline, the dip
  (seconds of whole 1-s windows from the rollout's start to the load's end below
  80 % of the baseline), the rollout's wall time, failed calls (and their codes),
  calls answered by each version, and whether only version 2 answered the calls
  that finished after Rollout returned.

Everything listens on 127.0.0.1 and is stopped by pid (procs.Processes); the
temporary repository is removed. Bounded: ROLLOUT_TIMEOUT_S for the Rollout
call, CALL_TIMEOUT_S for each call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import corpus
import grpc
import machine
from clients import Service
from load import Measurement
from procs import Processes
from report import Row
from sentiment.v1 import admin_pb2, admin_pb2_grpc

log = logging.getLogger("bench")

MODEL = "sentiment"
CALLERS = 16
WARMUP_S = 2.0  # not counted: every process has run a few batches first
BASELINE_S = 8.0  # 1-s windows just before the rollout
AFTER_S = 4.0  # load kept up after Rollout returns (at least one whole window)
DIP_BELOW = 0.8  # a window below this fraction of the baseline is part of the dip
ROLLOUT_TIMEOUT_S = 300.0
CALL_TIMEOUT_S = 120.0
_SMALL_FILES = frozenset({"config.pbtxt", "model_info.json"})  # rewritten in the copy: never hard-linked


@dataclass(frozen=True)
class Call:
    started: float  # perf_counter
    done: float
    version: str | None  # the response's model_version; None when the call failed
    error: str | None = None  # the gRPC status code's name


def stage_copy(repository: Path, into: Path) -> Path:
    """`repository` copied into `into`/repository, `MODEL`'s version 1 staged again as version 2; returns the copy."""
    from sentiment_server.model_artifact import model_versions, set_serving_versions

    def link_or_copy(src: str, dst: str) -> Any:
        if Path(src).name not in _SMALL_FILES:
            with contextlib.suppress(OSError):  # another filesystem, or no hard links: a copy
                os.link(src, dst)
                return dst
        return shutil.copy2(src, dst)

    copy = into / "repository"
    shutil.copytree(repository, copy, copy_function=link_or_copy, ignore=shutil.ignore_patterns("__pycache__"))
    versions = model_versions(copy, MODEL)
    if versions != ["1"]:
        raise RuntimeError(f"{repository}: model {MODEL!r} has versions {versions}, expected only 1")
    staged = copy / MODEL / "2"
    shutil.copytree(
        copy / MODEL / "1", staged, copy_function=link_or_copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    info_path = staged / "model_info.json"
    info = json.loads(info_path.read_text())
    info["version"] = "2"
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    set_serving_versions(copy, MODEL, ["1"])  # an older export's `latest` policy would load 2 at start
    return copy


def _api_key(serve_args: Sequence[str]) -> str | None:
    """`--api-key KEY` / `--api-key=KEY` among serve's flags (the admin port is behind it too)."""
    args = list(serve_args)
    for i, arg in enumerate(args):
        if arg == "--api-key" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--api-key="):
            return arg.split("=", 1)[1]
    return None


async def _load_and_rollout(
    target: str, admin_target: str, workload: corpus.Workload, api_key: str | None, procs: Processes
) -> dict[str, Any]:
    """Closed-loop load with a Rollout in its middle; every call recorded."""
    service = Service(target, workload)
    requests = service.requests(1)
    admin_channel = grpc.aio.insecure_channel(admin_target)
    admin: Any = admin_pb2_grpc.ModelAdminServiceStub(admin_channel)  # type: ignore[no-untyped-call]
    metadata = (("x-api-key", api_key),) if api_key else ()
    calls: list[Call] = []
    stop = asyncio.Event()
    next_index = itertools.count()

    async def caller() -> None:
        while not stop.is_set():
            request = requests[next(next_index) % len(requests)]
            t0 = time.perf_counter()
            try:
                response = await service.stub.Classify(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                calls.append(Call(t0, time.perf_counter(), None, exc.code().name))
                await asyncio.sleep(0.05)  # a dead service must not turn into a busy loop
                continue
            calls.append(Call(t0, time.perf_counter(), response.model_version))

    outcome: dict[str, Any] = {"calls": calls}
    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    try:
        await asyncio.sleep(WARMUP_S)
        with machine.CpuMonitor(procs.child_pids()) as cpu:
            await asyncio.sleep(BASELINE_S)
        outcome["foreign_cpu"] = round(cpu.share.foreign_cores, 2)
        log.info("rollout: version 2 under load (%d callers)", CALLERS)
        outcome["rollout_started"] = time.perf_counter()
        try:
            done = await admin.Rollout(
                admin_pb2.RolloutRequest(model=MODEL), timeout=ROLLOUT_TIMEOUT_S, metadata=metadata
            )
            outcome["switched"] = (done.previous_version, done.model_version)
        except grpc.aio.AioRpcError as exc:
            outcome["rollout_error"] = f"{exc.code().name}: {exc.details()}"
            log.error("rollout refused: %s", outcome["rollout_error"])
        outcome["rollout_ended"] = time.perf_counter()
        await asyncio.sleep(AFTER_S)
        outcome["load_ended"] = time.perf_counter()
    finally:
        stop.set()  # callers finish the call they are in (each bounded by CALL_TIMEOUT_S)
        _, late = await asyncio.wait(callers, timeout=CALL_TIMEOUT_S + 5)
        for task in late:
            task.cancel()
        ended = await asyncio.gather(*callers, return_exceptions=True)
        await admin_channel.close()
        await service.close()
    crashed = [e for e in ended if isinstance(e, Exception)]  # not an RPC's failure: a bug, the row would lie
    if crashed:
        raise crashed[0]
    return outcome


def summarize(outcome: dict[str, Any], workload: str, dtype: str) -> Row:
    """The row from the recorded calls (see the module docstring)."""
    calls: list[Call] = outcome["calls"]
    r0, r1, end = outcome["rollout_started"], outcome["rollout_ended"], outcome["load_ended"]
    answered = [c for c in calls if c.error is None]

    def per_s(start: float) -> int:  # one text per call: sentences = answered calls
        return sum(1 for c in answered if start <= c.done < start + 1.0)

    baseline_windows = [per_s(r0 - k) for k in range(int(BASELINE_S), 0, -1)]
    baseline = float(statistics.median(baseline_windows))
    whole = int(end - r0)  # whole 1-s windows from the rollout's start to the load's end
    after_windows = [per_s(r0 + i) for i in range(whole)]
    during = after_windows[: max(1, math.ceil(r1 - r0))]  # the windows that overlap the rollout
    lowest = min(during) if during else float("nan")
    dip = [i for i, n in enumerate(after_windows) if n < DIP_BELOW * baseline]
    failed = [c for c in calls if c.error is not None]
    by_version = Counter(c.version for c in answered)
    after = Counter(c.version for c in answered if c.done > r1)
    last_v1 = max((c.done for c in answered if c.version == "1"), default=None)
    first_v2 = min((c.done for c in answered if c.version == "2"), default=None)
    rolling = Measurement(latencies_s=[c.done - c.started for c in answered if r0 <= c.done <= r1])
    base_calls = Measurement(latencies_s=[c.done - c.started for c in answered if r0 - BASELINE_S <= c.done < r0])
    previous, new = outcome.get("switched", (None, None))
    notes: dict[str, Any] = {
        "from_version": previous,
        "to_version": new,
        "rollout_error": outcome.get("rollout_error"),
        "rollout_s": round(r1 - r0, 2),
        "baseline_per_s": round(baseline, 1),
        "lowest_window_fraction": round(lowest / baseline, 3) if baseline else None,
        "dip_s": len(dip),
        "dip_threshold": DIP_BELOW,
        "failed_calls": len(failed),
        "failed_codes": dict(Counter(c.error for c in failed)) or None,
        "calls": len(calls),
        "calls_by_version": {str(v): n for v, n in sorted(by_version.items(), key=lambda kv: str(kv[0]))},
        "calls_after_rollout": sum(after.values()),
        "only_new_after": new is not None and bool(after) and set(after) == {new},
        "last_v1_done_s": round(last_v1 - r0, 2) if last_v1 is not None else None,
        "first_v2_done_s": round(first_v2 - r0, 2) if first_v2 is not None else None,
        "baseline_p50_ms": round(base_calls.percentile_ms(50), 2),
        "baseline_p99_ms": round(base_calls.percentile_ms(99), 2),
        "rollout_calls": len(rolling.latencies_s),
        "baseline_windows": baseline_windows,
        "windows_from_rollout": after_windows,  # answered calls per 1-s window, from the rollout's start
        "foreign_cpu": outcome.get("foreign_cpu"),
        "replayed_texts": outcome.get("replayed_texts"),
    }
    return Row(
        "service_rollout",
        workload,
        CALLERS,
        1,
        round(baseline, 2),
        round(rolling.percentile_ms(50), 2),
        round(rolling.percentile_ms(95), 2),
        round(rolling.percentile_ms(99), 2),
        dtype=dtype,
        notes={k: v for k, v in notes.items() if v is not None},
    )


def rollout_row(
    repository: Path,
    workload: corpus.Workload,
    dtype: str,
    log_dir: Path,
    serve_args: Sequence[str] = (),
    quiet: machine.Quiet | None = None,
) -> Row:
    """The service_rollout row for `workload` on a copy of `repository` (left untouched)."""
    if any(a == "--admin-port" or a.startswith("--admin-port=") for a in serve_args):
        raise ValueError("rollout: the admin port is chosen here (--admin-port 0); leave it out of the serve flags")
    logs = log_dir / "rollout"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".rollout-", dir=repository.parent) as scratch:
        copy = stage_copy(repository, Path(scratch))
        info = json.loads((copy / MODEL / "2" / "model_info.json").read_text())
        replayed = len(info.get("expected_texts") or [])
        log.info("rollout: %s staged as version 2 of a copy (%d export texts to replay)", repository, replayed)
        args = [*serve_args, "--triton-model-control"]
        with Processes(copy, logs, serve_args=args, admin=True) as procs:
            assert procs.front is not None and procs.front.admin_target is not None
            if quiet is not None:
                quiet.wait()
            load = _load_and_rollout(
                procs.front.target, procs.front.admin_target, workload, _api_key(serve_args), procs
            )
            outcome = asyncio.run(load)
    outcome["replayed_texts"] = replayed
    row = summarize(outcome, workload.name, dtype)
    n = row.notes
    log.info(
        "rollout: %s -> %s in %.1f s; baseline %.1f/s, lowest window %.2f x, dip %d s, %d failed calls, by version %s",
        n.get("from_version"), n.get("to_version"), n["rollout_s"], n["baseline_per_s"],
        n.get("lowest_window_fraction", float("nan")), n["dip_s"], n["failed_calls"], n["calls_by_version"],
    )  # fmt: skip
    return row
