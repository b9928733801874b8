from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TruncationStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRUNCATION_STRATEGY_UNSPECIFIED: _ClassVar[TruncationStrategy]
    TRUNCATION_STRATEGY_TRUNCATE: _ClassVar[TruncationStrategy]
    TRUNCATION_STRATEGY_REJECT: _ClassVar[TruncationStrategy]
    TRUNCATION_STRATEGY_WINDOW: _ClassVar[TruncationStrategy]

class WindowAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WINDOW_AGGREGATION_UNSPECIFIED: _ClassVar[WindowAggregation]
    WINDOW_AGGREGATION_MEAN: _ClassVar[WindowAggregation]
    WINDOW_AGGREGATION_MEAN_LOGITS: _ClassVar[WindowAggregation]
    WINDOW_AGGREGATION_MAX: _ClassVar[WindowAggregation]

class ProblemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBLEM_TYPE_UNSPECIFIED: _ClassVar[ProblemType]
    PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION: _ClassVar[ProblemType]
    PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION: _ClassVar[ProblemType]
TRUNCATION_STRATEGY_UNSPECIFIED: TruncationStrategy
TRUNCATION_STRATEGY_TRUNCATE: TruncationStrategy
TRUNCATION_STRATEGY_REJECT: TruncationStrategy
TRUNCATION_STRATEGY_WINDOW: TruncationStrategy
WINDOW_AGGREGATION_UNSPECIFIED: WindowAggregation
WINDOW_AGGREGATION_MEAN: WindowAggregation
WINDOW_AGGREGATION_MEAN_LOGITS: WindowAggregation
WINDOW_AGGREGATION_MAX: WindowAggregation
PROBLEM_TYPE_UNSPECIFIED: ProblemType
PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION: ProblemType
PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION: ProblemType

class TruncationOptions(_message.Message):
    __slots__ = ("strategy", "max_length", "stride", "aggregation")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    strategy: TruncationStrategy
    max_length: int
    stride: int
    aggregation: WindowAggregation
    def __init__(self, strategy: _Optional[_Union[TruncationStrategy, str]] = ..., max_length: _Optional[int] = ..., stride: _Optional[int] = ..., aggregation: _Optional[_Union[WindowAggregation, str]] = ...) -> None: ...

class TextPair(_message.Message):
    __slots__ = ("text", "text_pair")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    text: str
    text_pair: str
    def __init__(self, text: _Optional[str] = ..., text_pair: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("texts", "top_k", "return_logits", "truncation", "pairs", "return_windows", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGITS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    RETURN_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    return_logits: bool
    truncation: TruncationOptions
    pairs: _containers.RepeatedCompositeFieldContainer[TextPair]
    return_windows: bool
    model: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., return_logits: _Optional[bool] = ..., truncation: _Optional[_Union[TruncationOptions, _Mapping]] = ..., pairs: _Optional[_Iterable[_Union[TextPair, _Mapping]]] = ..., return_windows: _Optional[bool] = ..., model: _Optional[str] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score", "label_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    label_id: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., label_id: _Optional[int] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "score", "scores", "logits", "num_tokens", "truncated", "num_windows", "windows")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    NUM_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    logits: _containers.RepeatedScalarFieldContainer[float]
    num_tokens: int
    truncated: bool
    num_windows: int
    windows: _containers.RepeatedCompositeFieldContainer[WindowResult]
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., logits: _Optional[_Iterable[float]] = ..., num_tokens: _Optional[int] = ..., truncated: _Optional[bool] = ..., num_windows: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[WindowResult, _Mapping]]] = ...) -> None: ...

class WindowResult(_message.Message):
    __slots__ = ("scores", "start_token", "end_token", "num_tokens")
    SCORES_FIELD_NUMBER: _ClassVar[int]
    START_TOKEN_FIELD_NUMBER: _ClassVar[int]
    END_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    start_token: int
    end_token: int
    num_tokens: int
    def __init__(self, scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., start_token: _Optional[int] = ..., end_token: _Optional[int] = ..., num_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("tokenize_us", "queue_us", "inference_us", "total_us")
    TOKENIZE_US_FIELD_NUMBER: _ClassVar[int]
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_US_FIELD_NUMBER: _ClassVar[int]
    TOTAL_US_FIELD_NUMBER: _ClassVar[int]
    tokenize_us: int
    queue_us: int
    inference_us: int
    total_us: int
    def __init__(self, tokenize_us: _Optional[int] = ..., queue_us: _Optional[int] = ..., inference_us: _Optional[int] = ..., total_us: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "model_name", "model_version", "request_id", "timings")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    model_name: str
    model_version: str
    request_id: str
    timings: Timings
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("request", "correlation_id")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    request: ClassifyRequest
    correlation_id: str
    def __init__(self, request: _Optional[_Union[ClassifyRequest, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("response", "correlation_id")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    response: ClassifyResponse
    correlation_id: str
    def __init__(self, response: _Optional[_Union[ClassifyResponse, _Mapping]] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("texts", "truncation", "pad", "pairs", "model")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    truncation: TruncationOptions
    pad: bool
    pairs: _containers.RepeatedCompositeFieldContainer[TextPair]
    model: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., truncation: _Optional[_Union[TruncationOptions, _Mapping]] = ..., pad: _Optional[bool] = ..., pairs: _Optional[_Iterable[_Union[TextPair, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class TokenizedText(_message.Message):
    __slots__ = ("input_ids", "attention_mask", "tokens", "truncated", "token_type_ids", "overflowing")
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_TYPE_IDS_FIELD_NUMBER: _ClassVar[int]
    OVERFLOWING_FIELD_NUMBER: _ClassVar[int]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    truncated: bool
    token_type_ids: _containers.RepeatedScalarFieldContainer[int]
    overflowing: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    def __init__(self, input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ..., truncated: _Optional[bool] = ..., token_type_ids: _Optional[_Iterable[int]] = ..., overflowing: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("results", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "source_checkpoint", "labels", "max_sequence_length", "problem_type", "backend", "dtype", "demo", "inputs")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    source_checkpoint: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_sequence_length: int
    problem_type: ProblemType
    backend: str
    dtype: str
    demo: bool
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., source_checkpoint: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_sequence_length: _Optional[int] = ..., problem_type: _Optional[_Union[ProblemType, str]] = ..., backend: _Optional[str] = ..., dtype: _Optional[str] = ..., demo: _Optional[bool] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "model_version", "labels", "source_checkpoint", "ready")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_version: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    source_checkpoint: str
    ready: bool
    def __init__(self, name: _Optional[str] = ..., model_version: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., source_checkpoint: _Optional[str] = ..., ready: _Optional[bool] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "default_model")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODEL_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    default_model: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., default_model: _Optional[str] = ...) -> None: ...
