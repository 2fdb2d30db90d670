"""The outbox relay: moves every producer's outbox events to the webhooks service, at least once.

One mechanism for every producing service (the ledger now; payments and reports later). A producer
writes its events into `<schema>.outbox` in the same transaction as the change they describe, and
mounts an `OutboxRelay` as a background job (`Mounted.background`). The table must have these columns
(ledger migrations 0001 + 0003 are the model):

    seq bigserial PRIMARY KEY, event_id uuid UNIQUE, event_type text, merchant_id uuid,
    outlet_id uuid NULL, payload jsonb, created_at timestamptz, published_at timestamptz NULL
    (and an index on (seq) WHERE published_at IS NULL)

Each cycle, in one transaction: take the oldest unpublished rows (`FOR UPDATE SKIP LOCKED`, so replicas
share the work and never publish a row at the same time), publish them in one call, mark them
published, commit. A failed publish rolls back (the rows stay unpublished) and the relay tries again
after an exponential, capped backoff: an event is never dropped. A crash after the publish and before
the commit publishes the rows again later; the receiver deduplicates on event_id (at least once).

Environment (services.runtime.config):
  FISCAL_OUTBOX_BATCH (200; at most 500, PublishEvents' limit): rows per cycle.
  FISCAL_OUTBOX_POLL_SECONDS (0.2): how often an idle relay looks (a producer may also `wake()` it).
  FISCAL_OUTBOX_MIN_GAP_SECONDS (0.05): wake-ups start a cycle at most this often, so that under a stream
    of seals one cycle carries what many wrote (a cycle costs a transaction and a call whatever its size).
  FISCAL_OUTBOX_PUBLISH_TIMEOUT_SECONDS (5): the publish call's deadline.
  FISCAL_OUTBOX_BACKOFF_SECONDS (0.2) and FISCAL_OUTBOX_BACKOFF_MAX_SECONDS (10): the retry backoff.

Nothing here logs an event's payload: failures are logged with the error's type and gRPC status only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog

from services.runtime.config import env_float, env_int

log = structlog.get_logger()

# PublishEvents takes at most 500 events per call (protos/fiscal/v1/webhooks.proto).
MAX_BATCH = 500
# An event's envelope is at most 256 KB (docs/webhooks.md): data alone past that can only be refused.
MAX_DATA_BYTES = 262_144
TRUNCATED_DATA = {"truncated": True, "reason": "payload over 256 KB"}
# One publish call's data stays well under gRPC's 4 MB message limit (the webhooks server's receive limit).
MAX_CALL_BYTES = 3 * 1024 * 1024


@dataclass(frozen=True)
class OutboxRecord:
    """One row of an outbox, as the relay publishes it."""

    seq: int
    event_id: str
    event_type: str
    merchant_id: str
    outlet_id: str | None
    payload_json: str  # the payload as JSON text, as PostgreSQL prints the jsonb (never parsed here)
    created_at: datetime

    def data_json(self) -> str:
        """The event's data for PublishEvents: the payload's JSON text, or past MAX_DATA_BYTES the
        truncation marker the webhooks service would store anyway, so that one oversized event cannot
        block the outbox."""
        if len(self.payload_json) > MAX_DATA_BYTES // 4 and len(self.payload_json.encode()) > MAX_DATA_BYTES:
            return json.dumps(TRUNCATED_DATA, separators=(",", ":"), sort_keys=True)
        return self.payload_json


# What a producer gives the relay: publish these events (all of them, or raise). Must carry a deadline.
PublishFn = Callable[[Sequence[OutboxRecord]], Awaitable[None]]


# --- the pure part: settings, backoff, how much to publish at once ------------------------------------

@dataclass(frozen=True)
class RelaySettings:
    batch: int = 200
    poll_seconds: float = 0.2
    min_gap_seconds: float = 0.05
    publish_timeout: float = 5.0
    backoff_seconds: float = 0.2
    backoff_max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= MAX_BATCH:
            raise SystemExit(f"FISCAL_OUTBOX_BATCH must be from 1 to {MAX_BATCH}, got {self.batch}")
        for name in ("poll_seconds", "publish_timeout", "backoff_seconds", "backoff_max_seconds"):
            if getattr(self, name) <= 0:
                raise SystemExit(f"outbox relay: {name} must be more than 0")
        if self.min_gap_seconds < 0:
            raise SystemExit("FISCAL_OUTBOX_MIN_GAP_SECONDS must not be negative")
        if self.backoff_max_seconds < self.backoff_seconds:
            raise SystemExit("FISCAL_OUTBOX_BACKOFF_MAX_SECONDS must be at least FISCAL_OUTBOX_BACKOFF_SECONDS")

    @classmethod
    def from_env(cls) -> RelaySettings:
        return cls(batch=env_int("FISCAL_OUTBOX_BATCH", 200),
                   poll_seconds=env_float("FISCAL_OUTBOX_POLL_SECONDS", 0.2),
                   min_gap_seconds=env_float("FISCAL_OUTBOX_MIN_GAP_SECONDS", 0.05),
                   publish_timeout=env_float("FISCAL_OUTBOX_PUBLISH_TIMEOUT_SECONDS", 5.0),
                   backoff_seconds=env_float("FISCAL_OUTBOX_BACKOFF_SECONDS", 0.2),
                   backoff_max_seconds=env_float("FISCAL_OUTBOX_BACKOFF_MAX_SECONDS", 10.0))


class Backoff:
    """Exponential backoff between failed cycles: first, 2 x first, 4 x first, ... capped; a success
    starts again from `first`."""

    def __init__(self, first: float, cap: float, factor: float = 2.0):
        self.first, self.cap, self.factor = first, cap, factor
        self.failures = 0

    def failed(self) -> float:
        """Record a failure; the pause before the next try."""
        self.failures += 1
        return min(self.cap, self.first * self.factor ** min(self.failures - 1, 64))

    def succeeded(self) -> int:
        """Record a success; how many failures it ended."""
        ended, self.failures = self.failures, 0
        return ended


def publishable_prefix(records: Sequence[OutboxRecord], max_bytes: int = MAX_CALL_BYTES) -> int:
    """How many of the leading records one call carries: all of them while their data fits `max_bytes`,
    and always at least one (a single event's data is at most MAX_DATA_BYTES)."""
    total = 0
    for count, record in enumerate(records):
        total += len(record.data_json().encode())
        if total > max_bytes and count > 0:
            return count
    return len(records)


def pause_after(published: int, batch: int, failed: bool, backoff_delay: float, poll_seconds: float) -> float:
    """How long to wait before the next cycle: the backoff after a failure, none after a full batch (more
    is probably waiting), the poll interval after a partial or empty one."""
    if failed:
        return backoff_delay
    if published >= batch:
        return 0.0
    return poll_seconds


def gap_left(cycle_started: float, now: float, min_gap: float) -> float:
    """After a wake-up: how much longer to wait so that cycles start at least `min_gap` apart."""
    return max(0.0, min_gap - (now - cycle_started))


# --- the outbox in PostgreSQL ----------------------------------------------------------------------

class Claim(Protocol):
    records: list[OutboxRecord]

    async def mark_published(self, seqs: Sequence[int]) -> None: ...


class Outbox(Protocol):
    name: str

    def claim(self, limit: int) -> contextlib.AbstractAsyncContextManager[Claim]: ...


_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class _PostgresClaim:
    def __init__(self, conn, records: list[OutboxRecord], mark_sql):
        self._conn, self.records, self._mark_sql = conn, records, mark_sql

    async def mark_published(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._conn.execute(self._mark_sql, {"seqs": list(seqs)})


class PostgresOutbox:
    """`<schema>.outbox` over an async SQLAlchemy engine whose role may read and update it."""

    def __init__(self, engine, schema: str):
        import sqlalchemy as sa
        from sqlalchemy.dialects.postgresql import ARRAY

        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"not a schema name: {schema!r}")
        self.engine, self.name = engine, schema
        self._select = sa.text(f"""
            SELECT seq, event_id::text AS event_id, event_type, merchant_id::text AS merchant_id,
                   outlet_id::text AS outlet_id, payload::text AS payload_json, created_at
            FROM "{schema}".outbox WHERE published_at IS NULL
            ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED""")
        self._mark = sa.text(f'UPDATE "{schema}".outbox SET published_at = now() WHERE seq = ANY(:seqs)'
                             ).bindparams(sa.bindparam("seqs", type_=ARRAY(sa.BigInteger)))

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[_PostgresClaim]:
        """The oldest unpublished rows nobody else holds, locked until the block ends: committed if it
        ends normally, rolled back (rows unpublished, unlocked) if it raises."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(self._select, {"limit": limit})).all()
            records = [OutboxRecord(seq=row.seq, event_id=row.event_id, event_type=row.event_type,
                                    merchant_id=row.merchant_id, outlet_id=row.outlet_id,
                                    payload_json=row.payload_json, created_at=row.created_at) for row in rows]
            yield _PostgresClaim(conn, records, self._mark)


# --- the loop ------------------------------------------------------------------------------------------

def _describe(error: BaseException) -> dict:
    """A failure, for the log: its type and, for a gRPC error, its status and message. Never the payload
    (the relay never puts event data in an error of its own)."""
    described = {"error_type": type(error).__name__}
    code, details = getattr(error, "code", None), getattr(error, "details", None)
    if callable(code):
        with contextlib.suppress(Exception):
            described["grpc_status"] = code().name
            described["details"] = ((details() if callable(details) else "") or "")[:200]
    return described


class OutboxRelay:
    """Publishes an outbox's events in order of `seq`, one batch per transaction, until shutdown."""

    def __init__(self, outbox: Outbox, publish: PublishFn, settings: RelaySettings | None = None):
        self.outbox = outbox
        self.publish = publish
        self.settings = settings or RelaySettings.from_env()
        self.backoff = Backoff(self.settings.backoff_seconds, self.settings.backoff_max_seconds)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look now rather than at the next poll (a producer calls this after committing events)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """One cycle: publish the oldest unpublished batch and mark it published. Raises (nothing marked)
        if the publish fails. Answers how many events were published."""
        async with self.outbox.claim(self.settings.batch) as claim:
            if not claim.records:
                return 0
            records = claim.records[:publishable_prefix(claim.records)]
            await self.publish(records)
            await claim.mark_published([record.seq for record in records])
        return len(records)

    async def run(self, stopping: asyncio.Event) -> None:
        """The background job (Mounted.background): cycles until `stopping` is set. A cycle that has
        started finishes (its publish has a deadline); rows not published stay for the next start or
        another replica."""
        log.info("outbox relay started", outbox=self.outbox.name, batch=self.settings.batch)
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            cycle_started = loop.time()
            self._wake.clear()
            published, failed, delay = 0, False, 0.0
            try:
                published = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: roll back, back off, try again
                failed, delay = True, self.backoff.failed()
                log.warning("outbox relay: publish failed; the events stay in the outbox and are retried",
                            outbox=self.outbox.name, failures=self.backoff.failures,
                            retry_in_seconds=round(delay, 3), **_describe(exc))
            else:
                ended = self.backoff.succeeded()
                if ended:
                    log.info("outbox relay: publishing again", outbox=self.outbox.name, after_failures=ended)
            pause = pause_after(published, self.settings.batch, failed, delay, self.settings.poll_seconds)
            if pause > 0:
                await self._pause(stopping, pause, wakeable=not failed)
                if rest := gap_left(cycle_started, loop.time(), self.settings.min_gap_seconds):
                    await self._pause(stopping, rest, wakeable=False)
        log.info("outbox relay stopped", outbox=self.outbox.name)

    async def _pause(self, stopping: asyncio.Event, seconds: float, wakeable: bool) -> None:
        """Wait `seconds`, or less if shutdown starts or (unless backing off) a producer wakes us."""
        waiters = [asyncio.ensure_future(stopping.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


# --- publishing to the webhooks service --------------------------------------------------------------

def webhooks_publisher(channel, timeout: float) -> PublishFn:
    """PublishFn over WebhookIngestService.PublishEvents on `channel` (open_channel(addr, "webhooks")),
    each call with `timeout` as its deadline. Raises grpc.RpcError when the call fails."""
    from fiscal.v1 import webhooks_pb2, webhooks_pb2_grpc

    from services.runtime.timestamps import to_timestamp

    stub = webhooks_pb2_grpc.WebhookIngestServiceStub(channel)

    async def publish(records: Sequence[OutboxRecord]) -> None:
        request = webhooks_pb2.PublishEventsRequest(events=[
            webhooks_pb2.OutboxEvent(event_id=r.event_id, event_type=r.event_type, merchant_id=r.merchant_id,
                                     outlet_id=r.outlet_id or "", occurred_at=to_timestamp(r.created_at),
                                     data_json=r.data_json())
            for r in records])
        await stub.PublishEvents(request, timeout=timeout)

    return publish
