"""The networked paths: Triton called directly, and this service (unary, batch, stream).

Every client talks to 127.0.0.1 only. The service is called through the
generated stubs with prebuilt requests, so the client's own cost stays small
and the same for every row.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from corpus import Workload
from load import Measurement, closed_loop
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tokenizers import Tokenizer
from tritonclient.grpc import InferInput, InferRequestedOutput

MODEL = "sentiment"
OUTPUT = "logits__0"
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


class TritonDirect:
    """What a user without the front-end does: tokenize, pad, `tritonclient` infer, softmax."""

    def __init__(self, url: str, tokenizer_json: Path, workload: Workload) -> None:
        self.client = triton_aio.InferenceServerClient(url, channel_args=_CHANNEL_OPTIONS)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.enable_truncation(max_length=512)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.texts = list(workload.texts)

    async def call(self, index: int, texts_per_call: int) -> int:
        start = (index * texts_per_call) % len(self.texts)
        texts = (self.texts * 2)[start : start + texts_per_call]
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        inputs = [
            InferInput("input_ids", list(ids.shape), "INT64"),
            InferInput("attention_mask", list(ids.shape), "INT64"),
        ]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(mask)
        result = await self.client.infer(MODEL, inputs, outputs=[InferRequestedOutput(OUTPUT)])
        logits = result.as_numpy(OUTPUT)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        (z / z.sum(axis=1, keepdims=True)).argmax(axis=1)
        return len(texts)

    async def measure(self, concurrency: int, texts_per_call: int, warmup_s: float, measure_s: float) -> Measurement:
        return await closed_loop(lambda i: self.call(i, texts_per_call), concurrency, warmup_s, measure_s)

    async def close(self) -> None:
        await self.client.close()


# Sliding windows with the service's defaults (window = the model's maximum, stride a quarter
# of it, MEAN), spelled out in the request rather than relying on a client helper.
WINDOWS = pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW, aggregation=pb.WINDOW_AGGREGATION_MEAN)


class Service:
    """This service's `Classify` (one or many texts per call) and `ClassifyStream`.

    A windowed workload (`long`) sends its texts with WINDOWS: one answer per text.
    """

    def __init__(self, target: str, workload: Workload, connections: int = 1) -> None:
        """`connections` > 1: calls go round-robin over that many connections (so a front-end with several
        worker processes, which share the port connection by connection, gets work on each)."""
        options = [*_CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        self.channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(connections)]
        self.stubs = [pb_grpc.SentimentServiceStub(c) for c in self.channels]  # type: ignore[no-untyped-call]
        self.stub = self.stubs[0]
        self.texts = list(workload.texts)
        self.truncation = WINDOWS if workload.windowed else None
        self._requests: dict[int, list[pb.ClassifyRequest]] = {}

    def requests(self, texts_per_call: int) -> list[pb.ClassifyRequest]:
        if texts_per_call not in self._requests:
            texts = self.texts * 2
            self._requests[texts_per_call] = [
                pb.ClassifyRequest(texts=texts[start : start + texts_per_call], truncation=self.truncation)
                for start in range(0, len(self.texts), texts_per_call)
            ]
        return self._requests[texts_per_call]

    async def measure(self, concurrency: int, texts_per_call: int, warmup_s: float, measure_s: float) -> Measurement:
        requests = self.requests(texts_per_call)

        async def call(index: int) -> int:
            request = requests[index % len(requests)]
            response = await self.stubs[index % len(self.stubs)].Classify(request, timeout=120)
            return len(response.results)

        return await closed_loop(call, concurrency, warmup_s, measure_s)

    async def measure_stream(
        self, window: int, texts_per_message: int, warmup_s: float, measure_s: float
    ) -> Measurement:
        """One ClassifyStream call with up to `window` messages awaiting their answer."""
        requests = self.requests(texts_per_message)
        result = Measurement()
        credit = asyncio.Semaphore(window)
        sent: dict[str, float] = {}
        started = time.perf_counter()
        window_start, window_end = started + warmup_s, started + warmup_s + measure_s
        call = self.stub.ClassifyStream(timeout=warmup_s + measure_s + 120)

        async def write() -> None:
            index = 0
            while time.perf_counter() < window_end:
                await credit.acquire()
                key = str(index)
                sent[key] = time.perf_counter()
                await call.write(pb.ClassifyStreamRequest(request=requests[index % len(requests)], correlation_id=key))
                index += 1
            await call.done_writing()

        async def read() -> None:
            async for response in call:
                now = time.perf_counter()
                credit.release()
                if window_start <= now <= window_end:
                    result.sentences += len(response.response.results)
                    result.calls += 1
                    result.latencies_s.append(now - sent.pop(response.correlation_id))
                if now > window_end:
                    return

        writer = asyncio.create_task(write())
        try:
            await read()
        finally:
            writer.cancel()
            call.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        result.seconds = measure_s
        return result

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


async def paired_c1(direct: TritonDirect, service: Service, seconds: float) -> tuple[Measurement, Measurement, float]:
    """Concurrency 1: the same text through Triton direct and the service, back to back.

    The order alternates from pair to pair, so drift and noise hit both paths
    alike. Returns both measurements and the median of the paired differences
    (service minus direct) in milliseconds.
    """
    requests = service.requests(1)
    paths = (Measurement(), Measurement())
    diffs: list[float] = []
    until = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < until:
        took = [0.0, 0.0]
        for who in (0, 1) if index % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            if who == 0:
                await direct.call(index, 1)
            else:
                await service.stub.Classify(requests[index % len(requests)], timeout=120)
            took[who] = time.perf_counter() - t0
        for who in (0, 1):
            paths[who].latencies_s.append(took[who])
            paths[who].sentences += 1
            paths[who].calls += 1
            paths[who].seconds += took[who]
        diffs.append(took[1] - took[0])
        index += 1
    diffs.sort()
    return paths[0], paths[1], 1000 * diffs[len(diffs) // 2]
