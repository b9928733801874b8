"""The three steps in order (tokenize -> infer -> post-process); no gRPC here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

from ..errors import InvalidInput
from ..model_artifact import ModelInfo
from .batching import Coalescer, SubmitResult
from .postprocess import RankedLabel, probabilities, rank
from .result_cache import ResultCache, cache_key
from .tokenization import EncodedText, Pair, TextTokenizer
from .windows import Aggregation, aggregate

# Requests with at most this many characters are tokenized on the event loop
# (cheaper there than a hop to a thread and back); larger ones in a worker thread, unless no
# other call is in flight (nothing would run meanwhile: the hop only adds latency).
INLINE_TOKENIZE_CHARS = 1024


class Truncation(Enum):
    TRUNCATE = "truncate"
    REJECT = "reject"
    WINDOW = "window"  # overlapping windows, one answer per text


@dataclass(frozen=True)
class Limits:
    max_texts_per_request: int
    max_chars_per_text: int
    max_windows_per_text: int = 64
    max_windows_per_request: int = 512


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 0
    return_logits: bool = False
    max_length: int = 0  # with WINDOW: each window's
    truncation: Truncation = Truncation.TRUNCATE
    stride: int | None = None  # WINDOW: None is the tokenizer's default
    aggregation: Aggregation = Aggregation.MEAN
    return_windows: bool = False


@dataclass(frozen=True)
class WindowResult:
    labels: list[RankedLabel]  # every label, best first
    start_token: int  # text tokens covered, special tokens not counted: [start_token, end_token)
    end_token: int
    num_tokens: int


@dataclass(frozen=True)
class TextResult:
    labels: list[RankedLabel]  # best first
    logits: list[float]  # empty unless asked for
    num_tokens: int  # all its windows' tokens
    truncated: bool
    num_windows: int = 1
    windows: list[WindowResult] = field(default_factory=list)  # only when asked for


@dataclass(frozen=True)
class Timings:
    tokenize_s: float
    queue_s: float
    inference_s: float
    total_s: float


@dataclass(frozen=True)
class ClassifyOutput:
    results: list[TextResult]
    timings: Timings


class ClassificationPipeline:
    def __init__(
        self,
        info: ModelInfo,
        tokenizer: TextTokenizer,
        coalescer: Coalescer,
        limits: Limits,
        cache: ResultCache | None = None,
    ) -> None:
        self.info = info
        self.tokenizer = tokenizer
        self.coalescer = coalescer
        self.limits = limits
        self.cache = cache
        self._in_flight = 0  # calls being tokenized or waiting for their batch

    @property
    def in_flight(self) -> int:
        """Calls being tokenized or classified with this pipeline now."""
        return self._in_flight

    def validate_texts(self, texts: list[str] | list[Pair]) -> None:
        """Checks that need no tokenizing; run before any work is spent on the request."""
        field_name = "pairs" if texts and isinstance(texts[0], tuple) else "texts"
        if not texts:
            raise InvalidInput("texts (or pairs) must contain at least one text")
        if len(texts) > self.limits.max_texts_per_request:
            raise InvalidInput(
                f"too many {field_name}: {len(texts)} (the limit is {self.limits.max_texts_per_request} per request)"
            )
        items: list[str | Pair] = list(texts)
        for i, item in enumerate(items):
            if isinstance(item, str):
                self._check_text(item, f"texts[{i}]")
            else:
                self._check_text(item[0], f"pairs[{i}].text")
                self._check_text(item[1], f"pairs[{i}].text_pair")

    def _check_text(self, text: str, name: str) -> None:
        if not text.strip():
            raise InvalidInput(f"{name} is empty or whitespace only")
        if len(text) > self.limits.max_chars_per_text:
            raise InvalidInput(f"{name} has {len(text)} characters (the limit is {self.limits.max_chars_per_text})")

    async def _encode(
        self,
        texts: list[str] | list[Pair],
        max_length: int,
        truncation: Truncation,
        stride: int | None = None,
        with_tokens: bool = False,
    ) -> list[EncodedText]:
        self.validate_texts(texts)
        max_length = self.tokenizer.resolve_max_length(max_length)
        window_stride = None
        if truncation is Truncation.WINDOW:
            if isinstance(texts[0], tuple):
                raise InvalidInput("truncation strategy WINDOW takes single texts, not pairs")
            window_stride = self.tokenizer.resolve_stride(max_length, stride)
        chars = sum(len(t) for text in texts for t in (text if isinstance(text, tuple) else (text,)))
        if self._in_flight <= 1 or chars <= INLINE_TOKENIZE_CHARS:
            # Alone, or tens of microseconds: cheaper here than the hop to a thread and back.
            encoded = self.tokenizer.encode(texts, max_length, with_tokens, window_stride)
        else:
            # The Rust tokenizer releases the GIL: run it off the event loop.
            encoded = await asyncio.to_thread(self.tokenizer.encode, texts, max_length, with_tokens, window_stride)
        if truncation is Truncation.REJECT:
            too_long = [i for i, e in enumerate(encoded) if e.truncated]
            if too_long:
                field_name = "texts" if isinstance(texts[0], str) else "pairs"
                raise InvalidInput(
                    f"{field_name} {too_long[:10]} exceed {max_length} tokens and truncation strategy is REJECT"
                )
        if window_stride is not None:
            self._check_windows(encoded)
        return encoded

    def _check_windows(self, encoded: list[EncodedText]) -> None:
        """The window limits, checked before any window reaches the model."""
        limits = self.limits
        for i, e in enumerate(encoded):
            if len(e.windows) > limits.max_windows_per_text:
                raise InvalidInput(
                    f"texts[{i}] needs {len(e.windows)} windows (the limit is {limits.max_windows_per_text} per "
                    "text: a larger max_length or a smaller stride needs fewer)"
                )
        total = sum(len(e.windows) for e in encoded)
        if total > limits.max_windows_per_request:
            raise InvalidInput(
                f"the texts need {total} windows (the limit is {limits.max_windows_per_request} per request)"
            )

    async def tokenize(
        self, texts: list[str] | list[Pair], max_length: int, truncation: Truncation, stride: int | None = None
    ) -> list[EncodedText]:
        with self._counted():
            return await self._encode(texts, max_length, truncation, stride, with_tokens=True)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def classify(
        self, texts: list[str] | list[Pair], options: ClassifyOptions, deadline: float
    ) -> ClassifyOutput:
        """`deadline` is a time.monotonic() instant."""
        if options.top_k < 0:
            raise InvalidInput("top_k must not be negative")
        started = time.monotonic()
        with self._counted():
            encoded = await self._encode(texts, options.max_length, options.truncation, options.stride)
            tokenized = time.monotonic()
            if options.truncation is Truncation.WINDOW:
                rows = [w for e in encoded for w in e.windows]
                logits, queue_s, inference_s = await self._infer(rows, deadline)
            else:
                logits, queue_s, inference_s = await self._infer(encoded, deadline)
        if options.truncation is Truncation.WINDOW:
            results = self._windowed_results(encoded, logits, options)
        else:
            results = self._results(encoded, logits, options)
        finished = time.monotonic()
        timings = Timings(tokenized - started, queue_s, inference_s, finished - started)
        return ClassifyOutput(results, timings)

    def _results(
        self, encoded: list[EncodedText], logits: list[list[float]], options: ClassifyOptions
    ) -> list[TextResult]:
        ranked = rank(probabilities(logits, self.info.problem_type), self.info.labels, options.top_k)
        return [
            TextResult(
                labels=labels,
                logits=row if options.return_logits else [],
                num_tokens=len(e.ids),
                truncated=e.truncated,
            )
            for labels, row, e in zip(ranked, logits, encoded, strict=True)
        ]

    def _windowed_results(
        self, encoded: list[EncodedText], logits: list[list[float]], options: ClassifyOptions
    ) -> list[TextResult]:
        """Each text's windows' rows (consecutive in `logits`) aggregated into its answer."""
        info, results, start = self.info, [], 0
        for e in encoded:
            windows = e.windows
            rows = logits[start : start + len(windows)]
            start += len(windows)
            probs, row = aggregate(rows, [len(w.ids) for w in windows], info.problem_type, options.aggregation)
            each = []
            if options.return_windows:
                ranked = rank(probabilities(rows, info.problem_type), info.labels, 0)
                each = [
                    WindowResult(labels, w.start_token, w.end_token, len(w.ids))
                    for labels, w in zip(ranked, windows, strict=True)
                ]
            results.append(
                TextResult(
                    labels=rank([probs], info.labels, options.top_k)[0],
                    logits=row if options.return_logits else [],
                    num_tokens=sum(len(w.ids) for w in windows),
                    truncated=False,
                    num_windows=len(windows),
                    windows=each,
                )
            )
        return results

    async def _infer(self, rows: list[EncodedText], deadline: float) -> tuple[list[list[float]], float, float]:
        """(logits rows, queue seconds, Triton seconds); rows the cache holds skip the coalescer."""
        if self.cache is None:
            submitted = await self._submit(rows, deadline)
            return submitted.logits, submitted.queue_s, submitted.inference_s
        keys = [cache_key(e.ids, e.type_ids) for e in rows]
        found = self.cache.get(keys)
        missing = [i for i, row in enumerate(found) if row is None]
        fresh: dict[int, list[float]] = {}
        queue_s = inference_s = 0.0
        if missing:
            submitted = await self._submit([rows[i] for i in missing], deadline)
            self.cache.put([keys[i] for i in missing], submitted.logits)
            fresh = dict(zip(missing, submitted.logits, strict=True))
            queue_s, inference_s = submitted.queue_s, submitted.inference_s
        return [fresh[i] if row is None else row for i, row in enumerate(found)], queue_s, inference_s

    async def _submit(self, rows: list[EncodedText], deadline: float) -> SubmitResult:
        type_ids = [e.type_ids for e in rows if e.type_ids is not None] if self.tokenizer.type_ids else None
        return await self.coalescer.submit([e.ids for e in rows], deadline, type_ids)
