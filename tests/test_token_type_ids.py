"""Models that take segment ids: a tiny BERT exported with token_type_ids and served by the embedded Triton.

Real checkpoints (tiny BERT and DistilBERT, random weights), the real export,
one Triton on free ports of 127.0.0.1 stopped by pid, answers compared with
the eager transformers model within 1e-5. No network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from conftest import start_service
from google.protobuf import text_format
from numpy.typing import NDArray
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_server import model_artifact as ma
from sentiment_server.backend.triton_client import TritonEndpoint
from sentiment_server.backend.triton_pool import TritonPool
from sentiment_server.backend.triton_process import EmbeddedTriton
from sentiment_server.errors import TritonFailure
from sentiment_server.tooling.checkpoint_loading import compute_fingerprint, load_checkpoint
from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
from sentiment_server.tooling.export import export_model
from sentiment_server.tooling.torchscript import _parity_batches
from tritonclient.grpc import model_config_pb2

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

PAIR_INPUTS = [ma.INPUT_IDS, ma.ATTENTION_MASK, ma.TOKEN_TYPE_IDS]
NLI_LABELS = ("entailment", "neutral", "contradiction")
PAIRS = [
    ("A soccer game with multiple males playing.", "Some men are playing a sport."),
    ("I hate this so much!", "I love it."),
    ("ok", "a considerably longer second sentence, so that the rows of the batch differ in length"),
    ("Crème brûlée à Paris, 東京", ""),
]
TEXTS = ["I hate this so much!", "ok", "Crème brûlée, 東京, and a longer sentence than the others."]

Encoded = dict[str, NDArray[np.int64]]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "bert", labels=NLI_LABELS, architecture="bert")


@pytest.fixture(scope="module")
def distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "distilbert")


@pytest.fixture(scope="module")
def repository(bert: Path, distilbert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    export_model(str(bert), repo, model_name="pairs", torch_threads=1)
    export_model(str(distilbert), repo, model_name="single", torch_threads=1)
    return repo


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(repository, grpc_port=0, metrics_port=0) as server:
        for name in ("pairs", "single"):
            server.wait_ready(name, timeout_s=120)
        yield server


class Eager:
    """The checkpoint's own tokenizer and model, as transformers runs them."""

    def __init__(self, checkpoint: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).float().eval()

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> tuple[Encoded, NDArray[np.float32]]:
        enc = self.tokenizer(texts, pairs, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**enc).logits
        return {name: tensor.numpy() for name, tensor in enc.items()}, logits.numpy()


@pytest.fixture(scope="module")
def eager_bert(bert: Path) -> Eager:
    return Eager(bert)


def _config(repository: Path, model_name: str) -> model_config_pb2.ModelConfig:
    text = (ma.model_dir(repository, model_name) / ma.CONFIG_FILE).read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _load_trace(repository: Path, model_name: str) -> Any:
    return torch.jit.load(str(ma.version_dir(repository, model_name) / ma.TORCHSCRIPT_FILE))


def _forward_arguments(traced: Any) -> list[str]:
    """model.pt's forward() argument names: what the libtorch backend binds the inputs by."""
    return [argument.name for argument in traced.forward.schema.arguments][1:]  # less `self`


# --------------------------------------------------------------------------- without Triton


def test_the_tiny_bert_makes_segment_ids(bert: Path, eager_bert: Eager) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(bert)
    assert (config.model_type, config.type_vocab_size) == ("bert", 2)
    assert ma.TOKEN_TYPE_IDS in eager_bert.tokenizer.model_input_names
    enc, logits = eager_bert(["a cat"], ["a dog"])
    assert enc[ma.TOKEN_TYPE_IDS].tolist() == [[0, 0, 0, 0, 1, 1, 1]]  # [CLS] a cat [SEP] a dog [SEP]
    assert logits.shape == (1, 3)


def test_a_bert_export_has_three_inputs(repository: Path) -> None:
    info = ma.read_model_info(repository, "pairs")
    assert info.inputs == PAIR_INPUTS and info.takes_token_type_ids
    assert info.extra["type_vocab_size"] == "2"
    config = _config(repository, "pairs")
    int64 = model_config_pb2.DataType.TYPE_INT64
    assert [(i.name, i.data_type, list(i.dims), i.allow_ragged_batch) for i in config.input] == [
        (name, int64, [-1], True) for name in PAIR_INPUTS
    ]
    assert _forward_arguments(_load_trace(repository, "pairs")) == PAIR_INPUTS


def test_a_distilbert_export_keeps_two_inputs(repository: Path) -> None:
    info = ma.read_model_info(repository, "single")
    assert info.inputs == list(ma.BASE_INPUTS) and not info.takes_token_type_ids
    assert "type_vocab_size" not in info.extra
    assert [i.name for i in _config(repository, "single").input] == list(ma.BASE_INPUTS)
    assert _forward_arguments(_load_trace(repository, "single")) == list(ma.BASE_INPUTS)


def test_the_parity_check_covers_pairs_with_segment_one(bert: Path, distilbert: Path) -> None:
    cpu = torch.device("cpu")
    segments = [b.token_type_ids for b in _parity_batches(load_checkpoint(str(bert)), cpu)]
    assert max(int(s.max()) for s in segments if s is not None) == 1  # some rows have a second segment
    assert all(b.token_type_ids is None for b in _parity_batches(load_checkpoint(str(distilbert)), cpu))


