"""The webhooks tables (schema "webhooks", created by migrations/0001) and every query on them.

Every statement that touches one merchant's data filters by `merchant_id`: an id of another merchant
finds nothing (the servicer answers NOT_FOUND). Each public call is one statement (data-modifying CTEs)
in autocommit, so one short transaction.

The delivery queue:
- `publish_events` stores events (idempotent on event_id) and one delivery per matching endpoint, and
  NOTIFYs `webhooks_due` in the same transaction (delivered at commit).
- `claim` leases due deliveries, oldest event first, one in flight per (endpoint, outlet); the lease is
  a fresh `lease_id` per claim, so `record_outcome` is a compare-and-set on it: a replica whose lease
  expired and was taken over (or a delivery resent meanwhile) records nothing.
- wiring LISTENs on NOTIFY_CHANNEL (services/runtime/notify_listener.py) and wakes the engine; polling
  covers a lost NOTIFY.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger()

NOTIFY_CHANNEL = "webhooks_due"
MAX_ATTEMPTS_SHOWN = 100  # attempts returned with one delivery (the newest ones)


@dataclass(frozen=True)
class Endpoint:
    id: str
    seq: int
    merchant_id: str
    url: str
    description: str
    event_types: list[str]
    outlet_ids: list[str]
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None  # only while the previous secret still signs
    created_at: datetime
    updated_at: datetime

    @property
    def disabled(self) -> bool:
        return self.disabled_reason is not None


@dataclass(frozen=True)
class Attempt:
    resend: int
    number: int
    started_at: datetime
    http_status: int
    latency_ms: int
    response_excerpt: str
    error: str


@dataclass(frozen=True)
class Delivery:
    id: str
    seq: int
    endpoint_id: str
    event_id: str
    event_type: str
    outlet_id: str  # '' for an event about no outlet
    status: str
    attempt_count: int
    resend: int
    next_attempt_at: datetime | None  # pending only
    created_at: datetime
    completed_at: datetime | None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class NewEvent:
    event_id: str
    event_type: str
    merchant_id: str
    outlet_id: str | None
    occurred_at: datetime
    envelope: bytes


@dataclass(frozen=True)
class Claimed:
    """A leased delivery and everything one attempt needs."""

    delivery_id: str
    lease_id: str
    endpoint_id: str
    merchant_id: str
    url: str
    secret_sealed: bytes
    previous_secret_sealed: bytes | None  # only while it still signs
    event_id: str
    envelope: bytes
    attempts_made: int  # before this attempt, in this resend series
    resend: int


@dataclass(frozen=True)
class Outcome:
    """What one attempt ended with, and what follows: `next_delay` seconds to the next attempt (pending),
    or None (succeeded when `succeeded`, else failed). `disable_reason` disables the endpoint (410)."""

    started_at: datetime
    http_status: int
    latency_ms: int
    response_excerpt: str
    error: str
    succeeded: bool
    next_delay: float | None
    disable_reason: str | None = None


@dataclass(frozen=True)
class DisabledEndpoint:
    id: str
    merchant_id: str
    failing_since: datetime


_ENDPOINT_COLUMNS = """
    e.id::text AS id, e.seq, e.merchant_id, e.url, e.description, e.event_types, e.outlet_ids, e.disabled_reason,
    CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_expires_at END
        AS previous_secret_expires_at,
    e.created_at, e.updated_at
"""

_DELIVERY_COLUMNS = """
    d.id::text AS id, d.seq, d.endpoint_id::text AS endpoint_id, d.event_id::text AS event_id, d.event_type,
    d.outlet_key, d.status, d.attempt_count, d.resend,
    CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at, d.created_at, d.completed_at
"""

_NOTIFY = f"pg_notify('{NOTIFY_CHANNEL}', '')"

_CREATE_ENDPOINT = sa.text(f"""
INSERT INTO webhooks.endpoints AS e (id, merchant_id, url, description, event_types, outlet_ids, secret_sealed)
VALUES (CAST(:id AS uuid), :merchant_id, :url, :description, CAST(:event_types AS text[]),
        CAST(:outlet_ids AS text[]), :secret_sealed)
