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

class ProblemType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROBLEM_TYPE_UNSPECIFIED: _ClassVar[ProblemType]
    PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION: _ClassVar[ProblemType]
    PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION: _ClassVar[ProblemType]
TRUNCATION_STRATEGY_UNSPECIFIED: TruncationStrategy
TRUNCATION_STRATEGY_TRUNCATE: TruncationStrategy
TRUNCATION_STRATEGY_REJECT: TruncationStrategy
PROBLEM_TYPE_UNSPECIFIED: ProblemType
PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION: ProblemType
PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION: ProblemType

class TruncationOptions(_message.Message):
    __slots__ = ("strategy", "max_length")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    strategy: TruncationStrategy
    max_length: int
    def __init__(self, strategy: _Optional[_Union[TruncationStrategy, str]] = ..., max_length: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("texts", "top_k", "return_logits", "truncation")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_LOGITS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    return_logits: bool
    truncation: TruncationOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., return_logits: _Optional[bool] = ..., truncation: _Optional[_Union[TruncationOptions, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("label", "score", "scores", "logits", "num_tokens", "truncated")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LOGITS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    logits: _containers.RepeatedScalarFieldContainer[float]
    num_tokens: int
    truncated: bool
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., logits: _Optional[_Iterable[float]] = ..., num_tokens: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("texts", "truncation", "pad")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    PAD_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    truncation: TruncationOptions
    pad: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., truncation: _Optional[_Union[TruncationOptions, _Mapping]] = ..., pad: _Optional[bool] = ...) -> None: ...

class TokenizedText(_message.Message):
    __slots__ = ("input_ids", "attention_mask", "tokens", "truncated")
    INPUT_IDS_FIELD_NUMBER: _ClassVar[int]
    ATTENTION_MASK_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    input_ids: _containers.RepeatedScalarFieldContainer[int]
    attention_mask: _containers.RepeatedScalarFieldContainer[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    truncated: bool
    def __init__(self, input_ids: _Optional[_Iterable[int]] = ..., attention_mask: _Optional[_Iterable[int]] = ..., tokens: _Optional[_Iterable[str]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("results", "request_id")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[TokenizedText]
    request_id: str
    def __init__(self, results: _Optional[_Iterable[_Union[TokenizedText, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "source_checkpoint", "labels", "max_sequence_length", "problem_type", "backend", "dtype", "demo")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_TYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEMO_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    source_checkpoint: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_sequence_length: int
    problem_type: ProblemType
    backend: str
    dtype: str
    demo: bool
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., source_checkpoint: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_sequence_length: _Optional[int] = ..., problem_type: _Optional[_Union[ProblemType, str]] = ..., backend: _Optional[str] = ..., dtype: _Optional[str] = ..., demo: _Optional[bool] = ...) -> None: ...
