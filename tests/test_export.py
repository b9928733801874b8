"""Checkpoint building and `export_model`: layout, trace parity, idempotence, config.pbtxt.

Real checkpoints (tiny DistilBERT, random weights) and the real export; no network.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from numpy.typing import NDArray
from sentiment_server import model_artifact as ma
from sentiment_server.backend import PYTHON_MODEL_SOURCE
from sentiment_server.model_artifact import classification_function
from sentiment_server.tooling.checkpoints import build_tiny_checkpoint
from sentiment_server.tooling.export import ExportError, export_model
from sentiment_server.tooling.torchscript import EXPECTATION_TEXTS, PARITY_TEXTS
from sentiment_server.tooling.triton_config import render_config
from tritonclient.grpc import model_config_pb2

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

SEED = json.loads((Path(__file__).parent / "data" / "seed_pipeline.json").read_text())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def other_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-seed1", seed=1)


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "three-labels", labels=("a", "b", "c"), seed=3)


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ma.ModelInfo]:
    repository = tmp_path_factory.mktemp("repo")
    return repository, export_model(str(checkpoint), repository, model_name="tiny")


def _eager_logits(checkpoint: Path, texts: list[str]) -> tuple[NDArray[Any], dict[str, torch.Tensor]]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).float().eval()
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return logits.numpy(), {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# --------------------------------------------------------------------------- checkpoints


def test_tiny_checkpoint_tokenizes_the_seed_exactly(checkpoint: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    enc = tokenizer(SEED["texts"], padding=True, truncation=True)
    assert enc["input_ids"] == SEED["input_ids"]
    assert enc["attention_mask"] == SEED["attention_mask"]
    assert tokenizer.model_max_length == 512 and tokenizer.pad_token_id == 0
    assert (checkpoint / "tokenizer.json").is_file() and (checkpoint / "tokenizer_config.json").is_file()

    config = AutoConfig.from_pretrained(checkpoint)
    assert config.vocab_size == len(tokenizer) == 30522
    assert config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert config.problem_type == ma.SINGLE_LABEL


def test_checkpoint_weights_depend_on_the_seed_only(tmp_path: Path, checkpoint: Path) -> None:
    from safetensors.torch import load_file

    again = build_tiny_checkpoint(tmp_path / "again")
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    a, b, c = (load_file(p / "model.safetensors") for p in (checkpoint, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# --------------------------------------------------------------------------- layout


def test_export_writes_the_layout(exported: tuple[Path, ma.ModelInfo]) -> None:
    repository, info = exported
    model = repository / "tiny"
    version = model / "1"
    assert sorted(p.name for p in version.iterdir()) == sorted(
        [ma.TORCHSCRIPT_FILE, ma.PYTHON_MODEL_FILE, ma.TOKENIZER_FILE, ma.INFO_FILE]
    )
    assert (model / ma.CONFIG_FILE).is_file()
    assert ma.has_model(repository, "tiny")
    assert ma.read_model_info(repository, "tiny") == info
    # Nothing half-written is left next to it.
    assert [p.name for p in repository.iterdir()] == ["tiny"]

    assert info.labels == ["NEGATIVE", "POSITIVE"]
    assert info.problem_type == ma.SINGLE_LABEL
    assert (info.max_length, info.pad_token_id) == (512, 0)
    assert (info.backend, info.dtype, info.version) == ("python", "fp32", "1")
    assert len(info.fingerprint) == 64 and not info.demo
    assert info.extra["vocab_size"] == "30522"
    assert (version / ma.PYTHON_MODEL_FILE).read_text() == (PYTHON_MODEL_SOURCE).read_text()
    assert ma.model_names(repository) == ["tiny"] and ma.model_versions(repository, "tiny") == ["1"]
    assert ma.serving_versions(repository, "tiny") == ["1"]
    assert info.expected_texts == list(EXPECTATION_TEXTS) and info.expected_atol == 1e-3
    assert [len(row) for row in info.expected_logits] == [2] * len(EXPECTATION_TEXTS)


def test_exported_tokenizer_json_gives_the_seed_ids(exported: tuple[Path, ma.ModelInfo]) -> None:
    from tokenizers import Tokenizer

    repository, info = exported
    tokenizer = Tokenizer.from_file(str(repository / "tiny" / "1" / ma.TOKENIZER_FILE))
    assert tokenizer.truncation is None and tokenizer.padding is None  # the front-end sets them
    tokenizer.enable_truncation(max_length=info.max_length)
    tokenizer.enable_padding(pad_id=info.pad_token_id)
    encodings = tokenizer.encode_batch(SEED["texts"])
    assert [e.ids for e in encodings] == SEED["input_ids"]
    assert [e.attention_mask for e in encodings] == SEED["attention_mask"]


# --------------------------------------------------------------------------- the trace


def test_trace_matches_eager_at_other_shapes(exported: tuple[Path, ma.ModelInfo], checkpoint: Path) -> None:
    repository, _ = exported
    traced = torch.jit.load(str(repository / "tiny" / "1" / ma.TORCHSCRIPT_FILE))
    texts = [*PARITY_TEXTS, "one more", "and another one that is a little longer than that"]
    for batch in (texts[:1], texts[2:7], texts):
        expected, enc = _eager_logits(checkpoint, batch)
        with torch.inference_mode():
            got = traced(enc["input_ids"], enc["attention_mask"])
        assert got.dtype == torch.float32 and got.shape == (len(batch), 2)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=0)
    # Padding changes nothing: each text alone (no padding) equals its padded row.
    expected, enc = _eager_logits(checkpoint, texts)
    for i, text in enumerate(texts):
        _, one = _eager_logits(checkpoint, [text])
        with torch.inference_mode():
            got = traced(one["input_ids"], one["attention_mask"])
        np.testing.assert_allclose(got.numpy()[0], expected[i], atol=1e-5, rtol=0)


def test_trace_pins_no_device(exported: tuple[Path, ma.ModelInfo]) -> None:
    """A CPU trace must also run on CUDA (the Python backend picks the GPU when there is one)."""
    repository, info = exported
    traced = torch.jit.load(str(repository / "tiny" / "1" / ma.TORCHSCRIPT_FILE))
    assert "Device = prim::Constant" not in str(traced.inlined_graph)
    assert info.extra["device_constants"] == ""


def test_bf16_export_passes_its_parity_check(tmp_path: Path, checkpoint: Path) -> None:
    info = export_model(str(checkpoint), tmp_path, model_name="tiny-bf16", dtype="bf16")
    assert info.dtype == "bf16" and info.expected_atol == 3e-2
    traced = torch.jit.load(str(tmp_path / "tiny-bf16" / "1" / ma.TORCHSCRIPT_FILE))
    assert {p.dtype for p in traced.parameters()} == {torch.bfloat16}
    expected, enc = _eager_logits(checkpoint, list(PARITY_TEXTS))
    with torch.inference_mode():
        got = traced(enc["input_ids"], enc["attention_mask"])
    assert got.dtype == torch.float32
    probs = torch.softmax(got, -1).numpy()
    ref = torch.softmax(torch.from_numpy(expected), -1).numpy()
    np.testing.assert_allclose(probs, ref, atol=0.02, rtol=0)


def test_int8_is_refused_for_a_gpu(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ExportError, match="CPUs only"):
        export_model(str(checkpoint), tmp_path, dtype="int8", device="gpu")
    assert list(tmp_path.iterdir()) == []


def test_fp16_is_refused_without_a_gpu(tmp_path: Path, checkpoint: Path) -> None:
    with pytest.raises(ExportError, match="GPU"):
        export_model(str(checkpoint), tmp_path, dtype="fp16", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ExportError, match="CUDA"):
            export_model(str(checkpoint), tmp_path, dtype="fp16", device="gpu")
    assert list(tmp_path.iterdir()) == []


def test_failed_parity_writes_nothing(tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentiment_server.tooling.torchscript as export

    monkeypatch.setattr(export, "FP32_MAX_ABS_LOGIT_DIFF", -1.0)  # nothing can pass
    with pytest.raises(ExportError, match="does not match the eager model"):
        export_model(str(checkpoint), tmp_path / "repo")
    assert not (tmp_path / "repo").exists() or list((tmp_path / "repo").iterdir()) == []


def test_leftovers_of_a_killed_export_are_removed(tmp_path: Path, checkpoint: Path) -> None:
    """Triton loads hidden directories as models too, so none may stay behind."""
    stale = tmp_path / ".sentiment.export-abc123"
    (stale / "1").mkdir(parents=True)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".sentiment.export-inflight"  # maybe a concurrent export: kept
    fresh.mkdir()
    export_model(str(checkpoint), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sentiment.export-inflight", "sentiment"]


# --------------------------------------------------------------------------- idempotence


def test_reexport_of_the_same_model_is_a_no_op(
    tmp_path: Path, checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = export_model(str(checkpoint), tmp_path)
    weights = tmp_path / "sentiment" / "1" / ma.TORCHSCRIPT_FILE
    before = weights.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="sentiment_server.tooling.export"):
        again = export_model(str(checkpoint), tmp_path)
    assert again == first
    assert weights.stat().st_mtime_ns == before
    assert "already exported" in caplog.text

    # Serving settings are not the model: they are updated in place.
    export_model(str(checkpoint), tmp_path, max_batch_size=8, instance_count=2)
    assert weights.stat().st_mtime_ns == before
    config = (tmp_path / "sentiment" / ma.CONFIG_FILE).read_text()
    assert "max_batch_size: 8" in config and "count: 2" in config


def test_force_replaces_the_whole_model_with_version_1(
    tmp_path: Path, checkpoint: Path, other_checkpoint: Path
) -> None:
    first = export_model(str(checkpoint), tmp_path)
    staged = export_model(str(other_checkpoint), tmp_path)
    assert staged.version == "2"

    forced = export_model(str(other_checkpoint), tmp_path, force=True)
    assert forced.fingerprint != first.fingerprint and forced.version == "1"
    assert ma.read_model_info(tmp_path, "sentiment") == forced
    assert ma.model_versions(tmp_path, "sentiment") == ["1"]
    assert ma.serving_versions(tmp_path, "sentiment") == ["1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentiment"]


# --------------------------------------------------------------------------- versions


def _hidden(repository: Path) -> list[str]:
    return [p.name for p in repository.rglob(".*")]


def test_a_changed_checkpoint_is_staged_as_the_next_version(
    tmp_path: Path,
    checkpoint: Path,
    other_checkpoint: Path,
    caplog: pytest.LogCaptureFixture,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    first = export_model(str(checkpoint), tmp_path)
    config = tmp_path / "sentiment" / ma.CONFIG_FILE
    config_before = config.read_text()
    with caplog.at_level(logging.INFO, logger="sentiment_server.tooling.export"):
        second = export_model(str(other_checkpoint), tmp_path)

    assert second.version == "2" and second.fingerprint != first.fingerprint
    assert ma.model_versions(tmp_path, "sentiment") == ["1", "2"]
    assert sorted(p.name for p in (tmp_path / "sentiment" / "2").iterdir()) == sorted(
        [ma.TORCHSCRIPT_FILE, ma.PYTHON_MODEL_FILE, ma.TOKENIZER_FILE, ma.INFO_FILE]
    )
    assert ma.read_model_info(tmp_path, "sentiment", "2") == second
    # Staged, not served: config.pbtxt is untouched and the default version is still 1.
    assert config.read_text() == config_before
    assert ma.serving_versions(tmp_path, "sentiment") == ["1"]
    assert ma.read_model_info(tmp_path, "sentiment") == first
    assert (
        "staged as version 2 of sentiment; the service keeps serving version(s) [1] until "
        "`sentiment-server rollout --model sentiment`" in caplog.text
    )
    assert _hidden(tmp_path) == []

    # Labels may be renamed or reordered between versions; the config only knows their count.
    relabelled = build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "relabelled", labels=("bad", "good"), seed=2)
    third = export_model(str(relabelled), tmp_path)
    assert (third.version, third.labels) == ("3", ["bad", "good"])
    assert config.read_text() == config_before
    assert ma.model_names(tmp_path) == ["sentiment"]


def test_reexporting_any_version_is_a_no_op_that_keeps_the_policy(
    tmp_path: Path, checkpoint: Path, other_checkpoint: Path
) -> None:
    first = export_model(str(checkpoint), tmp_path)
    second = export_model(str(other_checkpoint), tmp_path)
    weights = [tmp_path / "sentiment" / v / ma.TORCHSCRIPT_FILE for v in ("1", "2")]
    before = [w.stat().st_mtime_ns for w in weights]
    assert export_model(str(other_checkpoint), tmp_path) == second
    assert export_model(str(checkpoint), tmp_path) == first
    assert [w.stat().st_mtime_ns for w in weights] == before
    assert ma.model_versions(tmp_path, "sentiment") == ["1", "2"]

    # A rollout's policy survives a refresh of the serving settings.
    ma.set_serving_versions(tmp_path, "sentiment", ["1", "2"])
    assert export_model(str(checkpoint), tmp_path, max_batch_size=8) == first
    config = _parse((tmp_path / "sentiment" / ma.CONFIG_FILE).read_text())
    assert config.max_batch_size == 8 and list(config.version_policy.specific.versions) == [1, 2]
    assert ma.serving_versions(tmp_path, "sentiment") == ["1", "2"]
    assert [w.stat().st_mtime_ns for w in weights] == before


def test_a_version_that_does_not_fit_the_config_is_refused(
    tmp_path: Path, checkpoint: Path, other_checkpoint: Path, three_labels: Path
) -> None:
    export_model(str(checkpoint), tmp_path)
    config_before = (tmp_path / "sentiment" / ma.CONFIG_FILE).read_text()
    with pytest.raises(
        ExportError, match=r"label count\): existing logits__0 \[2\], this export logits__0 \[3\]"
    ) as info:
        export_model(str(three_labels), tmp_path)
    assert "new model name" in str(info.value) and "force" in str(info.value)
    with pytest.raises(ExportError, match=r"dtype=fp32.*dtype=bf16"):
        export_model(str(other_checkpoint), tmp_path, dtype="bf16")
    with pytest.raises(ExportError, match="max batch size: existing 64, this export 8"):
        export_model(str(other_checkpoint), tmp_path, max_batch_size=8)
    assert ma.model_versions(tmp_path, "sentiment") == ["1"]
    assert (tmp_path / "sentiment" / ma.CONFIG_FILE).read_text() == config_before
    assert sorted(p.name for p in (tmp_path / "sentiment").iterdir()) == ["1", ma.CONFIG_FILE]
    assert _hidden(tmp_path) == []


def test_a_new_model_name_is_a_new_model_beside_the_others(
    tmp_path: Path, checkpoint: Path, three_labels: Path
) -> None:
    first = export_model(str(checkpoint), tmp_path, model_name="first")
    second = export_model(str(three_labels), tmp_path, model_name="second", max_batch_size=8)
    assert (first.version, second.version) == ("1", "1")
    assert ma.model_names(tmp_path) == ["first", "second"]
    for name, info in (("first", first), ("second", second)):
        assert ma.model_versions(tmp_path, name) == ["1"] and ma.serving_versions(tmp_path, name) == ["1"]
        assert ma.read_model_info(tmp_path, name) == info
    assert _parse((tmp_path / "second" / ma.CONFIG_FILE).read_text()).name == "second"


def test_staging_into_an_older_latest_policy_pins_the_served_version(
    tmp_path: Path, checkpoint: Path, other_checkpoint: Path
) -> None:
    """Exports before versions wrote `latest: 1`, which would serve a new version at Triton's next load."""
    export_model(str(checkpoint), tmp_path)
    config = tmp_path / "sentiment" / ma.CONFIG_FILE
    config.write_text(ma.replace_version_policy(config.read_text(), "version_policy: { latest: { num_versions: 1 } }"))
    assert export_model(str(other_checkpoint), tmp_path).version == "2"
    assert "version_policy: { specific: { versions: [1] } }" in config.read_text()
    assert ma.serving_versions(tmp_path, "sentiment") == ["1"]


