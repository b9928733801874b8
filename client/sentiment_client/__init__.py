"""Typed Python client (sync + asyncio) for the sentiment.v1 gRPC service."""

from .client import AsyncSentimentClient, SentimentClient
from .errors import SentimentError
from .options import ClientOptions, channel_credentials, create_aio_channel, create_channel
from .types import (
    Classification,
    ClassifyResult,
    LabelScore,
    ModelInfo,
    Timings,
    TokenizedText,
)

__all__ = [
    "AsyncSentimentClient",
    "Classification",
    "ClassifyResult",
    "ClientOptions",
    "LabelScore",
    "ModelInfo",
    "SentimentClient",
    "SentimentError",
    "Timings",
    "TokenizedText",
    "channel_credentials",
    "create_aio_channel",
    "create_channel",
]
