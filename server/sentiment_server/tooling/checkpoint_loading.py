"""Load a Hugging Face checkpoint for export: fp32 model, labels, limits, inputs, tokenizer.json, fingerprint.

`load_checkpoint` reads a Hub id or checkpoint directory into a `Checkpoint`
with everything the artifact records about it (`model_inputs`: whether the
model takes segment ids); `compute_fingerprint`
identifies what an export of it would hold, so a re-export can tell the same
model from a different one.

Requires the `export` extra (torch, transformers).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model_artifact import BASE_INPUTS, TOKEN_TYPE_IDS, classification_function
from .export_error import ExportError

if TYPE_CHECKING:
    import torch

FINGERPRINT_SCHEME = b"sentiment-server/fingerprint/v1\0"


@dataclass(frozen=True)
class Checkpoint:
    tokenizer: Any  # transformers PreTrainedTokenizerFast
    config: Any  # transformers PretrainedConfig
    model: Any  # transformers PreTrainedModel, fp32, eval mode, on CPU
    labels: list[str]
    problem_type: str
    max_length: int
    pad_token_id: int
    tokenizer_json: str
    inputs: tuple[str, ...]  # the traced forward()'s arguments, in order (model_inputs)


def load_checkpoint(source: str) -> Checkpoint:
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

    return Checkpoint(
        tokenizer=tokenizer,
        config=config,
        model=model,
        labels=labels,
        problem_type=problem_type,
        max_length=max_length,
        pad_token_id=int(pad_token_id),
        tokenizer_json=standalone_tokenizer_json(tokenizer),
        inputs=model_inputs(tokenizer, model),
    )


def model_inputs(tokenizer: Any, model: Any) -> tuple[str, ...]:
    """input_ids, attention_mask, and token_type_ids when the tokenizer produces them and the model takes them.

    RoBERTa's forward() takes token_type_ids but its tokenizer never makes
    them (one segment type); DistilBERT's forward() has none.
    """
    produced = TOKEN_TYPE_IDS in getattr(tokenizer, "model_input_names", ())
    accepted = TOKEN_TYPE_IDS in inspect.signature(model.forward).parameters
    return (*BASE_INPUTS, TOKEN_TYPE_IDS) if produced and accepted else BASE_INPUTS


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
    inputs: Sequence[str] = BASE_INPUTS,
) -> str:
    """sha256 over the fp32 weights, labels, problem type, tokenizer, dtype, backend, model inputs.

    The inputs count only when they are not the base two, so that exports of
    two-input models keep their fingerprints.
    """
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
    if tuple(inputs) != BASE_INPUTS:
        meta["inputs"] = list(inputs)
    digest.update(json.dumps(meta, sort_keys=True).encode())
    digest.update(b"\0tokenizer.json\0")
    digest.update(tokenizer_json)
    return digest.hexdigest()
