"""The Triton Python-backend model (model.py) without Triton: a fake pb_utils, a recording fake model."""

import importlib.util
import sys
import types

import numpy as np
import pytest
from sentiment_server.backend import PYTHON_MODEL_SOURCE

torch = pytest.importorskip("torch")

SOURCE = PYTHON_MODEL_SOURCE


@pytest.fixture
def model_module(monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("triton_python_model_under_test", SOURCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingModel:
    """logits row = [sum of attended ids, attended tokens]; records each pass's shape."""

    def __init__(self):
        self.passes = []

    def __call__(self, ids, mask):
        self.passes.append(tuple(ids.shape))
        return torch.stack([(ids * mask).sum(1), mask.sum(1)], 1).float()


def make(module, overhead_tokens):
    instance = module.TritonPythonModel.__new__(module.TritonPythonModel)
    instance.overhead_tokens = overhead_tokens
    instance.pad_token_id = 0
    instance.device = torch.device("cpu")
    instance.model = RecordingModel()
    return instance


def request(*rows):
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return ids, mask


@pytest.mark.parametrize("overhead", [-1, 0, 32, 10_000])
def test_every_request_gets_its_own_rows_back_in_order(model_module, overhead):
    m = make(model_module, overhead)
    requests = [request([1] * 3, [2] * 40), request([3] * 7), request([4] * 100, [5] * 2, [6] * 39)]
    outputs = m._forward([r[0] for r in requests], [r[1] for r in requests])
    assert [o[:, 1].tolist() for o in outputs] == [[3, 40], [7], [100, 2, 39]]
    assert [o[:, 0].tolist() for o in outputs] == [[3, 80], [21], [400, 10, 234]]
    assert all(o.dtype == np.float32 for o in outputs)


def test_rows_are_grouped_by_length_on_cpu(model_module):
    m = make(model_module, 32)
    requests = [request([1] * 100, [1] * 3), request([1] * 4, [1] * 101), request([1] * 5)]
    m._forward([r[0] for r in requests], [r[1] for r in requests])
    assert sorted(m.model.passes) == [(2, 101), (3, 5)]  # not one 5 x 101 pass


def test_without_the_parameter_one_pass_takes_everything(model_module):
    m = make(model_module, -1)
    requests = [request([1] * 100, [1] * 3), request([1] * 4, [1] * 101)]
    m._forward([r[0] for r in requests], [r[1] for r in requests])
    assert m.model.passes == [(4, 101)]


def test_columns_past_the_last_attended_token_are_dropped(model_module):
    m = make(model_module, 32)
    ids, mask = request([7] * 5, [7] * 3)
    wide_ids = np.pad(ids, ((0, 0), (0, 20)))
    wide_mask = np.pad(mask, ((0, 0), (0, 20)))
    (out,) = m._forward([wide_ids], [wide_mask])
    assert out[:, 1].tolist() == [5, 3]
    assert max(width for _, width in m.model.passes) == 5
