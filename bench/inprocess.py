"""The two in-process paths (no server): the model's own limit, and the seed's way.

- `limit`: the exported TorchScript `model.pt` (the very file Triton runs),
  called with ready-made tensors at each candidate batch size; texts sorted
  by length, so batches carry almost no padding. Tokenizing is left out: it
  is the model's limit, the best any server could do.
- `pipeline`: `transformers.pipeline("text-classification")` on the fp32
  checkpoint, with each candidate `batch_size`, texts in corpus order (what
  the seed does).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from corpus import Workload
from load import Measurement, timed_batches
from tokenizers import Tokenizer

log = logging.getLogger("bench")
Clean = Callable[[Callable[[], Measurement]], Measurement]  # runs a measurement, again if it was disturbed


def _as_is(measure: Callable[[], Measurement]) -> Measurement:
    return measure()


@dataclass
class Best:
    batch_size: int
    measurement: Measurement
    tried: dict[int, float]  # batch size -> sentences/s
    padding: float | None = None  # padded share of the tokens at the best batch size
    unsorted_per_s: float | None = None  # the best batch size on texts in corpus order


def _pick(results: dict[int, Measurement], padding: dict[int, float] | None = None) -> Best:
    size = max(results, key=lambda b: results[b].sentences_per_s)
    tried = {b: round(m.sentences_per_s, 1) for b, m in results.items()}
    return Best(size, results[size], tried, padding[size] if padding else None)


def _batches(encoded: list[list[int]], size: int, device: Any) -> list[tuple[Any, Any]]:
    """Padded exactly as the front-end pads (pad id 0, like the exported DistilBERT)."""
    import numpy as np
    import torch
    from sentiment_server.core.tokenization import pad_batch

    batches = []
    for start in range(0, len(encoded), size):
        ids, mask = pad_batch([np.asarray(seq, dtype=np.int64) for seq in encoded[start : start + size]], 0)
        batches.append((torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)))
    return batches


def limit(
    model_pt: Path,
    tokenizer_json: Path,
    workload: Workload,
    batch_sizes: Sequence[int],
    sample: int,
    min_s: float,
    unsorted: bool = False,
    clean: Clean = _as_is,
) -> Best:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(model_pt), map_location=device).eval()
    tok = Tokenizer.from_file(str(tokenizer_json))
    in_order = [e.ids for e in tok.encode_batch(list(workload.texts[:sample]))]
    encoded = sorted(in_order, key=len)
    results: dict[int, Measurement] = {}
    padding: dict[int, float] = {}

    def timed(batches: list[tuple[Any, Any]]) -> Measurement:
        def run(index: int) -> int:
            ids, mask = batches[index]
            model(ids, mask).cpu()  # the logits in host memory, as a server needs them
            return int(ids.shape[0])

        with torch.inference_mode(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
            for index in range(len(batches)):  # every shape once: first calls pay for kernel set-up
                run(index)
            return clean(partial(timed_batches, run, len(batches), min_s))

    for size in batch_sizes:
        batches = _batches(encoded, size, device)
        padding[size] = 1 - sum(int(m.sum()) for _, m in batches) / sum(m.numel() for _, m in batches)
        results[size] = timed(batches)
        log.info("  limit %s batch %d: %.1f/s", workload.name, size, results[size].sentences_per_s)
    best = _pick(results, padding)
    if unsorted:
        best.unsorted_per_s = round(timed(_batches(in_order, best.batch_size, device)).sentences_per_s, 1)
        log.info("  limit %s batch %d, corpus order: %.1f/s", workload.name, best.batch_size, best.unsorted_per_s)
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
