"""Rows -> latest.json (a list of rows), latest.md (the table) and latest.png (the chart)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from load import Measurement

PATHS = ("limit", "pipeline", "triton_direct", "service_unary", "service_batch", "service_stream")
LABELS = {
    "limit": "limit (TorchScript in-process)",
    "pipeline": "seed's way (transformers pipeline, fp32)",
    "triton_direct": "Triton direct (tritonclient)",
    "service_unary": "service, Classify, 1 text/call",
    "service_batch": "service, Classify, many texts/call",
    "service_stream": "service, ClassifyStream",
}


@dataclass
class Row:
    path: str
    workload: str
    concurrency: int
    texts_per_call: int
    sentences_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ratio_to_limit: float = float("nan")
    dtype: str = "fp32"
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        path: str,
        workload: str,
        concurrency: int,
        texts_per_call: int,
        m: Measurement,
        dtype: str,
        **notes: Any,
    ) -> Row:
        return cls(
            path,
            workload,
            concurrency,
            texts_per_call,
            round(m.sentences_per_s, 2),
            round(m.percentile_ms(50), 2),
            round(m.percentile_ms(95), 2),
            round(m.percentile_ms(99), 2),
            dtype=dtype,
            notes={k: v for k, v in notes.items() if v is not None},
        )


def set_ratios(rows: Sequence[Row]) -> None:
    """Each row's throughput over the limit of the same workload and dtype (pipeline: fp32 limit)."""
    limits = {(r.workload, r.dtype): r.sentences_per_s for r in rows if r.path == "limit"}
    for row in rows:
        ref = limits.get((row.workload, row.dtype))
        row.ratio_to_limit = round(row.sentences_per_s / ref, 3) if ref else float("nan")


def _json_value(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def write_json(rows: Sequence[Row], path: Path) -> None:
    data = [{k: _json_value(v) for k, v in asdict(r).items()} for r in rows]
    _atomic_write(path, json.dumps(data, indent=1) + "\n")


def _fmt(x: float, digits: int = 1) -> str:
    return "–" if isinstance(x, float) and math.isnan(x) else f"{x:.{digits}f}"


def _note(row: Row) -> str:
    n = row.notes
    parts = []
    if "batch_size" in n:
        parts.append(f"batch {n['batch_size']}")
    if "padding" in n:
        parts.append(f"padding {100 * n['padding']:.0f}%")
    if "unsorted_per_s" in n:
        parts.append(f"texts in corpus order: {n['unsorted_per_s']:.1f}/s")
    if "texts_per_batch" in n:
        parts.append(f"{n['texts_per_batch']:.1f} texts/Triton batch")
    if "p50_above_direct_ms" in n:
        parts.append(
            f"p50 {n['p50_above_direct_ms']:+.2f} ms vs Triton direct (paired median {n['paired_median_above_direct_ms']:+.2f})"
        )
    if "cpu_split" in n:
        split = n["cpu_split"]
        parts.append(
            f"cores: Triton {split['triton']:.2f}, front-end {split['front_end']:.2f}, client {split['client']:.2f}"
        )
    if "foreign_cpu" in n and n["foreign_cpu"] >= 0.1:
        parts.append(f"others used {n['foreign_cpu']:.1f} cores")
    return ", ".join(parts)


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| workload | path | dtype | concurrency | texts/call | sentences/s | p50 ms | p95 ms | p99 ms | × limit | notes |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.path} | {r.dtype} | {r.concurrency} | {r.texts_per_call} | "
            f"{_fmt(r.sentences_per_s)} | {_fmt(r.p50_ms)} | {_fmt(r.p95_ms)} | {_fmt(r.p99_ms)} | "
            f"{_fmt(r.ratio_to_limit, 2)} | {_note(r)} |"
        )
    return "\n".join(lines)


