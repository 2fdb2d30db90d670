"""The lease rules of the fiscal counter (no gRPC, no SQL: the store and the ledger are ports).

Gapless means at most one open lease per (outlet, series) (a lease covers one number or a range of
consecutive numbers, written and committed together): `allocate` waits while another unexpired
lease is open, woken by `Waiters.wake` (LISTEN/NOTIFY in production, plus polling as a fallback). An
expired lease is reconciled against the ledger's chain head before its number is handed out again;
without the ledger nothing is issued. A lease's validity is handed out as a duration (`ttl_seconds`):
its holder counts it on its own monotonic clock, so no two clocks are ever compared. A counter found
ahead of the ledger (a restore, a Commit without an insert) is moved back to the ledger's chain head
when its holder releases with `resync_from_ledger`. All state lives in the store (PostgreSQL): the in-process
`Waiters` only shortens waits, it never decides who gets a number.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from services.runtime.faults import Aborted, FailedPrecondition, InvalidArgument, Unavailable

log = structlog.get_logger()

MAX_ID_LENGTH = 200
MAX_RANGE = 256  # numbers in one range lease (the ledger's group commit batches at most this many)
Key = tuple[str, str]  # (outlet_id, series)


@dataclass(frozen=True)
class Lease:
    lease_id: str
    outlet_id: str
    series: str
    number: int
    expires_at: datetime  # the database's clock: display only
    ttl_seconds: float  # how long the lease is valid from its issue: what holders count on
    last: int = 0  # the range's last number (number .. last); 0 or number: a single number

    @property
    def through(self) -> int:
        return max(self.last, self.number)


@dataclass(frozen=True)
class OpenLease:
    outlet_id: str
    series: str
    number: int


@dataclass(frozen=True)
class Attempt:
    """The outcome of one try to issue: a lease, or why not (seen at the database's clock)."""

    lease: Lease | None = None
    exists: bool = True
    open_lease_id: str | None = None
    open_lease_number: int | None = None
    expires_in: float = 0.0  # seconds until the open lease expires (<= 0: expired)


@dataclass(frozen=True)
class CommitOutcome:
    status: str  # committed (now) | already_committed | unknown | released | expired | open
    last_committed: int = 0
    outlet_id: str = ""
    series: str = ""


@dataclass(frozen=True)
class CounterState:
    outlet_id: str
    series: str
    last_committed: int
    open_lease_id: str | None
    open_lease_number: int | None
    open_lease_expires_at: datetime | None
    open_lease_last: int | None = None


class CounterStore(Protocol):
    async def try_issue(self, outlet_id: str, series: str, lease_id: str, holder: str,
                        lease_seconds: float, count: int = 1) -> Attempt: ...
    async def roll(self, outlet_id: str, series: str, previous_lease_id: str, lease_id: str, holder: str,
                   lease_seconds: float, count: int) -> Lease | None:
        """Commit `previous_lease_id`, if it is the open lease of (outlet_id, series), and issue the next
        range to the same holder, in one statement; None if it is not."""
        ...
    async def create_counter(self, outlet_id: str, series: str) -> None: ...
    async def reconcile(self, outlet_id: str, series: str, expired_lease_id: str, ledger_last: int) -> bool: ...
    async def commit(self, lease_id: str) -> CommitOutcome: ...
    async def release(self, lease_id: str, reason: str) -> Key | None: ...
    async def open_lease(self, lease_id: str) -> OpenLease | None: ...
    async def resync(self, lease_id: str, ledger_last: int, reason: str) -> Key | None: ...
    async def state(self, outlet_id: str, series: str) -> CounterState: ...


class ChainHeads(Protocol):
    async def last_number(self, outlet_id: str, series: str, timeout: float) -> int:
        """The ledger's last written number; raises Unavailable when the ledger can't answer."""
        ...


class Waiters:
    """Allocate calls of this process waiting for a counter to free up, queued FIFO per counter.

    A wake-up (a NOTIFY, or a commit/release in this process) wakes only the first waiter that is not
    already awake: 50 terminals contending for one outlet then cost one attempt per freed number
    instead of 50. The first waiter also polls quickly (the fallback for a lost notification); the
    ones behind it poll slowly and move up as it leaves."""

    def __init__(self) -> None:
        self._queues: dict[Key, list[asyncio.Event]] = {}

    def register(self, key: Key) -> asyncio.Event:
        event = asyncio.Event()
        self._queues.setdefault(key, []).append(event)
        return event

    def is_first(self, key: Key, event: asyncio.Event) -> bool:
        queue = self._queues.get(key)
        return bool(queue) and queue[0] is event

    def discard(self, key: Key, event: asyncio.Event) -> None:
        queue = self._queues.get(key)
        if not queue or event not in queue:
            return
        was_first = queue[0] is event
        queue.remove(event)
        if not queue:
            del self._queues[key]
        elif was_first:
            queue[0].set()  # the new first looks at once, then polls quickly

    def wake(self, key: Key) -> None:
        for event in self._queues.get(key, ()):
            if not event.is_set():
                event.set()
                return

    def wake_all(self) -> None:
        for queue in self._queues.values():
            for event in queue:
                event.set()

    @staticmethod
    async def wait(event: asyncio.Event, timeout: float) -> None:
        if timeout <= 0 or event.is_set():
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass


def require(value: str, field: str) -> str:
    if not value or not value.strip():
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(f"{field} is longer than {MAX_ID_LENGTH} characters", field=field)
    return value


def require_lease_id(value: str) -> str:
    require(value, "lease_id")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("lease_id is not a lease id (a UUID)", field="lease_id") from None


class Counters:
    def __init__(self, store: CounterStore, heads: ChainHeads, *, lease_seconds: float,
                 ledger_timeout: float, poll_seconds: float = 0.05, margin_seconds: float = 0.1,
                 max_wait_seconds: float = 30.0, waiters: Waiters | None = None):
        self.store = store
        self.heads = heads
        self.lease_seconds = lease_seconds
        self.ledger_timeout = ledger_timeout
        self.poll_seconds = poll_seconds
        self.margin_seconds = margin_seconds
        self.max_wait_seconds = max_wait_seconds
        self.waiters = waiters or Waiters()

    async def allocate(self, outlet_id: str, series: str, holder: str, time_remaining: float | None,
                       count: int = 1, commit_lease_id: str = "") -> Lease:
        """A lease on the next number, or on the next `count` numbers as one range (the holder writes
        them in one transaction and commits them together; expiry reconciles to the ledger's head)."""
        require(outlet_id, "outlet_id")
        require(series, "series")
        count = count or 1
        if not 1 <= count <= MAX_RANGE:
            raise InvalidArgument(f"count must be 1-{MAX_RANGE}", field="count")
        if commit_lease_id:
            previous = require_lease_id(commit_lease_id)
            rolled = await self.store.roll(outlet_id, series, previous, str(uuid.uuid4()), holder,
                                           self.lease_seconds, count)
            if rolled is not None:
                return rolled
            try:  # not the open lease any more: record the commit as Commit would (a retry, a reconciled one)
                await self.commit(previous)
            except FailedPrecondition as exc:
                log.info("previous lease not committed with the allocation", lease_id=previous, error=exc.message)
        holder = (holder or "")[:MAX_ID_LENGTH]
        budget = self.max_wait_seconds if time_remaining is None else min(time_remaining, self.max_wait_seconds)
        give_up_at = time.monotonic() + budget - self.margin_seconds
        key = (outlet_id, series)
        event = self.waiters.register(key)
        try:
            while True:
                event.clear()  # a wake-up from here on (even during the attempt) is not lost
                attempt = await self.store.try_issue(outlet_id, series, str(uuid.uuid4()), holder,
                                                     self.lease_seconds, count)
                if attempt.lease is not None:
                    return attempt.lease
                left = give_up_at - time.monotonic()
                if not attempt.exists:
                    await self.store.create_counter(outlet_id, series)
                elif attempt.open_lease_id is None:
                    pass  # freed between our update and our read: try again at once
                elif attempt.expires_in <= 0:
                    await self._reconcile(outlet_id, series, attempt, left)
                else:
                    if left <= 0:
                        raise Aborted(f"counter busy: number {attempt.open_lease_number} of "
                                      f"{outlet_id}/{series} is still leased; retry", reason="COUNTER_BUSY")
                    poll = self.poll_seconds if self.waiters.is_first(key, event) else self.poll_seconds * 10
                    await self.waiters.wait(event, min(poll, attempt.expires_in, left))
                if time.monotonic() >= give_up_at + self.margin_seconds:
                    raise Aborted(f"counter busy: {outlet_id}/{series}; retry", reason="COUNTER_BUSY")
        finally:
            self.waiters.discard(key, event)

    async def _reconcile(self, outlet_id: str, series: str, attempt: Attempt, left: float) -> None:
        timeout = min(self.ledger_timeout, left)
        if timeout <= 0:
            raise Aborted(f"counter busy: {outlet_id}/{series} needs reconciling; retry", reason="COUNTER_BUSY")
        try:
            last = await self.heads.last_number(outlet_id, series, timeout)
        except Unavailable:
            log.warning("expired lease not reconciled: ledger unavailable; nothing issued", outlet_id=outlet_id,
                        series=series, lease_id=attempt.open_lease_id, expired_number=attempt.open_lease_number)
            raise
        if last < 0:
            raise FailedPrecondition(f"ledger returned a negative chain head ({last})")
        number = attempt.open_lease_number or 0
        if last not in (number - 1, number):
            log.warning("ledger and counter disagree; following the ledger", outlet_id=outlet_id, series=series,
                        expired_number=number, ledger_last=last)
        done = await self.store.reconcile(outlet_id, series, attempt.open_lease_id or "", last)
        if done:
            log.info("expired lease reconciled", outlet_id=outlet_id, series=series,
                     lease_id=attempt.open_lease_id, expired_number=number, ledger_last=last,
                     ledger_wrote_it=last >= number)

    async def commit(self, lease_id: str) -> int:
        """The open lease (even if expired, as long as nobody reconciled it yet) becomes the last
        committed number. A retry is OK, and so is a late commit of a lease that reconciliation already
        found in the ledger; any other lease that is no longer open is refused (FAILED_PRECONDITION)."""
        lease_id = require_lease_id(lease_id)
        outcome = await self.store.commit(lease_id)
        if outcome.status == "committed":
            self.waiters.wake((outcome.outlet_id, outcome.series))
            return outcome.last_committed
        if outcome.status == "already_committed":
            return outcome.last_committed
        if outcome.status == "unknown":
            raise FailedPrecondition("unknown lease", field="lease_id", reason="LEASE_UNKNOWN")
        raise FailedPrecondition(f"lease is no longer open ({outcome.status}); the counter has moved on",
                                 field="lease_id", reason="LEASE_NOT_OPEN")

    async def release(self, lease_id: str, reason: str, resync_from_ledger: bool = False) -> None:
        lease_id = require_lease_id(lease_id)
        reason = (reason or "")[:500]
        if resync_from_ledger:
            key = await self._resync(lease_id, reason)
        else:
            key = await self.store.release(lease_id, reason)
        if key is not None:
            self.waiters.wake(key)

    async def _resync(self, lease_id: str, reason: str) -> Key | None:
        """The holder found no ledger entry before its number: the counter is ahead of the ledger.
        last_committed := the ledger's chain head, provided the lease is still open (while it is, no
        one else can write to this chain, so the head cannot move under us). If the ledger cannot
        answer, the lease stays open: it expires and the expiry reconciliation does the same."""
        lease = await self.store.open_lease(lease_id)
        if lease is None:
            return None  # no longer open (expired and reconciled, or released): nothing to resync
        last = await self.heads.last_number(lease.outlet_id, lease.series, self.ledger_timeout)
        if last < 0:
            raise FailedPrecondition(f"ledger returned a negative chain head ({last})")
        key = await self.store.resync(lease_id, last, f"{reason}; resynced to ledger head {last}"[:500])
        if key is not None:
            # Operator-visible: numbers were handed out (or restored) that the ledger never wrote.
            log.error("counter was ahead of the ledger; moved to the ledger's chain head", outlet_id=lease.outlet_id,
                      series=lease.series, counter_last=lease.number - 1, ledger_last=last,
                      moved_backwards=last < lease.number - 1)
        return key

    async def state(self, outlet_id: str, series: str) -> CounterState:
        require(outlet_id, "outlet_id")
        require(series, "series")
        return await self.store.state(outlet_id, series)
