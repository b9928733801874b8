"""Typed Python client (sync + asyncio) for the sentiment.v1 gRPC service."""

from .client import Aggregation, AsyncSentimentClient, PairTruncation, SentimentClient, Truncation
from .errors import SentimentError
from .options import ClientOptions, channel_credentials, create_aio_channel, create_channel
from .types import (
    Classification,
    ClassifyResult,
    LabelScore,
    ModelInfo,
    Timings,
    TokenizedText,
    WindowResult,
)

__all__ = [
    "Aggregation",
    "AsyncSentimentClient",
    "Classification",
    "ClassifyResult",
    "ClientOptions",
    "LabelScore",
    "ModelInfo",
    "PairTruncation",
    "SentimentClient",
    "SentimentError",
    "Timings",
    "TokenizedText",
    "Truncation",
    "WindowResult",
    "channel_credentials",
    "create_aio_channel",
    "create_channel",
]
