"""The layout of exported models in a Triton model repository, and which versions are served.

`export` writes it, the front-end reads it. Triton ignores the extra files in
the version directory; they travel with `model.pt` so the tokenizer and labels
can never drift from the weights.

    <repository>/<model_name>/config.pbtxt                    one per model: shared by all its versions
    <repository>/<model_name>/<version>/model.pt          TorchScript: (input_ids, attention_mask[, token_type_ids])
    <repository>/<model_name>/<version>/model.py          Python backend only
    <repository>/<model_name>/<version>/tokenizer.json    the checkpoint's own fast tokenizer
    <repository>/<model_name>/<version>/model_info.json   ModelInfo below

A repository holds several models (`model_names`), each with one or more
versions: all-digit directory names 1, 2, ... (`model_versions`). The first
export of a model writes version 1; exporting a different checkpoint under the
same name stages the next version without serving it. Which versions Triton
loads is config.pbtxt's `version_policy` (`serving_versions`): export writes
`version_policy: { specific: { versions: [1] } }`, and a rollout switches it
with `set_serving_versions`. Triton's own policies (`latest`, `all`, and none,
which Triton reads as the newest version) are understood too. Without a
version, `read_model_info` and `has_model` mean the newest served version.

Each version's model_info.json also records the logits its model.pt gave at
export time on a few fixed texts (`ModelInfo.expected_*`): the front-end
replays them on a new version before it switches to it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
from collections.abc import Sequence
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

# A model's name: a directory of the repository, a Triton model name, a metric label.
MODEL_NAME_MAX_LENGTH = 64
# Anchored (\Z, not $: no trailing newline), so that .match and .fullmatch agree.
MODEL_NAME_RE = re.compile(rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX_LENGTH - 1}}}\Z")
_VERSION_RE = re.compile(r"[0-9]+")


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name a model (a message for the caller), or None when it can."""
    if MODEL_NAME_RE.fullmatch(name):
        return None
    if len(name) > MODEL_NAME_MAX_LENGTH:
        return f"model name {name[:20]!r}... is {len(name)} characters long; at most {MODEL_NAME_MAX_LENGTH}"
    return (
        f"model name {name!r} must be letters, digits, '_', '.', '-' (at most {MODEL_NAME_MAX_LENGTH}) "
        "and must not start with '.' or '-'"
    )


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
    # Export-time reference answers: model.pt's logits on each of expected_texts (one text per batch,
    # truncated to max_length, unpadded), to within expected_atol. Empty in exports older than versions.
    expected_texts: list[str] = field(default_factory=list)
    expected_logits: list[list[float]] = field(default_factory=list)
    expected_atol: float = 0.0

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


def _version_key(version: str) -> tuple[int, str]:
    return int(version), version


def model_versions(repository: Path, model_name: str) -> list[str]:
    """The model's exported versions: all-digit directories holding model_info.json and model.pt, oldest first."""
    try:
        entries = list(model_dir(repository, model_name).iterdir())
    except OSError:
        return []
    versions = [
        p.name
        for p in entries
        if _VERSION_RE.fullmatch(p.name) and (p / INFO_FILE).is_file() and (p / TORCHSCRIPT_FILE).is_file()
    ]
    return sorted(versions, key=_version_key)


def model_names(repository: Path) -> list[str]:
    """The repository's models: directories (not hidden) with a config.pbtxt and at least one version."""
    try:
        entries = list(repository.iterdir())
    except OSError:
        return []
    return sorted(
        p.name
        for p in entries
        if not p.name.startswith(".")
        and p.is_dir()
        and (p / CONFIG_FILE).is_file()
        and model_versions(repository, p.name)
    )


# --------------------------------------------------------------------------- config.pbtxt's version_policy


@dataclass(frozen=True)
class VersionPolicy:
    """config.pbtxt's `version_policy`, as Triton reads it: "latest" (the newest num_versions), "all", "specific"."""

    kind: str = "latest"
    num_versions: int = 1  # kind "latest"
    versions: tuple[int, ...] = ()  # kind "specific"

    def select(self, available: Sequence[str]) -> list[str]:
        """The versions of `available` (model_versions: oldest first) this policy serves, oldest first."""
        if self.kind == "all":
            return list(available)
        if self.kind == "specific":
            wanted = set(self.versions)
            return [v for v in available if int(v) in wanted]
        return list(available[-self.num_versions :]) if self.num_versions > 0 else []


