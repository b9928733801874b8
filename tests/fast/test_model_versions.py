"""The repository's models and versions, and config.pbtxt's version policy: files only, no torch, no Triton."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from google.protobuf import text_format
from sentiment_server import model_artifact as ma
from sentiment_server.tooling.triton_config import render_config
from tritonclient.grpc import model_config_pb2


def _info(name: str, version: str, **changes: object) -> ma.ModelInfo:
    fields: dict[str, object] = {
        "model_name": name,
        "source": f"ckpt-{version}",
        "labels": ["NEGATIVE", "POSITIVE"],
        "problem_type": ma.SINGLE_LABEL,
        "max_length": 512,
        "pad_token_id": 0,
        "backend": "python",
        "dtype": "fp32",
        "fingerprint": f"{version:0>64}",
        "version": version,
        **changes,
    }
    return ma.ModelInfo(**fields)  # type: ignore[arg-type]


def _add_version(repository: Path, name: str, version: str, *, weights: bool = True) -> None:
    directory = repository / name / version
    directory.mkdir(parents=True)
    (directory / ma.INFO_FILE).write_text(_info(name, version).to_json())
    if weights:
        (directory / ma.TORCHSCRIPT_FILE).write_bytes(b"not read here")


def _model(repository: Path, name: str, versions: list[str], policy: str | None = None) -> Path:
    for version in versions:
        _add_version(repository, name, version)
    config = render_config(model_name=name, backend="python", num_labels=2)
    config = ma.replace_version_policy(config, policy)
    path = repository / name / ma.CONFIG_FILE
    path.write_text(config)
    return path


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["sentiment", "a", "_x", "Model-2.v1", "9lives", "a" * 64])
def test_good_model_names(name: str) -> None:
    assert ma.model_name_problem(name) is None
    assert ma.MODEL_NAME_RE.match(name)


@pytest.mark.parametrize("name", ["", ".hidden", "-dash", "a/b", "a b", "ünï", "x\n", "a" * 65, "..", "a:b"])
def test_bad_model_names(name: str) -> None:
    problem = ma.model_name_problem(name)
    assert problem is not None and "model name" in problem
    assert not ma.MODEL_NAME_RE.match(name)
    if len(name) > 64:
        assert "at most 64" in problem


# --------------------------------------------------------------------------- versions and models


def test_model_versions_are_complete_digit_directories_in_numeric_order(tmp_path: Path) -> None:
    _model(tmp_path, "m", ["2", "10", "1"])
    _add_version(tmp_path, "m", "3", weights=False)  # half there: not a version
    (tmp_path / "m" / "notes").mkdir()
    (tmp_path / "m" / ".4").mkdir()
    assert ma.model_versions(tmp_path, "m") == ["1", "2", "10"]
    assert ma.model_versions(tmp_path, "missing") == []


def test_model_names(tmp_path: Path) -> None:
    _model(tmp_path, "b", ["1"])
    _model(tmp_path, "a", ["1", "2"])
    _add_version(tmp_path, "no-config", "1")
    (tmp_path / "no-versions").mkdir()
    (tmp_path / "no-versions" / ma.CONFIG_FILE).write_text('name: "no-versions"\n')
    _model(tmp_path, ".a.export-123", ["1"])
    (tmp_path / "file.txt").write_text("not a model")
    assert ma.model_names(tmp_path) == ["a", "b"]
    assert ma.model_names(tmp_path / "missing") == []


# --------------------------------------------------------------------------- the version policy


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("", ma.VersionPolicy("latest", 1)),
        ("version_policy: { latest: { num_versions: 1 } }", ma.VersionPolicy("latest", 1)),
        ("version_policy { latest { num_versions: 3 } }", ma.VersionPolicy("latest", 3)),
        ("version_policy: { all: {} }", ma.VersionPolicy("all")),
        ("version_policy < all < > >", ma.VersionPolicy("all")),
        ("version_policy: { specific: { versions: [1, 2] } }", ma.VersionPolicy("specific", versions=(1, 2))),
        ("version_policy: { specific: { versions: [ 10,2 ] } }", ma.VersionPolicy("specific", versions=(2, 10))),
        (
            "version_policy {\n  specific {\n    versions: 3\n    versions: 1\n  }\n}",
            ma.VersionPolicy("specific", versions=(1, 3)),
        ),
        ("# version_policy: { all: {} }\n", ma.VersionPolicy("latest", 1)),
        ('name: "version_policy { all {} }"', ma.VersionPolicy("latest", 1)),
        ("version_policy: { specific: { versions: [2] } }  # was [1]", ma.VersionPolicy("specific", versions=(2,))),
    ],
)
def test_parse_version_policy(text: str, policy: ma.VersionPolicy) -> None:
    assert ma.parse_version_policy(text) == policy
    # What Triton reads from the same text.
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    kind = config.version_policy.WhichOneof("policy_choice") or "latest"
    assert kind == policy.kind
    if kind == "specific":
        assert sorted(set(config.version_policy.specific.versions)) == list(policy.versions)
    if kind == "latest" and config.HasField("version_policy"):
        assert config.version_policy.latest.num_versions == policy.num_versions


@pytest.mark.parametrize(
    "text",
    [
        "version_policy: { specific: { versions: [1], unknown: 2 } }",
        "version_policy: { newest: {} }",
        "version_policy: { latest: { num_versions: 0 } }",
        "version_policy: { specific: { versions: [1] }",
    ],
)
def test_a_version_policy_that_cannot_be_read_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="version_policy"):
        ma.parse_version_policy(text)


def test_the_rendered_policy_is_triton_s_text_format() -> None:
    line = ma.render_version_policy(["2", "10", "2", "1"])
    assert line == "version_policy: { specific: { versions: [1, 2, 10] } }"
    config = text_format.Parse(line, model_config_pb2.ModelConfig())
    assert list(config.version_policy.specific.versions) == [1, 2, 10]


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        (None, ["10"]),  # Triton's default: the newest
        ("version_policy: { latest: { num_versions: 1 } }", ["10"]),
        ("version_policy: { latest: { num_versions: 2 } }", ["2", "10"]),
        ("version_policy: { latest: { num_versions: 9 } }", ["1", "2", "10"]),
        ("version_policy: { all: {} }", ["1", "2", "10"]),
        ("version_policy: { specific: { versions: [2, 1] } }", ["1", "2"]),
        ("version_policy: { specific: { versions: [1, 7] } }", ["1"]),  # 7 is not exported
    ],
)
def test_serving_versions(tmp_path: Path, policy: str | None, served: list[str]) -> None:
    _model(tmp_path, "m", ["1", "2", "10"], policy)
    assert ma.serving_versions(tmp_path, "m") == served


def test_set_serving_versions_round_trip(tmp_path: Path) -> None:
    path = _model(tmp_path, "m", ["1", "2"], "version_policy: { specific: { versions: [1] } }")
    os.chmod(path, 0o644)
    before = path.read_text()
    ma.set_serving_versions(tmp_path, "m", ["2", "1"])
    after = path.read_text()
    assert "version_policy: { specific: { versions: [1, 2] } }\n" in after
    assert ma.serving_versions(tmp_path, "m") == ["1", "2"]
    assert ma.config_without_version_policy(after) == ma.config_without_version_policy(before)
    ma.set_serving_versions(tmp_path, "m", ["2"])
    assert ma.serving_versions(tmp_path, "m") == ["2"]
    assert path.read_text() == before.replace("versions: [1]", "versions: [2]")
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["1", "2", ma.CONFIG_FILE]  # no temporary file left
    text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_set_serving_versions_adds_a_missing_policy_and_replaces_triton_s(tmp_path: Path) -> None:
    path = _model(tmp_path, "m", ["1", "2"], None)
    assert ma.serving_versions(tmp_path, "m") == ["2"]
    ma.set_serving_versions(tmp_path, "m", ["1"])
    assert ma.serving_versions(tmp_path, "m") == ["1"]
    assert path.read_text().count("version_policy") == 1
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    assert list(config.version_policy.specific.versions) == [1] and config.max_batch_size == 64

    path.write_text(
        ma.replace_version_policy(path.read_text(), "version_policy {\n  latest {\n    num_versions: 1\n  }\n}")
    )
    ma.set_serving_versions(tmp_path, "m", ["1", "2"])
    assert ma.serving_versions(tmp_path, "m") == ["1", "2"]
    assert path.read_text().count("version_policy") == 1 and "latest" not in path.read_text()


@pytest.mark.parametrize("versions", [[], ["3"], ["x"], ["1", "3"]])
def test_set_serving_versions_refuses_what_is_not_exported(tmp_path: Path, versions: list[str]) -> None:
    path = _model(tmp_path, "m", ["1", "2"], "version_policy: { specific: { versions: [1] } }")
    before = path.read_text()
    with pytest.raises(ValueError):
        ma.set_serving_versions(tmp_path, "m", versions)
    assert path.read_text() == before


# --------------------------------------------------------------------------- the model info of a version


def test_read_model_info_defaults_to_the_newest_served_version(tmp_path: Path) -> None:
    _model(tmp_path, "m", ["1", "2", "3"], "version_policy: { specific: { versions: [1, 2] } }")
    assert ma.read_model_info(tmp_path, "m").version == "2"
    assert ma.read_model_info(tmp_path, "m", "3").version == "3"
    assert ma.has_model(tmp_path, "m") and ma.has_model(tmp_path, "m", "3")
    assert not ma.has_model(tmp_path, "m", "4") and not ma.has_model(tmp_path, "other")
    with pytest.raises(FileNotFoundError):
        ma.read_model_info(tmp_path, "other")


def test_an_existing_single_version_repository_reads_as_before(tmp_path: Path) -> None:
    _model(tmp_path, "m", ["1"], "version_policy: { latest: { num_versions: 1 } }")
    assert ma.serving_versions(tmp_path, "m") == ["1"]
    assert ma.read_model_info(tmp_path, "m") == _info("m", "1")
    assert ma.has_model(tmp_path, "m")


def test_without_a_readable_policy_the_newest_exported_version_is_read(tmp_path: Path) -> None:
    path = _model(tmp_path, "m", ["1", "2"], "version_policy: { specific: { versions: [1] } }")
    path.write_text(path.read_text().replace("versions: [1]", "versions: [1], bogus: 1"))
    assert ma.read_model_info(tmp_path, "m").version == "2"
    path.unlink()
    assert ma.read_model_info(tmp_path, "m").version == "2"
    with pytest.raises(OSError):
        ma.serving_versions(tmp_path, "m")


def test_model_info_without_expectations_still_loads() -> None:
    old = asdict(_info("m", "1"))
    for key in ("expected_texts", "expected_logits", "expected_atol"):
        del old[key]
    info = ma.ModelInfo.from_json(json.dumps(old))
    assert (info.expected_texts, info.expected_logits, info.expected_atol) == ([], [], 0.0)
    recorded = _info("m", "1", expected_texts=["a"], expected_logits=[[0.5, -0.25]], expected_atol=1e-3)
    assert ma.ModelInfo.from_json(recorded.to_json()) == recorded
