"""Side-by-side throughput and latency benchmark: `python bench/run.py [--quick]`.

One run, one machine, one model (full-size DistilBERT, random weights):

  limit            the exported TorchScript model in-process, no server: the best batch size in the best
                   layout of P processes x T torch threads over the usable cores (bench/layouts.py)
  pipeline         transformers.pipeline("text-classification"), fp32, best batch_size (the seed's way)
  triton_direct    tritonclient straight to the same Triton (client tokenizes, one text or 32 per call)
  service_unary    this service's Classify, one text per call, concurrency 1, 16, 64
  service_batch    Classify with 32 texts per call
  service_stream   ClassifyStream, one text per message, 64 messages in flight

on two workloads (`short`: about 16 tokens; `mixed`: 10 to 256 tokens). Writes
bench/results/latest.{json,md,png}. Everything it starts (embedded Triton, the
front-end) listens on 127.0.0.1 and is stopped by pid on the way out.

`--workloads long` (not in the default set: it takes minutes more) measures
texts of 500 to 5,000 tokens as sliding windows, the service's WINDOW with its
defaults (windows of the model's 512 tokens, stride 127, MEAN): the `limit`
row is the tokenizer's overflow windows batched through model.pt in-process
(texts/s at the best batch size of windows), against `service_unary` (one
text per Classify call, concurrency 1 and 16). On a CPU, 16 long texts queue
more than serve's `--triton-timeout-s` (30 s), which caps a call's whole time
in the front-end, queue included: calls then fail with DEADLINE_EXCEEDED and the
run stops; `--serve-arg=--triton-timeout-s=300` lets them finish.

`--rollout` (off by default) adds one `service_rollout` row (first workload,
main dtype), measured after the others: a copy of the exported repository with
version 1 staged again as version 2, its own Triton and front-end
(`serve --triton-model-control`), 16 callers with one text per Classify call,
and the admin service's Rollout to version 2 in the middle of the load (see
bench/rollout.py). Its sentences/s is the baseline before the rollout, its
latencies those of the calls during it; its notes give the lowest 1-s window
during the rollout over the baseline, the dip's length (1-s windows below 80 %),
the rollout's wall time, failed calls, calls answered by each version, and
whether only version 2 answered once Rollout returned. About half a minute
more, plus a Triton start.

The machine may be shared: each measurement waits for other people's
processes to leave the CPUs alone and is repeated when they did not (see
machine.Quiet); the `foreign_cpu` note says how many cores others used anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import corpus
import inprocess
import machine
import models
import report
import rollout
from clients import Service, TritonDirect, paired_c1
from load import Measurement
from procs import Processes
from report import Row
from sentiment_server.model_artifact import DTYPES

log = logging.getLogger("bench")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    """How long and how much to measure. Windows scale with the model's speed (see `window`)."""

    name: str
    limit_batches: dict[str, tuple[int, ...]]
    limit_sample: dict[str, int]
    pipeline_batches: dict[str, tuple[int, ...]]
    pipeline_sample: dict[str, int]
    min_measure_s: float  # shortest measurement window
    turns: float  # window >= this many times one call's expected latency
    c1_seconds: dict[str, float]  # Triton direct and service, text by text, at concurrency 1
    quiet: tuple[int, float, float]  # attempts per measurement, longest wait for quiet, total wait budget
    unary_concurrency: tuple[int, ...] = (1, 16, 64)  # long: 1 and 16 (skipped below)
    batch_texts: int = 32
    batch_concurrency: int = 2
    stream_window: int = 64
    direct_concurrency: tuple[int, ...] = (1, 64)
    other_dtypes: tuple[str, ...] = ()  # the limit and the service's throughput rows in these too
    limit_unsorted: bool = False  # also time the best batch size on texts in corpus order
    skip: frozenset[str] = field(default_factory=frozenset)  # "workload:cell" left out


