"""The front-end's own capacity, with the model's cost taken away: `python bench/frontend.py [--quick]`.

It builds a TINY DistilBERT (random weights, exported with one torch thread,
in a temporary directory), starts the embedded Triton on it and
`sentiment-server serve` in front (bench/procs.py), and measures three paths
under closed-loop load, at each `--concurrency` (default 1, 16, 64):

  unary    Classify, one text per call
  batch    Classify, 32 texts per call
  stream   ClassifyStream, one text per message, `--stream-window` (64) in flight (one row)

With `--workers 1 2`, each set of rows is taken again with that many front-end
worker processes (`serve --workers`), the client spreading its calls over four
connections per worker; the front-end's CPU is the parent's and every worker's.

Each cell has a warm-up, then a measuring window of `--seconds` (default 10).
Alongside, in the same run, bench/grpc_floor.floor_cpu measures the floor: a
bare grpc.aio proxy that forwards Classify to an echo server and does nothing
else, with the same texts per call and the same concurrency.

A lone call, paired: concurrency 1, alternating with Triton direct on the same
tiny model for `--lone-s` (20 s), the median of the paired differences is the
latency the front-end itself adds; next to it, bench/grpc_floor.floor_hop: what
one no-op grpc.aio hop adds after the same idle time (a process woken after
idling answers later, and the front-end idles while Triton computes).

A last line gives the model's tokenizer alone (`encode_batch`, 32 texts a
call, in this process): its CPU per text is a floor no Python front-end gets
under, whatever it does with gRPC and batching.

Columns: calls/s and texts/s finished in the window; p50/p99 latency; the
front-end process's CPU seconds over the window (utime + stime of its pid in
/proc) per call and per text; and `x floor`, the front-end's CPU ms per call
over the floor proxy's CPU ms per call for the same texts per call and
concurrency (stream messages are set against one-text unary calls at the
stream's window). The JSON (`--out`) also holds Triton's CPU (its pid and
backend stubs) and the client's (this process), each per call.

How to read it: with a tiny model Triton answers in well under a millisecond,
so calls/s is what the front-end (and the client, sharing the CPUs) can push,
not what a GPU allows. On a shared machine the wall-clock rates and latencies
move with other people's load; CPU seconds per call from /proc are each
process's own and hold. A ratio of N means the front-end spends N times the
CPU of a bare grpc.aio hop on each call: tokenizing, coalescing, building
Triton's request, reading its answer; what is above 1 is the service's own
work, what is under it (1) is gRPC in Python. The front-end's capacity on
this machine is about (cores it may use) / (CPU s per call) calls/s.

Everything started binds 127.0.0.1 and is stopped by pid on every way out.
Writes JSON to `--out` (default bench/results/frontend.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import corpus
import grpc_floor
from clients import Service, TritonDirect, paired_c1
from load import Measurement
from procs import Processes, children

log = logging.getLogger("bench")
RESULTS = Path(__file__).resolve().parent / "results"
MODEL_NAME = "sentiment"  # the name bench/procs.py waits for
BATCH = 32
CONNECTIONS_PER_WORKER = 4


def build_repository(root: Path) -> Path:
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
    from sentiment_server.tooling.export import export_model

    checkpoint = build_tiny_checkpoint(root / "checkpoint", full_size=False)
    repository = root / "model_repository"
    export_model(str(checkpoint), repository, model_name=MODEL_NAME, torch_threads=1)
    return repository


def cell(path: str, concurrency: int, texts: int, m: Measurement, cpu: dict[str, float]) -> dict[str, Any]:
    calls = m.calls

    def per_call_ms(seconds: float) -> float:
        return 1000 * seconds / calls if calls else float("nan")

    return {
        "path": path,
        "concurrency": concurrency,
        "texts_per_call": texts,
        "calls": calls,
        "errors": m.errors,
        "seconds": m.seconds,
        "calls_per_s": calls / m.seconds if m.seconds else 0.0,
        "texts_per_s": m.sentences_per_s,
        "p50_ms": m.percentile_ms(50),
        "p99_ms": m.percentile_ms(99),
        "frontend_cpu_s": cpu["frontend"],
        "frontend_cpu_ms_per_call": per_call_ms(cpu["frontend"]),
        "frontend_cpu_ms_per_text": 1000 * cpu["frontend"] / m.sentences if m.sentences else float("nan"),
        "triton_cpu_ms_per_call": per_call_ms(cpu["triton"]),
        "client_cpu_ms_per_call": per_call_ms(cpu["client"]),
    }


async def measure_service(
    procs: Processes,
    workload: corpus.Workload,
    concurrencies: list[int],
    window: int,
    warmup_s: float,
    seconds: float,
    workers: int,
) -> list[dict[str, Any]]:
    assert procs.front is not None and procs.triton is not None and procs.triton.pid is not None
    front = procs.front.process.pid
    pids = {
        "frontend": [front, *children(front)],  # with --workers: the parent and every worker
        "triton": [procs.triton.pid, *children(procs.triton.pid)],
        "client": [os.getpid()],
    }
    # Workers share the port connection by connection: several connections give each of them calls.
    service = Service(procs.front.target, workload, connections=CONNECTIONS_PER_WORKER * workers)
    rows = []
    try:
        for path, texts in (("unary", 1), ("batch", BATCH)):
            for c in concurrencies:
                log.info("workers=%d %s c=%d", workers, path, c)
                m, cpu = await asyncio.gather(
                    service.measure(c, texts, warmup_s, seconds), grpc_floor.cpu_window(pids, warmup_s, seconds)
                )
                rows.append(cell(path, c, texts, m, cpu) | {"workers": workers})
        log.info("workers=%d stream window=%d", workers, window)
        m, cpu = await asyncio.gather(
            service.measure_stream(window, 1, warmup_s, seconds), grpc_floor.cpu_window(pids, warmup_s, seconds)
        )
        rows.append(cell("stream", window, 1, m, cpu) | {"workers": workers})
    finally:
        await service.close()
    return rows


async def measure_lone_call(
    procs: Processes, tokenizer_json: Path, workload: corpus.Workload, seconds: float
) -> dict[str, float]:
    """Concurrency 1, paired with Triton direct on the tiny model: the latency the front-end itself adds."""
    assert procs.front is not None and procs.triton is not None
    direct = TritonDirect(procs.triton.grpc_url, tokenizer_json, workload)
    service = Service(procs.front.target, workload)
    try:
        await paired_c1(direct, service, min(2.0, seconds))  # warm-up
        d, s, paired_ms = await paired_c1(direct, service, seconds)
    finally:
        await asyncio.gather(direct.close(), service.close())
    return {
        "direct_p50_ms": d.percentile_ms(50),
        "service_p50_ms": s.percentile_ms(50),
        "service_over_direct_ms": paired_ms,
        "pairs": d.calls,
    }


def tokenizer_cpu_ms_per_text(tokenizer_json: Path, workload: corpus.Workload, rounds: int = 20) -> float:
    """CPU ms per text of the model's tokenizer alone (`encode_batch`, 32 texts a call, in this process): what
    any front-end in Python pays per text before gRPC, batching or Triton, the floor for CPU per text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(max_length=512)
    texts = list(workload.texts)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    for batch in batches:
        tokenizer.encode_batch(batch)  # warm
    started = time.process_time()  # every thread of this process: encode_batch may use several
    for _ in range(rounds):
        for batch in batches:
            tokenizer.encode_batch(batch)
    return 1000 * (time.process_time() - started) / (rounds * len(texts))


