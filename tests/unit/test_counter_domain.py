"""The counter's lease rules (services/counter/domain.py) over an in-memory store and a fake ledger:
no database, no processes. The store keeps the real one's rules (one open lease per counter, expiry
seen at the store's clock, a reconcile or resync applies only while that lease is still the open one)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from services.counter.domain import (
    Attempt,
    CommitOutcome,
    Counters,
    CounterState,
    Key,
    Lease,
    OpenLease,
)
from services.runtime.faults import FailedPrecondition, InvalidArgument, Unavailable

LEASE_SECONDS = 10.0
OUTLET, SERIES = "outlet-1", "INV"
KEY = (OUTLET, SERIES)
EPOCH = datetime(2026, 11, 24, tzinfo=UTC)


@dataclass
class Row:
    last_committed: int = 0
    lease_id: str | None = None
    lease_number: int | None = None
    lease_last: int | None = None
    expires: float = 0.0  # on the store's clock (FakeStore.now)


class FakeStore:
    def __init__(self) -> None:
        self.now = 0.0  # the database's clock, moved by the tests
        self.rows: dict[Key, Row] = {}
        self.history: dict[str, tuple[Key, int, str]] = {}  # lease_id -> (key, number, status)

    def _close(self, key: Key, status: str) -> None:
        row = self.rows[key]
        self.history[row.lease_id] = (key, row.lease_number, status)
        row.lease_id, row.lease_number, row.lease_last, row.expires = None, None, None, 0.0

    def _row_of(self, lease_id: str) -> tuple[Key, Row] | None:
        return next(((k, r) for k, r in self.rows.items() if r.lease_id == lease_id), None)

    async def try_issue(self, outlet_id, series, lease_id, holder, lease_seconds, count=1) -> Attempt:
        row = self.rows.get((outlet_id, series))
        if row is None:
            return Attempt(exists=False)
        if row.lease_id is None:
            row.lease_id, row.lease_number = lease_id, row.last_committed + 1
            row.lease_last = row.last_committed + count
            row.expires = self.now + lease_seconds
            self.history[lease_id] = ((outlet_id, series), row.lease_number, "open")
            return Attempt(lease=Lease(lease_id, outlet_id, series, row.lease_number,
                                       EPOCH + timedelta(seconds=row.expires), lease_seconds, last=row.lease_last))
        return Attempt(open_lease_id=row.lease_id, open_lease_number=row.lease_number,
                       expires_in=row.expires - self.now)

    async def roll(self, outlet_id, series, previous_lease_id, lease_id, holder, lease_seconds, count
                   ) -> Lease | None:
        found = self._row_of(previous_lease_id)
        if found is None or found[0] != (outlet_id, series):
            return None
        key, row = found
        row.last_committed = row.lease_last or 0
        self._close(key, "committed")
        attempt = await self.try_issue(*key, lease_id, holder, lease_seconds, count)
        return attempt.lease

    async def create_counter(self, outlet_id, series) -> None:
        self.rows.setdefault((outlet_id, series), Row())

    async def reconcile(self, outlet_id, series, expired_lease_id, ledger_last) -> bool:
        row = self.rows.get((outlet_id, series))
        if row is None or row.lease_id != expired_lease_id or row.expires > self.now:
            return False
        number = row.lease_number
        self._close((outlet_id, series), "committed" if number <= ledger_last else "expired")
        row.last_committed = ledger_last
        return True

    async def commit(self, lease_id) -> CommitOutcome:
        found = self._row_of(lease_id)
        if found is not None:
            key, row = found
            row.last_committed = row.lease_last or 0
            self._close(key, "committed")
            return CommitOutcome("committed", row.last_committed, *key)
        if lease_id not in self.history:
            return CommitOutcome("unknown")
        key, _, status = self.history[lease_id]
        return CommitOutcome("already_committed" if status == "committed" else status,
                             self.rows[key].last_committed, *key)

    async def release(self, lease_id, reason) -> Key | None:
        found = self._row_of(lease_id)
        if found is None:
            return None
        self._close(found[0], "released")
        return found[0]

    async def open_lease(self, lease_id) -> OpenLease | None:
        found = self._row_of(lease_id)
        return OpenLease(*found[0], found[1].lease_number) if found else None

    async def resync(self, lease_id, ledger_last, reason) -> Key | None:
        found = self._row_of(lease_id)
        if found is None:
            return None
        self._close(found[0], "released")
        found[1].last_committed = ledger_last
        return found[0]

    async def state(self, outlet_id, series) -> CounterState:
        row = self.rows.get((outlet_id, series), Row())
        return CounterState(outlet_id, series, row.last_committed, row.lease_id, row.lease_number, None)


class FakeHeads:
    """The ledger's chain heads; `down` answers like an unreachable ledger."""

    def __init__(self) -> None:
        self.heads: dict[Key, int] = {}
        self.down = False
        self.calls = 0

    async def last_number(self, outlet_id, series, timeout) -> int:
        self.calls += 1
        if self.down:
            raise Unavailable("ledger unreachable (test)", reason="LEDGER_UNAVAILABLE")
        return self.heads.get((outlet_id, series), 0)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def heads() -> FakeHeads:
    return FakeHeads()