# long: limit batch sizes count windows; its samples are whole blocks of 16 texts (the corpus's mix of
# lengths); no pipeline row (it would cut each text at 512 tokens); c1_seconds: its service_unary c1 window.
QUICK = Plan(
    name="quick",
    limit_batches={"short": (32, 64), "mixed": (1, 4), "long": (1, 4)},
    limit_sample={"short": 256, "mixed": 64, "long": 16},
    pipeline_batches={"short": (32,), "mixed": (1,)},
    pipeline_sample={"short": 128, "mixed": 24},
    min_measure_s=3.0,
    turns=3.0,
    c1_seconds={"short": 6.0, "mixed": 5.0, "long": 10.0},
    quiet=(2, 5.0, 20.0),
    other_dtypes=("int8",),
    skip=frozenset(
        {"mixed:service_unary:16", "mixed:triton_batch", "mixed:triton_direct:64", "mixed:service_stream"}
        | {"long:service_unary:64"}
    ),
)
FULL = Plan(
    name="full",
    limit_batches={"short": (16, 32, 64, 128), "mixed": (1, 2, 4, 8, 16), "long": (1, 2, 4, 8)},
    limit_sample={"short": 512, "mixed": 96, "long": 32},
    pipeline_batches={"short": (8, 32, 64), "mixed": (1, 4, 8)},
    pipeline_sample={"short": 256, "mixed": 48},
    min_measure_s=8.0,
    turns=5.0,
    c1_seconds={"short": 20.0, "mixed": 30.0, "long": 30.0},
    quiet=(3, 30.0, 240.0),
    other_dtypes=("int8", "bf16"),
    limit_unsorted=True,
    skip=frozenset({"long:service_unary:64"}),
)
MAX_FOREIGN_CORES = 0.15  # a measurement during which others used more is repeated


def window(plan: Plan, rate: float, in_flight: int, turns: float | None = None) -> tuple[float, float]:
    """(warm-up, measure) seconds: the warm-up covers one call's expected latency at `rate` sentences/s."""
    latency = in_flight / max(rate, 1e-3)
    return max(1.0, 1.5 * latency), max(plan.min_measure_s, (turns or plan.turns) * latency)


class Cell:
    """One networked measurement: CPU shares and front-end metrics around it, repeated when disturbed."""

    def __init__(self, procs: Processes, quiet: machine.Quiet) -> None:
        self.procs = procs
        self.quiet = quiet

    async def measure(self, make: Callable[[], Awaitable[Measurement]]) -> tuple[Measurement, dict[str, Any]]:
        kept: tuple[Measurement, dict[str, Any]] | None = None
        for attempt in range(self.quiet.attempts):
            self.quiet.wait()
            m, notes = await self._once(make)
            if kept is None or notes["foreign_cpu"] < kept[1]["foreign_cpu"]:
                kept = (m, notes)
            if notes["foreign_cpu"] <= self.quiet.max_foreign:
                break
            log.info("  others used %.2f cores meanwhile: measuring again (%d)", notes["foreign_cpu"], attempt + 1)
        assert kept is not None
        return kept

    async def _once(self, make: Callable[[], Awaitable[Measurement]]) -> tuple[Measurement, dict[str, Any]]:
        front = self.procs.front
        before = front.metrics() if front else {}
        with machine.CpuMonitor(self.procs.child_pids()) as cpu:
            m = await make()
        after = front.metrics() if front else {}
        # Cores used meanwhile, by whom: Triton (server and model stubs), front-end, this client.
        front_cpu = cpu.per_pid.get(front.process.pid, 0.0) if front else 0.0
        client_cpu = cpu.per_pid.get(os.getpid(), 0.0)
        notes: dict[str, Any] = {
            "foreign_cpu": round(cpu.share.foreign_cores, 2),
            "ours_cpu": round(cpu.share.ours_cores, 2),
            "cpu_split": {
                "triton": round(cpu.share.ours_cores - front_cpu - client_cpu, 2),
                "front_end": round(front_cpu, 2),
                "client": round(client_cpu, 2),
            },
        }

        def delta(name: str) -> float:
            return after.get(name, 0.0) - before.get(name, 0.0)

        padded, real = delta("sentiment_padded_tokens_total"), delta("sentiment_real_tokens_total")
        if padded > 0:
            notes["padding"] = round(1 - real / padded, 3)
            batches = delta("sentiment_batch_texts_count")
            if batches:
                notes["texts_per_batch"] = round(delta("sentiment_batch_texts_sum") / batches, 1)
        return m, notes


def clean_inprocess(quiet: machine.Quiet) -> inprocess.Clean:
    """Cell.measure for the in-process paths (only this process does work)."""

    def run(measure: Callable[[], Measurement]) -> Measurement:
        kept: Measurement | None = None
        for attempt in range(quiet.attempts):
            quiet.wait()
            # Ours: this process and the limit's worker processes, if any.
            with machine.CpuMonitor([p.pid for p in multiprocessing.active_children() if p.pid]) as cpu:
                m = measure()
            m.foreign_cpu = round(cpu.share.foreign_cores, 2)
            if kept is None or m.foreign_cpu < (kept.foreign_cpu or 0.0):
                kept = m
            if not quiet.disturbed(cpu.share):
                break
            log.info("  others used %.2f cores meanwhile: measuring again (%d)", m.foreign_cpu, attempt + 1)
        assert kept is not None
        return kept

    return run