_POLICY_START_RE = re.compile(r"\bversion_policy\s*:?\s*[{<]")
_CLOSING = {"{": "}", "<": ">"}
# One `versions: [1, 2]` or `versions: 1` of a specific policy (text format may repeat the field).
_SPECIFIC_ITEM = r"\s*versions\s*:\s*(?:\[([0-9,\s]*)\]|([0-9]+))\s*[,;]?"


def _masked(text: str, *, strings: bool = True) -> str:
    """`text` with comments (and with `strings`, the contents of quoted strings) blanked, character for character."""
    out = list(text)
    quote: str | None = None
    i = 0
    while i < len(text):
        ch = text[i]
        if quote is not None:
            if ch == "\\" and i + 1 < len(text):
                if strings:
                    out[i] = out[i + 1] = " "
                i += 2
                continue
            if ch == quote:
                quote = None
            elif strings and ch != "\n":
                out[i] = " "
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            while i < len(text) and text[i] != "\n":
                out[i] = " "
                i += 1
            continue
        i += 1
    return "".join(out)


def _policy_span(masked: str) -> tuple[int, int] | None:
    """Where the top-level `version_policy { ... }` field is in `masked` (start, end), or None without one."""
    for match in _POLICY_START_RE.finditer(masked):
        before = masked[: match.start()]
        if sum(before.count(c) for c in "{<") != sum(before.count(c) for c in "}>"):
            continue  # a field of that name inside another message
        opening = masked[match.end() - 1]
        depth = 0
        for j in range(match.end() - 1, len(masked)):
            if masked[j] in "{<":
                depth += 1
            elif masked[j] in "}>":
                depth -= 1
                if depth == 0:
                    if masked[j] != _CLOSING[opening]:
                        break
                    return match.start(), j + 1
        raise ValueError("config.pbtxt: unbalanced braces in version_policy")
    return None


def parse_version_policy(config_text: str) -> VersionPolicy:
    """config.pbtxt's version_policy; a config without one reads as Triton's default, the newest version.

    Raises ValueError for a version_policy this cannot read.
    """
    masked = _masked(config_text)
    span = _policy_span(masked)
    if span is None:
        return VersionPolicy()
    opening = _POLICY_START_RE.match(masked, span[0])
    assert opening is not None  # where _policy_span found it
    body = masked[opening.end() : span[1] - 1]
    written = config_text[span[0] : span[1]]
    if re.fullmatch(r"\s*all\s*:?\s*(\{\s*\}|<\s*>)\s*[,;]?\s*", body):
        return VersionPolicy(kind="all")
    latest = re.fullmatch(r"\s*latest\s*:?\s*[{<]\s*(?:num_versions\s*:\s*([0-9]+)\s*[,;]?\s*)?[}>]\s*[,;]?\s*", body)
    if latest:
        num_versions = int(latest.group(1) or 0)
        if num_versions < 1:
            raise ValueError(f"config.pbtxt: version_policy {written!r} serves no version (num_versions < 1)")
        return VersionPolicy(kind="latest", num_versions=num_versions)
    specific = re.fullmatch(r"\s*specific\s*:?\s*[{<](.*)[}>]\s*[,;]?\s*", body, flags=re.DOTALL)
    if specific and re.fullmatch(rf"(?:{_SPECIFIC_ITEM})*\s*", specific.group(1)):
        versions: set[int] = set()
        for listed, single in re.findall(_SPECIFIC_ITEM, specific.group(1)):
            versions.update(int(v) for v in (listed.replace(",", " ").split() if single == "" else [single]))
        return VersionPolicy(kind="specific", versions=tuple(sorted(versions)))
    raise ValueError(f"config.pbtxt: cannot read version_policy {written!r}")


def render_version_policy(versions: Sequence[str | int]) -> str:
    """The config.pbtxt line that serves exactly `versions`."""
    numbers = sorted({int(v) for v in versions})
    return f"version_policy: {{ specific: {{ versions: [{', '.join(str(n) for n in numbers)}] }} }}"


