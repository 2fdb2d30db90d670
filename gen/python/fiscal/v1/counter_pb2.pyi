import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocateRequest(_message.Message):
    __slots__ = ("outlet_id", "series", "holder")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    holder: str
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., holder: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "outlet_id", "series", "number", "expires_at")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    outlet_id: str
    series: str
    number: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, lease_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., number: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("last_committed",)
    LAST_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    last_committed: int
    def __init__(self, last_committed: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("lease_id", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCounterRequest(_message.Message):
    __slots__ = ("outlet_id", "series")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ...) -> None: ...

class CounterState(_message.Message):
    __slots__ = ("outlet_id", "series", "last_committed", "open_lease_id", "open_lease_number", "open_lease_expires_at")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    last_committed: int
    open_lease_id: str
    open_lease_number: int
    open_lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., last_committed: _Optional[int] = ..., open_lease_id: _Optional[str] = ..., open_lease_number: _Optional[int] = ..., open_lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