async def networked(
    procs: Processes,
    workload: corpus.Workload,
    dtype: str,
    plan: Plan,
    quiet: machine.Quiet,
    rate: float,
    *,
    throughput_only: bool = False,
) -> list[Row]:
    """Triton direct and the service's rows for one workload; `rate` (the limit) sizes the windows."""
    assert procs.triton is not None and procs.front is not None
    tokenizer_json = models.version_dir(procs.repository) / "tokenizer.json"
    direct = TritonDirect(procs.triton.grpc_url, tokenizer_json, workload)
    service = Service(procs.front.target, workload)
    cell = Cell(procs, quiet)
    rows: list[Row] = []
    name = workload.name
    wanted = [c for c in plan.unary_concurrency if f"{name}:service_unary:{c}" not in plan.skip]
    in_batch = plan.batch_concurrency * plan.batch_texts

    def row(path: str, concurrency: int, texts: int, m: Measurement, **notes: Any) -> None:
        rows.append(Row.of(path, name, concurrency, texts, m, dtype, **notes))

    async def service_unary(c: int, turns: float | None = None, min_s: float = 0.0) -> None:
        log.info("%s: service, %d callers, one text each (%s)", name, c, dtype)
        warmup_s, measure_s = window(plan, rate, c, turns)
        m, notes = await cell.measure(partial(service.measure, c, 1, warmup_s, max(measure_s, min_s)))
        if workload.windowed and "texts_per_batch" in notes:  # the coalescer's rows are windows
            notes["windows_per_batch"] = notes.pop("texts_per_batch")
        row("service_unary", c, 1, m, **notes)

    async def service_batch(turns: float | None = None) -> None:
        callers, texts = plan.batch_concurrency, plan.batch_texts
        log.info("%s: service, %d callers, %d texts each (%s)", name, callers, texts, dtype)
        m, notes = await cell.measure(partial(service.measure, callers, texts, *window(plan, rate, in_batch, turns)))
        row("service_batch", callers, texts, m, **notes)

    try:
        if workload.windowed:
            # Long texts: only one text per call as windows compares with the windowed limit
            # (Triton direct would need windowing of its own; the pipeline cuts at 512 tokens).
            await service.measure(2, 1, 0.0, 2.0)  # warm-up: a few windows through every process
            if throughput_only:
                await service_unary(max(wanted), turns=2.0)
                return rows
            for c in wanted:  # at concurrency 1 a text takes seconds: c1_seconds keeps enough of them
                await service_unary(c, min_s=plan.c1_seconds[name] if c == 1 else 0.0)
            return rows
        # Warm-up: every process has run a few batches before anything is timed.
        await direct.measure(4, 1, 0.0, 1.0)
        await service.measure(16, 1, 0.0, 1.0)
        if throughput_only:  # another dtype: the service's highest-throughput rows only
            await service_unary(max(wanted), turns=2.0)
            await service_batch(turns=2.0)
            return rows

        log.info("%s: concurrency 1, Triton direct and service text by text", name)
        quiet.wait()
        d, s, paired_ms = await paired_c1(direct, service, plan.c1_seconds[name])
        row("triton_direct", 1, 1, d)
        above = round(s.percentile_ms(50) - d.percentile_ms(50), 2)
        row("service_unary", 1, 1, s, p50_above_direct_ms=above, paired_median_above_direct_ms=round(paired_ms, 2))
        for c in plan.direct_concurrency:
            if c > 1 and f"{name}:triton_direct:{c}" not in plan.skip:
                log.info("%s: Triton direct, %d callers, one text each", name, c)
                m, notes = await cell.measure(partial(direct.measure, c, 1, *window(plan, rate, c)))
                row("triton_direct", c, 1, m, **notes)
        if f"{name}:triton_batch" not in plan.skip:
            log.info("%s: Triton direct, %d callers, %d texts each", name, plan.batch_concurrency, plan.batch_texts)
            m, notes = await cell.measure(
                lambda: direct.measure(plan.batch_concurrency, plan.batch_texts, *window(plan, rate, in_batch))
            )
            row("triton_direct", plan.batch_concurrency, plan.batch_texts, m, **notes)
        for c in wanted:
            if c > 1:
                await service_unary(c)
        await service_batch()
        if f"{name}:service_stream" not in plan.skip:
            log.info("%s: service stream, %d messages in flight", name, plan.stream_window)
            m, notes = await cell.measure(
                lambda: service.measure_stream(plan.stream_window, 1, *window(plan, rate, plan.stream_window))
            )
            row("service_stream", plan.stream_window, 1, m, **notes)
    finally:
        await direct.close()
        await service.close()
    return rows


