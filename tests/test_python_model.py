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


class SegmentModel:
    """logits row = [sum of the row's token_type_ids over every column, attended tokens]."""

    def __init__(self):
        self.passes = []

    def __call__(self, ids, mask, types):
        self.passes.append(tuple(types.shape))
        return torch.stack([types.sum(1), mask.sum(1)], 1).float()


@pytest.mark.parametrize("overhead", [-1, 32])
def test_token_type_ids_are_padded_with_zero_and_follow_their_rows(model_module, overhead):
    m = make(model_module, overhead)
    m.model = SegmentModel()
    requests = [request([1] * 3, [2] * 40), request([3] * 7), request([4] * 100, [5] * 2)]
    # Each row's second half is segment 1: its sum is len // 2 when nothing else leaks in.
    types = []
    for ids, mask in requests:
        t = np.zeros_like(ids)
        for row, length in enumerate(mask.sum(1)):
            t[row, length - length // 2 : length] = 1
        types.append(t)
    outputs = m._forward([r[0] for r in requests], [r[1] for r in requests], types)
    assert [o[:, 0].tolist() for o in outputs] == [[1, 20], [3], [50, 1]]
    assert [o[:, 1].tolist() for o in outputs] == [[3, 40], [7], [100, 2]]
    assert (len(m.model.passes) > 1) == (overhead >= 0)  # grouped passes slice the types too


class FakeTensor:
    def __init__(self, array):
        self.array = array

    def as_numpy(self):
        return self.array


def reader(module, monkeypatch, *, takes_token_type_ids):
    m = make(module, 32)
    m.takes_token_type_ids = takes_token_type_ids
    m.max_length, m.vocab_size, m.type_vocab_size = 16, 200, 2
    monkeypatch.setattr(
        module.pb_utils,
        "get_input_tensor_by_name",
        lambda req, name: FakeTensor(req[name]) if name in req else None,
        raising=False,
    )
    return m


def test_token_type_ids_are_read_and_checked(model_module, monkeypatch):
    m = reader(model_module, monkeypatch, takes_token_type_ids=True)
    ids, mask = request([101, 7, 102, 8, 102], [101, 9, 102])
    types = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]])
    got = m._read({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    assert [a.tolist() for a in got] == [ids.tolist(), mask.tolist(), types.tolist()]
    bad = [
        ("missing input 'token_type_ids'", {}),
        (r"input_ids \[2, 5\] and token_type_ids \[2, 4\] differ in shape", {"token_type_ids": types[:, :4]}),
        (r"token_type_ids must be in \[0, 2\)", {"token_type_ids": types * 2}),
        (r"token_type_ids must be in \[0, 2\)", {"token_type_ids": -types}),
    ]
    for message, change in bad:
        with pytest.raises(model_module._BadRequest, match=message):
            m._read({"input_ids": ids, "attention_mask": mask, **change})


def test_a_two_input_model_ignores_token_type_ids(model_module, monkeypatch):
    m = reader(model_module, monkeypatch, takes_token_type_ids=False)
    ids, mask = request([101, 7, 102])
    got = m._read({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.full_like(ids, 5)})
    assert got[2] is None
