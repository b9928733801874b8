"""A fake model backend and an in-process front-end around it: the fast test tier's seam.

`FakeBackend` stands where the Triton pool stands in production. Its logits
are a fixed function of each text's own (unpadded) ids, so a test can tell
whether rows were routed and padded correctly. It can fail, stall, be slow or
be not ready on demand, from the test's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np
from sentiment_server.core.inference import InferenceBackend, Logits, ServedModel
from sentiment_server.core.tokenization import IdArray, TextTokenizer
from sentiment_server.errors import DeadlineExceeded, RolloutRefused
from sentiment_server.model_artifact import BASE_INPUTS, SINGLE_LABEL, ModelInfo
from sentiment_server.settings import ServeSettings
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file
from sentiment_server.transport.server import FrontEnd, create_server

LABELS = ("NEGATIVE", "POSITIVE")


def fake_logits(ids: IdArray, mask: IdArray, num_labels: int, type_ids: IdArray | None = None) -> Logits:
    """Row i, label j: a number from the row's real ids (and segment ids, when given) only, in [-5, 5]."""
    weights = np.arange(1, num_labels + 1, dtype=np.int64)
    real = ids * mask if type_ids is None else (ids + 7 * type_ids) * mask
    sums = real.sum(axis=1, keepdims=True) * weights
    logits: Logits = ((sums % 101) / 10.0 - 5.0).astype(np.float32)
    return logits


class FakeBackend:
    """An `InferenceBackend` whose behaviour a test sets: `error`, `delay_s`, `ready`, `stall()`.

    Like Triton's client, a call still stalled at its deadline raises DeadlineExceeded.
    """

    replicas = 1
    instances = 2

    def __init__(self, num_labels: int = len(LABELS)) -> None:
        self.num_labels = num_labels
        self.error: Exception | None = None  # raised by every infer() while set
        self.delay_s = 0.0
        self.ready = True
        self.batches: list[tuple[int, int]] = []  # shapes of the batches sent
        self.segment_batches = 0  # batches that carried token_type_ids
        self.closed = False
        self._open = threading.Event()
        self._open.set()

    @contextmanager
    def stall(self) -> Iterator[None]:
        """Batches wait inside infer() until the block ends."""
        self._open.clear()
        try:
            yield
        finally:
            self._open.set()

    async def infer(
        self, input_ids: IdArray, attention_mask: IdArray, deadline: float, token_type_ids: IdArray | None = None
    ) -> Logits:
        self.batches.append((input_ids.shape[0], input_ids.shape[1]))
        if token_type_ids is not None:
            assert token_type_ids.shape == input_ids.shape
            self.segment_batches += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        while not self._open.is_set():  # as Triton's client does, a stalled call ends at its deadline
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("deadline exceeded while waiting for the model")
            await asyncio.sleep(0.002)
        if self.error is not None:
            raise self.error
        return fake_logits(input_ids, attention_mask, self.num_labels, token_type_ids)

    async def refresh(self, timeout_s: float) -> bool:
        return self.ready

    async def close(self) -> None:
        self.closed = True


def fake_info(
    labels: tuple[str, ...] = LABELS, problem_type: str = SINGLE_LABEL, max_length: int = 128, **fields: Any
) -> ModelInfo:
    """A model's description; `fields` override the other ModelInfo fields."""
    values: dict[str, Any] = {
        "model_name": "sentiment",
        "source": "fake",
        "pad_token_id": 0,
        "backend": "fake",
        "dtype": "fp32",
        "fingerprint": "fake",
        **fields,
    }
    return ModelInfo(labels=list(labels), problem_type=problem_type, max_length=max_length, **values)


def fake_model(
    labels: tuple[str, ...] = LABELS,
    problem_type: str = SINGLE_LABEL,
    max_length: int = 128,
    inputs: tuple[str, ...] = BASE_INPUTS,
    name: str = "sentiment",
    version: str = "1",
) -> ServedModel:
    """`inputs`: add TOKEN_TYPE_IDS for a model that takes segment ids (a BERT)."""
    info = fake_info(labels, problem_type, max_length, inputs=list(inputs), model_name=name, version=version)
    tokenizer = TextTokenizer(bundled_tokenizer_file(), max_length, 0, info.takes_token_type_ids)
    return ServedModel(info, tokenizer)


class FakeVersions:
    """A VersionSource over fake versions: (name, version) -> (model, backend), registered by the test."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], tuple[ServedModel, FakeBackend]] = {}
        self.refuse: dict[tuple[str, str], str] = {}  # versions that fail to start, and why
        self.started: list[tuple[str, str]] = []
        self.retired: list[tuple[str, str]] = []

    def add(self, model: ServedModel, backend: FakeBackend | None = None) -> FakeBackend:
        backend = backend or FakeBackend(len(model.info.labels))
        self.versions[(model.info.model_name, model.info.version)] = (model, backend)
        return backend

    def _of(self, model_name: str) -> list[str]:
        return sorted((v for n, v in self.versions if n == model_name), key=int)

    def newest_version(self, model_name: str) -> str | None:
        versions = self._of(model_name)
        return versions[-1] if versions else None

    def older_version(self, model_name: str, version: str) -> str | None:
        older = [v for v in self._of(model_name) if int(v) < int(version)]
        return older[-1] if older else None

    def read(self, model_name: str, version: str) -> ServedModel:
        if (model_name, version) not in self.versions:
            raise RolloutRefused(f"model {model_name!r} has no version {version}")
        return self.versions[(model_name, version)][0]

    async def start(self, model: ServedModel, serving: str) -> InferenceBackend:
        key = (model.info.model_name, model.info.version)
        self.started.append(key)
        reason = self.refuse.get(key)
        if reason is not None:
            raise RolloutRefused(reason)
        return self.versions[key][1]

    async def retire(self, model_name: str, version: str, serving: str) -> None:
        self.retired.append((model_name, version))


class InProcessServer:
    """A real gRPC front-end on 127.0.0.1, port 0, with its own event loop in a thread of this process.

    `models`: more (model, backend) pairs served next to the first; `source`: versions for rollouts
    (the admin port then listens on a free loopback port).
    """

    def __init__(
        self,
        backend: FakeBackend | None = None,
        model: ServedModel | None = None,
        models: list[tuple[ServedModel, FakeBackend]] | None = None,
        source: FakeVersions | None = None,
        **settings: Any,
    ) -> None:
        self.backend = backend or FakeBackend()
        self.model = model or fake_model()
        self.models = models or []
        self.source = source
        settings.setdefault("admin_port", 0)
        self.settings = dataclasses.replace(ServeSettings(), host="127.0.0.1", port=0, health_poll_s=0.05, **settings)
        self.front: FrontEnd | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="front-end", daemon=True)

    @property
    def target(self) -> str:
        assert self.front is not None
        return f"127.0.0.1:{self.front.port}"

    def run(self, coroutine: Any, timeout_s: float = 10.0) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def start(self) -> InProcessServer:
        self._thread.start()
        versions: list[tuple[ServedModel, InferenceBackend]] = [(self.model, self.backend), *self.models]
        self.front = self.run(create_server(self.settings, versions, self.source, self.model.info.model_name))
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        if self.front is not None:
            self.run(self.front.stop(grace_s), timeout_s=grace_s + 10)
            self.front = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> InProcessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(condition: Any, timeout_s: float = 5.0) -> bool:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def health_statuses(target: str) -> list[int]:
    """grpc.health.v1 Check's status for the whole server ("") and for SentimentService."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]  # generated code
        names = ("", "sentiment.v1.SentimentService")
        return [int(stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status) for name in names]
