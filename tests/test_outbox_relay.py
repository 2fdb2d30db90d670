"""The outbox relay over a real PostgreSQL (services/runtime/outbox_relay.py): a publish that fails or
raises half-way loses nothing and marks nothing early; two relays (two replicas) never publish the same
row at once; the ledger's migration 0003 gives old outbox rows their outlet; and, through the whole
mesh, a seal's invoice.sealed event leaves the ledger's outbox for the webhooks service."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter

import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from services.runtime.config import sqlalchemy_url
from services.runtime.database import SERVICES_DIR, migrate
from services.runtime.outbox_relay import OutboxRelay, PostgresOutbox, RelaySettings
from stack.postgres import start_database

GUARD_SECONDS = 60  # hang guards, not timing assertions


def fast_settings(batch: int) -> RelaySettings:
    return RelaySettings(batch=batch, poll_seconds=0.01, min_gap_seconds=0.0, publish_timeout=5.0,
                         backoff_seconds=0.01, backoff_max_seconds=0.05)


@pytest.fixture
def outbox_schema(database_url):
    """A producer's outbox of its own, shaped exactly like the ledger's (migrations 0001..0003)."""
    schema = f"relay_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".outbox (LIKE ledger.outbox INCLUDING ALL)')
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def add_events(database_url: str, schema: str, count: int, merchant_id: str | None = None) -> list[str]:
    merchant_id = merchant_id or str(uuid.uuid4())
    outlet_id = str(uuid.uuid4())
    event_ids = [str(uuid.uuid4()) for _ in range(count)]
    with psycopg.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            f'INSERT INTO "{schema}".outbox (event_id, event_type, merchant_id, aggregate_id, outlet_id, payload) '
            "VALUES (%s, 'invoice.sealed', %s, %s, %s, %s)",
            [(event_id, merchant_id, str(uuid.uuid4()), outlet_id, json.dumps({"n": n, "outlet_id": outlet_id}))
             for n, event_id in enumerate(event_ids)])
    return event_ids


async def published_ids(conn: psycopg.AsyncConnection, schema: str) -> set[str]:
    rows = await (await conn.execute(
        f'SELECT event_id::text FROM "{schema}".outbox WHERE published_at IS NOT NULL')).fetchall()
    return {row[0] for row in rows}


async def run_until_published(relays: list[OutboxRelay], database_url: str, schema: str, total: int) -> None:
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stopping)) for relay in relays]
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + GUARD_SECONDS
            while len(await published_ids(conn, schema)) < total:
                assert time.monotonic() < deadline, "the relay did not publish everything"
                for task in tasks:
                    if task.done():
                        task.result()  # a relay that died: its error
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD_SECONDS)


class RecordingPublisher:
    """The webhooks side: records what reached it. Calls numbered in `fail_calls` raise; with `received`
    True the events reached the receiver before the failure (a lost answer). Each call first checks, from
    another connection, that no row of it is already marked published, and that every row of every
    earlier successful call is."""

    def __init__(self, database_url: str, schema: str, fail_calls: set[int] = frozenset(),
                 received_then_failed: bool = False):
        self.database_url, self.schema = database_url, schema
        self.fail_calls, self.received_then_failed = fail_calls, received_then_failed
        self.calls = 0
        self.received: list[str] = []
        self.confirmed: set[str] = set()
        self.violations: list[str] = []

    async def __call__(self, records) -> None:
        self.calls += 1
        ids = [r.event_id for r in records]
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            marked = await published_ids(conn, self.schema)
        if early := marked & set(ids):
            self.violations.append(f"call {self.calls}: {len(early)} rows marked before their publish")
        if missing := self.confirmed - marked:
            self.violations.append(f"call {self.calls}: {len(missing)} confirmed rows not marked")
        if self.calls in self.fail_calls:
            if self.received_then_failed:
                self.received += ids
            raise ConnectionError("webhooks unavailable")
        self.received += ids
        self.confirmed.update(ids)


async def test_a_publish_that_fails_several_times_loses_nothing_and_marks_nothing_early(database_url,
                                                                                        outbox_schema):
    event_ids = add_events(database_url, outbox_schema, 25)
    publisher = RecordingPublisher(database_url, outbox_schema, fail_calls={1, 2, 3, 5})
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        relay = OutboxRelay(PostgresOutbox(engine, outbox_schema), publisher, fast_settings(batch=10))
        await run_until_published([relay], database_url, outbox_schema, len(event_ids))
    finally:
        await engine.dispose()
    assert publisher.violations == []
    assert publisher.received == event_ids  # each once, in the order they were written
    assert publisher.calls == 4 + 3  # four failures, then 10 + 10 + 5


async def test_a_call_that_reached_the_receiver_and_then_failed_is_published_again(database_url, outbox_schema):
    event_ids = add_events(database_url, outbox_schema, 12)
    publisher = RecordingPublisher(database_url, outbox_schema, fail_calls={2, 3}, received_then_failed=True)
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        relay = OutboxRelay(PostgresOutbox(engine, outbox_schema), publisher, fast_settings(batch=5))
        await run_until_published([relay], database_url, outbox_schema, len(event_ids))
    finally:
        await engine.dispose()
    assert publisher.violations == []
    counts = Counter(publisher.received)
    assert set(counts) == set(event_ids)  # nothing lost
    # At least once: the batch whose answers were lost twice arrived three times, the others once.
    assert sorted(counts.values()) == [1] * 7 + [3] * 5
    assert publisher.confirmed == set(event_ids)


async def test_two_relays_never_publish_the_same_row_at_once(database_url, outbox_schema):
    event_ids = add_events(database_url, outbox_schema, 300)
    in_flight: dict[str, str] = {}  # event id -> relay publishing it now
    overlaps: list[str] = []
    calls: Counter = Counter()
    received: list[str] = []
    both_started = asyncio.Event()

    def publisher(name: str):
        async def publish(records) -> None:
            calls[name] += 1
            for r in records:
                if r.event_id in in_flight:
                    overlaps.append(f"{r.event_id} by {name} while {in_flight[r.event_id]} publishes it")
                in_flight[r.event_id] = name
            if len(calls) == 2:
                both_started.set()
            # Each relay's first call holds its rows until the other relay has claimed a batch too: the two
            # are certainly claiming at the same time.
            if calls[name] == 1:
                await asyncio.wait_for(both_started.wait(), GUARD_SECONDS)
            await asyncio.sleep(0.005)
            for r in records:
                del in_flight[r.event_id]
            received.extend(r.event_id for r in records)
        return publish

    engines = [create_async_engine(sqlalchemy_url(database_url)) for _ in range(2)]
    try:
        relays = [OutboxRelay(PostgresOutbox(engine, outbox_schema), publisher(name), fast_settings(batch=20))
                  for engine, name in zip(engines, ("replica-a", "replica-b"), strict=True)]
        await run_until_published(relays, database_url, outbox_schema, len(event_ids))
    finally:
        for engine in engines:
            await engine.dispose()
    assert overlaps == []
    assert set(calls) == {"replica-a", "replica-b"}
    assert sorted(received) == sorted(event_ids)  # no failures: each exactly once


def test_migration_0003_gives_old_outbox_rows_their_outlet(tmp_path):
    from alembic import command
    from alembic.config import Config

    database = start_database(tmp_path, fresh_database="fiscal_relay_migration")
    try:
        url = sqlalchemy_url(database.url)
        with psycopg.connect(database.url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA ledger")
        import sqlalchemy as sa

        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            config = Config()
            config.set_main_option("script_location", str(SERVICES_DIR / "ledger" / "migrations"))
            config.attributes.update(connection=connection, schema="ledger")
            command.upgrade(config, "0002")
            connection.commit()
        engine.dispose()
        outlet = str(uuid.uuid4())
        rows = {"with outlet": {"outlet_id": outlet}, "about no outlet": {"x": 1},
                "malformed outlet": {"outlet_id": "not-a-uuid"}}
        with psycopg.connect(database.url) as conn:
            for name, payload in rows.items():
                conn.execute("INSERT INTO ledger.outbox (event_id, event_type, merchant_id, aggregate_id, payload) "
                             "VALUES (%s, %s, %s, %s, %s)",
                             (str(uuid.uuid4()), name, str(uuid.uuid4()), str(uuid.uuid4()), json.dumps(payload)))
        migrate("ledger", url)
        with psycopg.connect(database.url) as conn:
            found = dict(conn.execute("SELECT event_type, outlet_id::text FROM ledger.outbox").fetchall())
        assert found == {"with outlet": outlet, "about no outlet": None, "malformed outlet": None}
    finally:
        database.stop()


def test_a_sealed_invoice_event_leaves_the_ledger_outbox_with_its_outlet(mesh):
    """Through the whole mesh: a seal writes invoice.sealed with its outlet_id, and the ledger's relay
    publishes it to the webhooks service (published_at set only after PublishEvents answered)."""
    import httpx

    from tests.harness import auth, provision, sale

    demo = provision(mesh, outlets=2, terminals=1)
    sealed = {}
    for outlet in demo["outlets"]:
        key = demo["pos_keys"][outlet["id"]]
        body = sale(outlet, demo["terminals"][outlet["id"]][0], demo["cashiers"][outlet["id"]][0])
        answer = httpx.post(f"{mesh.gateway_url}/v1/invoices", json=body, headers=auth(key), timeout=10)
        assert answer.status_code == 200, answer.text
        sealed[answer.json()["id"]] = outlet["id"]
    deadline = time.monotonic() + GUARD_SECONDS
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        while True:
            rows = conn.execute("SELECT aggregate_id::text, outlet_id::text, published_at IS NOT NULL "
                                "FROM ledger.outbox WHERE merchant_id = %s AND event_type = 'invoice.sealed'",
                                (demo["merchant"]["id"],)).fetchall()
            if len(rows) == len(sealed) and all(published for _, _, published in rows):
                break
            assert time.monotonic() < deadline, f"not published: {rows}\n{mesh.processes['ledger'][0].log_tail()}"
            time.sleep(0.1)
    assert {invoice_id: outlet_id for invoice_id, outlet_id, _ in rows} == sealed
