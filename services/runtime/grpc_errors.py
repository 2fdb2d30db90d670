"""Turn domain faults into gRPC statuses with a google.rpc.Status body Envoy renders as JSON."""

from __future__ import annotations

import asyncio
import functools
import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.faults import Aborted, Fault, Unavailable

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


def _is_data_error(exc: Exception) -> bool:
    """The database refused a value (numeric overflow, a bad encoding...): the request's fault, not ours."""
    import psycopg
    from sqlalchemy import exc as sa_exc

    return isinstance(exc, (sa_exc.DataError, psycopg.DataError)) or isinstance(
        getattr(exc, "orig", None), psycopg.DataError)


_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")


def error_summary(exc: BaseException) -> str:
    """What a log may say about an exception: its type and the first line of its message with quoted
    values blanked and SQLAlchemy's `[SQL: ...]`/`[parameters: ...]` cut off. A driver's message can
    quote the offending value ('invalid input syntax for type uuid: "..."'), which is client input."""
    lines = str(exc).splitlines()
    first = lines[0].split("[SQL:")[0].split("[parameters:")[0] if lines else ""
    return f"{type(exc).__name__}: {_QUOTED.sub('[value]', first).strip()[:200]}"


def _stack(exc: BaseException) -> str:
    """Where it happened (file, line, function), without messages or locals: no request value gets in."""
    return " < ".join(f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
                      for frame in reversed(traceback.extract_tb(exc.__traceback__)))


class InFlightCalls:
    """The servicer calls this process is running, so that a shutdown can answer the ones still running
    at the end of its grace UNAVAILABLE (retry) rather than let gRPC cancel them (CANCELLED)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.shutting_down = False

    def answer_retry_and_cancel(self) -> None:
        self.shutting_down = True
        for task in list(self.tasks):
            task.cancel()


IN_FLIGHT = InFlightCalls()  # one per process: the process's own calls


def handles_faults(method: F) -> F:
    """Decorate a grpc.aio servicer method: a Fault aborts the call with its status; a value the database
    refused is INVALID_ARGUMENT; anything else is logged (type, redacted first line, frames: never the
    request's or the query's parameters) and answered INTERNAL with no detail."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        task = asyncio.current_task()
        if task is not None:
            IN_FLIGHT.tasks.add(task)
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            if not IN_FLIGHT.shutting_down:
                raise
            # Cancelled by our own shutdown (below), not by the client: answer retryable. Whatever the
            # call had done is either committed (a retry replays it) or rolled back.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the service is shutting down; retry")
        except Fault as fault:
            await context.abort_with_status(fault_status(fault))
        except grpc.aio.AbortError:
            raise
        except (OSError, ConnectionError) as exc:
            log.warning("dependency unreachable", rpc=method.__name__, error=error_summary(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "a dependency is unavailable; retry")
        except Exception as exc:  # noqa: BLE001 - the boundary: never a stack trace to a client
            if _is_database_outage(exc):
                log.warning("database unavailable", rpc=method.__name__, error=error_summary(exc))
                await context.abort(grpc.StatusCode.UNAVAILABLE, "database unavailable; retry")
            if _is_data_error(exc):
                # The transaction rolled back: nothing was written. Say nothing about the value.
                log.warning("database refused a value", rpc=method.__name__, error=error_summary(exc))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "a value in the request is out of range or malformed")
            log.error("unhandled error", rpc=method.__name__, error=error_summary(exc), stack=_stack(exc))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            if task is not None:
                IN_FLIGHT.tasks.discard(task)

    return wrapper  # type: ignore[return-value]


def fault_from_rpc_error(error: grpc.RpcError, what: str, *, unavailable_reason: str | None = None) -> Fault:
    """A failed call to another service of the mesh, as the fault this service answers with.

    ABORTED (a busy counter) stays a retryable conflict. Everything else, INVALID_ARGUMENT included, is
    UNAVAILABLE (with `unavailable_reason` as its ErrorInfo): the client's input was validated before any
    call inside the mesh, so a peer refusing our request (signing refusing a statement whose time is
    outside its clock window, say) is our fault, not the client's. A 4xx would make a POS drop a sale it
    must keep; a 503 makes it retry, which is safe. The refusal is logged for the operator."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    if code == grpc.StatusCode.ABORTED:
        return Aborted(f"{what}: busy, retry")
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        details = error.details() if callable(getattr(error, "details", None)) else ""
        log.error("a mesh peer refused our request", peer=what, code=name, detail=(details or "")[:300])
        return Unavailable(f"{what} refused the request ({name}); retry", reason="MESH_PEER_REFUSED")
    return Unavailable(f"{what} unavailable ({name}); retry", reason=unavailable_reason)
