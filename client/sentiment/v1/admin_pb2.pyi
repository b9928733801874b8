from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutRequest(_message.Message):
    __slots__ = ("model", "version", "allow_label_change")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LABEL_CHANGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    allow_label_change: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., allow_label_change: _Optional[bool] = ...) -> None: ...

class RolloutResponse(_message.Message):
    __slots__ = ("model", "previous_version", "model_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    previous_version: str
    model_version: str
    def __init__(self, model: _Optional[str] = ..., previous_version: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "allow_label_change")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LABEL_CHANGE_FIELD_NUMBER: _ClassVar[int]
    model: str
    allow_label_change: bool
    def __init__(self, model: _Optional[str] = ..., allow_label_change: _Optional[bool] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("model", "previous_version", "model_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    previous_version: str
    model_version: str
    def __init__(self, model: _Optional[str] = ..., previous_version: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...
