"""Turn domain faults into gRPC statuses with a google.rpc.Status body Envoy renders as JSON."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.faults import Fault

log = structlog.get_logger()

_CODES = {
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    "ALREADY_EXISTS": (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    "PERMISSION_DENIED": (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    "UNAUTHENTICATED": (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    "FAILED_PRECONDITION": (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    "ABORTED": (grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    "INTERNAL": (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL),
}


def fault_status(fault: Fault) -> grpc.Status:
    _, numeric = _CODES.get(fault.code, _CODES["INTERNAL"])
    details = []
    if fault.field:
        bad = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=fault.field,
                                                                          description=fault.message)])
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    if fault.reason:
        info = error_details_pb2.ErrorInfo(reason=fault.reason, domain="fiscal.cloud")
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    return rpc_status.to_status(status_pb2.Status(code=numeric, message=fault.message, details=details))


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _is_database_outage(exc: Exception) -> bool:
    """A lost or refused database connection (not a bad query): the caller should retry."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and (exc.connection_invalidated or
                                               isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))):
        return True
    return isinstance(exc, sa_exc.TimeoutError)  # no pooled connection within pool_timeout


def handles_faults(method: F) -> F:
    """Decorate a grpc.aio servicer method: a Fault aborts the call with its status; anything else
    is logged with its stack and answered INTERNAL with no detail (never a stack trace to a client)."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except Fault as fault:
            await context.abort_with_status(fault_status(fault))
        except grpc.aio.AbortError:
            raise
        except (OSError, ConnectionError) as exc:
            log.warning("dependency unreachable", rpc=method.__name__, error=str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry")
        except Exception as exc:  # noqa: BLE001 - the boundary: never a stack trace to a client
            if _is_database_outage(exc):
                log.warning("database unavailable", rpc=method.__name__, error=str(exc).splitlines()[0])
                await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable; retry")
            log.exception("unhandled error", rpc=method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper  # type: ignore[return-value]
