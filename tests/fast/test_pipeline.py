"""The pipeline's choice of where to tokenize, with the bundled tokenizer and a recording coalescer."""

import asyncio
import threading

import numpy as np
from fake_backend import fake_model
from sentiment_server.core.pipeline import INLINE_TOKENIZE_CHARS, ClassificationPipeline, ClassifyOptions, Limits
from sentiment_server.core.tokenization import TextTokenizer
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file


class ThreadRecordingTokenizer(TextTokenizer):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.threads: list[int] = []

    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.threads.append(threading.get_ident())
        return super().encode(*args, **kwargs)


class GatedCoalescer:
    """Answers every text with zero logits once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def submit(self, sequences, deadline, type_ids=None):  # type: ignore[no-untyped-def]
        await self.release.wait()

        class Submitted:
            logits = np.zeros((len(sequences), 2), dtype=np.float32)
            queue_s = inference_s = 0.0

        return Submitted()


def make_pipeline() -> tuple[ClassificationPipeline, ThreadRecordingTokenizer, GatedCoalescer]:
    info = fake_model().info
    tokenizer = ThreadRecordingTokenizer(bundled_tokenizer_file(), info.max_length, info.pad_token_id)
    coalescer = GatedCoalescer()
    pipeline = ClassificationPipeline(info, tokenizer, coalescer, Limits(64, 100_000))  # type: ignore[arg-type]
    return pipeline, tokenizer, coalescer


async def test_a_long_text_is_tokenized_on_the_loop_when_alone_and_in_a_thread_under_load() -> None:
    pipeline, tokenizer, coalescer = make_pipeline()
    loop_thread = threading.get_ident()
    long_text = "a fine film " * (INLINE_TOKENIZE_CHARS // 10)
    coalescer.release.set()
    await pipeline.classify([long_text], ClassifyOptions(), deadline=1e12)
    assert tokenizer.threads == [loop_thread]  # alone: a thread hop would only add latency

    coalescer.release.clear()
    waiting = asyncio.ensure_future(pipeline.classify(["short"], ClassifyOptions(), deadline=1e12))
    await asyncio.sleep(0.01)  # tokenized, now waiting for its batch
    busy = asyncio.ensure_future(pipeline.classify([long_text], ClassifyOptions(), deadline=1e12))
    await asyncio.sleep(0.1)
    coalescer.release.set()
    await asyncio.gather(waiting, busy)
    assert tokenizer.threads[1] == loop_thread  # "short" is always inline
    assert tokenizer.threads[2] != loop_thread  # another call in flight: off the event loop