def test_the_trace_uses_the_segment_ids(repository: Path, eager_bert: Eager) -> None:
    traced = _load_trace(repository, "pairs")
    enc, expected = eager_bert([a for a, _ in PAIRS], [b for _, b in PAIRS])
    args = [torch.from_numpy(enc[name]) for name in PAIR_INPUTS]
    with torch.inference_mode():
        got = traced(*args).numpy()
        without_segments = traced(*args[:2], torch.zeros_like(args[2])).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.abs(without_segments - expected).max() > 1e-3  # the segment ids change the answer


def test_a_pytorch_backend_export_declares_three_inputs(bert: Path, tmp_path: Path) -> None:
    info = export_model(str(bert), tmp_path, model_name="pairs-pt", backend="pytorch")
    assert info.inputs == PAIR_INPUTS
    config = _config(tmp_path, "pairs-pt")
    assert [(i.name, i.allow_ragged_batch) for i in config.input] == [(name, False) for name in PAIR_INPUTS]
    assert _forward_arguments(_load_trace(tmp_path, "pairs-pt")) == PAIR_INPUTS


def test_segment_ids_count_in_the_fingerprint_only_when_taken() -> None:
    def fingerprint(**inputs: Any) -> str:
        return compute_fingerprint(
            {},
            labels=["a", "b"],
            problem_type=ma.SINGLE_LABEL,
            tokenizer_json=b"{}",
            dtype="fp32",
            backend="python",
            max_length=8,
            pad_token_id=0,
            **inputs,
        )

    assert fingerprint(inputs=ma.BASE_INPUTS) == fingerprint()
    assert fingerprint(inputs=PAIR_INPUTS) != fingerprint()


# --------------------------------------------------------------------------- through Triton


async def _pool(triton: EmbeddedTriton, repository: Path, model_name: str) -> TritonPool:
    pool = TritonPool([TritonEndpoint(triton.grpc_url, model_name)])
    assert await pool.refresh(5.0)
    await pool.check_model(ma.read_model_info(repository, model_name))
    return pool


@pytest.mark.triton
async def test_triton_answers_equal_the_eager_model_with_segment_ids(
    triton: EmbeddedTriton, repository: Path, eager_bert: Eager
) -> None:
    pool = await _pool(triton, repository, "pairs")
    try:
        deadline = time.monotonic() + 30
        firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
        for enc, expected in (eager_bert(firsts, seconds), eager_bert(TEXTS)):
            got = await pool.infer(enc[ma.INPUT_IDS], enc[ma.ATTENTION_MASK], deadline, enc[ma.TOKEN_TYPE_IDS])
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
        # Each pair alone and unpadded, all at once: Triton may merge them and model.py pads the segment ids.
        alone = [eager_bert([a], [b]) for a, b in PAIRS]
        answers = await asyncio.gather(
            *(
                pool.infer(enc[ma.INPUT_IDS], enc[ma.ATTENTION_MASK], deadline, token_type_ids=enc[ma.TOKEN_TYPE_IDS])
                for enc, _ in alone
            )
        )
        for got, (_, expected) in zip(answers, alone, strict=True):
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    finally:
        await pool.close()


@pytest.mark.triton
async def test_a_two_input_model_answers_without_segment_ids(
    triton: EmbeddedTriton, repository: Path, distilbert: Path
) -> None:
    enc, expected = Eager(distilbert)(TEXTS)
    assert ma.TOKEN_TYPE_IDS not in enc
    pool = await _pool(triton, repository, "single")
    try:
        got = await pool.infer(enc[ma.INPUT_IDS], enc[ma.ATTENTION_MASK], time.monotonic() + 30)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    finally:
        await pool.close()


@pytest.mark.triton
async def test_segment_ids_out_of_range_fail_that_batch_only(triton: EmbeddedTriton, repository: Path) -> None:
    pool = await _pool(triton, repository, "pairs")
    ids = np.array([[101, 2023, 102, 2008, 102]], dtype=np.int64)
    mask = np.ones_like(ids)
    try:
        deadline = time.monotonic() + 30
        with pytest.raises(TritonFailure, match=r"token_type_ids must be in \[0, 2\)"):
            await pool.infer(ids, mask, deadline, token_type_ids=np.full_like(ids, 2))
        with pytest.raises(TritonFailure, match="differ in shape"):
            await pool.infer(ids, mask, deadline, token_type_ids=np.zeros((1, 4), dtype=np.int64))
        ok = await pool.infer(ids, mask, deadline, token_type_ids=np.array([[0, 0, 0, 1, 1]]))
        assert ok.shape == (1, 3)
    finally:
        await pool.close()


@pytest.mark.triton
def test_classify_with_pairs_through_the_front_end(
    triton: EmbeddedTriton, repository: Path, eager_bert: Eager, tmp_path: Path
) -> None:
    """The whole path: the front-end tokenizes the pairs with segment ids, Triton runs the BERT."""
    pairs = [(a, b) for a, b in PAIRS if b]  # the contract refuses an empty text_pair
    _, expected = eager_bert([a for a, _ in pairs], [b for _, b in pairs])
    service = start_service(repository, "pairs", triton.grpc_url, tmp_path)
    try:
        with grpc.insecure_channel(service.target) as channel:
            stub = pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code
            request = pb.ClassifyRequest(pairs=[pb.TextPair(text=a, text_pair=b) for a, b in pairs], return_logits=True)
            reply = stub.Classify(request, timeout=30)
        got = np.array([list(result.logits) for result in reply.results])
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    finally:
        assert service.stop() == 0, service.log.read_text()[-2000:]
