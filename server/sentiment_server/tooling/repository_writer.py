"""Write one model's directory, or one more version of it, in a Triton model repository, never half of it.

Either is assembled in a hidden staging directory next to the model's
directory and renamed into place, so Triton (or the front-end) never sees half
an export: a whole model directory (version 1 and config.pbtxt) for a new
model, a version directory for a new version of an existing one. Also reads
back what earlier exports left there, and brings a version's serving files
(config.pbtxt, model.py) up to date in place.
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
    model_versions,
    version_dir,
)
from .export_error import ExportError

logger = logging.getLogger(__name__)

VERSION = "1"
# Hidden working directories next to the model directory (see _staging_dir).
STAGING_MARK = ".export-"
REPLACED_MARK = ".replaced-"
STALE_STAGING_S = 3600.0


def existing_infos(repository: Path, model_name: str) -> dict[str, ModelInfo]:
    """The ModelInfo of each exported version of the model, oldest first (unreadable ones left out)."""
    infos = {}
    for version in model_versions(repository, model_name):
        path = version_dir(repository, model_name, version) / INFO_FILE
        try:
            infos[version] = ModelInfo.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("%s is unreadable: %s", path, exc)
    return infos


def next_version(target: Path) -> str:
    """One more than the newest all-digit directory in the model directory `target`, complete or not."""
    numbers = [int(p.name) for p in target.iterdir() if p.name.isdigit() and p.is_dir()] if target.is_dir() else []
    return str(max(numbers, default=0) + 1)


def replace_file(path: Path, text: str) -> None:
    """Write `path` by a rename, so that a reader sees the old text or the new one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def refresh_serving_files(target: Path, config_text: str, backend: str, version: str = VERSION) -> None:
    """Same weights: bring config.pbtxt (batch size, instances, ...) and `version`'s model.py up to date."""
    wanted = {target / CONFIG_FILE: config_text}
    if backend == "python":
        wanted[target / version / PYTHON_MODEL_FILE] = PYTHON_MODEL_SOURCE.read_text(encoding="utf-8")
    for path, text in wanted.items():
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        replace_file(path, text)
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


def _write_version(
    directory: Path, backend: str, tokenizer_json: str, write_weights: Callable[[Path], ModelInfo]
) -> ModelInfo:
    """Fill the (new, empty) version `directory`: model.pt first, model_info.json last."""
    directory.mkdir()
    info = write_weights(directory / TORCHSCRIPT_FILE)
    (directory / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    if backend == "python":
        shutil.copyfile(PYTHON_MODEL_SOURCE, directory / PYTHON_MODEL_FILE)
    (directory / INFO_FILE).write_text(info.to_json(), encoding="utf-8")
    return info


def write_atomically(
    repository: Path,
    model_name: str,
    *,
    backend: str,
    config_text: str,
    tokenizer_json: str,
    write_weights: Callable[[Path], ModelInfo],
) -> ModelInfo:
    """Write the model directory (version 1 and config.pbtxt), replacing any previous one in a single rename.

    `write_weights(path)` writes model.pt to `path` and returns the ModelInfo to
    record (it may raise to abandon the export); nothing is visible in the
    repository until every file is written.
    """
    repository.mkdir(parents=True, exist_ok=True)
    target = model_dir(repository, model_name)
    with _staging_dir(repository, model_name) as staging:
        info = _write_version(staging / VERSION, backend, tokenizer_json, write_weights)
        (staging / CONFIG_FILE).write_text(config_text, encoding="utf-8")

        if not target.exists():
            os.rename(staging, target)
            return info
        old = repository / f".{model_name}{REPLACED_MARK}{uuid.uuid4().hex}"
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        logger.info("replaced the previous model in %s", target)
        return info


def write_version_atomically(
    repository: Path,
    model_name: str,
    version: str,
    *,
    backend: str,
    tokenizer_json: str,
    write_weights: Callable[[Path], ModelInfo],
) -> ModelInfo:
    """Add version directory `version` to an existing model in a single rename; config.pbtxt is not touched.

    As write_atomically; ExportError when `version` appeared meanwhile (another export).
    """
    target = version_dir(repository, model_name, version)
    with _staging_dir(repository, model_name) as staging:
        info = _write_version(staging / version, backend, tokenizer_json, write_weights)
        if target.exists():
            raise ExportError(f"{target} appeared while this export ran (another export?); export again")
        try:
            os.rename(staging / version, target)  # fails if a directory of that name appeared meanwhile
        except OSError as exc:
            raise ExportError(f"cannot move the new version into {target}: {exc}") from exc
        return info
