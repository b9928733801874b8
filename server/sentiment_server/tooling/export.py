"""Checkpoint -> Triton model repository (one artifact for both backends).

`export_model` loads a Hugging Face sequence-classification checkpoint (Hub id
or local directory), traces a wrapper `forward(input_ids, attention_mask) ->
logits` with TorchScript, checks the trace against the eager fp32 model, and
only then writes the layout described in `model_artifact`:

    <repository>/<model_name>/config.pbtxt
    <repository>/<model_name>/1/model.pt, model.py (python backend),
                                tokenizer.json, model_info.json

The model directory is assembled in a hidden temporary directory next to the
target and renamed into place, so Triton (or the front-end) never sees half an
export. Re-exporting the same weights is a no-op; a different model in the
same place is refused unless `force`.

Requires the `export` extra (torch, transformers).
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backend import PYTHON_MODEL_SOURCE
from ..core.batching import BATCH_OVERHEAD_TOKENS
from ..model_artifact import (
    ATTENTION_MASK,
    BACKENDS,
    CONFIG_FILE,
    DTYPES,
    INFO_FILE,
    INPUT_IDS,
    LOGITS,
    MULTI_LABEL,
    PYTHON_MODEL_FILE,
    SINGLE_LABEL,
    TOKENIZER_FILE,
    TORCHSCRIPT_FILE,
    ModelInfo,
    model_dir,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

VERSION = "1"
DEVICES = ("cpu", "gpu")
# Triton's dynamic batcher stays on (direct tritonclient users get batches
# from whatever queues), but never waits: with a delay, two of the front-end's
# batches that arrive together were merged onto one instance while the other
# idled, halving throughput for 32-text requests (bench/).
MAX_QUEUE_DELAY_US = 0
FINGERPRINT_SCHEME = b"sentiment-server/fingerprint/v1\0"
# Hidden working directories next to the model directory (see _staging_dir).
STAGING_MARK = ".export-"
REPLACED_MARK = ".replaced-"
STALE_STAGING_S = 3600.0
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# Parity tolerances, checked before anything is written.
FP32_MAX_ABS_LOGIT_DIFF = 1e-4
LOW_PRECISION_MAX_PROB_DIFF = 0.02

# Varied on purpose: empty, one word, punctuation, accents and CJK (the
# normalizer), numbers, a long text (position embeddings), repetition.
PARITY_TEXTS: tuple[str, ...] = (
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "",
    "ok",
    "Crème brûlée à Paris, 東京 and naïve café-goers; $12.50 (or €11) per slice?!",
    "The plot was predictable, the acting wooden, and yet I could not stop watching "
    "until the very last scene, which surprised everyone in the theatre. " * 4,
    "no no no no no no no no no no no no no no no no no no no no yes",
    "Support answered within 5 minutes: 10/10, would recommend to friends & family.",
)
# (first text, count) slices of PARITY_TEXTS: batch sizes 1, 2, 3 and 8,
# each padded to its own longest text.
PARITY_BATCHES: tuple[tuple[int, int], ...] = ((3, 1), (0, 2), (5, 3), (0, 8))


class ExportError(RuntimeError):
    """The checkpoint cannot be exported, or the repository holds another model."""


@dataclass(frozen=True)
class _Checkpoint:
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    config: Any  # transformers PretrainedConfig
    model: Any  # transformers PreTrainedModel, fp32, eval mode, on CPU
    labels: list[str]
    problem_type: str
    max_length: int
    pad_token_id: int
    tokenizer_json: str


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
    import torch

    if dtype == "fp16" and not torch.cuda.is_available():
        raise ExportError(
            "dtype fp16 needs a CUDA device to trace and verify on, and none is visible "
            "(torch.cuda.is_available() is False); use bf16 on CPU, or export on the GPU machine"
        )

    ckpt = _load_checkpoint(source)
    fingerprint = compute_fingerprint(
        ckpt.model.state_dict(),
        labels=ckpt.labels,
        problem_type=ckpt.problem_type,
        tokenizer_json=ckpt.tokenizer_json.encode("utf-8"),
        dtype=dtype,
        backend=backend,
        max_length=ckpt.max_length,
        pad_token_id=ckpt.pad_token_id,
    )
    config_text = render_config(
        model_name=model_name,
        backend=backend,
        num_labels=len(ckpt.labels),
        max_batch_size=max_batch_size,
        instance_count=instance_count,
        device=device,
        torch_threads=torch_threads,
        dtype=dtype,
    )

    target = model_dir(repository, model_name)
    existing = _existing_info(target)
    if target.exists() and not force:
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
        pinned = _pinned_devices(existing.extra)
        if pinned and not all(d.startswith(_torch_device_type(device)) for d in pinned):
            raise ExportError(
                f"{target} holds this model traced for {', '.join(pinned)} (its trace pins the device); "
                f"pass force=True to re-export it for device={device}"
            )
        _refresh_serving_files(target, config_text, backend)
        logger.info("%s: already exported (fingerprint %s)", target, fingerprint[:12])
        return existing

    trace_device = torch.device("cuda:0" if device == "gpu" and torch.cuda.is_available() else "cpu")
    if device == "gpu" and trace_device.type == "cpu":
        logger.warning("device=gpu but no CUDA device is visible here: tracing on the CPU")
    traced, extra = _trace_and_verify(ckpt, dtype, trace_device)
    pinned = _pinned_devices(extra)
    if pinned and not all(d.startswith(_torch_device_type(device)) for d in pinned):
        raise ExportError(
            f"the trace pins tensors to {', '.join(pinned)}, so it would not run with device={device}; "
            "export on a machine with that device"
        )

    info = ModelInfo(
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
    )
    _write_atomically(repository, model_name, info, traced, ckpt, config_text, trace_device)
    logger.info(
        "exported %s -> %s (backend %s, dtype %s, labels %s, fingerprint %s)",
        source,
        target,
        backend,
        dtype,
        info.labels,
        fingerprint[:12],
    )
    return info


# --------------------------------------------------------------------------- checks


def _torch_device_type(device: str) -> str:
    return "cuda" if device == "gpu" else "cpu"


def _pinned_devices(extra: Mapping[str, str]) -> list[str]:
    """Devices the trace has as constants (none when the artifact runs anywhere)."""
    return [d for d in extra.get("device_constants", "").split(",") if d]


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


# --------------------------------------------------------------------------- loading


def _load_checkpoint(source: str) -> _Checkpoint:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, config=config)
    except Exception as exc:  # OSError, ValueError, HTTP errors, ...
        raise ExportError(f"cannot load checkpoint {source!r}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{source!r} has no fast tokenizer (tokenizer.json); the front-end needs one")
    # transformers 5 loads the checkpoint's own dtype by default: compare and
    # fingerprint against fp32 weights (an exact upcast of fp16/bf16 ones).
    model = model.to(torch.float32).eval()

    num_labels = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    labels = [id2label.get(i, f"LABEL_{i}") for i in range(num_labels)]
    problem_type = classification_function(config.problem_type, num_labels)

    model_max = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    limits = [n for n in (model_max, positions) if n and 0 < int(n) < 1_000_000]
    if not limits:
        raise ExportError(
            f"{source!r}: neither the tokenizer (model_max_length) nor the config "
            "(max_position_embeddings) says how many tokens the model takes"
        )
    max_length = min(int(n) for n in limits)

    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        pad_token_id = getattr(config, "pad_token_id", None)
    if pad_token_id is None:
        raise ExportError(f"{source!r}: the tokenizer has no pad token, so texts cannot be batched")

    return _Checkpoint(
        tokenizer=tokenizer,
        config=config,
        model=model,
        labels=labels,
        problem_type=problem_type,
        max_length=max_length,
        pad_token_id=int(pad_token_id),
        tokenizer_json=standalone_tokenizer_json(tokenizer),
    )


def classification_function(problem_type: str | None, num_labels: int) -> str:
    """SINGLE_LABEL (softmax) or MULTI_LABEL (sigmoid), as transformers' pipeline picks.

    The pipeline applies a sigmoid when problem_type is multi-label or when
    there is a single label (regression checkpoints included), and a softmax
    otherwise.
    """
    if problem_type == MULTI_LABEL or num_labels == 1:
        return MULTI_LABEL
    return SINGLE_LABEL


def standalone_tokenizer_json(hf_tokenizer: Any) -> str:
    """The fast tokenizer's backend as tokenizer.json, padding and truncation off.

    The front-end loads it with `tokenizers` and sets padding and truncation
    per request; a copy is serialized so that the caller's tokenizer keeps
    its state.
    """
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    text: str = backend.to_str(pretty=True)
    return text


def compute_fingerprint(
    state_dict: Mapping[str, torch.Tensor],
    *,
    labels: Sequence[str],
    problem_type: str,
    tokenizer_json: bytes,
    dtype: str,
    backend: str,
    max_length: int,
    pad_token_id: int,
) -> str:
    """sha256 over the fp32 weights, labels, problem type, tokenizer, dtype, backend."""
    import torch

    digest = hashlib.sha256(FINGERPRINT_SCHEME)
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
        tensor = tensor.contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.numpy().tobytes())
    meta = {
        "labels": list(labels),
        "problem_type": problem_type,
        "dtype": dtype,
        "backend": backend,
        "max_length": max_length,
        "pad_token_id": pad_token_id,
    }
    digest.update(json.dumps(meta, sort_keys=True).encode())
    digest.update(b"\0tokenizer.json\0")
    digest.update(tokenizer_json)
    return digest.hexdigest()


# --------------------------------------------------------------------------- tracing


def _wrapper_class() -> type[Any]:
    import torch

    class LogitsModule(torch.nn.Module):
        """`forward(input_ids, attention_mask) -> float32 logits`.

        With `mask_4d` the padding mask is handed to the model as an additive
        [batch, 1, 1, length] mask built from the input. transformers 5 builds
        its own mask with `torch.arange(..., device=<constant>)`, which a trace
        records as a fixed device: the artifact would then run only where it
        was traced. The 4-D mask keeps the trace device-free.
        """

        def __init__(self, model: torch.nn.Module, *, mask_4d: bool, mask_dtype: torch.dtype) -> None:
            super().__init__()
            self.model = model
            self.mask_4d = mask_4d
            self.mask_dtype = mask_dtype
            self.mask_min = float(torch.finfo(mask_dtype).min)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask
            if self.mask_4d:
                keep = attention_mask[:, None, None, :].to(self.mask_dtype)
                mask = (1.0 - keep) * self.mask_min
            outputs = self.model(input_ids=input_ids, attention_mask=mask, return_dict=False)
            logits: torch.Tensor = outputs[0]
            return logits.float()

    return LogitsModule


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def _parity_batches(ckpt: _Checkpoint, device: torch.device) -> list[_Batch]:
    """The parity set, tokenized by the HF tokenizer; the exported tokenizer.json must agree."""
    from tokenizers import Tokenizer

    standalone = Tokenizer.from_str(ckpt.tokenizer_json)
    standalone.enable_truncation(max_length=ckpt.max_length)
    pad_token = ckpt.tokenizer.pad_token or ""
    standalone.enable_padding(pad_id=ckpt.pad_token_id, pad_token=pad_token)

    batches: list[_Batch] = []
    for start, count in PARITY_BATCHES:
        texts = list(PARITY_TEXTS[start : start + count])
        enc = ckpt.tokenizer(texts, padding=True, truncation=True, max_length=ckpt.max_length, return_tensors="pt")
        mine = standalone.encode_batch(texts)
        if [e.ids for e in mine] != enc["input_ids"].tolist() or [e.attention_mask for e in mine] != enc[
            "attention_mask"
        ].tolist():
            raise ExportError(
                "the exported tokenizer.json does not reproduce the checkpoint's tokenizer "
                f"on {texts!r}: it does part of its work outside `tokenizers`, so the front-end cannot reproduce it"
            )
        batches.append(_Batch(enc["input_ids"].to(device), enc["attention_mask"].to(device)))
    return batches


def _trace_and_verify(
    ckpt: _Checkpoint, dtype: str, device: torch.device
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Trace the wrapper and check it against the eager fp32 model; nothing is written."""
    import torch

    # int8 keeps fp32 activations: only the Linear weights are int8.
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[dtype]
    reference_model = ckpt.model.to(device)
    batches = _parity_batches(ckpt, device)
    with torch.inference_mode():
        references = [reference_model(**_as_kwargs(b), return_dict=False)[0].float() for b in batches]

    if dtype == "int8":
        model = _quantize_dynamic(reference_model)
    elif torch_dtype != torch.float32:
        model = copy.deepcopy(reference_model).to(torch_dtype)
    else:
        model = reference_model
    wrapper_cls = _wrapper_class()
    failures: list[str] = []
    for mask_4d in (True, False):
        wrapper = wrapper_cls(model, mask_4d=mask_4d, mask_dtype=torch_dtype).eval()
        try:
            traced = _trace(wrapper, batches)
            worst = _check_parity(traced, batches, references, dtype, ckpt.problem_type)
        except ExportError as exc:
            failures.append(f"{'4-D' if mask_4d else '2-D'} mask: {exc}")
            continue
        except Exception as exc:  # the model rejects a 4-D mask, tracing fails, ...
            failures.append(f"{'4-D' if mask_4d else '2-D'} mask: {type(exc).__name__}: {exc}")
            continue
        devices = sorted(set(re.findall(r'Device = prim::Constant\[value="([^"]+)"\]', str(traced.inlined_graph))))
        logger.info(
            "trace parity ok (%s mask, %s, worst %s); device constants in the trace: %s",
            "4-D" if mask_4d else "2-D",
            dtype,
            worst,
            devices or "none",
        )
        extra = {
            "attention_mask": "4d-additive" if mask_4d else "2d",
            "device_constants": ",".join(devices),
            "num_labels": str(len(ckpt.labels)),
            "parity": worst,
            "torch_version": torch.__version__,
            "trace_device": str(device),
            "transformers_version": _transformers_version(),
            "vocab_size": str(ckpt.model.get_input_embeddings().num_embeddings),
        }
        return traced, extra
    raise ExportError("the TorchScript trace does not match the eager model: " + "; ".join(failures))