def limit_row(
    repository: Path,
    workload: corpus.Workload,
    dtype: str,
    plan: Plan,
    clean: inprocess.Clean,
    unsorted: bool = False,
) -> Row:
    """The best (layout, batch size) over the plan's whole grid, in every dtype: an upper bound of what it measured."""
    v = models.version_dir(repository)
    if workload.windowed:  # texts/s; the batch sizes count windows
        best = inprocess.window_limit(
            v / "model.pt",
            v / "tokenizer.json",
            workload,
            plan.limit_batches[workload.name],
            plan.limit_sample[workload.name],
            clean=clean,
        )
        return Row.of(
            "limit", workload.name, 1, best.batch_size, best.measurement, dtype, batch_size=best.batch_size,
            **_layout_notes(best), padding=round(best.padding or 0.0, 3), windows_per_text=best.windows_per_text,
            window=best.window, stride=best.stride, foreign_cpu=best.measurement.foreign_cpu,
        )  # fmt: skip
    best = inprocess.limit(
        v / "model.pt",
        v / "tokenizer.json",
        workload,
        plan.limit_batches[workload.name],
        plan.limit_sample[workload.name],
        min_s=plan.min_measure_s / 2,
        unsorted=unsorted,
        clean=clean,
    )
    padding = round(best.padding, 3) if best.padding is not None else None
    planned = best.texts_per_batch  # the planner's batches won: texts per batch on average
    return Row.of(
        "limit", workload.name, 1, round(planned) if planned else best.batch_size, best.measurement, dtype,
        batch_size=best.batch_size, planned_texts_per_batch=planned, **_layout_notes(best), padding=padding,
        unsorted_per_s=best.unsorted_per_s, foreign_cpu=best.measurement.foreign_cpu,
    )  # fmt: skip


def _layout_notes(best: inprocess.Best) -> dict[str, Any]:
    """Which processes x threads won, and every layout's sentences/s by batch size (`tried`)."""
    assert best.layout is not None
    return {
        "layout": str(best.layout),
        "procs": best.layout.procs,
        "threads": best.layout.threads,
        "tried": best.by_layout,
    }


def pipeline_row(workload: corpus.Workload, plan: Plan, clean: inprocess.Clean) -> Row:
    best = inprocess.pipeline(
        models.checkpoint(), workload, plan.pipeline_batches[workload.name], plan.pipeline_sample[workload.name],
        min_s=plan.min_measure_s / 2, clean=clean,
    )  # fmt: skip
    return Row.of(
        "pipeline", workload.name, 1, best.batch_size, best.measurement, "fp32", batch_size=best.batch_size,
        tried=best.tried, foreign_cpu=best.measurement.foreign_cpu,
    )  # fmt: skip


def measure_all(
    args: argparse.Namespace, plan: Plan, dtype: str, workloads: list[corpus.Workload], quiet: machine.Quiet
) -> list[Row]:
    export_args = _split(args.export_arg)
    serve_args = _split(args.serve_arg)
    repository = models.export(dtype, export_args)
    clean = clean_inprocess(quiet)
    log_dir = models.CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []

    def limit_of(d: str, workload: str) -> Row:
        return next(r for r in rows if r.path == "limit" and r.dtype == d and r.workload == workload)

    # In-process paths first, while nothing else of ours is running.
    for w in workloads:
        log.info("%s: limit (%s)", w.name, dtype)
        rows.append(limit_row(repository, w, dtype, plan, clean, unsorted=plan.limit_unsorted))
        if w.name in plan.pipeline_batches:  # not long: the pipeline would cut each text at 512 tokens
            log.info("%s: transformers pipeline (fp32)", w.name)
            rows.append(pipeline_row(w, plan, clean))
    with Processes(repository, log_dir, serve_args=serve_args) as procs:
        for w in workloads:
            rows += asyncio.run(networked(procs, w, dtype, plan, quiet, limit_of(dtype, w.name).sentences_per_s))
    for other in plan.other_dtypes:
        if other == dtype:
            continue
        if other == "bf16" and not machine.cpu_flags() & machine.BF16_HARDWARE:
            # Emulated bf16 runs several times slower than fp32: its rows would only time out.
            log.info("no bf16 rows: this CPU has no bf16 instructions (%s)", ", ".join(sorted(machine.BF16_HARDWARE)))
            continue
        other_repo = models.export(other, export_args)
        for w in workloads:
            log.info("%s: limit (%s)", w.name, other)
            rows.append(limit_row(other_repo, w, other, plan, clean))
        with Processes(other_repo, log_dir, serve_args=serve_args) as procs:
            for w in workloads:
                rate = limit_of(other, w.name).sentences_per_s
                rows += asyncio.run(networked(procs, w, other, plan, quiet, rate, throughput_only=True))
    if args.rollout:
        log.info("%s: a version rollout under load (%s)", workloads[0].name, dtype)
        rows.append(rollout.rollout_row(repository, workloads[0], dtype, log_dir, serve_args, quiet))
    return rows


