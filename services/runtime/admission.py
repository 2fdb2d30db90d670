"""Admission control: overload is refused fast, not queued.

A server interceptor bounds the calls of each expensive method that run at once in this process. A call
that finds every slot taken waits for one at most a queue-time budget; past it (or when too many calls
already wait) it is refused with UNAVAILABLE, a `retry-after` trailer (seconds; Envoy's transcoder turns
it into the HTTP `Retry-After` header of the 503) and a google.rpc.RetryInfo detail. The refusal happens
before the servicer runs: no number is taken and nothing is written, so the client retries the same
request (same client_invoice_id) safely.

Any other UNAVAILABLE or ABORTED a limited method answers (a dependency or the database down, the
outlet's counter busy past the caller's deadline) carries the same `retry-after` trailer: the POS SDK
retries both and paces itself by the header.

Settings (environment):
  FISCAL_MAX_INFLIGHT_SEALS      seals (SealInvoice, CreateCreditNote) running at once per process (24: sized for 2 cores, see docs/performance.md "Overload")
  FISCAL_MAX_QUEUED_SEALS        seals waiting for a slot before new ones are refused at once (256)
  FISCAL_ADMISSION_QUEUE_SECONDS longest a seal waits for a slot before it is refused (0.3)
  FISCAL_RETRY_AFTER_SECONDS     the retry hint sent with a refusal, whole seconds (1)
  FISCAL_ADMISSION_OUTLET_WAIT_SECONDS  longest expected wait behind the same outlet's seals (0.6; 0: off)

Seals of one outlet and series are numbered in order, so they also queue behind each other, after
admission. Per outlet the gate keeps the recent interval between its completions while it was busy;
a new seal that would wait longer than FISCAL_ADMISSION_OUTLET_WAIT_SECONDS behind the seals already in
flight for that outlet (in flight x interval) is refused the same way, at once, rather than answered by
Envoy's deadline. Without a recent estimate (an idle outlet, a first burst) it is admitted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.config import env_float, env_int

log = structlog.get_logger()

# The methods that take a number, sign and write: the expensive ones a burst must not pile up on.
SEAL_METHODS = ("/fiscal.v1.InvoiceService/SealInvoice", "/fiscal.v1.InvoiceService/CreateCreditNote")
RETRY_AFTER = "retry-after"
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED)


@dataclass(frozen=True)
class AdmissionSettings:
    max_inflight: int
    max_queued: int
    queue_seconds: float
    retry_after_seconds: int
    outlet_wait_seconds: float = 0.6

    @classmethod
    def from_env(cls) -> AdmissionSettings:
        settings = cls(
            max_inflight=env_int("FISCAL_MAX_INFLIGHT_SEALS", 24),
            max_queued=env_int("FISCAL_MAX_QUEUED_SEALS", 256),
            queue_seconds=env_float("FISCAL_ADMISSION_QUEUE_SECONDS", 0.3),
            retry_after_seconds=env_int("FISCAL_RETRY_AFTER_SECONDS", 1),
            outlet_wait_seconds=env_float("FISCAL_ADMISSION_OUTLET_WAIT_SECONDS", 0.6),
        )
        if settings.max_inflight < 1:
            raise SystemExit("FISCAL_MAX_INFLIGHT_SEALS must be at least 1")
        if settings.max_queued < 0 or settings.queue_seconds < 0:
            raise SystemExit("FISCAL_MAX_QUEUED_SEALS and FISCAL_ADMISSION_QUEUE_SECONDS must not be negative")
        if settings.retry_after_seconds < 1:
            raise SystemExit("FISCAL_RETRY_AFTER_SECONDS must be at least 1 (HTTP Retry-After is whole seconds)")
        return settings


class Overloaded(Exception):
    """No slot within the budget (or the queue is full)."""


class Gate:
    """At most `limit` holders at once; a newcomer waits for a slot at most `queue_seconds`, and is
    turned away at once when `max_queued` already wait. FIFO: slots go to waiters in arrival order."""

    def __init__(self, limit: int, max_queued: int, queue_seconds: float):
        self.limit = limit
        self.max_queued = max_queued
        self.queue_seconds = queue_seconds
        self.inflight = 0
        self.waiters: list[asyncio.Future[None]] = []
        self.refused = 0
        self.admitted = 0

    async def acquire(self) -> None:
        if self.inflight < self.limit and not self.waiters:
            self.inflight += 1
            self.admitted += 1
            return
        if len(self.waiters) >= self.max_queued or self.queue_seconds == 0:
            self.refused += 1
            raise Overloaded("queue full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_seconds)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: give it back.
                self.release()
            else:
                waiter.cancel()
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.refused += 1
            raise Overloaded(f"no slot within {self.queue_seconds} s") from None
        self.admitted += 1  # release() handed its slot to us: inflight unchanged

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the oldest waiter
                return
        self.inflight -= 1


class OutletPace:
    """Per key (an outlet): seals in flight and the smoothed interval between completions while more than
    one was in flight, i.e. how fast that outlet's serial path drains. Entries go when the key is idle."""

    STALE_SECONDS = 2.0

    def __init__(self, max_wait: float, clock: Callable[[], float] = time.monotonic):
        self.max_wait = max_wait
        self.clock = clock
        self.state: dict[str, list[float]] = {}  # key -> [in flight, interval (s) or 0, last completion]

    def admit(self, key: str) -> None:
        entry = self.state.setdefault(key, [0, 0.0, 0.0])
        inflight, interval, last = entry
        if (self.max_wait > 0 and inflight >= 2 and interval > 0 and self.clock() - last < self.STALE_SECONDS
                and inflight * interval > self.max_wait):
            raise Overloaded(f"{int(inflight)} seals of this outlet ahead, ~{inflight * interval:.2f} s")
        entry[0] += 1

    def done(self, key: str, sealed: bool) -> None:
        """A seal of `key` ended; `sealed`: it completed (a refusal or a failure says nothing of the pace)."""
        entry = self.state.get(key)
        if entry is None:
            return
        if sealed:
            now = self.clock()
            if entry[0] > 1 and entry[2] > 0:  # the outlet was busy: this gap is its serial pace
                gap = now - entry[2]
                entry[1] = gap if entry[1] == 0 else 0.8 * entry[1] + 0.2 * gap
            entry[2] = now
        entry[0] -= 1
        if entry[0] <= 0:
            del self.state[key]