def _quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose Linear layers hold int8 weights; activations are quantized per call.

    On CPUs with AVX512-VNNI this is about 2.5-3x fp32 for DistilBERT (bench/),
    where bf16 without AMX is slower than fp32. The parity check decides
    whether the loss of precision is acceptable for this checkpoint.
    """
    import torch

    quantize: Callable[..., torch.nn.Module] = torch.ao.quantization.quantize_dynamic
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        # Per output channel: a scale per row keeps small layers accurate.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return quantize(copy.deepcopy(model), {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def _as_kwargs(batch: _Batch) -> dict[str, torch.Tensor]:
    return {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask}


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """torch >= 2.10 marks torch.jit deprecated; TorchScript is still what the libtorch backend runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def _trace(wrapper: torch.nn.Module, batches: Sequence[_Batch]) -> torch.jit.ScriptModule:
    import torch

    # Two texts of different lengths: the example has real padding.
    example = batches[1]
    with torch.no_grad(), _quiet_torchscript():
        # "Converting a tensor to a Python boolean might cause the trace to be
        # incorrect": the parity check below is what decides.
        warnings.simplefilter("ignore", category=getattr(torch.jit, "TracerWarning", Warning))
        trace: Callable[..., Any] = torch.jit.trace  # untyped in torch's stubs
        traced = trace(wrapper, (example.input_ids, example.attention_mask), check_trace=False)
    assert isinstance(traced, torch.jit.ScriptModule)
    return traced


