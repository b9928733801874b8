"""The split of cores between front-end processes and model instances (`auto`)."""

import pytest
from sentiment_server import core_budget
from sentiment_server.cli import build_parser
from sentiment_server.core_budget import (
    default_instance_count,
    default_torch_threads,
    default_workers,
    front_end_cores,
    resolve_count,
    usable_cores,
)
from sentiment_server.settings import ExportSettings, UpSettings, settings_from


@pytest.mark.parametrize(
    ("cores", "workers", "instances"),
    [
        (1, 1, 1),  # the front-end shares the one core with the model
        (2, 1, 2),
        (7, 1, 7),
        (8, 1, 7),
        (16, 2, 14),
        (64, 8, 56),
    ],
)
def test_cpu_host_gives_the_model_the_cores_the_front_end_leaves(cores, workers, instances):
    assert front_end_cores(cores, on_gpu=False) == cores // 8
    assert default_workers(on_gpu=False, cores=cores) == workers
    assert default_instance_count("cpu", cores=cores) == instances
    assert default_torch_threads("cpu") == 1


@pytest.mark.parametrize("cores", [1, 2, 16, 64])
def test_gpu_host_gives_the_front_end_every_core_and_triton_one_instance_per_gpu(cores):
    assert front_end_cores(cores, on_gpu=True) == cores
    assert default_workers(on_gpu=True, cores=cores) == cores
    assert default_instance_count("gpu", cores=cores) == 1
    assert default_torch_threads("gpu") == 1


def test_defaults_count_this_process_cores_when_none_given():
    assert usable_cores() >= 1
    assert default_instance_count("cpu") == default_instance_count("cpu", usable_cores())
    assert default_workers(on_gpu=True) == usable_cores()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", 5), ("AUTO", 5), (" auto ", 5), ("3", 3), (" 12 ", 12), ("0", 0), (4, 4), (0, 0)],
)
def test_resolve_count_takes_auto_and_numbers(value, expected):
    assert resolve_count(value, 5, "--instance-count") == expected


@pytest.mark.parametrize("value", ["", "many", "-1", "1.5", "2x", "²", True])
def test_resolve_count_refuses_anything_else_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"--instance-count must be a number or 'auto'"):
        resolve_count(value, 5, "--instance-count")


def test_export_and_up_flags_default_to_auto_and_keep_numbers():
    parser = build_parser()
    export = settings_from(ExportSettings, parser.parse_args(["export"]), {})
    assert (export.instance_count, export.torch_threads) == (core_budget.AUTO, core_budget.AUTO)
    up = settings_from(UpSettings, parser.parse_args(["up", "--instance-count", "3"]), {"SENTIMENT_TORCH_THREADS": "2"})
    assert (up.instance_count, up.torch_threads) == ("3", "2")


def test_export_passes_resolved_numbers(monkeypatch):
    from sentiment_server import cli
    from sentiment_server.tooling import export

    calls = []
    monkeypatch.setattr(export, "export_model", lambda *args, **kwargs: calls.append(kwargs))
    monkeypatch.setattr(core_budget, "usable_cores", lambda: 16)
    cli._export(ExportSettings())
    cli._export(ExportSettings(device="gpu", instance_count="2", torch_threads="0"))
    assert [(c["instance_count"], c["torch_threads"]) for c in calls] == [(14, 1), (2, 0)]
    with pytest.raises(ValueError, match="--torch-threads"):
        cli._export(ExportSettings(torch_threads="all"))


def test_a_cgroup_cpu_quota_caps_the_cores(tmp_path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("250000 100000\n")  # a 2.5-core limit
    assert usable_cores(cpu_max) == min(3, usable_cores(tmp_path / "absent"))
    cpu_max.write_text("max 100000\n")
    assert usable_cores(cpu_max) == usable_cores(tmp_path / "absent")
