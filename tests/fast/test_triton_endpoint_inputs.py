"""TritonEndpoint with and without token_type_ids: the requests it builds and its model check, on a fake stub."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sentiment_server.backend.triton_client import TritonEndpoint
from sentiment_server.errors import ModelMismatch
from sentiment_server.model_artifact import (
    ATTENTION_MASK,
    BASE_INPUTS,
    INPUT_IDS,
    LOGITS,
    TOKEN_TYPE_IDS,
    ModelInfo,
)
from tritonclient.grpc import model_config_pb2, service_pb2

PAIR_INPUTS = [*BASE_INPUTS, TOKEN_TYPE_IDS]
INFO = ModelInfo("m", "src", ["a", "b"], "single_label_classification", 16, 0, "python", "fp32", "fp")
PAIR_INFO = dataclasses.replace(INFO, inputs=PAIR_INPUTS)
IDS = np.array([[101, 7, 102, 9, 102], [101, 8, 102, 0, 0]], dtype=np.int64)
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=np.int64)
TYPES = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=np.int64)


class FakeStub:
    """Triton's metadata for a model with `inputs`; records the inference requests and answers zeros."""

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs
        self.requests: list[Any] = []

    async def ModelMetadata(self, request: Any, timeout: float) -> Any:
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name,
            inputs=[tensor(name=name, datatype="INT64", shape=[-1, -1]) for name in self.inputs],
            outputs=[tensor(name=LOGITS, datatype="FP32", shape=[-1, 2])],
        )

    async def ModelConfig(self, request: Any, timeout: float) -> Any:
        """Two CPU instances, and one per GPU on two GPUs (Triton lists a GPU group's devices once loaded)."""
        config = model_config_pb2.ModelConfig(name=request.name)
        config.instance_group.add(count=2, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
        config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, gpus=[0, 1])
        return service_pb2.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: Any, metadata: Any = (), timeout: float | None = None) -> Any:
        self.requests.append(request)
        rows = int(request.inputs[0].shape[0])
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name=LOGITS, datatype="FP32", shape=[rows, 2])
        response.raw_output_contents.append(np.zeros((rows, 2), dtype=np.float32).tobytes())
        return response


def endpoint(triton_inputs: list[str]) -> tuple[TritonEndpoint, FakeStub]:
    e = TritonEndpoint("fake:1", "m", streams=False)  # the channel connects lazily: nothing is dialled here
    stub = FakeStub(triton_inputs)
    e._stub = stub
    return e, stub


def sent(request: Any) -> dict[str, npt.NDArray[np.int64]]:
    return {
        tensor.name: np.frombuffer(raw, dtype=np.int64).reshape(list(tensor.shape))
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True)
    }


async def test_without_token_type_ids_the_request_is_the_two_input_one() -> None:
    e, _ = endpoint(list(BASE_INPUTS))
    expected = service_pb2.ModelInferRequest(model_name="m", model_version="")
    for name, array in ((INPUT_IDS, IDS), (ATTENTION_MASK, MASK)):
        expected.inputs.add(name=name, datatype="INT64", shape=array.shape)
        expected.raw_input_contents.append(array.tobytes())
    expected.outputs.add(name=LOGITS)
    assert e._request(LOGITS, IDS, MASK).SerializeToString() == expected.SerializeToString()
    await e.close()


async def test_token_type_ids_go_as_a_third_int64_input() -> None:
    e, stub = endpoint(PAIR_INPUTS)
    assert await e.check_model(PAIR_INFO) == LOGITS
    logits = await e.infer(LOGITS, IDS, MASK, 5.0, token_type_ids=TYPES)
    assert logits.shape == (2, 2)
    (request,) = stub.requests
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        (name, "INT64", [2, 5]) for name in PAIR_INPUTS
    ]
    arrays = sent(request)
    for name, array in ((INPUT_IDS, IDS), (ATTENTION_MASK, MASK), (TOKEN_TYPE_IDS, TYPES)):
        np.testing.assert_array_equal(arrays[name], array)
    await e.close()


@pytest.mark.parametrize(
    ("triton_inputs", "info", "match"),
    [
        (PAIR_INPUTS, INFO, "takes inputs \\['token_type_ids'\\]"),  # Triton would refuse two-input batches
        (list(BASE_INPUTS), PAIR_INFO, "has no input 'token_type_ids'"),
    ],
)
async def test_the_model_check_compares_the_inputs(triton_inputs: list[str], info: ModelInfo, match: str) -> None:
    e, _ = endpoint(triton_inputs)
    with pytest.raises(ModelMismatch, match=match):
        await e.check_model(info)
    await e.close()


@pytest.mark.parametrize("info", [INFO, PAIR_INFO])
async def test_the_probe_sends_what_the_model_takes(info: ModelInfo) -> None:
    e, stub = endpoint(info.inputs)
    await e.check_model(info)
    assert await e.probe(LOGITS, 5.0)
    (request,) = stub.requests
    assert [t.name for t in request.inputs] == info.inputs
    assert all(a.shape == (1, 1) for a in sent(request).values())
    await e.close()


async def test_the_checked_model_reports_its_instances_and_auto_keeps_one_batch_in_flight_on_each() -> None:
    from sentiment_server.backend.triton_pool import TritonPool
    from sentiment_server.transport.server import batches_in_flight

    e, _ = endpoint(list(BASE_INPUTS))
    await e.check_model(INFO)
    assert e.instances == 4
    pool = TritonPool([e])
    e.ready = True
    await pool.check_model(INFO)
    assert batches_in_flight("auto", pool) == 4
    assert batches_in_flight("3", pool) == 3  # a number: that many per endpoint
    with pytest.raises(ValueError, match="--max-concurrent-batches must be a number or 'auto'"):
        batches_in_flight("many", pool)