def _check_parity(
    traced: torch.jit.ScriptModule,
    batches: Sequence[_Batch],
    references: Sequence[torch.Tensor],
    dtype: str,
    problem_type: str,
) -> str:
    """Raise ExportError unless the trace matches the references; returns the worst difference."""
    import torch

    worst_logit = 0.0
    worst_prob = 0.0
    for batch, ref in zip(batches, references, strict=True):
        with torch.inference_mode():
            got = traced(batch.input_ids, batch.attention_mask)
        shape = tuple(batch.input_ids.shape)
        if got.shape != ref.shape or got.dtype != torch.float32:
            raise ExportError(
                f"batch {shape}: trace gave {tuple(got.shape)} {got.dtype}, expected {tuple(ref.shape)} float32"
            )
        if not bool(torch.isfinite(got).all()):
            raise ExportError(f"batch {shape}: the trace produced non-finite logits")
        logit_diff = float((got - ref).abs().max())
        worst_logit = max(worst_logit, logit_diff)
        if dtype == "fp32":
            if logit_diff > FP32_MAX_ABS_LOGIT_DIFF:
                raise ExportError(
                    f"batch {shape}: max |logit difference| {logit_diff:.3g} > {FP32_MAX_ABS_LOGIT_DIFF:g}"
                )
            continue
        ref_p, got_p = _probabilities(ref, problem_type), _probabilities(got, problem_type)
        prob_diff = float((got_p - ref_p).abs().max())
        worst_prob = max(worst_prob, prob_diff)
        if prob_diff > LOW_PRECISION_MAX_PROB_DIFF:
            raise ExportError(
                f"batch {shape}: {dtype} probabilities differ from fp32 by {prob_diff:.3g} "
                f"> {LOW_PRECISION_MAX_PROB_DIFF:g}"
            )
        # A label flip counts unless fp32 itself has a near-tie (its top two
        # probabilities closer than the tolerance): then either label is right.
        top2 = ref_p.topk(min(2, ref_p.shape[-1]), dim=-1).values
        margin = top2[:, 0] - top2[:, -1] if top2.shape[-1] > 1 else torch.ones_like(top2[:, 0])
        flipped = (got_p.argmax(-1) != ref_p.argmax(-1)) & (margin > LOW_PRECISION_MAX_PROB_DIFF)
        if bool(flipped.any()):
            raise ExportError(
                f"batch {shape}: {dtype} changes the predicted label of row(s) {flipped.nonzero().flatten().tolist()}"
            )
    if dtype == "fp32":
        return f"max |logit diff| {worst_logit:.3g}"
    return f"max |prob diff| {worst_prob:.3g}, max |logit diff| {worst_logit:.3g}"


