"""`--dtype int8`: a full-size checkpoint quantized at export, checked there, and served by the real Triton.

Full size because that is what int8 is for: the tiny test checkpoint's narrow
layers lose more precision than the parity tolerance allows, and the export
rightly refuses them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from sentiment_server import model_artifact as ma
from sentiment_server.backend.triton_process import EmbeddedTriton
from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
from sentiment_server.tooling.export import export_model
from sentiment_server.tooling.torchscript import PARITY_TEXTS

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "full", full_size=True)


@pytest.fixture(scope="module")
def repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    info = export_model(str(checkpoint), repo, model_name="full-int8", dtype="int8", instance_count=1, torch_threads=1)
    assert info.dtype == "int8"
    return repo


def _eager(checkpoint: Path, texts: list[str]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).float().eval()
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return enc["input_ids"].numpy(), enc["attention_mask"].numpy(), logits.numpy()


def test_the_export_records_its_parity_and_quantizes_every_linear_layer(repository: Path) -> None:
    version = repository / "full-int8" / "1"
    info = json.loads((version / ma.INFO_FILE).read_text())
    assert info["dtype"] == "int8"
    assert "prob diff" in info["extra"]["parity"]
    graph = str(torch.jit.load(str(version / ma.TORCHSCRIPT_FILE)).inlined_graph)
    assert "quantized::linear_dynamic" in graph
    assert "aten::linear" not in graph  # none left in fp32
    assert 'string_value: "int8"' in (repository / "full-int8" / "config.pbtxt").read_text()


@pytest.fixture(scope="module")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTriton]:
    server = EmbeddedTriton(repository, log_dir=tmp_path_factory.mktemp("logs"))
    server.start()
    try:
        server.wait_ready("full-int8", timeout_s=180)
        yield server
    finally:
        assert server.stop(grace_s=30) == 0, server.log_tail()


def test_triton_serves_the_int8_model_within_the_parity_tolerance(checkpoint: Path, triton: EmbeddedTriton) -> None:
    texts = list(PARITY_TEXTS[:2]) + list(PARITY_TEXTS[4:])  # the non-empty ones
    ids, mask, expected = _eager(checkpoint, texts)
    inputs = []
    for name, array in ((ma.INPUT_IDS, ids), (ma.ATTENTION_MASK, mask)):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(array.astype(np.int64))
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        result = client.infer("full-int8", inputs, outputs=[grpcclient.InferRequestedOutput(ma.LOGITS)])
    finally:
        client.close()
    got = np.array(result.as_numpy(ma.LOGITS))  # a writable copy for torch
    assert got.shape == expected.shape
    probs = torch.softmax(torch.from_numpy(got), -1).numpy()
    ref = torch.softmax(torch.from_numpy(expected), -1).numpy()
    np.testing.assert_allclose(probs, ref, atol=0.02, rtol=0)
    assert not np.allclose(got, expected, atol=1e-5)  # really quantized, not the fp32 model
