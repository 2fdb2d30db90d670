import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AllocateRequest(_message.Message):
    __slots__ = ("outlet_id", "series", "holder", "count", "commit_lease_id")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    holder: str
    count: int
    commit_lease_id: str
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., holder: _Optional[str] = ..., count: _Optional[int] = ..., commit_lease_id: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "outlet_id", "series", "number", "expires_at", "ttl", "last")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    outlet_id: str
    series: str
    number: int
    expires_at: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    last: int
    def __init__(self, lease_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., number: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("lease_id", "reason", "resync_from_ledger")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FROM_LEDGER_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    reason: str
    resync_from_ledger: bool
    def __init__(self, lease_id: _Optional[str] = ..., reason: _Optional[str] = ..., resync_from_ledger: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("outlet_id", "series", "last_committed", "open_lease_id", "open_lease_number", "open_lease_expires_at", "open_lease_last")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    LAST_COMMITTED_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    OPEN_LEASE_LAST_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    last_committed: int
    open_lease_id: str
    open_lease_number: int
    open_lease_expires_at: _timestamp_pb2.Timestamp
    open_lease_last: int
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ..., last_committed: _Optional[int] = ..., open_lease_id: _Optional[str] = ..., open_lease_number: _Optional[int] = ..., open_lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., open_lease_last: _Optional[int] = ...) -> None: ...
