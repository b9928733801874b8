"""The benchmark's model: a full-size DistilBERT with random weights, exported once per dtype.

Random weights cost exactly what the real distilbert-base-uncased costs, and
need no network. Both are cached under bench/.cache (git-ignored); export is
a no-op when the weights are already in the repository, and only rewrites
config.pbtxt when the instance or thread settings change.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

from procs import SENTIMENT_SERVER

log = logging.getLogger("bench")
CACHE = Path(__file__).resolve().parent / ".cache"
MODEL_NAME = "sentiment"


def checkpoint() -> Path:
    path = CACHE / "distilbert-full-random"
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    from sentiment_server.tooling.checkpoints import build_tiny_checkpoint

    log.info("building a full-size DistilBERT checkpoint (random weights) in %s", path)
    staging = CACHE / "distilbert-full-random.partial"
    build_tiny_checkpoint(staging, full_size=True)
    staging.rename(path)
    return path


@functools.cache  # once per run and dtype: even a no-op export loads the checkpoint (seconds)
def export(dtype: str, args: tuple[str, ...] = ()) -> Path:
    """`sentiment-server export` of the checkpoint into bench/.cache/repo-<dtype>; returns the repository."""
    repository = CACHE / f"repo-{dtype}"
    command = [
        *SENTIMENT_SERVER,
        "export",
        "--checkpoint",
        str(checkpoint()),
        "--model-repository",
        str(repository),
        "--model-name",
        MODEL_NAME,
        "--dtype",
        dtype,
        *args,
    ]
    if dtype == "fp16":
        command += ["--device", "gpu"]
    log.info("export: %s", " ".join(command[4:]))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"export failed:\n{done.stderr[-3000:]}")
    return repository


def version_dir(repository: Path) -> Path:
    return repository / MODEL_NAME / "1"
