"""The in-process paths (no server): the model's own limit, and the seed's way.

- `limit`: the exported TorchScript `model.pt` (the very file Triton runs),
  called with ready-made tensors at each candidate batch size and in the
  batches the service's planner would cut (`planned_batches`), in each layout
  of P processes x T torch threads over the usable cores (bench/layouts.py:
  one process with every thread, one single-thread process per core as Triton
  runs its instances, and what lies between); texts sorted by length, so
  batches carry almost no padding. The best (layout, batch size) is the
  limit. Tokenizing is left out: it is the model's limit, the best any server
  could do.
- `window_limit`: the same for texts longer than the model (`long`): each
  text as the fast tokenizer's overflow windows, windows batched (and the
  batches shared out among the processes), then one answer per text (the
  service's WINDOW with its defaults).
- `pipeline`: `transformers.pipeline("text-classification")` on the fp32
  checkpoint, with each candidate `batch_size`, texts in corpus order (what
  the seed does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from corpus import Workload
from layouts import Job, Layout, layouts, place
from load import Measurement, timed_batches
from sentiment_server.core.batch_costs import BATCH_OVERHEAD_TOKENS
from sentiment_server.core.batch_planning import plan_groups
from sentiment_server.core_budget import usable_cores
from sentiment_server.model_artifact import INFO_FILE, ModelInfo
from sentiment_server.settings import ServeSettings
from tokenizers import Tokenizer

log = logging.getLogger("bench")
PLANNED = 0  # the limit's candidate whose batches plan_groups cuts (the others: a fixed batch size)
Clean = Callable[[Callable[[], Measurement]], Measurement]  # runs a measurement, again if it was disturbed


def _as_is(measure: Callable[[], Measurement]) -> Measurement:
    return measure()


@dataclass
class Best:
    batch_size: int
    measurement: Measurement
    tried: dict[int, float]  # batch size -> sentences/s (the limit: in the best layout)
    padding: float | None = None  # padded share of the tokens at the best batch size
    unsorted_per_s: float | None = None  # the best batch size on texts in corpus order
    # window_limit: the sample's windows per text, and the windows' size and stride in tokens
    texts_per_batch: float | None = None  # the limit, when its planned batches won
    windows_per_text: float | None = None
    window: int | None = None
    stride: int | None = None
    layout: Layout | None = None  # the limit: the processes x threads that won
    by_layout: dict[str, dict[int, float]] | None = None  # the limit: layout key -> batch size -> sentences/s


def _pick(results: dict[int, Measurement], padding: dict[int, float] | None = None) -> Best:
    size = max(results, key=lambda b: results[b].sentences_per_s)
    tried = {b: round(m.sentences_per_s, 1) for b, m in results.items()}
    return Best(size, results[size], tried, padding[size] if padding else None)


def limit_layouts() -> list[Layout]:
    """Every P x T over the usable cores on a CPU; on a GPU one process (more would share the one device)."""
    import torch

    cores = usable_cores()
    return [Layout(1, cores)] if torch.cuda.is_available() else layouts(cores)


def _search(model_pt: Path, jobs: dict[int, Job], clean: Clean, what: str, candidates: Sequence[Layout] | None) -> Best:
    """Every batch size in every layout; the best pair wins.

    Each layout tries every batch size (not only the one that won in one
    process): with fewer threads per process smaller batches can win, and
    the maximum over the whole grid is the only choice that stays an upper
    bound of what it measured. The cost is a few more measurements.
    """
    results: dict[tuple[Layout, int], Measurement] = {}
    for layout in candidates or limit_layouts():
        with place(model_pt, layout) as where:
            for size, job in jobs.items():
                where.prepare(job)
                results[(layout, size)] = m = clean(where.go)
                log.info("  limit %s, %s, batch %s: %.2f/s", what, layout, size or "planned", m.sentences_per_s)
    layout, size = max(results, key=lambda k: results[k].sentences_per_s)
    by_layout: dict[str, dict[int, float]] = {}
    for (lay, b), m in results.items():
        by_layout.setdefault(lay.key, {})[b] = round(m.sentences_per_s, 2)
    best = Best(size, results[(layout, size)], by_layout[layout.key], layout=layout, by_layout=by_layout)
    best.padding = jobs[size].padding()
    return best


def limit(
    model_pt: Path,
    tokenizer_json: Path,
    workload: Workload,
    batch_sizes: Sequence[int],
    sample: int,
    min_s: float,
    unsorted: bool = False,
    clean: Clean = _as_is,
    candidates: Sequence[Layout] | None = None,
) -> Best:
    tok = Tokenizer.from_file(str(tokenizer_json))
    in_order = [e.ids for e in tok.encode_batch(list(workload.texts[:sample]))]
    encoded = sorted(in_order, key=len)
    jobs = {size: Job(encoded, size, min_s) for size in batch_sizes}
    jobs[PLANNED] = Job(encoded, 0, min_s, planned=planned_batches(encoded))
    best = _search(model_pt, jobs, clean, workload.name, candidates)
    if best.batch_size == PLANNED:
        best.texts_per_batch = round(len(encoded) / jobs[PLANNED].batches, 1)
    if unsorted:
        assert best.layout is not None
        with place(model_pt, best.layout) as where:
            where.prepare(Job(in_order, best.batch_size or round(best.texts_per_batch or 1), min_s))
            best.unsorted_per_s = round(clean(where.go).sentences_per_s, 1)
        log.info(
            "  limit %s, %s, batch %d, corpus order: %.1f/s",
            workload.name, best.layout, best.batch_size, best.unsorted_per_s,
        )  # fmt: skip
    return best


def planned_batches(encoded: list[list[int]]) -> tuple[int, ...]:
    """Texts sorted by length cut as the service plans them: the front-end's batch limits, the model's overhead.

    Besides fixed batch sizes, the limit tries these: the service's planner groups a queue's texts by
    length into batches of any size, which a fixed size over the same texts cannot match.
    """
    defaults = ServeSettings()
    return tuple(
        plan_groups(
            [len(ids) for ids in encoded],
            max_texts=defaults.max_batch_texts,
            max_tokens=defaults.max_batch_tokens,
            overhead_tokens=BATCH_OVERHEAD_TOKENS,
        )
    )


def window_limit(
    model_pt: Path,
    tokenizer_json: Path,
    workload: Workload,
    batch_sizes: Sequence[int],
    sample: int,
    clean: Clean = _as_is,
    candidates: Sequence[Layout] | None = None,
) -> Best:
    """The limit for texts longer than the model, in texts (not windows) per second.

    What a user does in-process: the fast tokenizer's overflow windows
    (`enable_truncation(max_length, stride)`, the encoding and its
    `overflowing`) with the service's defaults (windows of the model's maximum,
    stride a quarter of a window's text tokens), windows of all texts batched
    and sorted by length (full windows together: almost no padding), logits
    to host memory, then each text's windows' softmax averaged, weighted by
    their tokens (the service's MEAN). As in `limit`, tokenizing is left out,
    and each layout's processes share the batches out.

    Each batch size is timed over exactly one pass of the sample: a text only
    counts once its last window has run, so a pass cut short would undercount.
    """
    info = ModelInfo.from_json((model_pt.parent / INFO_FILE).read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    specials = tok.post_processor.num_special_tokens_to_add(False) if tok.post_processor else 0
    stride = (info.max_length - specials) // 4  # the service's default (TextTokenizer.resolve_stride)
    tok.enable_truncation(max_length=info.max_length, stride=stride)
    windows = [
        (text, window.ids)
        for text, e in enumerate(tok.encode_batch(list(workload.texts[:sample])))
        for window in (e, *e.overflowing)
    ]
    windows.sort(key=lambda w: len(w[1]))  # stable: the full windows stay in text order
    encoded = [ids for _, ids in windows]
    owners = [text for text, _ in windows]
    weights = [len(ids) for ids in encoded]  # tokens, special tokens included
    # min_s=0: exactly one pass (timed_batches always completes one), every text counted once.
    jobs = {size: Job(encoded, size, 0.0, owners, weights, len(info.labels)) for size in batch_sizes}
    best = _search(model_pt, jobs, clean, f"{workload.name} windows (texts/s)", candidates)
    best.windows_per_text = round(len(windows) / len(set(owners)), 2)
    best.stride = stride
    best.window = info.max_length
    return best


def pipeline(
    checkpoint: Path,
    workload: Workload,
    batch_sizes: Sequence[int],
    sample: int,
    min_s: float,
    clean: Clean = _as_is,
) -> Best:
    import torch
    from transformers import pipeline as hf_pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = hf_pipeline("text-classification", model=str(checkpoint), device=device, dtype=torch.float32)
    texts = list(workload.texts[:sample])
    results: dict[int, Measurement] = {}
    for size in batch_sizes:
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]

        def run(index: int, chunks: list[list[str]] = chunks, size: int = size) -> int:
            pipe(chunks[index], batch_size=size, truncation=True)
            return len(chunks[index])

        run(0)
        results[size] = clean(partial(timed_batches, run, len(chunks), min_s))
        log.info("  pipeline %s batch_size %d: %.1f/s", workload.name, size, results[size].sentences_per_s)
    return _pick(results)
