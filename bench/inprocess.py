"""The in-process paths (no server): the model's own limit, and the seed's way.

- `limit`: the exported TorchScript `model.pt` (the very file Triton runs),
  called with ready-made tensors at each candidate batch size; texts sorted
  by length, so batches carry almost no padding. Tokenizing is left out: it
  is the model's limit, the best any server could do.
- `window_limit`: the same for texts longer than the model (`long`): each
  text as the fast tokenizer's overflow windows, windows batched, then one
  answer per text (the service's WINDOW with its defaults).
- `pipeline`: `transformers.pipeline("text-classification")` on the fp32
  checkpoint, with each candidate `batch_size`, texts in corpus order (what
  the seed does).
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from corpus import Workload
from load import Measurement, timed_batches
from sentiment_server.model_artifact import INFO_FILE, ModelInfo
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
    # window_limit: the sample's windows per text, and the windows' size and stride in tokens
    windows_per_text: float | None = None
    window: int | None = None
    stride: int | None = None


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


def _padding(batches: list[tuple[Any, Any]]) -> float:
    """The padded share of the tokens the model runs."""
    return 1 - sum(int(m.sum()) for _, m in batches) / sum(int(m.numel()) for _, m in batches)


def _load(model_pt: Path) -> tuple[Any, Any]:
    """(model, device): the exported TorchScript model, on the GPU when there is one."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(model_pt), map_location=device).eval()
    return model, device


def _timed(run: Callable[[int], int], warm: Iterable[int], batches: int, min_s: float, clean: Clean) -> Measurement:
    """`run` the batches in `warm` once, untimed (first calls pay for kernel set-up), then time them all."""
    import torch

    with torch.inference_mode(), torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
        for index in warm:
            run(index)
        return clean(partial(timed_batches, run, batches, min_s))


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
    model, device = _load(model_pt)
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

        return _timed(run, range(len(batches)), len(batches), min_s, clean)

    for size in batch_sizes:
        batches = _batches(encoded, size, device)
        padding[size] = _padding(batches)
        results[size] = timed(batches)
        log.info("  limit %s batch %d: %.1f/s", workload.name, size, results[size].sentences_per_s)
    best = _pick(results, padding)
    if unsorted:
        best.unsorted_per_s = round(timed(_batches(in_order, best.batch_size, device)).sentences_per_s, 1)
        log.info("  limit %s batch %d, corpus order: %.1f/s", workload.name, best.batch_size, best.unsorted_per_s)
    return best


def window_limit(
    model_pt: Path,
    tokenizer_json: Path,
    workload: Workload,
    batch_sizes: Sequence[int],
    sample: int,
    clean: Clean = _as_is,
) -> Best:
    """The limit for texts longer than the model, in texts (not windows) per second.

    What a user does in-process: the fast tokenizer's overflow windows
    (`enable_truncation(max_length, stride)`, the encoding and its
    `overflowing`) with the service's defaults (windows of the model's maximum,
    stride a quarter of a window's text tokens), windows of all texts batched
    and sorted by length (full windows together: almost no padding), logits
    to host memory, then each text's windows' softmax averaged, weighted by
    their tokens (the service's MEAN). As in `limit`, tokenizing is left out.

    Each batch size is timed over exactly one pass of the sample: a text only
    counts once its last window has run, so a pass cut short would undercount.
    """
    import numpy as np

    model, device = _load(model_pt)
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
    owners = [text for text, _ in windows]
    per_text = Counter(owners)
    members: dict[int, list[int]] = {}
    for position, text in enumerate(owners):
        members.setdefault(text, []).append(position)
    weights = np.array([len(ids) for _, ids in windows], dtype=np.float64)  # tokens, special tokens included
    probs = np.zeros((len(windows), len(info.labels)))
    left: Counter[int] = Counter()  # windows each text still waits for in this pass
    results: dict[int, Measurement] = {}
    padding: dict[int, float] = {}

    for size in batch_sizes:
        batches = _batches([ids for _, ids in windows], size, device)
        padding[size] = _padding(batches)

        def run(index: int, batches: list[tuple[Any, Any]] = batches, size: int = size) -> int:
            if index == 0:  # a new pass: every text needs all its windows again
                left.clear()
                left.update(per_text)
            ids, mask = batches[index]
            logits = model(ids, mask).float().cpu().numpy()
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            first = index * size
            probs[first : first + len(logits)] = z / z.sum(axis=1, keepdims=True)
            done = 0
            for text in owners[first : first + len(logits)]:
                left[text] -= 1
                if left[text] == 0:  # its last window: the text's answer
                    rows = members[text]
                    np.average(probs[rows], axis=0, weights=weights[rows]).argmax()
                    done += 1
            return done

        warm: dict[tuple[int, ...], int] = {}  # the first batch of each shape (most are full windows)
        for index, (ids, _) in enumerate(batches):
            warm.setdefault(tuple(ids.shape), index)
        # min_s=0: exactly one pass (timed_batches always completes one), every text counted once.
        results[size] = _timed(run, warm.values(), len(batches), 0.0, clean)
        log.info("  limit %s batch %d windows: %.2f texts/s", workload.name, size, results[size].sentences_per_s)
    best = _pick(results, padding)
    best.windows_per_text = round(len(windows) / len(per_text), 2)
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
