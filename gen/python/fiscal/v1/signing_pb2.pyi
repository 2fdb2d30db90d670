import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignRequest(_message.Message):
    __slots__ = ("statement",)
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    statement: str
    def __init__(self, statement: _Optional[str] = ...) -> None: ...

class SignBatchRequest(_message.Message):
    __slots__ = ("statements",)
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, statements: _Optional[_Iterable[str]] = ...) -> None: ...

class SignBatchResponse(_message.Message):
    __slots__ = ("signatures",)
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    signatures: _containers.RepeatedCompositeFieldContainer[SignResponse]
    def __init__(self, signatures: _Optional[_Iterable[_Union[SignResponse, _Mapping]]] = ...) -> None: ...

class SignResponse(_message.Message):
    __slots__ = ("signature", "key_id", "algorithm")
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    signature: bytes
    key_id: str
    algorithm: str
    def __init__(self, signature: _Optional[bytes] = ..., key_id: _Optional[str] = ..., algorithm: _Optional[str] = ...) -> None: ...

class ListPublicKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPublicKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[PublicKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[PublicKey, _Mapping]]] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CompromiseKeyRequest(_message.Message):
    __slots__ = ("kid", "reason")
    KID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kid: str
    reason: str
    def __init__(self, kid: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PublicKey(_message.Message):
    __slots__ = ("kid", "kty", "crv", "x", "y", "alg", "use", "status", "created_at", "retired_at", "backend", "compromised_at", "compromise_reason")
    KID_FIELD_NUMBER: _ClassVar[int]
    KTY_FIELD_NUMBER: _ClassVar[int]
    CRV_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    COMPROMISED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPROMISE_REASON_FIELD_NUMBER: _ClassVar[int]
    kid: str
    kty: str
    crv: str
    x: str
    y: str
    alg: str
    use: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    retired_at: _timestamp_pb2.Timestamp
    backend: str
    compromised_at: _timestamp_pb2.Timestamp
    compromise_reason: str
    def __init__(self, kid: _Optional[str] = ..., kty: _Optional[str] = ..., crv: _Optional[str] = ..., x: _Optional[str] = ..., y: _Optional[str] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., backend: _Optional[str] = ..., compromised_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., compromise_reason: _Optional[str] = ...) -> None: ...

class GetHsmStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HsmStatus(_message.Message):
    __slots__ = ("backend", "module_loaded", "token_present", "logged_in", "test_signature_ok", "active_key_id", "detail", "checked_at")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODULE_LOADED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_PRESENT_FIELD_NUMBER: _ClassVar[int]
    LOGGED_IN_FIELD_NUMBER: _ClassVar[int]
    TEST_SIGNATURE_OK_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    backend: str
    module_loaded: bool
    token_present: bool
    logged_in: bool
    test_signature_ok: bool
    active_key_id: str
    detail: str
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, backend: _Optional[str] = ..., module_loaded: _Optional[bool] = ..., token_present: _Optional[bool] = ..., logged_in: _Optional[bool] = ..., test_signature_ok: _Optional[bool] = ..., active_key_id: _Optional[str] = ..., detail: _Optional[str] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