RETURNING {_ENDPOINT_COLUMNS}
""")

_GET_ENDPOINT = sa.text(f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhooks.endpoints e
 WHERE e.id = CAST(:id AS uuid) AND e.merchant_id = :merchant_id AND e.deleted_at IS NULL
""")

_LIST_ENDPOINTS = sa.text(f"""
SELECT {_ENDPOINT_COLUMNS} FROM webhooks.endpoints e
 WHERE e.merchant_id = :merchant_id AND e.deleted_at IS NULL AND e.seq > :after
 ORDER BY e.seq LIMIT :limit
""")

# Each change only when given (a NULL parameter leaves the column). Re-enabling clears the failure
# clock too: the endpoint gets a fresh window before it can be disabled again for failing.
_UPDATE_ENDPOINT = sa.text(f"""
UPDATE webhooks.endpoints e SET
    url = coalesce(:url, url),
    description = coalesce(:description, description),
    event_types = coalesce(CAST(:event_types AS text[]), event_types),
    outlet_ids = coalesce(CAST(:outlet_ids AS text[]), outlet_ids),
    disabled_at = CASE WHEN CAST(:disabled AS boolean) IS NULL THEN disabled_at
                       WHEN CAST(:disabled AS boolean) THEN coalesce(disabled_at, now()) END,
    disabled_reason = CASE WHEN CAST(:disabled AS boolean) IS NULL THEN disabled_reason
                           WHEN CAST(:disabled AS boolean) THEN coalesce(disabled_reason, 'disabled by hand') END,
    failing_since = CASE WHEN NOT CAST(:disabled AS boolean) THEN NULL ELSE failing_since END,
    updated_at = now()
 WHERE e.id = CAST(:id AS uuid) AND e.merchant_id = :merchant_id AND e.deleted_at IS NULL
RETURNING {_ENDPOINT_COLUMNS}
""")

_DELETE_ENDPOINT = sa.text("""
UPDATE webhooks.endpoints SET deleted_at = now(), updated_at = now()
 WHERE id = CAST(:id AS uuid) AND merchant_id = :merchant_id AND deleted_at IS NULL
RETURNING id
""")

_ROTATE_SECRET = sa.text("""
UPDATE webhooks.endpoints SET previous_secret_sealed = secret_sealed, secret_sealed = :secret_sealed,
       previous_secret_expires_at = now() + :overlap, updated_at = now()
 WHERE id = CAST(:id AS uuid) AND merchant_id = :merchant_id AND deleted_at IS NULL
RETURNING previous_secret_expires_at
""")

# Events new to us (ON CONFLICT: a relay that hands an event over twice) and, for each, one delivery
# per matching endpoint; the NOTIFY goes out at commit.
_PUBLISH = sa.text(f"""
WITH input AS (
    SELECT * FROM unnest(CAST(:event_ids AS uuid[]), CAST(:event_types AS text[]), CAST(:merchant_ids AS text[]),
                         CAST(:outlet_ids AS text[]), CAST(:occurred_ats AS timestamptz[]),
                         CAST(:envelopes AS bytea[]))
           WITH ORDINALITY AS t(event_id, event_type, merchant_id, outlet_id, occurred_at, envelope, ord)
), stored AS (
    INSERT INTO webhooks.events (event_id, event_type, merchant_id, outlet_id, occurred_at, envelope)
    SELECT event_id, event_type, merchant_id, nullif(outlet_id, ''), occurred_at, envelope FROM input ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id, seq, event_type, merchant_id, outlet_id
), delivered AS (
    INSERT INTO webhooks.deliveries (id, endpoint_id, merchant_id, event_id, event_seq, event_type, outlet_key)
    SELECT gen_random_uuid(), e.id, s.merchant_id, s.event_id, s.seq, s.event_type, coalesce(s.outlet_id, '')
      FROM stored s
      JOIN webhooks.endpoints e
        ON e.merchant_id = s.merchant_id AND e.deleted_at IS NULL AND e.disabled_at IS NULL
       AND s.event_type = ANY (e.event_types)
       AND (cardinality(e.outlet_ids) = 0 OR s.outlet_id = ANY (e.outlet_ids))
     ORDER BY s.seq
    RETURNING 1
)
SELECT (SELECT count(*) FROM stored) AS stored, (SELECT count(*) FROM delivered) AS deliveries,
       {_NOTIFY} AS notified
""")

