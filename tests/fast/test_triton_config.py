"""config.pbtxt's inputs: one INT64 [batch, length] input per model input, ragged on the Python backend."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from sentiment_server.model_artifact import BASE_INPUTS, TOKEN_TYPE_IDS
from sentiment_server.tooling.triton_config import render_config
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
