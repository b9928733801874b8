"""Connection settings (with environment defaults) and the channels built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import grpc
from grpc import aio

DEFAULT_TARGET = "127.0.0.1:50051"
API_KEY_HEADER = "x-api-key"


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _env_flag(name: str) -> bool:
    return (_env(name) or "").lower() in {"1", "true", "yes", "on"}


def _env_float(name: str, default: float) -> float:
    value = _env(name)
    return float(value) if value else default


@dataclass(frozen=True)
class ClientOptions:
    """How to reach the service. Unset fields fall back to the `SENTIMENT_*` environment."""

    target: str = field(default_factory=lambda: _env("SENTIMENT_TARGET") or DEFAULT_TARGET)
    timeout_s: float = field(default_factory=lambda: _env_float("SENTIMENT_TIMEOUT", 10.0))
    api_key: str | None = field(default_factory=lambda: _env("SENTIMENT_API_KEY"))
    # TLS is on when `tls` is set or any certificate path is given.
    tls: bool = field(default_factory=lambda: _env_flag("SENTIMENT_CLIENT_TLS"))
    ca_cert: str | None = field(default_factory=lambda: _env("SENTIMENT_CLIENT_TLS_CA"))
    client_cert: str | None = field(default_factory=lambda: _env("SENTIMENT_CLIENT_TLS_CERT"))
    client_key: str | None = field(default_factory=lambda: _env("SENTIMENT_CLIENT_TLS_KEY"))
    server_name_override: str | None = None
    # Retries (UNAVAILABLE only): exponential backoff with full jitter, within the deadline.
    max_attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be given together")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")

    @property
    def use_tls(self) -> bool:
        return self.tls or any((self.ca_cert, self.client_cert, self.client_key))

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call."""
        return ((API_KEY_HEADER, self.api_key),) if self.api_key else ()


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def channel_credentials(options: ClientOptions) -> grpc.ChannelCredentials:
    """TLS credentials: the CA (system roots if unset) and, for mTLS, the client cert and key."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(options.ca_cert),
        private_key=_read(options.client_key),
        certificate_chain=_read(options.client_cert),
    )


def _channel_args(options: ClientOptions) -> list[tuple[str, str]]:
    if options.server_name_override:
        return [("grpc.ssl_target_name_override", options.server_name_override)]
    return []


def create_channel(options: ClientOptions) -> grpc.Channel:
    if options.use_tls:
        return grpc.secure_channel(options.target, channel_credentials(options), options=_channel_args(options))
    return grpc.insecure_channel(options.target, options=_channel_args(options))


def create_aio_channel(options: ClientOptions) -> aio.Channel:
    if options.use_tls:
        return aio.secure_channel(options.target, channel_credentials(options), options=_channel_args(options))
    return aio.insecure_channel(options.target, options=_channel_args(options))
