"""The three steps in order (tokenize -> infer -> post-process); no gRPC here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from ..errors import InvalidInput
from ..model_artifact import ModelInfo
from .batching import Coalescer
from .postprocess import RankedLabel, probabilities, rank
from .result_cache import ResultCache
from .tokenization import EncodedText, IdArray, TextTokenizer

# Requests with at most this many characters are tokenized on the event loop
# (cheaper there than a hop to a thread and back); larger ones in a worker thread, unless no
# other call is in flight (nothing would run meanwhile: the hop only adds latency).
INLINE_TOKENIZE_CHARS = 1024


class Truncation(Enum):
    TRUNCATE = "truncate"
    REJECT = "reject"


@dataclass(frozen=True)
class Limits:
    max_texts_per_request: int
    max_chars_per_text: int


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 0
    return_logits: bool = False
    max_length: int = 0
    truncation: Truncation = Truncation.TRUNCATE


@dataclass(frozen=True)
class TextResult:
    labels: list[RankedLabel]  # best first
    logits: list[float]  # empty unless asked for
    num_tokens: int
    truncated: bool


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

    def validate_texts(self, texts: list[str]) -> None:
        """Checks that need no tokenizing; run before any work is spent on the request."""
        if not texts:
            raise InvalidInput("texts must contain at least one text")
        if len(texts) > self.limits.max_texts_per_request:
            raise InvalidInput(
                f"too many texts: {len(texts)} (the limit is {self.limits.max_texts_per_request} per request)"
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidInput(f"texts[{i}] is empty or whitespace only")
            if len(text) > self.limits.max_chars_per_text:
                raise InvalidInput(
                    f"texts[{i}] has {len(text)} characters (the limit is {self.limits.max_chars_per_text})"
                )

    async def _encode(
        self, texts: list[str], max_length: int, truncation: Truncation, with_tokens: bool = False
    ) -> list[EncodedText]:
        self.validate_texts(texts)
        max_length = self.tokenizer.resolve_max_length(max_length)
        if self._in_flight <= 1 or sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            # Alone, or tens of microseconds: cheaper here than the hop to a thread and back.
            encoded = self.tokenizer.encode(texts, max_length, with_tokens)
        else:
            # The Rust tokenizer releases the GIL: run it off the event loop.
            encoded = await asyncio.to_thread(self.tokenizer.encode, texts, max_length, with_tokens)
        if truncation is Truncation.REJECT:
            too_long = [i for i, e in enumerate(encoded) if e.truncated]
            if too_long:
                raise InvalidInput(
                    f"texts {too_long[:10]} exceed {max_length} tokens and truncation strategy is REJECT"
                )
        return encoded

    async def tokenize(self, texts: list[str], max_length: int, truncation: Truncation) -> list[EncodedText]:
        with self._counted():
            return await self._encode(texts, max_length, truncation, with_tokens=True)

    @contextmanager
    def _counted(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def classify(self, texts: list[str], options: ClassifyOptions, deadline: float) -> ClassifyOutput:
        """`deadline` is a time.monotonic() instant."""
        if options.top_k < 0:
            raise InvalidInput("top_k must not be negative")
        started = time.monotonic()
        with self._counted():
            encoded = await self._encode(texts, options.max_length, options.truncation)
            tokenized = time.monotonic()
            logits, queue_s, inference_s = await self._infer([e.ids for e in encoded], deadline)
        probs = probabilities(logits, self.info.problem_type)
        ranked = rank(probs, self.info.labels, options.top_k)
        results = [
            TextResult(
                labels=labels,
                logits=row if options.return_logits else [],
                num_tokens=len(e.ids),
                truncated=e.truncated,
            )
            for labels, row, e in zip(ranked, logits, encoded, strict=True)
        ]
        finished = time.monotonic()
        timings = Timings(tokenized - started, queue_s, inference_s, finished - started)
        return ClassifyOutput(results, timings)

    async def _infer(self, sequences: list[IdArray], deadline: float) -> tuple[list[list[float]], float, float]:
        """(logits rows, queue seconds, Triton seconds); rows the cache holds skip the coalescer."""
        if self.cache is None:
            submitted = await self.coalescer.submit(sequences, deadline)
            return submitted.logits, submitted.queue_s, submitted.inference_s
        found = self.cache.get(sequences)
        missing = [i for i, row in enumerate(found) if row is None]
        fresh: dict[int, list[float]] = {}
        queue_s = inference_s = 0.0
        if missing:
            todo = [sequences[i] for i in missing]
            submitted = await self.coalescer.submit(todo, deadline)
            self.cache.put(todo, submitted.logits)
            fresh = dict(zip(missing, submitted.logits, strict=True))
            queue_s, inference_s = submitted.queue_s, submitted.inference_s
        return [fresh[i] if row is None else row for i, row in enumerate(found)], queue_s, inference_s
