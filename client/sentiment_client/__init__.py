"""Typed Python client (sync + asyncio) for the sentiment.v1 gRPC service."""

from .client import Aggregation, AsyncSentimentClient, PairTruncation, SentimentClient, Truncation
from .errors import SentimentError
from .options import ClientOptions, channel_credentials, create_aio_channel, create_channel
from .types import (
    Classification,
    ClassifyResult,
    LabelScore,
    ModelInfo,
    ModelList,
    ModelSummary,
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
    "ModelList",
    "ModelSummary",
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