# A webhook.test event for one endpoint (whatever its subscriptions).
_TEST_DELIVERY = sa.text(f"""
WITH endpoint AS (
    SELECT id, merchant_id FROM webhooks.endpoints
     WHERE id = CAST(:endpoint_id AS uuid) AND merchant_id = :merchant_id AND deleted_at IS NULL
), stored AS (
    INSERT INTO webhooks.events (event_id, event_type, merchant_id, outlet_id, occurred_at, envelope)
    SELECT CAST(:event_id AS uuid), :event_type, merchant_id, NULL, :occurred_at, :envelope FROM endpoint
    RETURNING event_id, seq, event_type
), d AS (
    INSERT INTO webhooks.deliveries (id, endpoint_id, merchant_id, event_id, event_seq, event_type, outlet_key)
    SELECT CAST(:delivery_id AS uuid), endpoint.id, endpoint.merchant_id, stored.event_id, stored.seq,
           stored.event_type, ''
      FROM endpoint, stored
    RETURNING *
)
SELECT {_DELIVERY_COLUMNS}, {_NOTIFY} AS notified FROM d
""")

_GET_DELIVERY = sa.text(f"""
SELECT {_DELIVERY_COLUMNS} FROM webhooks.deliveries d
 WHERE d.id = CAST(:id AS uuid) AND d.merchant_id = :merchant_id
""")

_LIST_DELIVERIES = sa.text(f"""
SELECT {_DELIVERY_COLUMNS} FROM webhooks.deliveries d
 WHERE d.endpoint_id = CAST(:endpoint_id AS uuid) AND d.merchant_id = :merchant_id AND d.seq < :before
   AND (CAST(:status AS text) IS NULL OR d.status = :status)
   AND (CAST(:event_type AS text) IS NULL OR d.event_type = :event_type)
 ORDER BY d.seq DESC LIMIT :limit
""")

_ATTEMPTS = sa.text("""
SELECT delivery_id::text AS delivery_id, resend, number, started_at, http_status, latency_ms, response_excerpt, error
  FROM (SELECT a.*, row_number() OVER (PARTITION BY delivery_id ORDER BY resend DESC, number DESC) AS newest
          FROM webhooks.attempts a WHERE delivery_id = ANY (CAST(:ids AS uuid[]))) ranked
 WHERE newest <= :per_delivery
 ORDER BY delivery_id, resend, number
""")

# A new series of attempts (same event, same webhook-id). Clearing the lease makes an attempt still in
# flight record nothing: its answer belongs to the series this replaces.
_RESEND_SET = """
    status = 'pending', attempt_count = 0, resend = resend + 1, next_attempt_at = now(), completed_at = NULL,
    lease_id = NULL, lease_owner = NULL, lease_until = NULL, updated_at = now()
"""

_RESEND = sa.text(f"""
WITH d AS (
    UPDATE webhooks.deliveries SET {_RESEND_SET}
     WHERE id = CAST(:id AS uuid) AND merchant_id = :merchant_id
       AND EXISTS (SELECT 1 FROM webhooks.endpoints e WHERE e.id = endpoint_id AND e.deleted_at IS NULL)
    RETURNING *
)
SELECT {_DELIVERY_COLUMNS}, {_NOTIFY} AS notified FROM d
""")

_RESEND_FAILED = sa.text(f"""
WITH d AS (
    UPDATE webhooks.deliveries SET {_RESEND_SET}
     WHERE endpoint_id = CAST(:endpoint_id AS uuid) AND merchant_id = :merchant_id AND status = 'failed'
       AND created_at >= :since
    RETURNING 1
)
SELECT count(*) AS resent, {_NOTIFY} AS notified FROM d
""")

