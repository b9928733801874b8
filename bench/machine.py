"""What machine a run was on, and how much of it other people's processes took meanwhile."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


BF16_HARDWARE = frozenset({"avx512_bf16", "amx_bf16", "amx_tile"})  # CPU flags of bf16 instructions


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> dict[str, object]:
    import torch

    flags = cpu_flags()
    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "bf16_hardware": sorted(flags & BF16_HARDWARE),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def default_dtype() -> str:
    """fp16 on a GPU; bf16 where the CPU multiplies bf16 matrices natively (AMX); else fp32.

    AVX512-BF16 alone (no AMX) does not pay: its dot-product instruction has
    the fp32 FMA's throughput, and the conversions make bf16 GEMMs slower than
    fp32 ones (measured here: about 0.55x per core).
    """
    import torch

    if torch.cuda.is_available():
        return "fp16"
    return "bf16" if "amx_bf16" in cpu_flags() else "fp32"


def _busy_ticks() -> tuple[int, int]:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in fields[:8]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) `pid` has used so far, from /proc; 0 when it is gone."""
    return _process_ticks(pid) / _TICKS


@dataclass
class CpuShare:
    """CPU cores in use during a measurement: ours (bench + Triton + front-end) and everybody else's."""

    busy_cores: float
    ours_cores: float

    @property
    def foreign_cores(self) -> float:
        return max(0.0, self.busy_cores - self.ours_cores)


class CpuMonitor:
    """Samples /proc around a measurement; `pids()` names our processes (read at start and end)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]

    def __enter__(self) -> CpuMonitor:
        self._t0 = time.monotonic()
        self._busy0, _ = _busy_ticks()
        self._ours0 = {pid: _process_ticks(pid) for pid in self.pids}
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        busy1, _ = _busy_ticks()
        self.per_pid = {pid: max(0, _process_ticks(pid) - t0) / _TICKS / elapsed for pid, t0 in self._ours0.items()}
        self.share = CpuShare((busy1 - self._busy0) / _TICKS / elapsed, sum(self.per_pid.values()))


class Quiet:
    """Measure when other people's processes leave the CPUs alone; measure again when they did not.

    The machine is shared: a test run elsewhere takes a core and halves a
    throughput. Before each measurement `wait` lets such a burst pass (up to
    a budget); after it, a measurement during which others used more than
    `max_foreign` cores is repeated, up to `attempts` times, and the least
    disturbed one is kept (its `foreign_cpu` note says how disturbed).
    """

    def __init__(self, max_foreign: float, attempts: int, wait_s: float, budget_s: float) -> None:
        self.max_foreign = max_foreign
        self.attempts = max(1, attempts)
        self.wait_s = wait_s
        self.budget_s = budget_s

    def wait(self) -> None:
        """Until two half-second samples in a row show the CPUs (nearly) idle, within the budgets."""
        limit = min(self.wait_s, self.budget_s)
        started = time.monotonic()
        quiet = 0
        while time.monotonic() - started < limit and quiet < 2:
            busy0, _ = _busy_ticks()
            time.sleep(0.5)
            busy1, _ = _busy_ticks()
            quiet = quiet + 1 if (busy1 - busy0) / _TICKS / 0.5 <= self.max_foreign else 0
        self.budget_s = max(0.0, self.budget_s - (time.monotonic() - started))

    def disturbed(self, share: CpuShare) -> bool:
        return share.foreign_cores > self.max_foreign
