"""Front-end settings side by side: which coalescing knobs pay, measured on one Triton.

`python bench/serve_ab.py --variant= --variant=--batch-overhead-tokens=32`
exports the benchmark's model (cached), starts one embedded Triton on
127.0.0.1, and then, round after round, starts a front-end per variant (each
variant is a string of extra `serve` flags) and measures one-text unary calls
at the given concurrency. The variants alternate within every round, so the
machine's drift hits all of them alike; it prints each variant's median
sentences/s and p50 latency over the rounds, its ratio to the first variant,
the padding, and the front-end's CPU per call (its processes' CPU seconds from
/proc over the window, per call finished). At `--concurrency 1` the p50
compares the variants' latency.

`--tiny` serves bench/frontend.py's tiny model instead: the model's cost taken
away, what is left is the front-end's own, so CPU per call is the figure to
read (`--variant= --variant=--no-triton-streams` compares the two Triton legs).
Every process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import statistics
import tempfile
from pathlib import Path

import corpus
import frontend
import grpc_floor
import models
from clients import Service
from procs import Processes, children

log = logging.getLogger("bench")


async def measure(
    procs: Processes, workload: corpus.Workload, concurrency: int, seconds: float
) -> tuple[float, float, float, float]:
    """(sentences/s, p50 latency in ms, padding fraction, front-end CPU ms per call) of one window."""
    assert procs.front is not None
    pid = procs.front.process.pid
    service = Service(procs.front.target, workload)
    try:
        await service.measure(concurrency, 1, 0.0, 2.0)
        before = procs.front.metrics()
        m, cpu = await asyncio.gather(
            service.measure(concurrency, 1, 1.0, seconds),
            grpc_floor.cpu_window({"front": [pid, *children(pid)]}, 1.0, seconds),
        )
        after = procs.front.metrics()
    finally:
        await service.close()
    padded = after["sentiment_padded_tokens_total"] - before["sentiment_padded_tokens_total"]
    real = after["sentiment_real_tokens_total"] - before["sentiment_real_tokens_total"]
    cpu_ms = 1000 * cpu["front"] / m.calls if m.calls else float("nan")
    return m.sentences_per_s, m.percentile_ms(50), (1 - real / padded) if padded else 0.0, cpu_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help='extra `serve` flags as one string: --variant="--a=1 --b=2" (repeatable)',
    )
    parser.add_argument("--workload", choices=("short", "mixed"), default="short")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement window per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="bench/frontend.py's tiny model: the front-end's own cost")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    results: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in args.variant}
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            repository = frontend.build_repository(Path(tmp))
            model, what = "the tiny model", f"{args.workload}, tiny model"
        else:
            repository = models.export(args.dtype)
            model, what = args.dtype, f"{args.workload}, {args.dtype}"
        tokenizer_json = models.version_dir(repository) / "tokenizer.json"
        workload = corpus.build(args.workload, tokenizer_json, size=512 if args.tiny else None)
        with Processes(repository, Path(tmp)) as procs:
            for round_ in range(args.rounds):
                order = args.variant if round_ % 2 == 0 else args.variant[::-1]
                for variant in order:
                    procs.start_front_end(shlex.split(variant))
                    result = asyncio.run(measure(procs, workload, args.concurrency, args.seconds))
                    log.info(
                        "round %d, %r on %s: %.1f sentences/s, p50 %.2f ms, padding %.3f, front-end %.3f CPU ms/call",
                        round_ + 1, variant, model, *result,
                    )  # fmt: skip
                    results[variant].append(result)

    base = statistics.median(r for r, *_ in results[args.variant[0]])
    print(f"\n{what}, {args.concurrency} callers x 1 text, {args.rounds} rounds of {args.seconds:g} s")
    print(
        "| serve flags | sentences/s (median) | vs first | p50 ms (median) | padding | front-end CPU ms/call (median) "
        "| sentences/s, each round |"
    )
    print("|---|--:|--:|--:|--:|--:|---|")
    for variant, runs in results.items():
        rate, p50, padding, cpu_ms = (statistics.median(run[i] for run in runs) for i in range(4))
        each = ", ".join(f"{run[0]:.1f}" for run in runs)
        print(
            f"| `{variant or '(defaults)'}` | {rate:.1f} | {rate / base:.3f} | {p50:.2f} | {padding:.3f} | {cpu_ms:.3f} "
            f"| {each} |"
        )


if __name__ == "__main__":
    main()
