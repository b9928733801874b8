"""Model versions under the embedded Triton: two versions served side by side, as a rollout leaves them.

Two tiny checkpoints exported under one name (version 2 staged), then both
served (`set_serving_versions`); Triton loads each version, and each answers
its own export-time expectations.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sentiment_server import model_artifact as ma
from sentiment_server.backend.triton_distribution import find_distribution
from sentiment_server.backend.triton_process import EmbeddedTriton
from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
from sentiment_server.tooling.export import export_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoints = tmp_path_factory.mktemp("ckpt")
    repo = tmp_path_factory.mktemp("repo")
    for seed in (0, 1):
        checkpoint = build_tiny_checkpoint(checkpoints / f"seed{seed}", seed=seed)
        export_model(str(checkpoint), repo, model_name="tiny", torch_threads=1)
    assert ma.serving_versions(repo, "tiny") == ["1"]
    ma.set_serving_versions(repo, "tiny", ["1", "2"])
    return repo


def test_triton_loads_the_models_explicitly(repository: Path, tmp_path: Path) -> None:
    backend_dir = tmp_path / "backends"
    every = EmbeddedTriton(repository).command(backend_dir)
    assert "--model-control-mode=explicit" in every and "--load-model=*" in every
    assert not any(arg.startswith("--model-control-mode=none") for arg in every)
    some = EmbeddedTriton(repository, models=["tiny", "other"]).command(backend_dir)
    assert [arg for arg in some if arg.startswith("--load-model")] == ["--load-model=tiny", "--load-model=other"]
    assert find_distribution().binary.is_file()


@pytest.fixture(scope="module")
def triton(repository: Path) -> Iterator[EmbeddedTriton]:
    with EmbeddedTriton(repository, grpc_port=0, metrics_port=0) as server:
        server.wait_ready("tiny", timeout_s=180)
        yield server


@pytest.mark.triton
def test_both_served_versions_are_loaded_and_answer_their_expectations(
    triton: EmbeddedTriton, repository: Path
) -> None:
    import tritonclient.grpc as grpcclient
    from tokenizers import Tokenizer

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for version in ("1", "2"):
            assert client.is_model_ready("tiny", version), version
        assert not client.is_model_ready("tiny", "3")
        index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
        assert index[("tiny", "1")] == index[("tiny", "2")] == "READY"

        answers = {}
        for version in ("1", "2"):
            info = ma.read_model_info(repository, "tiny", version)
            tokenizer = Tokenizer.from_file(str(ma.version_dir(repository, "tiny", version) / ma.TOKENIZER_FILE))
            tokenizer.enable_truncation(max_length=info.max_length)
            for text, expected in zip(info.expected_texts, info.expected_logits, strict=True):
                enc = tokenizer.encode(text)
                inputs = []
                for name, values in ((ma.INPUT_IDS, enc.ids), (ma.ATTENTION_MASK, enc.attention_mask)):
                    tensor = grpcclient.InferInput(name, [1, len(values)], "INT64")
                    tensor.set_data_from_numpy(np.array([values], dtype=np.int64))
                    inputs.append(tensor)
                result = client.infer("tiny", inputs, model_version=version)
                got = result.as_numpy(ma.LOGITS)[0]
                np.testing.assert_allclose(got, expected, atol=info.expected_atol, rtol=0)
                answers[version, text] = got
        # Two checkpoints, two answers: each request reached the version it named.
        text = ma.read_model_info(repository, "tiny", "1").expected_texts[0]
        assert not np.allclose(answers["1", text], answers["2", text])
    finally:
        client.close()
