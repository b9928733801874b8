"""The soak's samples as a PNG: RSS, open fds and threads per process group over time, and latency per
interval, with the warm-up shaded and chaos kills marked.

    python bench/soak_plot.py bench/results/soak.json [--output bench/results/soak.png]

bench/soak.py calls `plot` itself at the end of a run (the PNG next to its JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt


def _series(samples: list[dict[str, Any]], name: str, metric: str, scale: float) -> tuple[list[float], list[float]]:
    points = [(s["t_s"], s["processes"][name][metric] * scale) for s in samples if s["processes"].get(name)]
    return [t / 60 for t, _ in points], [v for _, v in points]


def plot(results: dict[str, Any], output: Path) -> Path:
    samples = [s for s in results["samples"] if s["phase"] != "idle"]
    config, summary = results["config"], results["summary"]
    names = sorted({name for s in samples for name in s["processes"]})
    figure, axes = plt.subplots(4, 1, figsize=(11, 13), sharex=True)
    rss, fds, threads, latency = axes
    for name in names:
        for axis, metric, scale in ((rss, "rss_kb", 1 / 1024), (fds, "fds", 1.0), (threads, "threads", 1.0)):
            t, values = _series(samples, name, metric, scale)
            axis.plot(t, values, label=name, marker=".", markersize=3, linewidth=1)
    timed = [s for s in samples if s["p50_ms"] is not None]
    minutes = [s["t_s"] / 60 for s in timed]
    latency.plot(minutes, [s["p50_ms"] for s in timed], label="p50", linewidth=1)
    latency.plot(minutes, [s["p99_ms"] for s in timed], label="p99", linewidth=1)
    failed = [s for s in samples if s["interval_errors"]]
    if failed:
        latency.scatter([s["t_s"] / 60 for s in failed], [0] * len(failed), color="red", label="failed calls", zorder=3)
    latency.set_yscale("log")
    for axis, label in zip(axes, ("RSS (MB)", "open fds", "threads", "latency per interval (ms)"), strict=True):
        axis.set_ylabel(label)
        axis.axvspan(0, config["warmup_s"] / 60, color="grey", alpha=0.15)
        for kill in summary.get("chaos", {}).get("kills", []):
            axis.axvline(kill["t_s"] / 60, color="red" if kill["kind"] == "triton" else "orange", alpha=0.4)
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize="small")
    latency.set_xlabel("minutes (grey: warm-up; red/orange lines: tritonserver/stub killed)")
    model = "full-size" if config.get("full_size") else "tiny"
    figure.suptitle(
        f"soak: {model} model, {config['concurrency']} callers ({config['streams']} streaming), "
        f"{summary['calls']} calls, {summary['errors']} failed"
    )
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=90)
    plt.close(figure)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a JSON file written by bench/soak.py")
    parser.add_argument("--output", type=Path, help="default: the JSON's path with .png")
    args = parser.parse_args(argv)
    output = plot(json.loads(args.results.read_text()), args.output or args.results.with_suffix(".png"))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
