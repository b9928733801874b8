"""Checkpoint -> Triton model repository (one artifact for both backends).

`export_model` loads a Hugging Face sequence-classification checkpoint (Hub id
or local directory), traces a wrapper `forward(input_ids, attention_mask[,
token_type_ids]) -> logits` with TorchScript (token_type_ids when the
checkpoint's tokenizer produces them and its model takes them), checks the
trace against the eager fp32 model, and only then writes the layout described
in `model_artifact`:

    <repository>/<model_name>/config.pbtxt
    <repository>/<model_name>/1/model.pt, model.py (python backend),
                                tokenizer.json, model_info.json

Re-exporting the same weights is a no-op; a different model in the same place
is refused unless `force`. The steps live in `checkpoint_loading`,
`torchscript`, `triton_config` and `repository_writer`.

Requires the `export` extra (torch, transformers).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..model_artifact import BACKENDS, DTYPES, ModelInfo, model_dir
from .checkpoint_loading import Checkpoint, compute_fingerprint, load_checkpoint
from .export_error import ExportError
from .repository_writer import VERSION, existing_info, refresh_serving_files, write_atomically
from .torchscript import save_checked, trace_and_verify
from .triton_config import render_config

if TYPE_CHECKING:
    import torch

__all__ = ["ExportError", "export_model"]

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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
    """Export `source` (Hub id or checkpoint directory) into `repository`.

    Returns the ModelInfo written to (or already in) the repository. Raises
    ExportError when the checkpoint cannot be exported faithfully, or when
    the repository already holds a different model under `model_name` and
    `force` is not set.
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
    )

    target = model_dir(repository, model_name)
    existing = existing_info(target)
    if target.exists() and not force:
        return _keep_existing(target, existing, fingerprint, device=device, config_text=config_text, backend=backend)

    traced, extra, trace_device = _trace(ckpt, dtype, device)
    info = _model_info(ckpt, source, fingerprint, extra, model_name=model_name, backend=backend, dtype=dtype, demo=demo)
    _write(repository, info, ckpt, traced, trace_device, config_text)
    return info


def _check_arguments(
    model_name: str,
    backend: str,
    dtype: str,
    max_batch_size: int,
    instance_count: int,
    device: str,
    torch_threads: int,
) -> None:
    if not _MODEL_NAME_RE.match(model_name):
        raise ExportError(
            f"model name {model_name!r} must be letters, digits, '_', '.', '-' and must not start with '.' or '-'"
        )
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
    existing: ModelInfo | None,
    fingerprint: str,
    *,
    device: str,
    config_text: str,
    backend: str,
) -> ModelInfo:
    """The export already in `target` when it is this one (its serving files refreshed); else ExportError."""
    if existing is None:
        raise ExportError(
            f"{target} exists but does not hold an exported model; remove it or pass force=True to overwrite it"
        )
    if existing.fingerprint != fingerprint:
        raise ExportError(
            f"{target} already holds a different model (exported from {existing.source!r}, "
            f"backend {existing.backend}, dtype {existing.dtype}, fingerprint "
            f"{existing.fingerprint[:12]}; this export would be {fingerprint[:12]}); "
            "pass force=True to overwrite it"
        )
    if not _runs_on(existing.extra, device):
        raise ExportError(
            f"{target} holds this model traced for {', '.join(_pinned_devices(existing.extra))} "
            f"(its trace pins the device); pass force=True to re-export it for device={device}"
        )
    refresh_serving_files(target, config_text, backend)
    logger.info("%s: already exported (fingerprint %s)", target, fingerprint[:12])
    return existing


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
    traced: torch.jit.ScriptModule,
    trace_device: torch.device,
    config_text: str,
) -> None:
    """Write the model's directory into `repository` (all of it or nothing) and log what was exported."""
    write_atomically(
        repository,
        info.model_name,
        info,
        config_text=config_text,
        tokenizer_json=ckpt.tokenizer_json,
        write_weights=functools.partial(save_checked, traced, ckpt=ckpt, device=trace_device),
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


def _pinned_devices(extra: Mapping[str, str]) -> list[str]:
    """Devices the trace has as constants (none when the artifact runs anywhere)."""
    return [d for d in extra.get("device_constants", "").split(",") if d]


def _runs_on(extra: Mapping[str, str], device: str) -> bool:
    """Whether a trace with this ModelInfo.extra runs on `device` ("cpu" or "gpu")."""
    torch_device_type = "cuda" if device == "gpu" else "cpu"
    return all(d.startswith(torch_device_type) for d in _pinned_devices(extra))
