from google.rpc import error_details_pb2 as _error_details_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    CLIENT_INVOICE_ID_REUSED: _ClassVar[ErrorReason]
    REFUND_EXCEEDS_INVOICE: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
CLIENT_INVOICE_ID_REUSED: ErrorReason
REFUND_EXCEEDS_INVOICE: ErrorReason

class ErrorDetails(_message.Message):
    __slots__ = ("bad_request", "error_info")
    BAD_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    bad_request: _error_details_pb2.BadRequest
    error_info: _error_details_pb2.ErrorInfo
    def __init__(self, bad_request: _Optional[_Union[_error_details_pb2.BadRequest, _Mapping]] = ..., error_info: _Optional[_Union[_error_details_pb2.ErrorInfo, _Mapping]] = ...) -> None: ...