def summary(rows: Sequence[Row], dtype: str) -> str:
    """The issue's targets, checked against this run's rows."""
    lines = ["Targets (this run):", ""]
    by = {(r.path, r.workload, r.dtype, r.concurrency, r.texts_per_call): r for r in rows}
    for workload in dict.fromkeys(r.workload for r in rows):
        c64 = by.get(("service_unary", workload, dtype, 64, 1))
        if c64 is not None:
            ok = c64.ratio_to_limit >= 0.85
            lines.append(
                f"- {workload}: one text per call at concurrency 64 = {c64.ratio_to_limit:.2f} x the limit "
                f"(target >= 0.85): {'met' if ok else 'NOT met'}"
            )
        for other in sorted({r.dtype for r in rows if r.dtype != dtype}):
            row = by.get(("service_unary", workload, other, 64, 1))
            if row is not None:
                lines.append(f"  - {other}: {row.ratio_to_limit:.2f} x the {other} limit")
        c1 = by.get(("service_unary", workload, dtype, 1, 1))
        if c1 is not None and "paired_median_above_direct_ms" in c1.notes:
            # The median of per-pair differences (each text through both paths, back to back,
            # order alternating): the difference of two independent medians swings by
            # milliseconds when model latency itself varies by tens of them.
            paired = c1.notes["paired_median_above_direct_ms"]
            lines.append(
                f"- {workload}: concurrency 1, median extra latency over Triton direct {paired:+.2f} ms "
                f"(paired; difference of the two p50s {c1.notes['p50_above_direct_ms']:+.2f} ms) "
                f"(target <= +1.5 ms): {'met' if paired <= 1.5 else 'NOT met'}"
            )
        seed = by.get(
            (
                "pipeline",
                workload,
                "fp32",
                1,
                next((r.texts_per_call for r in rows if r.path == "pipeline" and r.workload == workload), 0),
            )
        )
        service = [r for r in rows if r.workload == workload and r.path.startswith("service_")]
        if seed is not None and service:
            best = max(service, key=lambda r: r.sentences_per_s)
            times = best.sentences_per_s / seed.sentences_per_s if seed.sentences_per_s else float("nan")
            lines.append(
                f"- {workload}: best service configuration ({best.path}, {best.dtype}, c{best.concurrency}"
                f"x{best.texts_per_call}) = {times:.2f} x the seed's way (target >= 2.5): "
                f"{'met' if times >= 2.5 else 'NOT met'}"
            )
    return "\n".join(lines)


def write_markdown(text: str, path: Path) -> None:
    _atomic_write(path, text)


def chart(rows: Sequence[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r.workload for r in rows))
    fig, axes = plt.subplots(2, len(workloads), figsize=(7.5 * len(workloads), 9), squeeze=False)
    colors = dict(zip(PATHS, ("#444444", "#b07aa1", "#4e79a7", "#59a14f", "#8cd17d", "#f28e2b"), strict=True))
    for col, workload in enumerate(workloads):
        mine = [r for r in rows if r.workload == workload]
        names = [_short_name(r) for r in mine]
        ax = axes[0][col]
        ax.barh(names, [r.sentences_per_s for r in mine], color=[colors[r.path] for r in mine])
        for r in mine:
            if r.path == "limit":
                ax.axvline(r.sentences_per_s, color=colors["limit"], linestyle="--", linewidth=1)
        ax.invert_yaxis()
        ax.set_title(f"{workload}: throughput (sentences/s)")
        ax.tick_params(axis="y", labelsize=8)
        ax = axes[1][col]
        y = range(len(mine))
        for offset, (q, shade) in enumerate((("p50_ms", 1.0), ("p95_ms", 0.6), ("p99_ms", 0.35))):
            ax.barh(
                [i + (offset - 1) * 0.27 for i in y],
                [_zero(getattr(r, q)) for r in mine],
                height=0.27,
                color=[colors[r.path] for r in mine],
                alpha=shade,
                label=q.replace("_ms", ""),
            )
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_title(f"{workload}: latency per call (ms; p50, p95, p99)")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def _short_name(r: Row) -> str:
    base = {
        "limit": "limit",
        "pipeline": "pipeline",
        "triton_direct": "triton",
        "service_unary": "service",
        "service_batch": "service batch",
        "service_stream": "service stream",
    }[r.path]
    return f"{base} {r.dtype} c{r.concurrency}×{r.texts_per_call}"


def _zero(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