# Due deliveries, oldest event first; one is skipped while its endpoint+outlet has an earlier one due
# (in event order while the receiver keeps up) or any one leased (one attempt in flight). A delivery
# waiting out a retry delay holds nothing back. Deleted and disabled endpoints' deliveries wait.
_CLAIM = sa.text("""
WITH due AS (
    SELECT d.id FROM webhooks.deliveries d
      JOIN webhooks.endpoints e ON e.id = d.endpoint_id
     WHERE d.status = 'pending' AND d.next_attempt_at <= now()
       AND (d.lease_until IS NULL OR d.lease_until <= now())
       AND e.deleted_at IS NULL AND e.disabled_at IS NULL
       AND NOT EXISTS (
           SELECT 1 FROM webhooks.deliveries b
            WHERE b.endpoint_id = d.endpoint_id AND b.outlet_key = d.outlet_key AND b.status = 'pending'
              AND b.id <> d.id
              AND ((b.event_seq < d.event_seq AND b.next_attempt_at <= now()) OR b.lease_until > now()))
     ORDER BY d.event_seq
     LIMIT :limit
       FOR UPDATE OF d SKIP LOCKED
), leased AS (
    UPDATE webhooks.deliveries d SET lease_id = gen_random_uuid(), lease_owner = :owner,
           lease_until = now() + :lease, updated_at = now()
      FROM due WHERE d.id = due.id
    RETURNING d.id, d.lease_id, d.endpoint_id, d.merchant_id, d.event_id, d.event_seq, d.attempt_count, d.resend
)
SELECT l.id::text AS delivery_id, l.lease_id::text AS lease_id, l.endpoint_id::text AS endpoint_id,
       l.merchant_id, e.url, e.secret_sealed,
       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END AS previous_secret_sealed,
       l.event_id::text AS event_id, ev.envelope, l.attempt_count, l.resend
  FROM leased l
  JOIN webhooks.endpoints e ON e.id = l.endpoint_id
  JOIN webhooks.events ev ON ev.event_id = l.event_id
 ORDER BY l.event_seq
""")

# The outcome, only if our lease is still the delivery's lease. A success clears the endpoint's failure
# clock; a failure starts it (if not running); a 410 disables the endpoint.
_RECORD = sa.text("""
WITH done AS (
    UPDATE webhooks.deliveries SET
        attempt_count = attempt_count + 1, status = CAST(:status AS text),
        next_attempt_at = CASE WHEN CAST(:status AS text) = 'pending' THEN now() + :delay ELSE next_attempt_at END,
        completed_at = CASE WHEN CAST(:status AS text) = 'pending' THEN NULL ELSE now() END,
        lease_id = NULL, lease_owner = NULL, lease_until = NULL, updated_at = now()
     WHERE id = CAST(:id AS uuid) AND lease_id = CAST(:lease_id AS uuid)
    RETURNING id, endpoint_id, attempt_count, resend
), attempt AS (
    INSERT INTO webhooks.attempts (delivery_id, resend, number, started_at, http_status, latency_ms,
                                   response_excerpt, error)
    SELECT id, resend, attempt_count, :started_at, :http_status, :latency_ms, :excerpt, :error FROM done
), endpoint AS (
    UPDATE webhooks.endpoints e SET
        last_success_at = CASE WHEN CAST(:succeeded AS boolean) THEN now() ELSE e.last_success_at END,
        failing_since = CASE WHEN CAST(:succeeded AS boolean) THEN NULL ELSE coalesce(e.failing_since, :started_at) END,
        disabled_at = CASE WHEN CAST(:disable_reason AS text) IS NOT NULL THEN coalesce(e.disabled_at, now())
                           ELSE e.disabled_at END,
        disabled_reason = CASE WHEN CAST(:disable_reason AS text) IS NOT NULL
                               THEN coalesce(e.disabled_reason, :disable_reason) ELSE e.disabled_reason END
      FROM done
     WHERE e.id = done.endpoint_id
       -- A success on a healthy endpoint changes nothing worth a row lock more than once a second.
       AND (NOT CAST(:succeeded AS boolean) OR e.failing_since IS NOT NULL OR e.last_success_at IS NULL
            OR e.last_success_at < now() - interval '1 second' OR CAST(:disable_reason AS text) IS NOT NULL)
)
SELECT attempt_count FROM done
""")

