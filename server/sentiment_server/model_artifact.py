"""The layout of one exported model in a Triton model repository.

`export` writes it, the front-end reads it. Triton ignores the extra files in
the version directory; they travel with `model.pt` so the tokenizer and labels
can never drift from the weights.

    <repository>/<model_name>/config.pbtxt
    <repository>/<model_name>/<version>/model.pt          TorchScript: (input_ids, attention_mask[, token_type_ids])
    <repository>/<model_name>/<version>/model.py          Python backend only
    <repository>/<model_name>/<version>/tokenizer.json    the checkpoint's own fast tokenizer
    <repository>/<model_name>/<version>/model_info.json   ModelInfo below
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"  # segment ids: only models whose tokenizer produces them take them
BASE_INPUTS = (INPUT_IDS, ATTENTION_MASK)
# The libtorch backend maps outputs by the `<name>__<index>` convention; the
# Python backend accepts any name. One name for both keeps the front-end blind
# to the backend.
LOGITS = "logits__0"

CONFIG_FILE = "config.pbtxt"
TORCHSCRIPT_FILE = "model.pt"
PYTHON_MODEL_FILE = "model.py"
TOKENIZER_FILE = "tokenizer.json"
INFO_FILE = "model_info.json"

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
BACKENDS = ("python", "pytorch")
DTYPES = ("fp32", "bf16", "fp16", "int8")  # int8: dynamically quantized Linear layers, CPU


def uses_sigmoid(problem_type: str | None, num_labels: int) -> bool:
    """Whether logits become probabilities by sigmoid (else softmax), as transformers' pipeline picks.

    The pipeline applies a sigmoid when problem_type is multi-label or when
    there is a single label (regression checkpoints included), and a softmax
    otherwise.
    """
    return problem_type == MULTI_LABEL or num_labels == 1


def classification_function(problem_type: str | None, num_labels: int) -> str:
    """The ModelInfo.problem_type of a checkpoint: MULTI_LABEL (sigmoid) or SINGLE_LABEL (softmax)."""
    return MULTI_LABEL if uses_sigmoid(problem_type, num_labels) else SINGLE_LABEL


@dataclass(frozen=True)
class ModelInfo:
    """What the front-end must know about the exported model."""

    model_name: str
    source: str  # Hub id or local directory name the model was exported from
    labels: list[str]  # id2label in id order
    problem_type: str  # SINGLE_LABEL or MULTI_LABEL
    max_length: int  # tokens per text, special tokens included
    pad_token_id: int
    backend: str
    dtype: str
    fingerprint: str  # identifies weights + tokenizer + labels + dtype
    demo: bool = False  # random weights built locally: labels mean nothing
    version: str = "1"
    extra: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=lambda: list(BASE_INPUTS))  # model.pt's forward() arguments

    @property
    def takes_token_type_ids(self) -> bool:
        return TOKEN_TYPE_IDS in self.inputs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        return cls(**data)


def model_dir(repository: Path, model_name: str) -> Path:
    return repository / model_name


def version_dir(repository: Path, model_name: str, version: str = "1") -> Path:
    return repository / model_name / version


def read_model_info(repository: Path, model_name: str, version: str = "1") -> ModelInfo:
    path = version_dir(repository, model_name, version) / INFO_FILE
    return ModelInfo.from_json(path.read_text(encoding="utf-8"))


def has_model(repository: Path, model_name: str, version: str = "1") -> bool:
    vdir = version_dir(repository, model_name, version)
    return (vdir / INFO_FILE).is_file() and (vdir / TORCHSCRIPT_FILE).is_file()
