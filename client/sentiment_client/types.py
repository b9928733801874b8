"""Immutable results of the service's calls, converted from the protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass

from sentiment.v1 import sentiment_pb2 as pb


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float
    label_id: int

    @classmethod
    def from_proto(cls, msg: pb.LabelScore) -> LabelScore:
        return cls(label=msg.label, score=msg.score, label_id=msg.label_id)


@dataclass(frozen=True)
class WindowResult:
    """One window of a long text (truncation "window"): all its labels, best first, and its span.

    `start_token`/`end_token` index the text's tokens without special tokens, end exclusive;
    `num_tokens` counts the window's tokens as the model saw them, special tokens included.
    """

    scores: tuple[LabelScore, ...]
    start_token: int
    end_token: int
    num_tokens: int

    @property
    def label(self) -> str:
        return self.scores[0].label

    @property
    def score(self) -> float:
        return self.scores[0].score

    @classmethod
    def from_proto(cls, msg: pb.WindowResult) -> WindowResult:
        return cls(
            scores=tuple(LabelScore.from_proto(s) for s in msg.scores),
            start_token=msg.start_token,
            end_token=msg.end_token,
            num_tokens=msg.num_tokens,
        )


@dataclass(frozen=True)
class Classification:
    """The best label and score of one text (or pair), then the top-k (or all) labels, best first.

    With truncation "window": `num_windows` windows were aggregated into this answer, `truncated`
    is False, and `windows` holds each window's answer when `return_windows` was asked for.
    """

    label: str
    score: float
    scores: tuple[LabelScore, ...]
    logits: tuple[float, ...]
    num_tokens: int
    truncated: bool
    num_windows: int = 1
    windows: tuple[WindowResult, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.Classification) -> Classification:
        return cls(
            label=msg.label,
            score=msg.score,
            scores=tuple(LabelScore.from_proto(s) for s in msg.scores),
            logits=tuple(msg.logits),
            num_tokens=msg.num_tokens,
            truncated=msg.truncated,
            num_windows=msg.num_windows,
            windows=tuple(WindowResult.from_proto(w) for w in msg.windows),
        )


@dataclass(frozen=True)
class Timings:
    """Server-side timings of one call, in microseconds."""

    tokenize_us: int
    queue_us: int
    inference_us: int
    total_us: int

    @classmethod
    def from_proto(cls, msg: pb.Timings) -> Timings:
        return cls(msg.tokenize_us, msg.queue_us, msg.inference_us, msg.total_us)


@dataclass(frozen=True)
class ClassifyResult:
    """One Classify call: one `Classification` per text, in request order."""

    results: tuple[Classification, ...]
    model_name: str
    model_version: str
    request_id: str
    timings: Timings

    @classmethod
    def from_proto(cls, msg: pb.ClassifyResponse) -> ClassifyResult:
        return cls(
            results=tuple(Classification.from_proto(c) for c in msg.results),
            model_name=msg.model_name,
            model_version=msg.model_version,
            request_id=msg.request_id,
            timings=Timings.from_proto(msg.timings),
        )


@dataclass(frozen=True)
class TokenizedText:
    """One text (or pair) as the model sees it.

    `token_type_ids`: segment ids, only for models that take them (`ModelInfo.inputs`).
    `overflowing`: with truncation "window", the windows after the first (this one).
    """

    input_ids: tuple[int, ...]
    attention_mask: tuple[int, ...]
    tokens: tuple[str, ...]
    truncated: bool
    token_type_ids: tuple[int, ...] = ()
    overflowing: tuple[TokenizedText, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.TokenizedText) -> TokenizedText:
        return cls(
            input_ids=tuple(msg.input_ids),
            attention_mask=tuple(msg.attention_mask),
            tokens=tuple(msg.tokens),
            truncated=msg.truncated,
            token_type_ids=tuple(msg.token_type_ids),
            overflowing=tuple(TokenizedText.from_proto(o) for o in msg.overflowing),
        )


def problem_type_name(value: pb.ProblemType) -> str:
    """`PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION` -> `"single_label_classification"`."""
    name: str = pb.ProblemType.Name(value)
    return name.removeprefix("PROBLEM_TYPE_").lower()


@dataclass(frozen=True)
class ModelInfo:
    model_name: str
    model_version: str
    source_checkpoint: str
    labels: tuple[str, ...]
    max_sequence_length: int
    problem_type: str  # "single_label_classification", "multi_label_classification" or "unspecified"
    backend: str
    dtype: str
    demo: bool
    inputs: tuple[str, ...] = ()  # input_ids, attention_mask, and token_type_ids where the model takes them

    @classmethod
    def from_proto(cls, msg: pb.GetModelInfoResponse) -> ModelInfo:
        return cls(
            model_name=msg.model_name,
            model_version=msg.model_version,
            source_checkpoint=msg.source_checkpoint,
            labels=tuple(msg.labels),
            max_sequence_length=msg.max_sequence_length,
            problem_type=problem_type_name(msg.problem_type),
            backend=msg.backend,
            dtype=msg.dtype,
            demo=msg.demo,
            inputs=tuple(msg.inputs),
        )


@dataclass(frozen=True)
class ModelSummary:
    """One served model, as ListModels describes it: pass `name` as a call's `model`."""

    name: str
    model_version: str  # the version answering new requests now
    labels: tuple[str, ...]  # in id order, for that version
    source_checkpoint: str
    ready: bool  # whether Triton has that version ready now

    @classmethod
    def from_proto(cls, msg: pb.ModelSummary) -> ModelSummary:
        return cls(
            name=msg.name,
            model_version=msg.model_version,
            labels=tuple(msg.labels),
            source_checkpoint=msg.source_checkpoint,
            ready=msg.ready,
        )


@dataclass(frozen=True)
class ModelList:
    """The models a server serves, sorted by name, and the one that answers an empty `model`."""

    models: tuple[ModelSummary, ...]
    default_model: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @classmethod
    def from_proto(cls, msg: pb.ListModelsResponse) -> ModelList:
        return cls(models=tuple(ModelSummary.from_proto(m) for m in msg.models), default_model=msg.default_model)
