"""What the core needs from the outside: the model's files and a backend that runs it.

`create_server` takes both as arguments. Production passes the Triton pool and
the model read from the repository; tests pass a fake backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from ..model_artifact import TOKENIZER_FILE, ModelInfo, read_model_info, version_dir
from .tokenization import IdArray, TextTokenizer

Logits = npt.NDArray[np.float32]


class InferenceBackend(Protocol):
    """Runs the model on padded batches; the Triton pool in production."""

    @property
    def replicas(self) -> int:
        """Independent servers behind it: the coalescer keeps batches in flight on each."""
        ...

    @property
    def instances(self) -> int:
        """Model instances behind it, over every server: batches it runs at once."""
        ...

    async def infer(
        self, input_ids: IdArray, attention_mask: IdArray, deadline: float, token_type_ids: IdArray | None = None
    ) -> Logits:
        """Logits [batch, labels]; `deadline` is a time.monotonic() instant. Raises `errors.ServiceError`s.

        `token_type_ids` (same shape as input_ids) only for a model that takes them (`ModelInfo.inputs`).
        """
        ...

    async def refresh(self, timeout_s: float) -> bool:
        """Probe readiness now; True while the model can answer."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ServedModel:
    """One exported model version as the front-end uses it: its description and its tokenizer."""

    info: ModelInfo
    tokenizer: TextTokenizer

    @classmethod
    def load(cls, repository: Path, model_name: str, version: str | None = None) -> ServedModel:
        """`version` of the model (None: the newest version its config.pbtxt serves)."""
        info = read_model_info(repository, model_name, version)
        tokenizer_json = version_dir(repository, model_name, version or info.version) / TOKENIZER_FILE
        tokenizer = TextTokenizer(tokenizer_json, info.max_length, info.pad_token_id, info.takes_token_type_ids)
        return cls(info, tokenizer)
