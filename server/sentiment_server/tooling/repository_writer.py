"""Write one model's directory in a Triton model repository, never half of it.

The directory is assembled in a hidden staging directory next to the target
and renamed into place, so Triton (or the front-end) never sees half an
export. Also reads back what an earlier export left there, and brings its
serving files (config.pbtxt, model.py) up to date in place.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..backend import PYTHON_MODEL_SOURCE
from ..model_artifact import (
    CONFIG_FILE,
    INFO_FILE,
    PYTHON_MODEL_FILE,
    TOKENIZER_FILE,
    TORCHSCRIPT_FILE,
    ModelInfo,
    model_dir,
)

logger = logging.getLogger(__name__)

VERSION = "1"
# Hidden working directories next to the model directory (see _staging_dir).
STAGING_MARK = ".export-"
REPLACED_MARK = ".replaced-"
STALE_STAGING_S = 3600.0


def existing_info(target: Path) -> ModelInfo | None:
    """The ModelInfo of the model exported in `target`, or None when it holds none (or an unreadable one)."""
    path = target / VERSION / INFO_FILE
    if not (path.is_file() and (target / VERSION / TORCHSCRIPT_FILE).is_file()):
        return None
    try:
        return ModelInfo.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        logger.warning("%s is unreadable: %s", path, exc)
        return None


def refresh_serving_files(target: Path, config_text: str, backend: str) -> None:
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


def write_atomically(
    repository: Path,
    model_name: str,
    info: ModelInfo,
    *,
    config_text: str,
    tokenizer_json: str,
    write_weights: Callable[[Path], None],
) -> None:
    """Write the model directory, replacing any previous one in a single rename.

    `write_weights(path)` writes model.pt to `path` (and may raise to abandon
    the export); nothing is visible in the repository until every file is written.
    """
    repository.mkdir(parents=True, exist_ok=True)
    target = model_dir(repository, model_name)
    with _staging_dir(repository, model_name) as staging:
        version = staging / VERSION
        version.mkdir()
        write_weights(version / TORCHSCRIPT_FILE)
        (version / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
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