def add_floor(rows: list[dict[str, Any]], floor: list[grpc_floor.FloorCell]) -> None:
    by_cell = {(f.texts_per_call, f.concurrency): f for f in floor}
    for row in rows:
        f = by_cell.get((row["texts_per_call"], row["concurrency"]))
        row["floor_cpu_ms_per_call"] = f.cpu_ms_per_call if f else float("nan")
        row["ratio_to_floor"] = row["frontend_cpu_ms_per_call"] / f.cpu_ms_per_call if f else float("nan")


def table(
    rows: list[dict[str, Any]], floor: list[grpc_floor.FloorCell], tokenizer_ms: float, lone: dict[str, float]
) -> str:
    lines = [
        "| workers | path | concurrency | calls/s | texts/s | p50 ms | p99 ms | front-end CPU ms/call | CPU ms/text "
        "| floor CPU ms/call | x floor | client CPU ms/call |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['path']} | {r['concurrency']} | {r['calls_per_s']:.0f} | {r['texts_per_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['frontend_cpu_ms_per_call']:.3f} "
            f"| {r['frontend_cpu_ms_per_text']:.3f} | {r['floor_cpu_ms_per_call']:.3f} | {r['ratio_to_floor']:.2f} "
            f"| {r['client_cpu_ms_per_call']:.3f} |"
        )
    lines += [
        "",
        "| floor (bare grpc.aio proxy) texts/call | concurrency | calls/s | p50 ms | p99 ms | proxy CPU ms/call |",
    ]
    lines.append("|---:|---:|---:|---:|---:|---:|")
    for f in floor:
        lines.append(
            f"| {f.texts_per_call} | {f.concurrency} | {f.calls_per_s:.0f} | {f.p50_ms:.2f} | {f.p99_ms:.2f} "
            f"| {f.cpu_ms_per_call:.3f} |"
        )
    lines += [
        "",
        f"Tokenizer alone (encode_batch, {BATCH} texts a call): {tokenizer_ms:.3f} CPU ms per text.",
        "",
        f"Lone call (concurrency 1, paired medians over {lone['pairs']:.0f} pairs): the service adds "
        f"{lone['service_over_direct_ms']:+.2f} ms to Triton direct (p50 {lone['service_p50_ms']:.2f} against "
        f"{lone['direct_p50_ms']:.2f} ms); one no-op grpc.aio hop adds {lone['floor_hop_ms']:+.2f} ms after the "
        f"same {lone['floor_gap_ms']:.1f} ms idle.",
    ]
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind, so every `finally` stops its process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="callers per cell (1 16 64)")
    parser.add_argument("--seconds", type=float, default=None, help="measuring window per cell (10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up per cell (2; --quick 1)")
    parser.add_argument("--stream-window", type=int, default=64, help="ClassifyStream messages in flight (64)")
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 16, 5-s windows")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1], help="front-end worker processes, one set of rows each (1)"
    )
    parser.add_argument("--lone-s", type=float, default=None, help="paired concurrency-1 window (20; --quick 8)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontend.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    concurrencies = args.concurrency or ([1, 16] if args.quick else [1, 16, 64])
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    lone_s = args.lone_s or (8.0 if args.quick else 20.0)
    floor_calls = 300 if args.quick else 1000
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-frontend-") as tmp:
        root = Path(tmp)
        log.info("building and exporting a tiny checkpoint")
        repository = build_repository(root)
        tokenizer_json = repository / MODEL_NAME / "1" / "tokenizer.json"
        workload = corpus.build("short", tokenizer_json, size=512)
        tokenizer_ms = tokenizer_cpu_ms_per_text(tokenizer_json, workload)
        (root / "logs").mkdir()
        rows = []
        # The tiny model stands in for an accelerator: the planner learns what its passes cost.
        serve_args = ["--batch-overhead-tokens", "auto"]
        with Processes(repository, root / "logs", serve_args=["--workers", str(args.workers[0]), *serve_args]) as procs:
            log.info("lone call, paired with Triton direct, %.0f s", lone_s)
            lone = asyncio.run(measure_lone_call(procs, tokenizer_json, workload, lone_s))
            for n, workers in enumerate(args.workers):
                if n > 0:
                    procs.start_front_end(["--workers", str(workers), *serve_args])
                rows += asyncio.run(
                    measure_service(procs, workload, concurrencies, args.stream_window, warmup, seconds, workers)
                )
    floor_cells = sorted({(t, c) for t in (1, BATCH) for c in concurrencies} | {(1, args.stream_window)})
    log.info("floor: %d cells", len(floor_cells))
    floor = grpc_floor.floor_cpu(floor_cells, warmup, seconds)
    add_floor(rows, floor)
    # The front-end idles while Triton computes, and a thread woken after idling answers later.
    lone["floor_gap_ms"] = lone["direct_p50_ms"]
    lone["floor_hop_ms"] = grpc_floor.floor_hop(floor_calls, lone["floor_gap_ms"] / 1000).hop_ms
    print(table(rows, floor, tokenizer_ms, lone))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "started": started,
                "seconds": seconds,
                "warmup_s": warmup,
                "rows": rows,
                "floor": [f.as_dict() for f in floor],
                "tokenizer_cpu_ms_per_text": tokenizer_ms,
                "lone_call": lone,
            },
            indent=2,
        )
    )
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