def overload_status(message: str, retry_after_seconds: int) -> grpc.Status:
    """UNAVAILABLE with RetryInfo and ErrorInfo(reason OVERLOADED), plus the retry-after trailer."""
    details = []
    for detail in (error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_after_seconds)),
                   error_details_pb2.ErrorInfo(reason="OVERLOADED", domain="fiscal.cloud")):
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    status = rpc_status.to_status(status_pb2.Status(code=code_pb2.UNAVAILABLE, message=message, details=details))
    return _with_retry_after(status, retry_after_seconds)


def _with_retry_after(status: grpc.Status, seconds: int) -> grpc.Status:
    metadata = tuple(status.trailing_metadata or ()) + ((RETRY_AFTER, str(seconds)),)
    return _Status(status.code, status.details, metadata)


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple


class _RetryHintContext:
    """The servicer's context, but every UNAVAILABLE or ABORTED it answers carries the retry-after trailer."""

    def __init__(self, context: grpc.aio.ServicerContext, retry_after_seconds: int):
        self._context = context
        self._retry_after = retry_after_seconds

    def __getattr__(self, name: str):
        return getattr(self._context, name)

    async def abort(self, code, details="", trailing_metadata=()):
        if code in _RETRYABLE and not any(k == RETRY_AFTER for k, _ in trailing_metadata or ()):
            trailing_metadata = (*tuple(trailing_metadata or ()), (RETRY_AFTER, str(self._retry_after)))
        return await self._context.abort(code, details, trailing_metadata)

    async def abort_with_status(self, status):
        return await self.abort(status.code, status.details, status.trailing_metadata)


class AdmissionControl(grpc.aio.ServerInterceptor):
    """Bounds in-flight calls of the methods in `limited` (full method name -> gate name; methods that
    share a gate name share its slots)."""

    def __init__(self, settings: AdmissionSettings, limited: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.limited = dict(limited if limited is not None else {m: "seals" for m in SEAL_METHODS})
        self.gates = {name: Gate(settings.max_inflight, settings.max_queued, settings.queue_seconds)
                      for name in set(self.limited.values())}
        self.clock = clock
        self.pace = OutletPace(settings.outlet_wait_seconds, clock)
        self._last_warning = 0.0

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        gate_name = self.limited.get(handler_call_details.method)
        if handler is None or gate_name is None or handler.unary_unary is None:
            return handler
        gate, inner, method = self.gates[gate_name], handler.unary_unary, handler_call_details.method
        retry_after = self.settings.retry_after_seconds

        async def unary_unary(request, context):
            outlet = getattr(request, "outlet_id", "") or ""
            sealed = False
            try:
                if outlet:
                    self.pace.admit(outlet)
            except Overloaded as why:
                self._warn(method, gate, str(why))
                await context.abort_with_status(overload_status(
                    f"overloaded: this outlet has too many seals in progress ({why}); nothing was done, "
                    f"retry the same request after {retry_after} s", retry_after))
            try:
                try:
                    await gate.acquire()
                except Overloaded as why:
                    self._warn(method, gate, str(why))
                    await context.abort_with_status(overload_status(
                        f"overloaded: too many seals in progress ({why}); nothing was done, retry the same "
                        f"request after {retry_after} s", retry_after))
                try:
                    answer = await inner(request, _RetryHintContext(context, retry_after))
                    sealed = True
                    return answer
                finally:
                    gate.release()
            finally:
                if outlet:
                    self.pace.done(outlet, sealed)

        return handler._replace(unary_unary=unary_unary)

    def _warn(self, method: str, gate: Gate, why: str) -> None:
        now = self.clock()
        if now - self._last_warning >= 1.0:  # at most one line a second, with running totals
            self._last_warning = now
            log.warning("overloaded: refusing", rpc=method, reason=why, inflight=gate.inflight,
                        queued=len(gate.waiters), refused_total=gate.refused, admitted_total=gate.admitted)


def admission_interceptor() -> AdmissionControl:
    return AdmissionControl(AdmissionSettings.from_env())
