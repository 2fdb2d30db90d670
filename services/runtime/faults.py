"""Errors the domain raises, free of gRPC: the gRPC layer maps each to a status code.

Domain modules raise these; `services.runtime.grpc_errors` turns them into gRPC statuses, and Envoy
turns those into HTTP statuses with a JSON body.
"""

from __future__ import annotations


class Fault(Exception):
    """A request-level failure with a message safe to show the caller."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason


class InvalidArgument(Fault):
    code = "INVALID_ARGUMENT"


class NotFound(Fault):
    code = "NOT_FOUND"


class AlreadyExists(Fault):
    code = "ALREADY_EXISTS"


class PermissionDenied(Fault):
    code = "PERMISSION_DENIED"


class Unauthenticated(Fault):
    code = "UNAUTHENTICATED"


class FailedPrecondition(Fault):
    code = "FAILED_PRECONDITION"


class Unavailable(Fault):
    """A dependency did not answer; the caller may retry."""

    code = "UNAVAILABLE"


class Aborted(Fault):
    """A concurrency conflict; the caller (or the service itself) may retry."""

    code = "ABORTED"
