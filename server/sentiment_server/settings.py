"""One typed settings object per command, from flags and SENTIMENT_* variables.

Every field is a flag (`--max-batch-texts`) and an environment variable
(`SENTIMENT_MAX_BATCH_TEXTS`); a flag wins over the variable, the variable over
the default. Nothing is read at import time: `parse_settings` runs once, at the
entry point.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .core.batch_costs import PLANNING_OVERHEAD_TOKENS
from .model_artifact import BACKENDS, DTYPES

ENV_PREFIX = "SENTIMENT_"
DEFAULT_CHECKPOINT = "distilbert-base-uncased-finetuned-sst-2-english"

T = TypeVar("T")


def _opt(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class ModelSettings:
    """Where the exported model lives; shared by every command."""

    model_repository: Path = _opt(Path("model_repository"), "Triton model repository directory")
    model_name: str = _opt("sentiment", "Triton model name (serve, up: the default model, for calls that name none)")


@dataclass(frozen=True)
class ExportSettings(ModelSettings):
    checkpoint: str = _opt(DEFAULT_CHECKPOINT, "Hugging Face Hub id or local checkpoint directory")
    backend: str = _opt("python", "Triton backend for model.pt", BACKENDS)
    dtype: str = _opt("fp32", "weights dtype in Triton (int8: quantized Linear layers, CPU)", DTYPES)
    device: str = _opt("cpu", "where Triton runs the model", ("cpu", "gpu"))
    max_batch_size: int = _opt(64, "Triton max_batch_size")
    # One single-threaded instance per CPU core beats one instance using every
    # core: no thread barriers for the front-end to stall (docs/performance.md).
    # `auto` takes the split of cores from core_budget.
    instance_count: str = _opt(
        "auto",
        "Triton model instances, a number or auto (auto: CPU, one per core the front-end leaves; GPU, one per GPU)",
    )
    torch_threads: str = _opt(
        "auto", "intra-op threads per instance, a number or auto (auto: 1; 0 = torch default: every core)"
    )
    force: bool = _opt(False, "overwrite a different model already in the repository")


@dataclass(frozen=True)
class TritonSettings(ModelSettings):
    triton_host: str = _opt("127.0.0.1", "address the embedded Triton binds")
    triton_port: int = _opt(8001, "gRPC port of the embedded Triton (0 = any free port)")
    triton_metrics_port: int = _opt(0, "metrics port of the embedded Triton (0 = any free port)")
    triton_ready_timeout_s: float = _opt(120.0, "seconds to wait for the model to become ready")
    triton_max_restarts: int = _opt(5, "crashes of the embedded Triton restarted within the window; one more: exit 1")
    triton_restart_window_s: float = _opt(300.0, "window for --triton-max-restarts, in seconds")


@dataclass(frozen=True)
class ServeSettings(ModelSettings):
    host: str = _opt("127.0.0.1", "address the gRPC front-end binds")
    port: int = _opt(50051, "gRPC port of the front-end (0 = any free port)")
    triton_url: str = _opt("127.0.0.1:8001", "Triton gRPC endpoint(s), comma-separated")
    workers: str = _opt(
        "auto",
        "front-end processes sharing the port (auto: one per core on a GPU host; on a CPU host one per 8 cores, "
        "at least 1, the model needs the rest)",
    )
    # Models and versions.
    models: str = _opt("", "models to serve, comma-separated (empty = every model in the repository)")
    admin_port: int = _opt(50052, "loopback port of the admin service: rollout, rollback (-1 = off, 0 = any)")
    triton_model_control: bool = _opt(
        False, "load and unload versions in Triton on rollout (explicit model control; up: on); off: follow Triton"
    )
    version_poll_s: float = _opt(
        5.0, "how often a front-end that follows Triton looks for a newer ready version, in seconds (0 = never)"
    )
    # Coalescing: concurrent requests merge into one Triton batch.
    max_batch_texts: int = _opt(64, "most texts in one Triton batch")
    max_batch_tokens: int = _opt(8192, "most padded tokens in one Triton batch")
    max_wait_ms: float = _opt(5.0, "longest a batch waits to fill while another batch is running")
    max_concurrent_batches: str = _opt(
        "auto", "Triton batches in flight: a number per endpoint, or auto (one per model instance Triton reports)"
    )
    batch_overhead_tokens: str = _opt(
        str(PLANNING_OVERHEAD_TOKENS),
        "a Triton pass's fixed cost in padded tokens, for planning batches: a number (a CPU model's), or auto "
        "(learned from the batches' times, for a GPU)",
    )
    result_cache_entries: int = _opt(0, "texts whose logits are kept to answer repeats without Triton (0 = off)")
    # Admission and per-request limits, checked before tokenizing.
    max_texts_per_request: int = _opt(256, "most texts in one request")
    max_chars_per_text: int = _opt(100_000, "most characters in one text (or one side of a pair)")
    max_windows_per_text: int = _opt(64, "most windows one text may need with truncation strategy WINDOW")
    max_windows_per_request: int = _opt(512, "most windows one request may need with truncation strategy WINDOW")
    max_message_bytes: int = _opt(4 * 1024 * 1024, "largest request message")
    max_inflight_requests: int = _opt(512, "requests admitted at once; more get RESOURCE_EXHAUSTED")
    max_inflight_texts: int = _opt(8192, "texts admitted at once; more get RESOURCE_EXHAUSTED")
    # Triton calls.
    triton_timeout_s: float = _opt(30.0, "cap on one Triton call's deadline")
    triton_streams: bool = _opt(True, "send batches on open gRPC streams to Triton (false: a unary call each)")
    triton_retry_s: float = _opt(
        20.0, "how long a batch keeps retrying while Triton is unavailable (a restart), within its deadline"
    )
    deadline_margin_ms: float = _opt(5.0, "time kept back from the caller's deadline for the reply")
    health_poll_s: float = _opt(0.5, "how often Triton's model readiness is checked")
    startup_timeout_s: float = _opt(120.0, "how long start-up waits for Triton to have the model ready")
    # Shutdown.
    grace_s: float = _opt(10.0, "seconds calls in flight get to finish on SIGTERM")
    # Security.
    api_key: str = _opt("", "require this key in the x-api-key metadata (empty = off)")
    tls_cert: str = _opt("", "PEM server certificate (enables TLS)")
    tls_key: str = _opt("", "PEM server private key")
    tls_client_ca: str = _opt("", "PEM CA bundle; when set, clients must present a certificate (mTLS)")
    reflection: bool = _opt(True, "serve gRPC server reflection")
    triton_tls: bool = _opt(False, "use TLS on the channel to Triton (a remote Triton)")
    triton_tls_ca: str = _opt("", "PEM CA bundle that signed Triton's certificate (empty = system roots)")
    triton_tls_cert: str = _opt("", "PEM client certificate for mTLS to Triton")
    triton_tls_key: str = _opt("", "PEM client private key for mTLS to Triton")
    # Observability.
    metrics_port: int = _opt(-1, "Prometheus /metrics port on the front-end host (-1 = off, 0 = any)")
    log_format: str = _opt("text", "log format", ("text", "json"))
    access_log: bool = _opt(False, "log every call: request id, method, status, texts, milliseconds")
    otel: bool = _opt(False, "OpenTelemetry spans per call, trace context passed to Triton (OTEL_* configure export)")
    log_level: str = _opt("INFO", "log level", ("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class UpSettings(ServeSettings, ExportSettings, TritonSettings):
    """`up`: export when needed, embedded Triton, front-end."""

    triton_port: int = _opt(0, "gRPC port of the embedded Triton (0 = any free port)")
    triton_model_control: bool = _opt(True, "load and unload versions in the embedded Triton on rollout")
    offline_demo: bool = _opt(True, "serve a locally built demo model when the Hub cannot be reached")


@dataclass(frozen=True)
class VersionsSettings(ModelSettings):
    """`versions`: a model's exported versions, and which ones its config.pbtxt has Triton serve."""

    serve: str = _opt("", "set the versions Triton serves, comma-separated (empty = only list them)")


