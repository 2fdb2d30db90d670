"""Run the services' grpc.aio servicers under `grpc_testing`, in this process.

grpc_testing (grpcio-testing) drives *sync* servicers: it calls a method in a thread of its own and
expects the response back, and its ServicerContext has no `abort_with_status`. Our servicers are
grpc.aio coroutines that end a failed call with `await context.abort_with_status(...)`. This bridge
adapts both sides and nothing else: each call runs its coroutine on a fresh event loop in grpc_testing's
thread, and an abort becomes what a sync servicer does (trailing metadata + code + details on the
context), so grpc_testing's `termination()` hands back exactly what a client would get, including the
`grpc-status-details-bin` trailer with the google.rpc details that Envoy renders as JSON.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
import grpc_testing
from google.protobuf import descriptor, message
from google.rpc import error_details_pb2, status_pb2


class _AioContext:
    """The slice of grpc.aio.ServicerContext our servicers use, over grpc_testing's context."""

    def __init__(self, context: grpc.ServicerContext):
        self._context = context

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def time_remaining(self):
        return self._context.time_remaining()

    def auth_context(self) -> dict:
        return {}  # in process, no TLS: no caller identity (as an insecure grpc.aio server reports)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        if trailing_metadata:
            self._context.set_trailing_metadata(trailing_metadata)
        self._context.set_code(code)
        self._context.set_details(details)
        raise grpc.aio.AbortError()  # as grpc.aio does: the servicer's frames unwind

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def __getattr__(self, name: str):
        return getattr(self._context, name)


class _SyncServicer:
    def __init__(self, servicer: object):
        self._servicer = servicer

    def __getattr__(self, name: str):
        method = getattr(self._servicer, name)

        def call(request, context):
            try:
                return asyncio.run(method(request, _AioContext(context)))
            except grpc.aio.AbortError:
                return None  # the status is on the context, as a sync servicer leaves it

        return call


@dataclass(frozen=True)
class Outcome:
    """What the client of one unary call sees."""

    response: message.Message | None
    code: grpc.StatusCode
    details: str
    status: status_pb2.Status | None  # the google.rpc.Status trailer, when the server sent one

    def field_violations(self) -> list[tuple[str, str]]:
        return [(v.field, v.description) for v in self._unpacked(error_details_pb2.BadRequest)
                for v in v.field_violations]

    def error_reasons(self) -> list[str]:
        return [info.reason for info in self._unpacked(error_details_pb2.ErrorInfo)]

    def _unpacked(self, kind):
        found = []
        for detail in self.status.details if self.status else ():
            if detail.Is(kind.DESCRIPTOR):
                unpacked = kind()
                detail.Unpack(unpacked)
                found.append(unpacked)
        return found


class InProcessServer:
    """One grpc.aio servicer served by grpc_testing; `call` invokes a unary method like a client."""

    def __init__(self, service: descriptor.ServiceDescriptor, servicer: object):
        self.service = service
        self._server = grpc_testing.server_from_dictionary({service: _SyncServicer(servicer)},
                                                           grpc_testing.strict_real_time())

    def call(self, method: str, request: message.Message, metadata: tuple = (), timeout: float = 10.0) -> Outcome:
        rpc = self._server.invoke_unary_unary(self.service.methods_by_name[method], metadata, request, timeout)
        response, trailing_metadata, code, details = rpc.termination()
        status = None
        for key, value in trailing_metadata or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
        return Outcome(response if code == grpc.StatusCode.OK else None, code, details, status)