@pytest.fixture
def counters(store, heads) -> Counters:
    return Counters(store, heads, lease_seconds=LEASE_SECONDS, ledger_timeout=1.0, poll_seconds=0.01,
                    max_wait_seconds=0.2)


async def seal(counters: Counters, heads: FakeHeads, *, written: bool = True) -> int:
    """One seal as the ledger does it: allocate, write (or not), commit."""
    lease = await counters.allocate(OUTLET, SERIES, "test", None)
    if written:
        heads.heads[KEY] = lease.number
    return await counters.commit(lease.lease_id)


async def test_issue_commit_release(counters, heads, store):
    assert [await seal(counters, heads) for _ in range(3)] == [1, 2, 3]
    lease = await counters.allocate(OUTLET, SERIES, "test", None)
    assert lease.number == 4
    assert lease.ttl_seconds == LEASE_SECONDS  # a duration: what the holder counts on its own clock
    await counters.release(lease.lease_id, "signing failed")
    again = await counters.allocate(OUTLET, SERIES, "test", None)
    assert again.number == 4 and again.lease_id != lease.lease_id
    with pytest.raises(FailedPrecondition):
        await counters.commit(lease.lease_id)  # released: not committable any more
    assert await counters.commit(again.lease_id) == 4
    assert await counters.commit(again.lease_id) == 4  # a retried commit is fine
    assert heads.calls == 0  # nothing expired: the ledger was never asked


async def test_expired_lease_the_ledger_wrote_is_reconciled_to_the_next_number(counters, heads, store):
    await seal(counters, heads)
    crashed = await counters.allocate(OUTLET, SERIES, "test", None)
    heads.heads[KEY] = crashed.number  # written to the ledger; the Commit never came
    store.now += LEASE_SECONDS + 1
    after = await counters.allocate(OUTLET, SERIES, "test", None)
    assert after.number == 3 and heads.calls == 1
    assert await counters.commit(crashed.lease_id) == 2  # late commit: recognised, the ledger has it


async def test_expired_lease_the_ledger_never_wrote_is_reissued(counters, heads, store):
    await seal(counters, heads)
    hung = await counters.allocate(OUTLET, SERIES, "test", None)
    store.now += LEASE_SECONDS + 1
    again = await counters.allocate(OUTLET, SERIES, "test", None)
    assert again.number == hung.number == 2 and heads.calls == 1
    with pytest.raises(FailedPrecondition):
        await counters.commit(hung.lease_id)  # superseded


async def test_ledger_unavailable_issues_nothing(counters, heads, store):
    stale = await counters.allocate(OUTLET, SERIES, "test", None)
    store.now += LEASE_SECONDS + 1
    heads.down = True
    with pytest.raises(Unavailable):
        await counters.allocate(OUTLET, SERIES, "test", None)
    state = await counters.state(OUTLET, SERIES)
    assert state.open_lease_id == stale.lease_id and state.last_committed == 0
    heads.down = False
    assert (await counters.allocate(OUTLET, SERIES, "test", None)).number == 1