def test_expectations_are_what_the_saved_model_gives(exported: tuple[Path, ma.ModelInfo]) -> None:
    from tokenizers import Tokenizer

    repository, info = exported
    version = repository / "tiny" / "1"
    assert json.loads((version / ma.INFO_FILE).read_text())["expected_texts"] == list(EXPECTATION_TEXTS)
    model = torch.jit.load(str(version / ma.TORCHSCRIPT_FILE))
    tokenizer = Tokenizer.from_file(str(version / ma.TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=info.max_length)
    lengths = set()
    for text, expected in zip(info.expected_texts, info.expected_logits, strict=True):
        enc = tokenizer.encode(text)
        lengths.add(len(enc.ids))
        with torch.inference_mode():
            got = model(torch.tensor([enc.ids]), torch.tensor([enc.attention_mask]))
        np.testing.assert_allclose(got[0].numpy(), np.array(expected, dtype=np.float32), atol=1e-5, rtol=0)
    assert len(lengths) == len(EXPECTATION_TEXTS)  # different lengths


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="does not hold an exported model"):
        export_model(str(checkpoint), tmp_path)
    assert (tmp_path / "sentiment" / "notes.txt").read_text() == "mine"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    for kwargs in (
        {"backend": "onnx"},
        {"dtype": "int8"},
        {"device": "tpu"},
        {"model_name": ".hidden"},
        {"model_name": "a/b"},
        {"model_name": "a" * 65},
        {"max_batch_size": 0},
        {"instance_count": 0},
        {"torch_threads": -1},
    ):
        with pytest.raises(ExportError):
            export_model("unused", tmp_path, **kwargs)
    with pytest.raises(ExportError, match="cannot load checkpoint"):
        export_model(str(tmp_path / "missing"), tmp_path)


