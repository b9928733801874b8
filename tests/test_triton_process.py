"""The embedded Triton: the real tritonserver binary from the nvidia-pytriton wheel, Python backend.

A tiny checkpoint is exported into a temporary repository; Triton runs on
free ports on 127.0.0.1 and is stopped by pid.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from sentiment_server import model_artifact as ma
from sentiment_server.backend.triton_distribution import check_libpython, find_distribution, prepare_backend_dir
from sentiment_server.backend.triton_process import EmbeddedTriton, TritonLaunchError, free_ports, mimalloc_library
from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
from sentiment_server.tooling.export import export_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

TEXTS = [
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "ok",
    "Crème brûlée, 東京, and a rather long sentence to make the lengths differ quite a bit more.",
]


def test_ports_chosen_together_are_different() -> None:
    # Ports asked for one at a time can come back the same (Linux hands a just-freed port out again):
    # Triton then refused to start with its gRPC and metrics ports equal.
    for _ in range(20):
        ports = free_ports(2)
        assert len(set(ports)) == 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def repository(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    export_model(str(checkpoint), repo, model_name="tiny", torch_threads=1)
    return repo


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def server(repository: Path, cache_dir: Path) -> Iterator[EmbeddedTriton]:
    """One Triton for the module; its teardown checks that stop() ends the process."""
    triton = EmbeddedTriton(repository, cache_dir=cache_dir)
    triton.start()
    pid = triton.pid
    assert pid is not None
    try:
        triton.wait_ready("tiny", timeout_s=120)
        yield triton
    finally:
        code = triton.stop(grace_s=30)
    assert code == 0, triton.log_tail()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped
    assert not triton.is_running()


@pytest.fixture(scope="module")
def eager(checkpoint: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).float().eval()

    def logits(texts: list[str]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        return enc["input_ids"].numpy(), enc["attention_mask"].numpy(), out.numpy()

    return logits


def _infer(client, model: str, ids: NDArray[Any], mask: NDArray[Any]) -> NDArray[Any]:
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, array in ((ma.INPUT_IDS, ids), (ma.ATTENTION_MASK, mask)):
        tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
        tensor.set_data_from_numpy(np.ascontiguousarray(array, dtype=np.int64))
        inputs.append(tensor)
    result = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(ma.LOGITS)])
    logits: NDArray[Any] = result.as_numpy(ma.LOGITS)
    return logits


# --------------------------------------------------------------------------- without Triton running


def test_backend_directory_is_prepared_once(tmp_path: Path) -> None:
    dist = find_distribution()
    first = prepare_backend_dir(dist, tmp_path)
    stub = first / "python" / "triton_python_backend_stub"
    assert stub.is_file() and os.access(stub, os.X_OK)
    assert (first / "python" / "libtriton_python.so").is_file()
    assert (first / "python" / "triton_python_backend_utils.py").is_file()
    assert first.name == f"pytriton-{dist.version}-py{sys.version_info.major}.{sys.version_info.minor}"
    before = stub.stat().st_mtime_ns
    assert prepare_backend_dir(dist, tmp_path) == first
    assert stub.stat().st_mtime_ns == before  # reused, not rebuilt
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging leftovers


def test_cache_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIMENT_CACHE_DIR", str(tmp_path))
    assert prepare_backend_dir().parent == tmp_path / "triton-backends"


def test_missing_libpython_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    def refuse(name: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(TritonLaunchError, match=rf"apt-get install libpython{version}"):
        check_libpython(find_distribution())


def test_the_environment_is_explicit(repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("PYTHONHOME", "/nowhere")
    triton = EmbeddedTriton(repository)
    env = triton.environment(find_distribution())
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert "PYTHONHOME" not in env
    assert any(p.endswith("nvidia_pytriton.libs") for p in env["LD_LIBRARY_PATH"].split(os.pathsep))
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"  # keeps the stubs' memory flat
    # mimalloc (the embedded extra) is preloaded and keeps what it maps.
    mimalloc = mimalloc_library()
    assert mimalloc is not None and mimalloc.is_file()
    assert (env["LD_PRELOAD"], env["MIMALLOC_PURGE_DELAY"]) == (str(mimalloc), "-1")
    assert "MALLOC_MMAP_THRESHOLD_" not in env
    # The operator's settings win; an LD_PRELOAD of their own (even empty) leaves glibc with its settings.
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    monkeypatch.setenv("LD_PRELOAD", "")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    env = triton.environment(find_distribution())
    assert (env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"], env["LD_PRELOAD"]) == ("64", "")
    assert (env["MALLOC_MMAP_THRESHOLD_"], env["MALLOC_TRIM_THRESHOLD_"]) == ("1048576", str(1 << 30))
    assert "MIMALLOC_PURGE_DELAY" not in env


def test_a_backend_the_wheel_lacks_is_refused_before_starting(checkpoint: Path, tmp_path: Path) -> None:
    export_model(str(checkpoint), tmp_path, model_name="tiny-pt", backend="pytorch")
    triton = EmbeddedTriton(tmp_path, cache_dir=tmp_path.parent / "cache-pt")
    with pytest.raises(TritonLaunchError, match="'pytorch' backend"):
        triton.start()
    assert triton.pid is None


def test_hidden_directories_in_the_repository_are_refused(repository: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(repository, repo)
    (repo / ".tiny.export-abc").mkdir()
    triton = EmbeddedTriton(repo, cache_dir=tmp_path / "cache")
    with pytest.raises(TritonLaunchError, match=r"hidden directories .*\.tiny\.export-abc"):
        triton.start()
    assert triton.pid is None


# --------------------------------------------------------------------------- a running Triton


@pytest.mark.triton
def test_logits_equal_the_eager_model(server: EmbeddedTriton, eager) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        # Two requests of different lengths, each unpadded.
        for text in TEXTS[:2]:
            ids, mask, expected = eager([text])
            np.testing.assert_allclose(_infer(client, "tiny", ids, mask), expected, atol=1e-5, rtol=0)
        # One request of several padded texts.
        ids, mask, expected = eager(TEXTS)
        np.testing.assert_allclose(_infer(client, "tiny", ids, mask), expected, atol=1e-5, rtol=0)
    finally:
        client.close()


@pytest.mark.triton
def test_concurrent_requests_of_different_lengths_share_a_batch(server: EmbeddedTriton, eager) -> None:
    """allow_ragged_batch: the dynamic batcher merges lengths, model.py pads; results stay exact."""
    import tritonclient.grpc as grpcclient

    texts = [" ".join(["word"] * n) for n in range(1, 41)] * 3
    expected = {text: eager([text]) for text in set(texts)}
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        before = client.get_inference_statistics("tiny").model_stats[0]

        def one(text: str) -> None:
            ids, mask, logits = expected[text]
            np.testing.assert_allclose(_infer(client, "tiny", ids, mask), logits, atol=1e-5, rtol=0)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one, texts))
        after = client.get_inference_statistics("tiny").model_stats[0]
    finally:
        client.close()
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == len(texts)
    assert executions < inferences  # some requests of different lengths ran together


@pytest.mark.triton
def test_a_bad_request_fails_alone(server: EmbeddedTriton) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        ids = np.array([[101, 30522, 102]], dtype=np.int64)  # one id past the vocabulary
        with pytest.raises(InferenceServerException, match=r"token ids must be in \[0, 30522\)"):
            _infer(client, "tiny", ids, np.ones_like(ids))
        with pytest.raises(InferenceServerException, match="attention_mask"):
            _infer(client, "tiny", np.array([[101, 102]]), np.array([[0, 0]]))
        ok = np.array([[101, 102]], dtype=np.int64)
        assert _infer(client, "tiny", ok, np.ones_like(ok)).shape == (1, 2)
    finally:
        client.close()


@pytest.mark.triton
def test_the_stub_runs_torch_from_this_environment(server: EmbeddedTriton) -> None:
    log = server.log_tail(400)
    assert "tiny: loaded model.pt on cpu" in log
    assert f"from {Path(torch.__file__).parent}" in log


@pytest.mark.triton
def test_a_model_that_cannot_load_fails_fast_with_the_log(repository: Path, cache_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "repo"
    shutil.copytree(repository, broken)
    (broken / "tiny" / "1" / ma.TORCHSCRIPT_FILE).write_bytes(b"not a TorchScript archive")
    triton = EmbeddedTriton(broken, cache_dir=cache_dir, log_dir=tmp_path / "logs")
    triton.start()
    try:
        with pytest.raises(TritonLaunchError, match="exited with code") as info:
            triton.wait_ready("tiny", timeout_s=120)
        assert "tiny" in str(info.value)
    finally:
        triton.stop()