def _probabilities(logits: torch.Tensor, problem_type: str) -> torch.Tensor:
    import torch

    if problem_type == MULTI_LABEL:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


# --------------------------------------------------------------------------- config.pbtxt


def render_config(
    *,
    model_name: str,
    backend: str,
    num_labels: int,
    max_batch_size: int = 64,
    instance_count: int = 1,
    device: str = "cpu",
    torch_threads: int = 0,
    dtype: str = "fp32",
) -> str:
    """Triton's config.pbtxt (protobuf text format) for model.pt on `backend`.

    Both backends take `input_ids` / `attention_mask` (INT64, [batch, length])
    and give `logits__0` (FP32, [batch, num_labels]). The libtorch backend
    binds inputs by forward() argument name and outputs by the
    `<name>__<index>` convention. The Python backend pads requests itself,
    so its inputs allow ragged batches: the dynamic batcher may then merge
    requests of different lengths into one execute() call.
    """
    ragged = backend == "python"
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    if backend == "python":
        parameters = {"torch_num_threads": str(torch_threads), "dtype": dtype}
        if device == "cpu":
            # model.py sorts the rows of merged requests by length and plans its
            # forward passes with the coalescer's cost model (on a GPU: one pass).
            parameters["batch_overhead_tokens"] = str(BATCH_OVERHEAD_TOKENS)
    else:
        parameters = {
            # Autograd off (the default since 23.x; stated for older releases).
            "INFERENCE_MODE": "true",
            # The profiling executor re-specializes the graph for new input
            # shapes; with a new padded length on nearly every batch that is
            # recompilation latency for no gain on matmul-bound BERT models.
            "DISABLE_OPTIMIZED_EXECUTION": "true",
        }
        if torch_threads > 0:
            parameters["INTRA_OP_THREAD_COUNT"] = str(torch_threads)

    lines = [
        "# Generated by `sentiment-server export`; see model_info.json in the version directory.",
        f'name: "{model_name}"',
        f'backend: "{backend}"',
        f"max_batch_size: {max_batch_size}",
        "version_policy: { latest: { num_versions: 1 } }",
        "input [",
    ]
    for i, name in enumerate((INPUT_IDS, ATTENTION_MASK)):
        lines += [
            "  {",
            f'    name: "{name}"',
            "    data_type: TYPE_INT64",
            "    dims: [ -1 ]",
        ]
        if ragged:
            lines.append("    allow_ragged_batch: true")
        lines.append("  }," if i == 0 else "  }")
    lines += [
        "]",
        "output [",
        "  {",
        f'    name: "{LOGITS}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {num_labels} ]",
        "  }",
        "]",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        f"    kind: {kind}",
        "  }",
        "]",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}",
        "}",
    ]
    for key, value in parameters.items():
        lines += [
            "parameters: {",
            f'  key: "{key}"',
            f'  value: {{ string_value: "{value}" }}',
            "}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- writing


def _existing_info(target: Path) -> ModelInfo | None:
    path = target / VERSION / INFO_FILE
    if not (path.is_file() and (target / VERSION / TORCHSCRIPT_FILE).is_file()):
        return None
    try:
        return ModelInfo.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("%s is unreadable: %s", path, exc)
        return None


def _refresh_serving_files(target: Path, config_text: str, backend: str) -> None:
    """Same weights: bring config.pbtxt (batch size, instances, ...) and model.py up to date."""
    wanted = {target / CONFIG_FILE: config_text}
    if backend == "python":
        wanted[target / VERSION / PYTHON_MODEL_FILE] = PYTHON_MODEL_SOURCE.read_text(encoding="utf-8")
    for path, text in wanted.items():
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        logger.info("updated %s", path)


def _remove_stale_staging(repository: Path, model_name: str) -> None:
    cutoff = time.time() - STALE_STAGING_S
    for mark in (STAGING_MARK, REPLACED_MARK):
        for path in repository.glob(f".{glob.escape(model_name)}{mark}*"):
            try:
                if path.is_dir() and path.stat().st_mtime < cutoff:
                    logger.warning("removing %s, left behind by an interrupted export", path)
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue


@contextmanager
def _staging_dir(repository: Path, model_name: str) -> Iterator[Path]:
    # In the same directory as the target, so the final rename is atomic and
    # stays on one file system; removed on every failure path. Triton does NOT
    # skip hidden directories (it fails on them at start-up), so leftovers of
    # a killed export are removed by the next one.
    _remove_stale_staging(repository, model_name)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}{STAGING_MARK}", dir=repository))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes 0700; Triton may run as another user
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_atomically(
    repository: Path,
    model_name: str,
    info: ModelInfo,
    traced: torch.jit.ScriptModule,
    ckpt: _Checkpoint,
    config_text: str,
    trace_device: torch.device,
) -> None:
    import torch

    repository.mkdir(parents=True, exist_ok=True)
    target = model_dir(repository, model_name)
    with _staging_dir(repository, model_name) as staging:
        version = staging / VERSION
        version.mkdir()
        model_path = version / TORCHSCRIPT_FILE
        with _quiet_torchscript():
            torch.jit.save(traced, str(model_path))
        _check_saved(model_path, traced, ckpt, trace_device)
        (version / TOKENIZER_FILE).write_text(ckpt.tokenizer_json, encoding="utf-8")
        if info.backend == "python":
            shutil.copyfile(PYTHON_MODEL_SOURCE, version / PYTHON_MODEL_FILE)
        (version / INFO_FILE).write_text(info.to_json(), encoding="utf-8")
        (staging / CONFIG_FILE).write_text(config_text, encoding="utf-8")

        if not target.exists():
            os.rename(staging, target)
            return
        old = repository / f".{model_name}{REPLACED_MARK}{uuid.uuid4().hex}"
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        logger.info("replaced the previous model in %s", target)


def _check_saved(path: Path, traced: torch.jit.ScriptModule, ckpt: _Checkpoint, device: torch.device) -> None:
    """model.pt as written loads and gives what the verified trace gives."""
    import torch

    load: Callable[..., Any] = torch.jit.load  # untyped in torch's stubs
    with _quiet_torchscript():
        loaded = load(str(path), map_location=device)
    batch = _parity_batches(ckpt, device)[-1]
    with torch.inference_mode():
        diff = float(
            (loaded(batch.input_ids, batch.attention_mask) - traced(batch.input_ids, batch.attention_mask)).abs().max()
        )
    if diff > 1e-5:
        raise ExportError(f"{path} does not reproduce the verified trace (max |diff| {diff:.3g})")