# --------------------------------------------------------------------------- labels


def test_problem_type_follows_the_transformers_pipeline() -> None:
    assert classification_function(None, 2) == ma.SINGLE_LABEL
    assert classification_function("single_label_classification", 3) == ma.SINGLE_LABEL
    assert classification_function("multi_label_classification", 4) == ma.MULTI_LABEL
    assert classification_function(None, 1) == ma.MULTI_LABEL  # sigmoid, like the pipeline
    assert classification_function("regression", 1) == ma.MULTI_LABEL


def test_multi_label_checkpoint(tmp_path: Path) -> None:
    labels = ("sports", "politics", "tech")
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt", labels=labels, problem_type=ma.MULTI_LABEL, demo=True)
    info = export_model(str(ckpt), tmp_path / "repo", model_name="topics")
    assert info.labels == list(labels)
    assert info.problem_type == ma.MULTI_LABEL
    assert info.demo  # carried over from the checkpoint
    assert "dims: [ 3 ]" in (tmp_path / "repo" / "topics" / ma.CONFIG_FILE).read_text()


# --------------------------------------------------------------------------- config.pbtxt


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("backend", ["python", "pytorch"])
def test_config_pbtxt_is_a_valid_triton_model_config(
    backend: str, tmp_path: Path, checkpoint: Path, exported: tuple[Path, ma.ModelInfo]
) -> None:
    if backend == "python":
        text = (exported[0] / "tiny" / ma.CONFIG_FILE).read_text()
        name = "tiny"
    else:
        export_model(str(checkpoint), tmp_path, model_name="tiny-pt", backend="pytorch", torch_threads=2)
        text = (tmp_path / "tiny-pt" / ma.CONFIG_FILE).read_text()
        name = "tiny-pt"
        assert not (tmp_path / "tiny-pt" / "1" / ma.PYTHON_MODEL_FILE).exists()
    config = _parse(text)
    dt = model_config_pb2.DataType
    assert config.name == name and config.backend == backend
    assert config.max_batch_size == 64
    assert list(config.version_policy.specific.versions) == [1]
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (ma.INPUT_IDS, dt.TYPE_INT64, [-1]),
        (ma.ATTENTION_MASK, dt.TYPE_INT64, [-1]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [(ma.LOGITS, dt.TYPE_FP32, [2])]
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, model_config_pb2.ModelInstanceGroup.Kind.KIND_CPU)
    ]
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == 0  # never holds a batch back
    parameters = {k: v.string_value for k, v in config.parameters.items()}
    if backend == "python":
        assert all(i.allow_ragged_batch for i in config.input)  # model.py pads per batch
        assert parameters == {"torch_num_threads": "0", "dtype": "fp32", "batch_overhead_tokens": "32"}
    else:
        assert not any(i.allow_ragged_batch for i in config.input)  # libtorch would concatenate
        assert parameters == {
            "INFERENCE_MODE": "true",
            "DISABLE_OPTIMIZED_EXECUTION": "true",
            "INTRA_OP_THREAD_COUNT": "2",
        }


def test_gpu_config() -> None:
    config = _parse(
        render_config(model_name="m", backend="pytorch", num_labels=5, device="gpu", instance_count=2, dtype="fp16")
    )
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU)
    ]
    assert list(config.output[0].dims) == [5]


def test_model_files_are_readable_by_others(exported: tuple[Path, ma.ModelInfo]) -> None:
    """Triton in a container may run as another user than the exporter."""
    repository, _ = exported
    assert os.stat(repository / "tiny").st_mode & 0o055 == 0o055
