"""How the model's process memory behaves under variable-shape batches, per allocator setting.

    python bench/allocator_probe.py [--duration-s 240] [--full-size]

Runs the exported TorchScript model in-process (one thread, as one Triton
stub instance runs it) on batches of random sizes (1-8 texts) and lengths
(10-256 tokens), once per glibc setting, one after the other, each in a fresh
process. Every call it reads RssAnon (/proc/self/status); after the first
third of the run it reports the band (max - min), the least-squares slope and
the calls made. The settings: glibc's default (its mmap threshold grows with
the largest block freed, so large tensors come from the heap and stay there)
fixed `MALLOC_MMAP_THRESHOLD_` values (larger blocks always go to mmap
and back to the kernel when freed), "heap kept": blocks up to 32 MiB from
the heap and a trim threshold so high that the heap never shrinks, so the
process keeps its high-water mark instead of returning and re-faulting pages,
and mimalloc preloaded, keeping what it maps (what `up` runs) or purging it. oneDNN's cache is capped as `up` does.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS: dict[str, dict[str, str]] = {
    "glibc default": {},
    "heap kept": {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)},
    "mmap >= 4 MiB": {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)},
    "mmap >= 1 MiB": {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)},
    "mmap >= 128 KiB": {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)},
}


def mimalloc_settings() -> dict[str, dict[str, str]]:
    """mimalloc preloaded (the embedded extra's wheel): as `up` runs it (nothing purged), and purging."""
    from sentiment_server.backend.triton_process import MIMALLOC_SETTINGS, mimalloc_library

    library = mimalloc_library()
    if library is None:
        return {}
    return {
        "mimalloc kept": {"LD_PRELOAD": str(library), **MIMALLOC_SETTINGS},
        "mimalloc": {"LD_PRELOAD": str(library)},
    }


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def probe(model_file: Path, duration_s: float) -> dict[str, float]:
    """The measuring child: calls the model until `duration_s` is over."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    model = torch.jit.load(str(model_file))
    rng = random.Random(0)  # every setting sees the same shapes in the same order
    samples = []
    started = time.monotonic()
    while (now := time.monotonic() - started) < duration_s:
        ids = torch.randint(1000, 2000, (rng.choice((1, 2, 4, 8)), rng.randint(10, 256)))
        with torch.inference_mode(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
            model(ids, torch.ones_like(ids))
        samples.append((now, rss_anon_mb()))
    t = np.array([s[0] for s in samples])
    y = np.array([s[1] for s in samples])
    steady = t > duration_s / 3
    return {
        "calls": len(samples),
        "min_mb": round(float(y[steady].min()), 1),
        "band_mb": round(float(np.ptp(y[steady])), 1),
        "slope_mb_per_min": round(float(np.polyfit(t[steady] / 60, y[steady], 1)[0]), 3),
    }


def model_file(root: Path, full_size: bool) -> Path:
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
    from sentiment_server.tooling.export import export_model

    checkpoint = build_tiny_checkpoint(root / "checkpoint", full_size=full_size)
    export_model(str(checkpoint), root / "repository", model_name="probe", torch_threads=1)
    return root / "repository" / "probe" / "1" / "model.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=240.0, help="per setting (240)")
    parser.add_argument("--full-size", action="store_true", help="a DistilBERT-base-sized model (default: tiny)")
    settings = {**SETTINGS, **mimalloc_settings()}
    parser.add_argument("--only", action="append", choices=sorted(settings), help="run this setting (repeatable)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(probe(args.child, args.duration_s)))
        return 0
    with tempfile.TemporaryDirectory(prefix="allocator-probe-") as tmp:
        model = model_file(Path(tmp), args.full_size)
        print(f"{'setting':<16} {'calls':>6} {'RssAnon min MB':>15} {'band MB':>8} {'MB/min':>8}")
        for name, setting in settings.items():
            if args.only and name not in args.only:
                continue
            env = {**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", **setting}
            child = [sys.executable, __file__, "--child", str(model), "--duration-s", str(args.duration_s)]
            out = subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{name:<16} {r['calls']:>6} {r['min_mb']:>15.1f} {r['band_mb']:>8.1f} {r['slope_mb_per_min']:>+8.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
