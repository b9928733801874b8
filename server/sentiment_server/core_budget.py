"""How a host's cores are split between front-end worker processes and model instances.

The one home of this rule: `export --instance-count auto`, `--torch-threads auto`
and the front-end's `--workers auto` all read it here, so the two sides never
claim the same cores.

- On a GPU host the model runs on the GPU and the front-end (gRPC, tokenizing)
  is the bottleneck: it gets every core, and Triton one instance per GPU.
- On a CPU host the model is the bottleneck: one single-threaded instance per
  core the front-end leaves free. A one-text call costs the front-end well
  under a tenth of the model's CPU, so one front-end process keeps up with
  about 8 cores of model; below 8 cores it shares a core with the model.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

AUTO = "auto"

# Cores of CPU model one front-end process keeps up with.
_MODEL_CORES_PER_FRONT_END = 8


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its affinity mask (taskset, cpusets), capped by a cgroup v2 CPU quota
    rounded up (a container's CPU limit: 2.5 cores -> 3), so a pod limited to 2 cores on a 64-core node
    does not start 64 workers."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def front_end_cores(cores: int, on_gpu: bool) -> int:
    """Cores the front-end keeps for itself; the rest go to the model (0: it shares one with the model)."""
    if on_gpu:
        return cores
    return cores // _MODEL_CORES_PER_FRONT_END


def default_workers(on_gpu: bool, cores: int | None = None) -> int:
    """Front-end worker processes for `--workers auto`: one per front-end core, at least one."""
    cores = usable_cores() if cores is None else cores
    return max(1, front_end_cores(cores, on_gpu))


def default_instance_count(device: str, cores: int | None = None) -> int:
    """Triton model instances for `--instance-count auto`.

    GPU: 1, since Triton places `count` instances on each visible GPU (one per GPU).
    CPU: one single-threaded instance per core the front-end leaves, at least one.
    """
    if device == "gpu":
        return 1
    cores = usable_cores() if cores is None else cores
    return max(1, cores - front_end_cores(cores, on_gpu=False))


def default_torch_threads(device: str) -> int:
    """Intra-op threads per instance for `--torch-threads auto`: 1.

    Single-threaded instances have no thread barriers for the front-end to stall
    on a CPU; on a GPU the threads hardly matter. One function all the same, so
    the rule has one home.
    """
    del device
    return 1


def is_auto(value: str | int) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def resolve_count(value: str | int, auto: int, what: str) -> int:
    """`value` as a number: "auto" -> `auto`; an int or a digit string -> that int.

    Raises ValueError naming `what` (the flag) for anything else.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if is_auto(value):
        return auto
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return int(text)
    raise ValueError(f"{what} must be a number or 'auto', got {value!r}")