@dataclass(frozen=True)
class AdminSettings:
    """`rollout` and `rollback`: a request to a running front-end's admin port."""

    admin_url: str = _opt("127.0.0.1:50052", "the front-end's admin port (serve/up --admin-port)")
    model: str = _opt("", "the model to switch (empty = the default model)")
    version: str = _opt("", "rollout: the version to serve (empty = the newest in the model repository)")
    allow_label_change: bool = _opt(False, "switch even when the version's label set differs from the current one")
    api_key: str = _opt("", "the front-end's API key, when it has one")
    timeout_s: float = _opt(600.0, "how long to wait for the switch (loading, checking, draining the old version)")


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _convert(kind: type, text: str) -> Any:
    if kind is bool:
        return _parse_bool(text)
    return kind(text)


def _field_type(f: dataclasses.Field[Any]) -> type:
    # Annotations are strings under `from __future__ import annotations`.
    names = {"str": str, "int": int, "float": float, "bool": bool, "Path": Path}
    return names[str(f.type)]


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one flag per settings field; defaults stay None so env vars can apply."""
    for f in dataclasses.fields(cls):
        kind = _field_type(f)
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default}]"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(
                flag, dest=f.name, default=None, type=kind, choices=f.metadata["choices"], help=help_text
            )


def settings_from(cls: type[T], args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> T:
    """Build `cls` from parsed flags, then the environment, then the defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = flag_value
            continue
        text = env.get(env_name(f.name))
        if text is None:
            continue
        try:
            value = _convert(_field_type(f), text)
        except ValueError as exc:
            raise SystemExit(f"invalid {env_name(f.name)}={text!r}: {exc}") from None
        choices = f.metadata["choices"]
        if choices and value not in choices:
            raise SystemExit(f"invalid {env_name(f.name)}={text!r}: choose from {', '.join(choices)}")
        values[f.name] = value
    return cls(**values)


def pick(cls: type[T], source: Any) -> T:
    """The fields of `cls` taken from a wider settings object (e.g. UpSettings -> ServeSettings)."""
    return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
