"""Where the limit runs: P processes x T torch threads, P * T = the usable cores.

One process with every core's thread is not always the fastest way to run the
model on a CPU: Triton runs it as separate model instances (on 2 cores, two
single-thread processes), and small batches leave a thread pool idle between
operators. So the limit is measured over `layouts(cores)` and the best kept.

Every layout runs in P spawned processes, each with its own model.pt and T
threads and the environment Triton gives its model stubs (the allocator and
oneDNN settings of `model_process_environment`), so a server's processes have
no advantage the limit lacks. Each gets its share of the same batches
(round-robin), warms up on it, waits on a shared barrier, then runs it in
whole passes. The layout's throughput is all texts over the processes' mean
busy time: what P instances reach when a queue keeps each of them busy
(Triton's scheduler), not what a fixed share does when one process finishes
before another.

Each process runs its share of a `Job` through `runner`, the one piece of code
that calls the model.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from load import Measurement, timed_batches
from sentiment_server.backend.triton_process import model_process_environment

BARRIER_TIMEOUT_S = 600.0  # a worker waits this long at the start barrier for the others
STOP_TIMEOUT_S = 10.0  # then terminate, then kill


@dataclass(frozen=True, order=True)
class Layout:
    procs: int
    threads: int

    @property
    def key(self) -> str:
        return f"{self.procs}x{self.threads}"

    def __str__(self) -> str:
        p, t = self.procs, self.threads
        return f"{p} proc{'s' if p > 1 else ''} x {t} thread{'s' if t > 1 else ''}"


def layouts(cores: int) -> list[Layout]:
    """Every P x T with P * T = cores, from one process with all threads to one process per core.

    2 cores: 1x2, 2x1; 4: 1x4, 2x2, 4x1; 8: four layouts; 16: five. A prime
    number of cores has only the two ends.
    """
    if cores < 1:
        raise ValueError(f"cores must be at least 1, not {cores}")
    return [Layout(p, cores // p) for p in range(1, cores + 1) if cores % p == 0]


def share(batches: int, procs: int, index: int) -> list[int]:
    """The batches process `index` of `procs` runs: round-robin, so each gets short and long ones alike."""
    return list(range(index, batches, procs))


@dataclass(frozen=True)
class Job:
    """Batches of `size` cut in order from `encoded` (token ids), and how long to run them.

    `planned` (texts sorted by length, no windows): batches of those sizes instead, e.g. as
    plan_groups cuts them.

    Window jobs (`owners` set): `encoded` are the windows of several texts,
    `owners[i]` the text of window i and `weights[i]` its tokens; a batch
    counts the texts whose last window it holds (their answer is the
    token-weighted mean of their windows' softmax), and `labels` is the
    model's number of outputs.
    """

    encoded: list[list[int]]
    size: int
    min_s: float
    owners: list[int] | None = None
    weights: list[int] | None = None
    labels: int = 0
    planned: tuple[int, ...] = ()

    @property
    def batches(self) -> int:
        return len(self.planned) if self.planned else -(-len(self.encoded) // self.size)

    def chunk(self, batch: int) -> list[list[int]]:
        if not self.planned:
            return self.encoded[batch * self.size : (batch + 1) * self.size]
        start = sum(self.planned[:batch])
        return self.encoded[start : start + self.planned[batch]]

    def padding(self) -> float:
        """The padded share of the tokens the model runs (batches pad to their longest text)."""
        chunks = [self.chunk(b) for b in range(self.batches)]
        return 1 - sum(len(x) for x in self.encoded) / sum(len(c) * max(len(x) for x in c) for c in chunks)


def load_model(model_pt: Path) -> tuple[Any, Any]:
    """(model, device): the exported TorchScript model, on the GPU when there is one."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(model_pt), map_location=device).eval()
    return model, device


@contextlib.contextmanager
def inference() -> Iterator[None]:
    import torch

    with torch.inference_mode(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
        yield


def runner(model: Any, device: Any, job: Job, mine: Sequence[int]) -> tuple[Callable[[int], int], list[int]]:
    """(run, warm) for the batches `mine` of `job`: run(i) runs the i-th of them and returns the texts it finished;
    `warm` lists the ones to run once, untimed, first (every batch; windows: the first of each shape).

    Padded exactly as the front-end pads (pad id 0, like the exported DistilBERT).
    """
    import numpy as np
    import torch
    from sentiment_server.core.tokenization import pad_batch

    tensors = []
    for g in mine:
        padded, mask = pad_batch([np.asarray(seq, dtype=np.int64) for seq in job.chunk(g)], 0)
        tensors.append((torch.from_numpy(padded).to(device), torch.from_numpy(mask).to(device)))

    if job.owners is None:

        def run(i: int) -> int:
            ids, mask = tensors[i]
            model(ids, mask).cpu()  # the logits in host memory, as a server needs them
            return int(ids.shape[0])

        return run, list(range(len(tensors)))

    owners, size = job.owners, job.size
    weights = np.asarray(job.weights, dtype=np.float64)  # tokens, special tokens included
    members: dict[int, list[int]] = {}
    for position, text in enumerate(owners):
        members.setdefault(text, []).append(position)
    finishing: dict[int, list[int]] = {}  # batch -> the texts whose last window it holds
    for text, rows in members.items():
        finishing.setdefault(rows[-1] // size, []).append(text)
    # A text whose windows went to several processes is averaged here over the rows this process holds
    # (the others stay 0): the same work, and nobody reads the answer.
    probs = np.zeros((len(owners), job.labels))

    def run_windows(i: int) -> int:
        g = mine[i]
        ids, mask = tensors[i]
        logits = model(ids, mask).float().cpu().numpy()
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[g * size : g * size + len(logits)] = z / z.sum(axis=1, keepdims=True)
        done = finishing.get(g, [])
        for text in done:
            rows = members[text]
            np.average(probs[rows], axis=0, weights=weights[rows]).argmax()
        return len(done)

    warm: dict[tuple[int, ...], int] = {}  # the first batch of each shape (most are full windows)
    for i, (batch_ids, _) in enumerate(tensors):
        warm.setdefault(tuple(batch_ids.shape), i)
    return run_windows, list(warm.values())


def warmed(model: Any, device: Any, job: Job, mine: Sequence[int]) -> Callable[[int], int]:
    """`runner`'s run, once its warm-up batches ran untimed (first calls pay for kernel set-up)."""
    run, warm = runner(model, device, job, mine)
    with inference():
        for i in warm:
            run(i)
    return run


def _timed(run: Callable[[int], int], batches: int, min_s: float) -> Measurement:
    if not batches:  # more processes than batches: this one has nothing to do
        return Measurement()
    with inference():
        return timed_batches(run, batches, min_s)


def _serve(model_pt: str, threads: int, conn: multiprocessing.connection.Connection, barrier: Any) -> None:
    """A worker: load the model, then prepare / go on the parent's word until it says stop or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    try:
        import torch

        torch.set_num_threads(threads)
        model, device = load_model(Path(model_pt))
        conn.send(("loaded", None))
        prepared: tuple[Job, list[int], Callable[[int], int]] | None = None
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                return
            if message is None:
                return
            kind, payload = message
            if kind == "prepare":
                job, mine = payload
                prepared = (job, mine, warmed(model, device, job, mine))
                conn.send(("ready", None))
            elif kind == "go":
                assert prepared is not None
                job, mine, run = prepared
                barrier.wait(BARRIER_TIMEOUT_S)
                conn.send(("done", _timed(run, len(mine), job.min_s)))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


class Workers:
    """`procs` spawned processes with `threads` torch threads each; all stopped on the way out.

    `prepare(job)` builds and warms each one's batches, `go()` times them.
    """

    def __init__(self, model_pt: Path, procs: int, threads: int) -> None:
        self.model_pt = model_pt
        self.procs = procs
        self.threads = threads
        self.processes: list[Any] = []
        self.conns: list[multiprocessing.connection.Connection] = []

    def __enter__(self) -> Workers:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch or tokenizer threads
        barrier = ctx.Barrier(self.procs)
        try:
            with _model_environment():
                for _ in range(self.procs):
                    ours, theirs = ctx.Pipe()
                    process = ctx.Process(
                        target=_serve, args=(str(self.model_pt), self.threads, theirs, barrier), daemon=True
                    )
                    process.start()
                    theirs.close()
                    self.processes.append(process)
                    self.conns.append(ours)
            self._collect("loaded")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        # On an error or Ctrl-C a worker may be in the middle of a timed run: terminate it now.
        self.close(STOP_TIMEOUT_S if kind is None else 0.0)

    def close(self, wait_s: float = 0.0) -> None:
        """Ask each to stop and wait up to `wait_s`, then terminate, then kill what is left; join them all."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        deadline = time.monotonic() + wait_s
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()
        self.processes, self.conns = [], []

    def _collect(self, expected: str) -> list[Any]:
        """Each worker's next answer, which must be `expected`; a worker that dies or fails raises."""
        answers: dict[int, Any] = {}
        sentinels = {p.sentinel: i for i, p in enumerate(self.processes)}
        conns = {id(c): i for i, c in enumerate(self.conns)}
        while len(answers) < len(self.conns):
            waiting = [c for i, c in enumerate(self.conns) if i not in answers]
            for ready in multiprocessing.connection.wait([*waiting, *sentinels]):
                if isinstance(ready, int):
                    i = sentinels[ready]
                    if i not in answers and not self.conns[i].poll():
                        raise RuntimeError(f"limit worker {i} exited ({self.processes[i].exitcode})")
                    continue
                assert isinstance(ready, multiprocessing.connection.Connection)
                i = conns[id(ready)]
                kind, payload = ready.recv()
                if kind == "error":
                    raise RuntimeError(f"limit worker {i} failed:\n{payload}")
                if kind != expected:
                    raise RuntimeError(f"limit worker {i}: {kind!r}, expected {expected!r}")
                answers[i] = payload
        return [answers[i] for i in range(len(self.conns))]

    def prepare(self, job: Job) -> None:
        for i, conn in enumerate(self.conns):
            conn.send(("prepare", (job, share(job.batches, self.procs, i))))
        self._collect("ready")

    def go(self) -> Measurement:
        """All processes from the barrier on: their texts over the mean busy time of those that had work.

        The mean, not the last one's end: shares of a sorted sample differ in cost, and a queue (as
        Triton's scheduler keeps) would hand the next batch to whichever process is free.
        """
        for conn in self.conns:
            conn.send(("go", None))
        done = [m for m in self._collect("done") if m.calls]
        total = Measurement()
        for m in done:
            total = total.merge(m)  # seconds: the sum of the busy times
        total.seconds /= len(done)
        return total


@contextlib.contextmanager
def _model_environment() -> Iterator[None]:
    """os.environ as Triton's model stubs have it, for the processes spawned meanwhile (they inherit it)."""
    before = dict(os.environ)
    os.environ.update(model_process_environment(os.environ))
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def place(model_pt: Path, layout: Layout) -> Workers:
    """The model run in `layout`: `layout.procs` spawned processes of `layout.threads` torch threads."""
    return Workers(model_pt, layout.procs, layout.threads)
