"""config.pbtxt: one INT64 input per model input (ragged on the Python backend), versions, differences."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from sentiment_server.model_artifact import BASE_INPUTS, TOKEN_TYPE_IDS
from sentiment_server.tooling.triton_config import config_differences, render_config
from tritonclient.grpc import model_config_pb2


@pytest.mark.parametrize("backend", ["python", "pytorch"])
@pytest.mark.parametrize("inputs", [BASE_INPUTS, (*BASE_INPUTS, TOKEN_TYPE_IDS)])
def test_every_model_input_is_declared(backend: str, inputs: tuple[str, ...]) -> None:
    text = render_config(model_name="m", backend=backend, num_labels=3, inputs=inputs)
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    int64 = model_config_pb2.DataType.TYPE_INT64
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [(name, int64, [-1]) for name in inputs]
    # model.py pads merged requests itself; libtorch would concatenate them.
    assert [i.allow_ragged_batch for i in config.input] == [backend == "python"] * len(inputs)


@pytest.mark.parametrize("versions", [("1",), ("1", "2"), ("3", "10", "2")])
def test_the_version_policy_names_the_versions(versions: tuple[str, ...]) -> None:
    text = render_config(model_name="m", backend="python", num_labels=2, versions=versions)
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert config.version_policy.WhichOneof("policy_choice") == "specific"
    assert list(config.version_policy.specific.versions) == sorted(int(v) for v in versions)
    assert "version_policy: { specific: { versions: [" in text


def test_the_default_serves_version_1() -> None:
    config = text_format.Parse(
        render_config(model_name="m", backend="pytorch", num_labels=2), model_config_pb2.ModelConfig()
    )
    assert list(config.version_policy.specific.versions) == [1]


def test_config_differences_ignore_the_version_policy_and_name_the_rest() -> None:
    base = render_config(model_name="m", backend="python", num_labels=2)
    assert config_differences(base, render_config(model_name="m", backend="python", num_labels=2, versions=["2"])) == []
    assert config_differences("# a comment of an operator\n" + base, base) == []
    other = render_config(
        model_name="m", backend="python", num_labels=3, max_batch_size=8, dtype="bf16", instance_count=2
    )
    differences = config_differences(base, other)
    assert [d.split(":")[0] for d in differences] == [
        "max batch size",
        "output (label count)",
        "instances (count, device)",
        "parameters (dtype, threads, ...)",
    ]
    assert "existing 64, this export 8" in differences[0]
    assert "[2]" in differences[1] and "[3]" in differences[1]
    assert "dtype=fp32" in differences[3] and "dtype=bf16" in differences[3]
    pytorch = config_differences(base, render_config(model_name="m", backend="pytorch", num_labels=2))
    assert pytorch[0] == 'backend: existing "python", this export "pytorch"'
    with_segments = render_config(model_name="m", backend="python", num_labels=2, inputs=(*BASE_INPUTS, TOKEN_TYPE_IDS))
    assert [d.split(":")[0] for d in config_differences(base, with_segments)] == ["inputs"]
    gpu = render_config(model_name="m", backend="python", num_labels=2, device="gpu")
    assert any("KIND_GPU" in d for d in config_differences(base, gpu))


def test_config_differences_of_a_config_protobuf_cannot_read_go_by_lines() -> None:
    base = render_config(model_name="m", backend="python", num_labels=2)
    assert config_differences(base + "some_future_field: 1\n", base + "some_future_field: 1\n") == []
    assert config_differences(base + "some_future_field: 1\n", base) == ["config.pbtxt: existing: some_future_field: 1"]
