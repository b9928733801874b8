"""Checkpoint -> Triton model repository (one artifact for both backends), version by version.

`export_model` loads a Hugging Face sequence-classification checkpoint (Hub id
or local directory), traces a wrapper `forward(input_ids, attention_mask[,
token_type_ids]) -> logits` with TorchScript (token_type_ids when the
checkpoint's tokenizer produces them and its model takes them), checks the
trace against the eager fp32 model, saves it, runs the saved file on a few
fixed texts (the expectations model_info.json records), and only then writes
the layout described in `model_artifact`:

    <repository>/<model_name>/config.pbtxt                 version_policy: { specific: { versions: [1] } }
    <repository>/<model_name>/1/model.pt, model.py (python backend),
                                tokenizer.json, model_info.json
    <repository>/<model_name>/2/...                     a later export of another checkpoint, staged

What happens depends on what the repository already holds under `model_name`:

- nothing: the model directory, version 1 served (a new name next to other models is a new directory);
- a version with this export's fingerprint: nothing is written (config.pbtxt's serving settings and
  that version's model.py are brought up to date; the version policy is kept);
- only other checkpoints: the next version N+1 is written beside them and staged, not served:
  config.pbtxt is untouched, so Triton keeps serving what it served until a rollout
  (`model_artifact.set_serving_versions`) switches it. A new version must fit the model's
  config.pbtxt (backend, dtype, device, inputs, label count, instances, batch size, threads);
  labels may be renamed or reordered. One that does not needs a new model name, or `force`;
- with `force`: the whole model directory is replaced by version 1 of this export.

Every write is a rename of a fully written staging directory. The steps live in
`checkpoint_loading`, `torchscript`, `triton_config` and `repository_writer`.

Requires the `export` extra (torch, transformers).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..model_artifact import (
    BACKENDS,
    CONFIG_FILE,
    DTYPES,
    ModelInfo,
    model_dir,
    model_name_problem,
    parse_version_policy,
    render_version_policy,
    replace_version_policy,
    serving_versions,
    version_policy_text,
)
from .checkpoint_loading import Checkpoint, compute_fingerprint, load_checkpoint
from .export_error import ExportError
from .repository_writer import (
    VERSION,
    existing_infos,
    next_version,
    refresh_serving_files,
    replace_file,
    write_atomically,
    write_version_atomically,
)
from .torchscript import EXPECTATION_TEXTS, EXPECTED_ATOL, expected_logits, save_checked, trace_and_verify
from .triton_config import config_differences, render_config

if TYPE_CHECKING:
    import torch

__all__ = ["ExportError", "export_model"]

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")


def export_model(
    source: str,
    repository: Path | str,
    *,
    model_name: str = "sentiment",
    backend: str = "python",
    dtype: str = "fp32",
    max_batch_size: int = 64,
    instance_count: int = 1,
    device: str = "cpu",
    torch_threads: int = 0,
    force: bool = False,
    demo: bool = False,
) -> ModelInfo:
    """Export `source` (Hub id or checkpoint directory) into `repository` (see the module docstring).

    Returns the ModelInfo written to (or already in) the repository; its
    `version` says which version directory holds it. Raises ExportError when
    the checkpoint cannot be exported faithfully, when `model_name` is a
    directory that holds no exported model, or when a new version would not
    fit the model's config.pbtxt, and `force` is not set.
    """
    _check_arguments(model_name, backend, dtype, max_batch_size, instance_count, device, torch_threads)
    repository = Path(repository)
    _check_fp16_has_cuda(dtype)
    ckpt = load_checkpoint(source)
    fingerprint = _fingerprint(ckpt, dtype=dtype, backend=backend)
    config_text = render_config(
        model_name=model_name,
        backend=backend,
        num_labels=len(ckpt.labels),
        max_batch_size=max_batch_size,
        instance_count=instance_count,
        device=device,
        torch_threads=torch_threads,
        dtype=dtype,
        inputs=ckpt.inputs,
        versions=(VERSION,),
    )

    target = model_dir(repository, model_name)
    new_model = force or not target.exists()
    version = VERSION
    if not new_model:
        existing = existing_infos(repository, model_name)
        if not existing:
            raise ExportError(
                f"{target} exists but does not hold an exported model; remove it or pass force=True to overwrite it"
            )
        same = [v for v, info in existing.items() if info.fingerprint == fingerprint]
        if same:
            return _keep_existing(target, existing[same[-1]], device=device, config_text=config_text, backend=backend)
        _check_fits(target, config_text, existing, fingerprint)
        version = next_version(target)

    traced, extra, trace_device = _trace(ckpt, dtype, device)
    info = _model_info(ckpt, source, fingerprint, extra, model_name=model_name, backend=backend, dtype=dtype, demo=demo)
    info = dataclasses.replace(info, version=version, expected_atol=EXPECTED_ATOL[dtype])
    write_weights = _weights_writer(traced, ckpt, trace_device, info)
    if new_model:
        return _write(repository, info, ckpt, write_weights, config_text)
    return _stage(repository, info, ckpt, write_weights)


def _check_arguments(
    model_name: str,
    backend: str,
    dtype: str,
    max_batch_size: int,
    instance_count: int,
    device: str,
    torch_threads: int,
) -> None:
    problem = model_name_problem(model_name)
    if problem is not None:
        raise ExportError(problem)
    if backend not in BACKENDS:
        raise ExportError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if device not in DEVICES:
        raise ExportError(f"device must be one of {DEVICES}, got {device!r}")
    if dtype == "fp16" and device != "gpu":
        raise ExportError("dtype fp16 is for GPUs only (device=gpu); on CPU use int8, bf16 or fp32")
    if dtype == "int8" and device != "cpu":
        raise ExportError("dtype int8 (dynamic quantization) runs on CPUs only (device=cpu); on a GPU use fp16")
    if max_batch_size < 1:
        raise ExportError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if instance_count < 1:
        raise ExportError(f"instance_count must be >= 1, got {instance_count}")
    if torch_threads < 0:
        raise ExportError(f"torch_threads must be >= 0 (0 = torch default), got {torch_threads}")


def _check_fp16_has_cuda(dtype: str) -> None:
    """fp16 is traced and verified on a GPU: refused here, before the checkpoint is loaded."""
    import torch

    if dtype == "fp16" and not torch.cuda.is_available():
        raise ExportError(
            "dtype fp16 needs a CUDA device to trace and verify on, and none is visible "
            "(torch.cuda.is_available() is False); use bf16 on CPU, or export on the GPU machine"
        )


def _fingerprint(ckpt: Checkpoint, *, dtype: str, backend: str) -> str:
    """What identifies this export of `ckpt` (see compute_fingerprint)."""
    return compute_fingerprint(
        ckpt.model.state_dict(),
        labels=ckpt.labels,
        problem_type=ckpt.problem_type,
        tokenizer_json=ckpt.tokenizer_json.encode("utf-8"),
        dtype=dtype,
        backend=backend,
        max_length=ckpt.max_length,
        pad_token_id=ckpt.pad_token_id,
        inputs=ckpt.inputs,
    )


def _keep_existing(
    target: Path,
    existing: ModelInfo,
    *,
    device: str,
    config_text: str,
    backend: str,
) -> ModelInfo:
    """This export is already version `existing.version` in `target`: its serving files refreshed, no new weights.

    The refreshed config.pbtxt keeps the version policy it had (which versions are served is a rollout's call).
    """
    if not _runs_on(existing.extra, device):
        raise ExportError(
            f"{target} holds this model (version {existing.version}) traced for "
            f"{', '.join(_pinned_devices(existing.extra))} (its trace pins the device); "
            f"pass force=True to re-export it for device={device}"
        )
    try:
        current = (target / CONFIG_FILE).read_text(encoding="utf-8")
    except OSError:
        current = None
    if current is not None:
        config_text = replace_version_policy(config_text, version_policy_text(current))
    refresh_serving_files(target, config_text, backend, existing.version)
    logger.info(
        "%s: already exported as version %s (fingerprint %s)", target, existing.version, existing.fingerprint[:12]
    )
    return existing


def _check_fits(target: Path, config_text: str, existing: Mapping[str, ModelInfo], fingerprint: str) -> None:
    """ExportError unless a new version of this export can be served with the model's config.pbtxt as it is."""
    newest = existing[list(existing)[-1]]
    what = (
        f"{target} holds another checkpoint (version {newest.version}: exported from {newest.source!r}, "
        f"backend {newest.backend}, dtype {newest.dtype}, fingerprint {newest.fingerprint[:12]}; "
        f"this export would be {fingerprint[:12]})"
    )
    try:
        current = (target / CONFIG_FILE).read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(
            f"{what}, and its {CONFIG_FILE} is unreadable ({exc}); pass force=True to replace it"
        ) from exc
    differences = config_differences(current, config_text)
    if differences:
        raise ExportError(
            f"{what}, and a new version of it must fit its {CONFIG_FILE}, which differs: "
            + "; ".join(differences)
            + ". Export it under a new model name, or pass force=True to replace the model"
            " (or use the same serving settings as the existing versions)"
        )


def _weights_writer(
    traced: torch.jit.ScriptModule, ckpt: Checkpoint, trace_device: torch.device, info: ModelInfo
) -> Callable[[Path], ModelInfo]:
    """Writes model.pt (checked) and returns `info` with the expectations of the saved file."""

    def write(path: Path) -> ModelInfo:
        saved = save_checked(traced, path, ckpt=ckpt, device=trace_device)
        logits = expected_logits(saved, ckpt, trace_device, EXPECTATION_TEXTS)
        return dataclasses.replace(info, expected_texts=list(EXPECTATION_TEXTS), expected_logits=logits)

    return write


def _trace(ckpt: Checkpoint, dtype: str, device: str) -> tuple[torch.jit.ScriptModule, dict[str, str], torch.device]:
    """The verified trace, its ModelInfo.extra, and the torch device it was traced on."""
    import torch

    trace_device = torch.device("cuda:0" if device == "gpu" and torch.cuda.is_available() else "cpu")
    if device == "gpu" and trace_device.type == "cpu":
        logger.warning("device=gpu but no CUDA device is visible here: tracing on the CPU")
    traced, extra = trace_and_verify(ckpt, dtype, trace_device)
    if not _runs_on(extra, device):
        raise ExportError(
            f"the trace pins tensors to {', '.join(_pinned_devices(extra))}, so it would not run with "
            f"device={device}; export on a machine with that device"
        )
    return traced, extra, trace_device


def _model_info(
    ckpt: Checkpoint,
    source: str,
    fingerprint: str,
    extra: dict[str, str],
    *,
    model_name: str,
    backend: str,
    dtype: str,
    demo: bool,
) -> ModelInfo:
    """What model_info.json records: the checkpoint's labels, limits and inputs, and how it was exported."""
    return ModelInfo(
        model_name=model_name,
        source=str(source),
        labels=list(ckpt.labels),
        problem_type=ckpt.problem_type,
        max_length=ckpt.max_length,
        pad_token_id=ckpt.pad_token_id,
        backend=backend,
        dtype=dtype,
        fingerprint=fingerprint,
        demo=bool(demo or getattr(ckpt.config, "sentiment_server_demo", False)),
        version=VERSION,
        extra=extra,
        inputs=list(ckpt.inputs),
    )


def _write(
    repository: Path,
    info: ModelInfo,
    ckpt: Checkpoint,
    write_weights: Callable[[Path], ModelInfo],
    config_text: str,
) -> ModelInfo:
    """Write the model's directory into `repository` (all of it or nothing) and log what was exported."""
    info = write_atomically(
        repository,
        info.model_name,
        backend=info.backend,
        config_text=config_text,
        tokenizer_json=ckpt.tokenizer_json,
        write_weights=write_weights,
    )
    logger.info(
        "exported %s -> %s (backend %s, dtype %s, inputs %s, labels %s, fingerprint %s)",
        info.source,
        model_dir(repository, info.model_name),
        info.backend,
        info.dtype,
        info.inputs,
        info.labels,
        info.fingerprint[:12],
    )
    return info


def _stage(
    repository: Path, info: ModelInfo, ckpt: Checkpoint, write_weights: Callable[[Path], ModelInfo]
) -> ModelInfo:
    """Write version `info.version` beside the model's others without serving it, and say so."""
    name = info.model_name
    served = _pin_served_versions(repository, name)
    info = write_version_atomically(
        repository,
        name,
        info.version,
        backend=info.backend,
        tokenizer_json=ckpt.tokenizer_json,
        write_weights=write_weights,
    )
    logger.info(
        "exported %s -> %s (backend %s, dtype %s, inputs %s, labels %s, fingerprint %s)",
        info.source,
        model_dir(repository, name) / info.version,
        info.backend,
        info.dtype,
        info.inputs,
        info.labels,
        info.fingerprint[:12],
    )
    logger.info(
        "staged as version %s of %s; the service keeps serving version(s) [%s] until `sentiment-server rollout "
        "--model %s`",
        info.version,
        name,
        ", ".join(served),
        name,
    )
    return info


def _pin_served_versions(repository: Path, model_name: str) -> list[str]:
    """The versions served now; a config.pbtxt whose policy would pick up a new version (`latest`, `all`, as
    older exports wrote) is first pinned to them, so that the new version is staged and not served."""
    target = model_dir(repository, model_name)
    try:
        served = serving_versions(repository, model_name)
        policy = parse_version_policy((target / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the version policy of {target / CONFIG_FILE}: {exc}") from exc
    if policy.kind != "specific" and served:
        path = target / CONFIG_FILE
        replace_file(path, replace_version_policy(path.read_text(encoding="utf-8"), render_version_policy(served)))
        logger.info("%s: version_policy pinned to the served version(s) [%s]", path, ", ".join(served))
    return served


def _pinned_devices(extra: Mapping[str, str]) -> list[str]:
    """Devices the trace has as constants (none when the artifact runs anywhere)."""
    return [d for d in extra.get("device_constants", "").split(",") if d]


def _runs_on(extra: Mapping[str, str], device: str) -> bool:
    """Whether a trace with this ModelInfo.extra runs on `device` ("cpu" or "gpu")."""
    torch_device_type = "cuda" if device == "gpu" else "cpu"
    return all(d.startswith(torch_device_type) for d in _pinned_devices(extra))