async def test_counter_ahead_resyncs_to_the_ledger_head(counters, heads, store):
    for _ in range(5):
        await seal(counters, heads)
    store.rows[KEY].last_committed += 3  # a restore, or Commits without inserts: the counter is ahead
    ahead = await counters.allocate(OUTLET, SERIES, "test", None)
    assert ahead.number == 9
    await counters.release(ahead.lease_id, "counter ahead", resync_from_ledger=True)
    assert (await counters.state(OUTLET, SERIES)).last_committed == 5
    nxt = await counters.allocate(OUTLET, SERIES, "test", None)
    assert nxt.number == 6
    assert store.history[ahead.lease_id][2] == "released"


async def test_resync_with_the_ledger_down_keeps_the_lease_open_until_expiry(counters, heads, store):
    for _ in range(2):
        await seal(counters, heads)
    store.rows[KEY].last_committed = 7
    ahead = await counters.allocate(OUTLET, SERIES, "test", None)
    heads.down = True
    with pytest.raises(Unavailable):
        await counters.release(ahead.lease_id, "counter ahead", resync_from_ledger=True)
    assert (await counters.state(OUTLET, SERIES)).open_lease_id == ahead.lease_id  # nothing moved
    heads.down = False
    store.now += LEASE_SECONDS + 1  # expiry reconciliation does the same resync
    assert (await counters.allocate(OUTLET, SERIES, "test", None)).number == 3


async def test_resync_of_a_lease_no_longer_open_changes_nothing(counters, heads, store):
    await seal(counters, heads)
    lease = await counters.allocate(OUTLET, SERIES, "test", None)
    await counters.release(lease.lease_id, "gone")
    calls = heads.calls
    await counters.release(lease.lease_id, "late resync", resync_from_ledger=True)
    assert heads.calls == calls and (await counters.state(OUTLET, SERIES)).last_committed == 1


async def test_a_range_lease_commits_its_whole_range(counters, heads, store):
    await seal(counters, heads)
    batch = await counters.allocate(OUTLET, SERIES, "test", None, count=5)
    assert (batch.number, batch.through) == (2, 6)
    heads.heads[KEY] = 6
    assert await counters.commit(batch.lease_id) == 6
    assert (await counters.allocate(OUTLET, SERIES, "test", None)).number == 7


async def test_an_expired_range_the_ledger_never_wrote_is_reissued_whole(counters, heads, store):
    await seal(counters, heads)
    crashed = await counters.allocate(OUTLET, SERIES, "test", None, count=8)
    store.now += LEASE_SECONDS + 1  # the ledger died before its batch's transaction: the head is still 1
    again = await counters.allocate(OUTLET, SERIES, "test", None, count=3)
    assert (crashed.number, again.number, again.through) == (2, 2, 4) and heads.calls == 1


async def test_a_range_count_out_of_bounds_is_invalid(counters):
    with pytest.raises(InvalidArgument):
        await counters.allocate(OUTLET, SERIES, "test", None, count=257)
    with pytest.raises(InvalidArgument):
        await counters.allocate(OUTLET, SERIES, "test", None, count=-1)


async def test_a_commit_rides_on_the_next_allocation(counters, heads, store):
    first = await counters.allocate(OUTLET, SERIES, "test", None, count=4)
    heads.heads[KEY] = 4
    second = await counters.allocate(OUTLET, SERIES, "test", None, count=2, commit_lease_id=first.lease_id)
    assert (second.number, second.through) == (5, 6)
    assert (await counters.state(OUTLET, SERIES)).last_committed == 4
    assert await counters.commit(first.lease_id) == 4  # a retried commit of the rolled lease is fine


async def test_a_reconciled_previous_lease_makes_an_ordinary_allocation(counters, heads, store):
    first = await counters.allocate(OUTLET, SERIES, "test", None, count=4)
    store.now += LEASE_SECONDS + 1
    other = await counters.allocate(OUTLET, SERIES, "other", None)  # reconciled: the ledger never wrote it
    await counters.release(other.lease_id, "test")
    again = await counters.allocate(OUTLET, SERIES, "test", None, count=2, commit_lease_id=first.lease_id)
    assert (again.number, again.through) == (1, 2)  # the expired range was not committed by the late roll
