"""The counter's tables (schema "counter") and its queries.

Tables are SQLAlchemy Core (the migration creates them); the hot-path statements are SQL text.
Every hot-path call is ONE statement in autocommit (so one short transaction): data-modifying CTEs
update the counter row (its row lock serialises replicas), write the lease history and, on commit or
release, `pg_notify` the waiters of every replica. a runtime NotifyListener LISTENs on a dedicated psycopg
connection and turns those notifications into wake-ups.
"""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from services.counter.domain import Attempt, CommitOutcome, CounterState, Key, Lease, OpenLease

log = structlog.get_logger()

NOTIFY_CHANNEL = "counter_freed"

metadata = sa.MetaData(schema="counter")

counters = sa.Table(
    "counters", metadata,
    sa.Column("outlet_id", sa.Text, primary_key=True),
    sa.Column("series", sa.Text, primary_key=True),
    sa.Column("last_committed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("lease_id", postgresql.UUID(as_uuid=False)),
    sa.Column("lease_number", sa.BigInteger),
    sa.Column("lease_last", sa.BigInteger),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("lease_holder", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("lease_id", postgresql.UUID(as_uuid=False), primary_key=True),
    sa.Column("outlet_id", sa.Text, nullable=False),
    sa.Column("series", sa.Text, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("last_number", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.Text, nullable=False, server_default=""),
    sa.Column("status", sa.Text, nullable=False),  # open | committed | released | expired
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
)

# The hot-path statements, as SQL text: built once (building and cache-keying the equivalent Core
# constructs cost ~2 ms of CPU per call, more than the database work). One statement each, so one
# short transaction; the counter row's lock (taken by the UPDATE) serialises every replica.
_CLEAR_LEASE = ("lease_id = NULL, lease_number = NULL, lease_last = NULL, lease_expires_at = NULL, "
                "lease_holder = NULL")
_NOTIFY = f"pg_notify('{NOTIFY_CHANNEL}', json_build_array(outlet_id, series)::text)"

# Issue last_committed + 1 .. last_committed + count when no lease is open; otherwise say why not (the row at the statement's
# snapshot: if it shows no lease, it was freed meanwhile and the caller simply tries again).
_ISSUE = sa.text("""
WITH issued AS (
    UPDATE counter.counters
       SET lease_id = :lease_id, lease_number = last_committed + 1, lease_last = last_committed + :count,
           lease_expires_at = now() + :ttl, lease_holder = :holder, updated_at = now()
     WHERE outlet_id = :outlet_id AND series = :series AND lease_id IS NULL
 RETURNING lease_number, lease_last, lease_expires_at
), history AS (
    INSERT INTO counter.leases (lease_id, outlet_id, series, number, last_number, holder, status, expires_at)
    SELECT :lease_id, :outlet_id, :series, lease_number, lease_last, :holder, 'open', lease_expires_at
      FROM issued
)
SELECT true AS issued, lease_number AS number, lease_last AS last, lease_expires_at AS expires_at,
       NULL::text AS open_lease_id, NULL::float8 AS expires_in
  FROM issued
UNION ALL
SELECT false, lease_number, lease_last, lease_expires_at, lease_id::text,
       extract(epoch FROM lease_expires_at - now())::float8
  FROM counter.counters
 WHERE outlet_id = :outlet_id AND series = :series AND NOT EXISTS (SELECT 1 FROM issued)
""")

_COMMIT = sa.text(f"""
WITH done AS (
    UPDATE counter.counters SET last_committed = lease_last, {_CLEAR_LEASE}, updated_at = now()
     WHERE lease_id = :lease_id
 RETURNING outlet_id, series, last_committed
), history AS (
    UPDATE counter.leases SET status = 'committed', closed_at = now()
     WHERE lease_id = :lease_id AND EXISTS (SELECT 1 FROM done)
)
SELECT outlet_id, series, last_committed, {_NOTIFY} FROM done
""")

_RELEASE = sa.text(f"""
WITH freed AS (
    UPDATE counter.counters SET {_CLEAR_LEASE}, updated_at = now()
     WHERE lease_id = :lease_id
 RETURNING outlet_id, series
), history AS (
    UPDATE counter.leases SET status = 'released', closed_at = now(), reason = :reason
     WHERE lease_id = :lease_id AND EXISTS (SELECT 1 FROM freed)
)
SELECT outlet_id, series, {_NOTIFY} FROM freed
""")

# The ledger is the truth: last_committed := its head, the expired lease dropped (recorded as
# committed when the ledger holds its number, else expired), provided it is still that expired lease.
_RECONCILE = sa.text(f"""
WITH fixed AS (
    UPDATE counter.counters SET last_committed = :last, {_CLEAR_LEASE}, updated_at = now()
     WHERE outlet_id = :outlet_id AND series = :series AND lease_id = :lease_id
       AND lease_expires_at <= now()
 RETURNING outlet_id, series
), history AS (
    UPDATE counter.leases
       SET status = CASE WHEN last_number <= :last THEN 'committed' ELSE 'expired' END,
           closed_at = now(), reason = :reason
     WHERE lease_id = :lease_id AND EXISTS (SELECT 1 FROM fixed)
)
SELECT outlet_id, {_NOTIFY} FROM fixed
""")


# The holder says the counter is ahead of the ledger: last_committed := the ledger's head, while its
# lease is still the open one (the row lock of this UPDATE serialises it with every other change).
_RESYNC = sa.text(f"""
WITH fixed AS (
    UPDATE counter.counters SET last_committed = :last, {_CLEAR_LEASE}, updated_at = now()
     WHERE lease_id = :lease_id
 RETURNING outlet_id, series
), history AS (
    UPDATE counter.leases SET status = 'released', closed_at = now(), reason = :reason
     WHERE lease_id = :lease_id AND EXISTS (SELECT 1 FROM fixed)
)
SELECT outlet_id, series, {_NOTIFY} FROM fixed
""")

# The holder's previous lease committed (last_committed := its last number) and the next range issued
# to the same holder, in one statement: while a ledger has work for a counter, its commits ride on its
# next allocation. Only if `previous` is still the counter's open lease.
_ROLL = sa.text("""
WITH rolled AS (
    UPDATE counter.counters
       SET last_committed = lease_last, lease_id = :lease_id, lease_number = lease_last + 1,
           lease_last = lease_last + :count, lease_expires_at = now() + :ttl, lease_holder = :holder,
           updated_at = now()
     WHERE lease_id = :previous AND outlet_id = :outlet_id AND series = :series
 RETURNING outlet_id, series, lease_number, lease_last, lease_expires_at
), closed AS (
    UPDATE counter.leases SET status = 'committed', closed_at = now()
     WHERE lease_id = :previous AND EXISTS (SELECT 1 FROM rolled)
), history AS (
    INSERT INTO counter.leases (lease_id, outlet_id, series, number, last_number, holder, status, expires_at)
    SELECT :lease_id, outlet_id, series, lease_number, lease_last, :holder, 'open', lease_expires_at FROM rolled
)
SELECT outlet_id, series, lease_number AS number, lease_last AS last, lease_expires_at AS expires_at FROM rolled
""")

_OPEN_LEASE = sa.text("""
SELECT outlet_id, series, lease_number FROM counter.counters WHERE lease_id = :lease_id
""")


def _counter_is(outlet_id: str, series: str):
    return sa.and_(counters.c.outlet_id == outlet_id, counters.c.series == series)


class CounterStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        # Each call is a single statement: autocommit makes it one round trip, still atomic.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _run(self, statement, **params) -> list[sa.Row]:
        async with self.autocommit.connect() as conn:
            return list((await conn.execute(statement, params or None)).all())

    async def try_issue(self, outlet_id: str, series: str, lease_id: str, holder: str,
                        lease_seconds: float, count: int = 1) -> Attempt:
        rows = await self._run(_ISSUE, outlet_id=outlet_id, series=series, lease_id=lease_id, holder=holder,
                               ttl=timedelta(seconds=lease_seconds), count=count)
        if not rows:
            return Attempt(exists=False)
        row = rows[0]
        if row.issued:
            # expires_at = now() + ttl in the same statement: the lease is valid for exactly lease_seconds.
            return Attempt(lease=Lease(lease_id, outlet_id, series, row.number, row.expires_at, lease_seconds,
                                       last=row.last))
        return Attempt(open_lease_id=row.open_lease_id, open_lease_number=row.number,
                       expires_in=float(row.expires_in) if row.expires_in is not None else 0.0)

    async def roll(self, outlet_id: str, series: str, previous_lease_id: str, lease_id: str, holder: str,
                   lease_seconds: float, count: int) -> Lease | None:
        rows = await self._run(_ROLL, outlet_id=outlet_id, series=series, previous=previous_lease_id,
                               lease_id=lease_id, holder=holder,
                               ttl=timedelta(seconds=lease_seconds), count=count)
        if not rows:
            return None
        row = rows[0]
        return Lease(lease_id, row.outlet_id, row.series, row.number, row.expires_at, lease_seconds, last=row.last)

    async def create_counter(self, outlet_id: str, series: str) -> None:
        await self._run(postgresql.insert(counters).values(outlet_id=outlet_id, series=series)
                        .on_conflict_do_nothing().returning(counters.c.outlet_id))

    async def reconcile(self, outlet_id: str, series: str, expired_lease_id: str, ledger_last: int) -> bool:
        rows = await self._run(_RECONCILE, outlet_id=outlet_id, series=series, lease_id=expired_lease_id,
                               last=ledger_last, reason=f"reconciled after expiry: ledger head {ledger_last}")
        return bool(rows)

    async def commit(self, lease_id: str) -> CommitOutcome:
        rows = await self._run(_COMMIT, lease_id=lease_id)
        if rows:
            return CommitOutcome("committed", rows[0].last_committed, rows[0].outlet_id, rows[0].series)
        # Not the open lease: a retry of a commit, or a lease that is gone.
        rows = await self._run(
            sa.select(leases.c.status, leases.c.outlet_id, leases.c.series, counters.c.last_committed)
            .select_from(leases.outerjoin(counters, sa.and_(counters.c.outlet_id == leases.c.outlet_id,
                                                            counters.c.series == leases.c.series)))
            .where(leases.c.lease_id == lease_id))
        if not rows:
            return CommitOutcome("unknown")
        row = rows[0]
        status = "already_committed" if row.status == "committed" else row.status
        return CommitOutcome(status, row.last_committed or 0, row.outlet_id, row.series)

    async def release(self, lease_id: str, reason: str) -> Key | None:
        rows = await self._run(_RELEASE, lease_id=lease_id, reason=reason or None)
        return (rows[0].outlet_id, rows[0].series) if rows else None

    async def open_lease(self, lease_id: str) -> OpenLease | None:
        rows = await self._run(_OPEN_LEASE, lease_id=lease_id)
        return OpenLease(rows[0].outlet_id, rows[0].series, rows[0].lease_number) if rows else None

    async def resync(self, lease_id: str, ledger_last: int, reason: str) -> Key | None:
        rows = await self._run(_RESYNC, lease_id=lease_id, last=ledger_last, reason=reason)
        return (rows[0].outlet_id, rows[0].series) if rows else None

    async def state(self, outlet_id: str, series: str) -> CounterState:
        rows = await self._run(sa.select(counters).where(_counter_is(outlet_id, series)))
        if not rows:
            return CounterState(outlet_id, series, 0, None, None, None)
        row = rows[0]
        return CounterState(outlet_id, series, row.last_committed, row.lease_id, row.lease_number,
                            row.lease_expires_at, row.lease_last)

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))


def freed_key(payload: str) -> Key | None:
    """The (outlet_id, series) a `pg_notify` on NOTIFY_CHANNEL carries; None for a payload we did not send."""
    try:
        outlet_id, series = json.loads(payload)
    except (ValueError, TypeError):
        return None
    return (outlet_id, series)