# Endpoints with no success for `after` and at least one delivery ended `failed` in that time.
_DISABLE_FAILING = sa.text("""
UPDATE webhooks.endpoints e SET disabled_at = now(),
       disabled_reason = 'failing since ' || to_char(e.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       updated_at = now()
 WHERE e.deleted_at IS NULL AND e.disabled_at IS NULL AND e.failing_since <= now() - :after
   AND (e.last_success_at IS NULL OR e.last_success_at <= now() - :after)
   AND EXISTS (SELECT 1 FROM webhooks.deliveries d
                WHERE d.endpoint_id = e.id AND d.status = 'failed' AND d.completed_at >= now() - :after)
RETURNING e.id::text AS id, e.merchant_id, e.failing_since
""")


def _endpoint(row) -> Endpoint:
    return Endpoint(row.id, row.seq, row.merchant_id, row.url, row.description, list(row.event_types),
                    list(row.outlet_ids), row.disabled_reason, row.previous_secret_expires_at, row.created_at,
                    row.updated_at)


def _delivery(row, attempts: list[Attempt] | None = None) -> Delivery:
    return Delivery(row.id, row.seq, row.endpoint_id, row.event_id, row.event_type, row.outlet_key, row.status,
                    row.attempt_count, row.resend, row.next_attempt_at, row.created_at, row.completed_at,
                    attempts or [])


class WebhookStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        # Each call is a single statement: autocommit makes it one round trip, still atomic.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def _run(self, statement, **params) -> list[sa.Row]:
        async with self.autocommit.connect() as conn:
            return list((await conn.execute(statement, params)).all())

    async def ping(self) -> None:
        await self._run(sa.text("SELECT 1"))

    # Endpoints

    async def create_endpoint(self, endpoint_id: str, merchant_id: str, url: str, description: str,
                              event_types: Sequence[str], outlet_ids: Sequence[str], secret_sealed: bytes) -> Endpoint:
        rows = await self._run(_CREATE_ENDPOINT, id=endpoint_id, merchant_id=merchant_id, url=url,
                               description=description, event_types=list(event_types), outlet_ids=list(outlet_ids),
                               secret_sealed=secret_sealed)
        return _endpoint(rows[0])

    async def get_endpoint(self, merchant_id: str, endpoint_id: str) -> Endpoint | None:
        rows = await self._run(_GET_ENDPOINT, id=endpoint_id, merchant_id=merchant_id)
        return _endpoint(rows[0]) if rows else None

    async def list_endpoints(self, merchant_id: str, after_seq: int, limit: int) -> list[Endpoint]:
        rows = await self._run(_LIST_ENDPOINTS, merchant_id=merchant_id, after=after_seq, limit=limit)
        return [_endpoint(row) for row in rows]

    async def update_endpoint(self, merchant_id: str, endpoint_id: str, *, url: str | None = None,
                              description: str | None = None, event_types: Sequence[str] | None = None,
                              outlet_ids: Sequence[str] | None = None, disabled: bool | None = None) -> Endpoint | None:
        rows = await self._run(_UPDATE_ENDPOINT, id=endpoint_id, merchant_id=merchant_id, url=url,
                               description=description,
                               event_types=list(event_types) if event_types is not None else None,
                               outlet_ids=list(outlet_ids) if outlet_ids is not None else None, disabled=disabled)
        return _endpoint(rows[0]) if rows else None

    async def delete_endpoint(self, merchant_id: str, endpoint_id: str) -> bool:
        return bool(await self._run(_DELETE_ENDPOINT, id=endpoint_id, merchant_id=merchant_id))

    async def rotate_secret(self, merchant_id: str, endpoint_id: str, secret_sealed: bytes,
                            overlap_seconds: float) -> datetime | None:
        """The previous secret's expiry, or None when there is no such endpoint."""
        rows = await self._run(_ROTATE_SECRET, id=endpoint_id, merchant_id=merchant_id, secret_sealed=secret_sealed,
                               overlap=timedelta(seconds=overlap_seconds))
        return rows[0].previous_secret_expires_at if rows else None

    # Events and deliveries

    async def publish_events(self, events: Sequence[NewEvent]) -> tuple[int, int]:
        """(events stored now, deliveries created for them)."""
        if not events:
            return 0, 0
        rows = await self._run(
            _PUBLISH, event_ids=[e.event_id for e in events], event_types=[e.event_type for e in events],
            merchant_ids=[e.merchant_id for e in events], outlet_ids=[e.outlet_id or "" for e in events],
            occurred_ats=[e.occurred_at for e in events], envelopes=[e.envelope for e in events])
        return int(rows[0].stored), int(rows[0].deliveries)

    async def create_test_delivery(self, merchant_id: str, endpoint_id: str, event: NewEvent) -> Delivery | None:
        rows = await self._run(_TEST_DELIVERY, endpoint_id=endpoint_id, merchant_id=merchant_id,
                               event_id=event.event_id, event_type=event.event_type, occurred_at=event.occurred_at,
                               envelope=event.envelope, delivery_id=str(uuid.uuid4()))
        return _delivery(rows[0]) if rows else None

    async def _attempts(self, delivery_ids: Sequence[str], per_delivery: int) -> dict[str, list[Attempt]]:
        found: dict[str, list[Attempt]] = {}
        if not delivery_ids:
            return found
        for row in await self._run(_ATTEMPTS, ids=list(delivery_ids), per_delivery=per_delivery):
            found.setdefault(row.delivery_id, []).append(
                Attempt(row.resend, row.number, row.started_at, row.http_status, row.latency_ms,
                        row.response_excerpt, row.error))
        return found

    async def get_delivery(self, merchant_id: str, delivery_id: str) -> Delivery | None:
        rows = await self._run(_GET_DELIVERY, id=delivery_id, merchant_id=merchant_id)
        if not rows:
            return None
        attempts = await self._attempts([rows[0].id], MAX_ATTEMPTS_SHOWN)
        return _delivery(rows[0], attempts.get(rows[0].id))

    async def list_deliveries(self, merchant_id: str, endpoint_id: str, *, status: str | None,
                              event_type: str | None, before_seq: int | None, limit: int,
                              attempts_per_delivery: int = 10) -> list[Delivery]:
        """Newest first, each with its newest attempts."""
        rows = await self._run(_LIST_DELIVERIES, endpoint_id=endpoint_id, merchant_id=merchant_id,
                               before=before_seq if before_seq is not None else 2**63 - 1, status=status,
                               event_type=event_type, limit=limit)
        attempts = await self._attempts([row.id for row in rows], attempts_per_delivery)
        return [_delivery(row, attempts.get(row.id)) for row in rows]

    async def resend(self, merchant_id: str, delivery_id: str) -> Delivery | None:
        rows = await self._run(_RESEND, id=delivery_id, merchant_id=merchant_id)
        return _delivery(rows[0]) if rows else None

    async def resend_failed(self, merchant_id: str, endpoint_id: str, since: datetime) -> int:
        rows = await self._run(_RESEND_FAILED, endpoint_id=endpoint_id, merchant_id=merchant_id, since=since)
        return int(rows[0].resent)

    # The delivery engine

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claimed]:
        rows = await self._run(_CLAIM, owner=owner, limit=limit, lease=timedelta(seconds=lease_seconds))
        return [Claimed(row.delivery_id, row.lease_id, row.endpoint_id, row.merchant_id, row.url,
                        bytes(row.secret_sealed),
                        bytes(row.previous_secret_sealed) if row.previous_secret_sealed is not None else None,
                        row.event_id, bytes(row.envelope), row.attempt_count, row.resend) for row in rows]

    async def record_outcome(self, claimed: Claimed, outcome: Outcome) -> bool:
        """False when the lease was no longer ours (taken over after expiry, or the delivery resent)."""
        status = ("succeeded" if outcome.succeeded else
                  "pending" if outcome.next_delay is not None else "failed")
        rows = await self._run(
            _RECORD, id=claimed.delivery_id, lease_id=claimed.lease_id, status=status,
            delay=timedelta(seconds=outcome.next_delay or 0.0), started_at=outcome.started_at,
            http_status=outcome.http_status, latency_ms=outcome.latency_ms, excerpt=outcome.response_excerpt,
            error=outcome.error, succeeded=outcome.succeeded, disable_reason=outcome.disable_reason)
        return bool(rows)

    async def disable_failing(self, after_seconds: float) -> list[DisabledEndpoint]:
        rows = await self._run(_DISABLE_FAILING, after=timedelta(seconds=after_seconds))
        return [DisabledEndpoint(row.id, row.merchant_id, row.failing_since) for row in rows]