def _split(flags: list[str]) -> tuple[str, ...]:
    """--serve-arg="--max-wait-ms 2" and --serve-arg=--max-wait-ms=2 both work."""
    return tuple(part for flag in flags for part in flag.replace("=", " ", 1).split())


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick mode (under 3 minutes on 2 cores)")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES),
        help="dtype of the limit, Triton and service rows (auto: fp16 on a GPU, bf16 with AMX, else fp32)",
    )  # fmt: skip
    parser.add_argument(
        "--workloads", default="short,mixed",
        help="comma-separated: short, mixed, long (long: 500-5,000 tokens as sliding windows, minutes more)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.{json,md,png} go")
    parser.add_argument("--export-arg", action="append", default=[], help="extra `sentiment-server export` flag")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `sentiment-server serve` flag")
    parser.add_argument(
        "--rollout", action="store_true",
        help="also the service_rollout row: a version rollout under load on the first workload (bench/rollout.py)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    plan = QUICK if args.quick else FULL
    dtype = machine.default_dtype() if args.dtype == "auto" else args.dtype
    started = time.monotonic()
    about = machine.describe()
    log.info("machine: %s", about)
    quiet = machine.Quiet(MAX_FOREIGN_CORES, *plan.quiet)
    tokenizer_json = models.version_dir(models.export(dtype, _split(args.export_arg))) / "tokenizer.json"
    workloads = [corpus.build(name, tokenizer_json) for name in args.workloads.split(",")]
    for w in workloads:
        log.info("workload %s", w.describe())
    if any(w.windowed for w in workloads) and not any("triton-timeout-s" in a for a in args.serve_arg):
        log.warning(
            "long: serve's --triton-timeout-s (30 s) caps a call's time, queue included; on a CPU "
            "16 long texts queue more: consider --serve-arg=--triton-timeout-s=300"
        )
    try:
        rows = measure_all(args, plan, dtype, workloads, quiet)
    except KeyboardInterrupt:
        log.warning("interrupted: processes stopped, nothing written")
        return 130

    order = {(p, w.name): i for i, (w, p) in enumerate((w, p) for w in workloads for p in report.PATHS)}
    rows.sort(key=lambda r: (order[(r.path, r.workload)], r.dtype != dtype, r.concurrency, r.texts_per_call))
    report.set_ratios(rows)
    elapsed = time.monotonic() - started
    command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
    header = (
        f"Benchmark ({plan.name} mode, {elapsed:.0f} s): `{command}`\n\n"
        f"Machine: {about['cpu']}, {about['cores']} cores, bf16 hardware {about['bf16_hardware'] or 'none'}, "
        f"torch {about['torch']}, Python {about['python']}"
        + (f", GPU {about['gpu']}" if "gpu" in about else "")
        + f". Model: full-size DistilBERT (random weights), {dtype}. "
        + "; ".join(w.describe() for w in workloads)
        + ".\n"
    )
    text = header + "\n" + report.table(rows) + "\n\n" + report.summary(rows, dtype) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_json(rows, args.out / "latest.json")
    report.write_markdown(text, args.out / "latest.md")
    report.chart(rows, args.out / "latest.png", f"{plan.name} mode, {about['cpu']}, {about['cores']} cores, {dtype}")
    log.info("wrote %s/latest.{json,md,png}", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