def version_policy_text(config_text: str) -> str | None:
    """The version_policy field as written in `config_text` (comments inside it included), or None."""
    span = _policy_span(_masked(config_text))
    return None if span is None else config_text[span[0] : span[1]]


def replace_version_policy(config_text: str, policy: str | None) -> str:
    """`config_text` with its version_policy field replaced by `policy` (None: removed; added when missing)."""
    masked = _masked(config_text)
    span = _policy_span(masked)
    if span is not None:
        start, end = span
        if policy is not None:
            return config_text[:start] + policy + config_text[end:]
        # Removed with its line when it had one to itself.
        line_start = config_text.rfind("\n", 0, start) + 1
        line_end = config_text.find("\n", end)
        line_end = len(config_text) if line_end < 0 else line_end + 1
        if not masked[line_start:start].strip() and not masked[end:line_end].strip():
            return config_text[:line_start] + config_text[line_end:]
        return config_text[:start] + config_text[end:]
    if policy is None:
        return config_text
    # After the top-level max_batch_size line (where export writes it), else at the end.
    anchor = re.search(r"^[ \t]*max_batch_size\s*:[^\n]*\n", masked, flags=re.MULTILINE)
    at = anchor.end() if anchor else len(config_text)
    prefix = config_text[:at]
    if prefix and not prefix.endswith("\n"):
        prefix += "\n"
    return prefix + policy + "\n" + config_text[at:]


def config_without_version_policy(config_text: str) -> str:
    """`config_text` without comments, version_policy and blank lines, each line stripped: to compare configs."""
    masked = _masked(replace_version_policy(config_text, None), strings=False)
    return "\n".join(line.strip() for line in masked.splitlines() if line.strip())


def serving_versions(repository: Path, model_name: str) -> list[str]:
    """The versions config.pbtxt's version_policy serves, of those exported (model_versions), oldest first.

    Raises OSError without a readable config.pbtxt and ValueError for a version_policy this cannot read.
    """
    text = (model_dir(repository, model_name) / CONFIG_FILE).read_text(encoding="utf-8")
    return parse_version_policy(text).select(model_versions(repository, model_name))


def set_serving_versions(repository: Path, model_name: str, versions: Sequence[str]) -> None:
    """Serve exactly `versions` (exported ones, see model_versions): config.pbtxt's version_policy, replaced atomically.

    Triton (explicit model control) applies it at the model's next load. Raises ValueError for an empty
    list or a version that is not exported, OSError without a config.pbtxt.
    """
    available = {int(v): v for v in model_versions(repository, model_name)}
    if not versions:
        raise ValueError(f"{model_name}: at least one version must be served")
    missing = [v for v in versions if not (_VERSION_RE.fullmatch(str(v)) and int(v) in available)]
    if missing:
        raise ValueError(
            f"{model_name}: no exported version {', '.join(map(repr, missing))} "
            f"(exported: {', '.join(sorted(available.values(), key=_version_key)) or 'none'})"
        )
    path = model_dir(repository, model_name) / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    updated = replace_version_policy(text, render_version_policy(versions))
    if updated == text:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(updated, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _default_version(repository: Path, model_name: str) -> str:
    """The newest served version; the newest exported one when the config names none (or cannot be read)."""
    try:
        served = serving_versions(repository, model_name)
    except (OSError, ValueError):
        served = []
    if served:
        return served[-1]
    exported = model_versions(repository, model_name)
    return exported[-1] if exported else "1"


def read_model_info(repository: Path, model_name: str, version: str | None = None) -> ModelInfo:
    """The ModelInfo of `version`; None: the newest served version (see the module docstring)."""
    if version is None:
        version = _default_version(repository, model_name)
    path = version_dir(repository, model_name, version) / INFO_FILE
    return ModelInfo.from_json(path.read_text(encoding="utf-8"))


def has_model(repository: Path, model_name: str, version: str | None = None) -> bool:
    """Whether `version` (None: the newest served one) is exported: model_info.json and model.pt."""
    if version is None:
        version = _default_version(repository, model_name)
    vdir = version_dir(repository, model_name, version)
    return (vdir / INFO_FILE).is_file() and (vdir / TORCHSCRIPT_FILE).is_file()
