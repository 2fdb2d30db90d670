"""The webhooks store's delivery queue and the engine, against the session's real PostgreSQL (a fresh
database of this module, migrated with `migrate("webhooks", url)`): publishing (idempotent, matching
endpoints), claiming (oldest first, one in flight per endpoint and outlet, leases, SKIP LOCKED between
replicas), recording outcomes (compare-and-set on the lease, retries, `failed`, 410), resends, deleted
and disabled endpoints, the failing-for-days disabler; and the HTTP sender against a loopback server.

No mesh: the engine runs in this process with a scripted sender (or the real one, to 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import create_async_engine

from services.runtime.config import sqlalchemy_url
from services.runtime.database import migrate
from services.runtime.secret_box import SecretBox
from services.webhooks.address_guard import AddressPolicy
from services.webhooks.engine import GONE_REASON, DeliveryEngine, FailingEndpointDisabler
from services.webhooks.event_types import envelope_bytes
from services.webhooks.retry_policy import RetryPolicy
from services.webhooks.sender import EXCERPT_CHARS, AttemptResult, Sender
from services.webhooks.signatures import new_secret, verify
from services.webhooks.store import NewEvent, Outcome, WebhookStore
from stack.postgres import start_database

SCHEDULE = (0.3, 0.6, 1.2, 2.4, 4.8)
BOX = SecretBox("a test key for webhook secrets, 32+ characters long")


@pytest.fixture(scope="module")
def webhooks_database(postgres_server, tmp_path_factory):
    database = start_database(tmp_path_factory.mktemp("webhooks-db"), fresh_database="fiscal_webhooks_engine")
    migrate("webhooks", sqlalchemy_url(database.url))
    yield database.url
    database.stop()


@pytest.fixture
async def store(webhooks_database):
    # Every test starts from an empty queue: a claim sees the whole table, not one merchant's rows.
    with psycopg.connect(webhooks_database, autocommit=True) as conn:
        conn.execute("TRUNCATE webhooks.attempts, webhooks.deliveries, webhooks.events, webhooks.endpoints")
    engine = create_async_engine(sqlalchemy_url(webhooks_database), pool_size=5)
    yield WebhookStore(engine)
    await engine.dispose()


def sql(url: str, statement: str, *params):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


async def endpoint(store: WebhookStore, merchant: str, *, event_types=("invoice.sealed",), outlet_ids=(),
                   url="http://127.0.0.1:9/hook") -> tuple[str, str]:
    endpoint_id, secret = str(uuid.uuid4()), new_secret()
    await store.create_endpoint(endpoint_id, merchant, url, "", list(event_types), list(outlet_ids),
                                BOX.seal(secret, endpoint_id.encode()))
    return endpoint_id, secret


def event(merchant: str, outlet: str | None = None, event_type: str = "invoice.sealed", **data) -> NewEvent:
    event_id = str(uuid.uuid4())
    occurred_at = datetime.now(UTC)
    body = envelope_bytes(event_id, event_type, occurred_at, merchant, outlet, data or {"n": 1})
    return NewEvent(event_id, event_type, merchant, outlet, occurred_at, body)


def outcome(*, succeeded: bool, next_delay: float | None = None, status: int = 200, disable: str | None = None):
    return Outcome(datetime.now(UTC), status, 5, "ok" if succeeded else "no", "" if succeeded else f"HTTP {status}",
                   succeeded, next_delay, disable)


async def claim_events(store: WebhookStore, owner: str = "test", limit: int = 50, lease: float = 30.0):
    return await store.claim(owner, limit, lease)


# Publishing


async def test_publishing_is_idempotent_and_delivers_to_each_matching_endpoint_only(store, webhooks_database):
    merchant, other_merchant = str(uuid.uuid4()), str(uuid.uuid4())
    outlet_a, outlet_b = str(uuid.uuid4()), str(uuid.uuid4())
    every_outlet, _ = await endpoint(store, merchant)
    only_a, _ = await endpoint(store, merchant, outlet_ids=[outlet_a])
    await endpoint(store, merchant, event_types=["payment.failed"])  # not subscribed
    disabled, _ = await endpoint(store, merchant)
    await store.update_endpoint(merchant, disabled, disabled=True)
    deleted, _ = await endpoint(store, merchant)
    assert await store.delete_endpoint(merchant, deleted)
    await endpoint(store, other_merchant)  # another merchant's endpoint never gets this merchant's events

    sealed_at_b = event(merchant, outlet_b)
    assert await store.publish_events([sealed_at_b]) == (1, 1)  # every_outlet only
    sealed_at_a = event(merchant, outlet_a)
    assert await store.publish_events([sealed_at_a, sealed_at_b]) == (1, 2)  # b again: not stored again
    assert await store.publish_events([sealed_at_a]) == (0, 0)

    rows = sql(webhooks_database, "SELECT endpoint_id::text, event_id::text FROM webhooks.deliveries")
    assert sorted(rows) == sorted([(every_outlet, sealed_at_b.event_id), (every_outlet, sealed_at_a.event_id),
                                   (only_a, sealed_at_a.event_id)])
    stored = sql(webhooks_database, "SELECT envelope FROM webhooks.events WHERE event_id = %s",
                 uuid.UUID(sealed_at_a.event_id))
    assert bytes(stored[0][0]) == sealed_at_a.envelope


# Claiming


async def test_a_claim_takes_the_oldest_event_of_each_endpoint_and_outlet_one_at_a_time(store):
    merchant = str(uuid.uuid4())
    outlet_a, outlet_b = str(uuid.uuid4()), str(uuid.uuid4())
    await endpoint(store, merchant)
    a1, a2, a3, b1 = event(merchant, outlet_a), event(merchant, outlet_a), event(merchant, outlet_a), event(merchant, outlet_b)
    await store.publish_events([a1, a2, a3, b1])

    first = await claim_events(store)
    assert sorted(c.event_id for c in first) == sorted([a1.event_id, b1.event_id])
    # While a1 is in flight nothing else of outlet a goes, whoever asks.
    assert await claim_events(store, owner="another replica") == []

    by_event = {c.event_id: c for c in first}
    assert await store.record_outcome(by_event[a1.event_id], outcome(succeeded=True))
    assert [c.event_id for c in await claim_events(store)] == [a2.event_id]


async def test_a_delivery_waiting_out_a_retry_does_not_hold_later_ones_back(store, webhooks_database):
    merchant, outlet = str(uuid.uuid4()), str(uuid.uuid4())
    await endpoint(store, merchant)
    e1, e2, e3 = event(merchant, outlet), event(merchant, outlet), event(merchant, outlet)
    await store.publish_events([e1, e2, e3])
    [claimed] = await claim_events(store)
    assert claimed.event_id == e1.event_id
    assert await store.record_outcome(claimed, outcome(succeeded=False, next_delay=3600, status=500))
    [claimed] = await claim_events(store)
    assert claimed.event_id == e2.event_id  # e1 waits an hour; e2 goes, then e3 (in order)

    # e1 comes due again while e2 is in flight: it waits for e2 (one in flight), then goes before e3.
    sql(webhooks_database, "UPDATE webhooks.deliveries SET next_attempt_at = now() WHERE event_id = %s",
        uuid.UUID(e1.event_id))
    assert await claim_events(store) == []
    assert await store.record_outcome(claimed, outcome(succeeded=True))
    [claimed] = await claim_events(store)
    assert claimed.event_id == e1.event_id
    assert claimed.attempts_made == 1


async def test_two_replicas_claiming_at_once_never_take_the_same_delivery(store):
    merchant = str(uuid.uuid4())
    await endpoint(store, merchant)
    events = [event(merchant, str(uuid.uuid4())) for _ in range(40)]  # 40 outlets: 40 claimable at once
    await store.publish_events(events)
    claims = await asyncio.gather(*(claim_events(store, owner=f"replica-{i}", limit=7) for i in range(8)))
    claimed = [c.delivery_id for batch in claims for c in batch]
    assert len(claimed) == len(set(claimed)) == 40


async def test_an_expired_lease_is_taken_over_and_the_old_holder_records_nothing(store, webhooks_database):
    merchant = str(uuid.uuid4())
    await endpoint(store, merchant)
    published = event(merchant)
    await store.publish_events([published])
    [slow] = await claim_events(store, owner="slow replica", lease=30)
    assert await claim_events(store, owner="fast replica") == []
    # As if 30 s passed with the slow replica stuck after sending.
    sql(webhooks_database, "UPDATE webhooks.deliveries SET lease_until = now() - interval '1 second'")
    [fast] = await claim_events(store, owner="fast replica")
    assert (fast.delivery_id, fast.event_id) == (slow.delivery_id, slow.event_id)  # same webhook-id again
    assert fast.lease_id != slow.lease_id

    assert not await store.record_outcome(slow, outcome(succeeded=True))
    assert await store.record_outcome(fast, outcome(succeeded=True))
    delivery = await store.get_delivery(merchant, fast.delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempt_count, len(delivery.attempts)) == ("succeeded", 1, 1)


async def test_deleted_and_disabled_endpoints_deliveries_are_not_sent(store):
    merchant = str(uuid.uuid4())
    doomed, _ = await endpoint(store, merchant)
    paused, _ = await endpoint(store, merchant)
    await store.publish_events([event(merchant)])  # one delivery to each
    assert await store.delete_endpoint(merchant, doomed)
    await store.update_endpoint(merchant, paused, disabled=True)
    assert await claim_events(store) == []
    # Enabled again, its pending delivery goes; the deleted one's never does.
    await store.update_endpoint(merchant, paused, disabled=False)
    assert [c.endpoint_id for c in await claim_events(store)] == [paused]


# Outcomes


async def test_six_failed_attempts_end_failed_with_each_attempt_recorded(store, webhooks_database):
    merchant = str(uuid.uuid4())
    await endpoint(store, merchant)
    await store.publish_events([event(merchant)])
    retry = RetryPolicy(SCHEDULE)
    attempts = 0
    while True:
        sql(webhooks_database, "UPDATE webhooks.deliveries SET next_attempt_at = now()")  # skip the wait
        [claimed] = await claim_events(store)
        assert claimed.attempts_made == attempts
        attempts += 1
        delay = retry.next_delay(attempts)
        assert await store.record_outcome(claimed, outcome(succeeded=False, next_delay=delay, status=503))
        if delay is None:
            break
        assert attempts < 10, "the schedule never ran out"
    assert attempts == retry.max_attempts == 6
    delivery = await store.get_delivery(merchant, claimed.delivery_id)
    assert delivery is not None
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("failed", 6, None)
    assert delivery.completed_at is not None
    assert [(a.resend, a.number, a.http_status) for a in delivery.attempts] == [(0, n, 503) for n in range(1, 7)]
    assert await claim_events(store) == []


async def test_a_410_fails_the_delivery_and_disables_the_endpoint(store):
    merchant = str(uuid.uuid4())
    endpoint_id, _ = await endpoint(store, merchant)
    await store.publish_events([event(merchant), event(merchant)])
    [claimed] = await claim_events(store)
    assert await store.record_outcome(claimed, outcome(succeeded=False, status=410, disable=GONE_REASON))
    found = await store.get_endpoint(merchant, endpoint_id)
    assert found is not None and found.disabled and found.disabled_reason == GONE_REASON
    assert (await store.get_delivery(merchant, claimed.delivery_id)).status == "failed"
    assert await claim_events(store) == []  # the second one waits for the endpoint to be enabled
    assert await store.publish_events([event(merchant)]) == (1, 0)


async def test_a_resend_starts_a_new_series_and_an_attempt_still_in_flight_records_nothing(store):
    merchant = str(uuid.uuid4())
    await endpoint(store, merchant)
    await store.publish_events([event(merchant)])
    [first] = await claim_events(store)
    assert await store.record_outcome(first, outcome(succeeded=True))

    resent = await store.resend(merchant, first.delivery_id)
    assert resent is not None and (resent.status, resent.attempt_count, resent.resend) == ("pending", 0, 1)
    [in_flight] = await claim_events(store)
    assert (in_flight.event_id, in_flight.resend) == (first.event_id, 1)
    await store.resend(merchant, first.delivery_id)  # resent again while that attempt is in flight
    assert not await store.record_outcome(in_flight, outcome(succeeded=True))
    [again] = await claim_events(store)
    assert again.resend == 2 and await store.record_outcome(again, outcome(succeeded=True))
    delivery = await store.get_delivery(merchant, first.delivery_id)
    assert [(a.resend, a.number) for a in delivery.attempts] == [(0, 1), (2, 1)]

    assert await store.resend(str(uuid.uuid4()), first.delivery_id) is None  # another merchant: not found


async def test_resend_failed_resends_only_failed_deliveries_created_since(store, webhooks_database):
    merchant = str(uuid.uuid4())
    endpoint_id, _ = await endpoint(store, merchant)
    await store.publish_events([event(merchant, str(uuid.uuid4())) for _ in range(3)])
    claimed = await claim_events(store)
    assert len(claimed) == 3
    await store.record_outcome(claimed[0], outcome(succeeded=True))
    for failing in claimed[1:]:
        await store.record_outcome(failing, outcome(succeeded=False, next_delay=None, status=500))
    sql(webhooks_database, "UPDATE webhooks.deliveries SET created_at = now() - interval '2 days' WHERE id = %s",
        uuid.UUID(claimed[2].delivery_id))
    since = datetime.now(UTC) - timedelta(days=1)
    assert await store.resend_failed(str(uuid.uuid4()), endpoint_id, since) == 0  # another merchant
    assert await store.resend_failed(merchant, endpoint_id, since) == 1
    assert [c.delivery_id for c in await claim_events(store)] == [claimed[1].delivery_id]


async def test_endpoints_failing_for_days_are_disabled_and_healthy_ones_are_not(store, webhooks_database):
    merchant = str(uuid.uuid4())
    failing, _ = await endpoint(store, merchant, outlet_ids=[])
    recovering, _ = await endpoint(store, merchant)
    await store.publish_events([event(merchant)])
    for claimed in await claim_events(store):
        await store.record_outcome(claimed, outcome(succeeded=False, next_delay=None, status=500))
    # Both have failed since 6 days ago; `recovering` got a success an hour ago.
    sql(webhooks_database, "UPDATE webhooks.endpoints SET failing_since = now() - interval '6 days'")
    sql(webhooks_database, "UPDATE webhooks.endpoints SET last_success_at = now() - interval '1 hour', "
        "failing_since = NULL WHERE id = %s", uuid.UUID(recovering))
    disabler = FailingEndpointDisabler(store, after_seconds=5 * 86400)
    assert await disabler.run_once() == 1
    found = await store.get_endpoint(merchant, failing)
    assert found is not None and found.disabled and found.disabled_reason.startswith("failing since ")
    assert not (await store.get_endpoint(merchant, recovering)).disabled
    assert await disabler.run_once() == 0
    # Enabled by hand: a fresh window before it can be disabled for failing again.
    await store.update_endpoint(merchant, failing, disabled=False)
    assert await disabler.run_once() == 0


async def test_queries_never_show_another_merchants_rows(store):
    merchant, intruder = str(uuid.uuid4()), str(uuid.uuid4())
    endpoint_id, _ = await endpoint(store, merchant)
    await store.publish_events([event(merchant)])
    [claimed] = await claim_events(store)
    assert await store.get_endpoint(intruder, endpoint_id) is None
    assert await store.update_endpoint(intruder, endpoint_id, disabled=True) is None
    assert await store.rotate_secret(intruder, endpoint_id, b"x" * 40, 60) is None
    assert not await store.delete_endpoint(intruder, endpoint_id)
    assert await store.get_delivery(intruder, claimed.delivery_id) is None
    assert await store.list_deliveries(intruder, endpoint_id, status=None, event_type=None, before_seq=None,
                                       limit=10) == []
    assert [e.id for e in await store.list_endpoints(intruder, 0, 10)] == []
    assert [e.id for e in await store.list_endpoints(merchant, 0, 10)] == [endpoint_id]


# The engine (a scripted sender)


class ScriptedSender:
    timeout = 2.0

    def __init__(self, *answers: AttemptResult):
        self.answers = list(answers)
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def send(self, url, headers, body):
        self.sent.append((url, dict(headers), body))
        return self.answers.pop(0) if self.answers else AttemptResult(200, 1, "ok", "")


class NoJitter:
    @staticmethod
    def uniform(a, b):
        return (a + b) / 2


async def test_the_engine_signs_byte_identical_bodies_and_follows_the_schedule(store, webhooks_database):
    merchant = str(uuid.uuid4())
    endpoint_id, secret = await endpoint(store, merchant)
    published = event(merchant, str(uuid.uuid4()), amount="12.50", name="Café")
    await store.publish_events([published])
    sender = ScriptedSender(AttemptResult(500, 3, "boom", "HTTP 500"),
                            AttemptResult(429, 3, "slow down", "HTTP 429", retry_after="2"),
                            AttemptResult(204, 3, "", ""))
    engine = DeliveryEngine(store, sender, BOX, RetryPolicy(SCHEDULE), concurrency=4, poll_seconds=0.1, rng=NoJitter())

    assert await engine.run_once() == 1
    [[next_in]] = sql(webhooks_database, "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhooks.deliveries")
    assert 0 < next_in <= SCHEDULE[0]
    sql(webhooks_database, "UPDATE webhooks.deliveries SET next_attempt_at = now()")
    assert await engine.run_once() == 1
    # Retry-After: 2 moves the second retry (0.6 s) later, within the schedule's largest step.
    [[next_in]] = sql(webhooks_database, "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhooks.deliveries")
    assert SCHEDULE[1] < next_in <= 2
    sql(webhooks_database, "UPDATE webhooks.deliveries SET next_attempt_at = now()")
    assert await engine.run_once() == 1
    assert await engine.run_once() == 0

    assert [body for _, _, body in sender.sent] == [published.envelope] * 3
    for _, headers, body in sender.sent:
        assert headers["webhook-id"] == published.event_id
        verify(secret, headers, body)
    assert json.loads(published.envelope)["data"] == {"amount": "12.50", "name": "Café"}
    [delivery] = await store.list_deliveries(merchant, endpoint_id, status=None, event_type=None, before_seq=None,
                                             limit=10)
    assert (delivery.status, delivery.attempt_count) == ("succeeded", 3)
    assert [(a.http_status, a.error) for a in delivery.attempts] == [(500, "HTTP 500"), (429, "HTTP 429"), (204, "")]


async def test_during_a_rotation_both_secrets_sign(store):
    merchant = str(uuid.uuid4())
    endpoint_id, old_secret = await endpoint(store, merchant)
    new = new_secret()
    expires_at = await store.rotate_secret(merchant, endpoint_id, BOX.seal(new, endpoint_id.encode()), 3600)
    assert expires_at is not None and expires_at > datetime.now(UTC)
    await store.publish_events([event(merchant)])
    sender = ScriptedSender()
    engine = DeliveryEngine(store, sender, BOX, RetryPolicy(SCHEDULE), concurrency=2, poll_seconds=0.1)
    assert await engine.run_once() == 1
    [(_, headers, body)] = sender.sent
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(old_secret, headers, body)
    verify(new, headers, body)


async def test_the_running_engine_is_woken_by_publishing_and_stops_when_asked(store, webhooks_database):
    merchant = str(uuid.uuid4())
    await endpoint(store, merchant)
    sender = ScriptedSender()
    # A 60 s poll: only the wake-up (what the NOTIFY listener calls) can make it send within the test.
    engine = DeliveryEngine(store, sender, BOX, RetryPolicy(SCHEDULE), concurrency=4, poll_seconds=60)
    stopping = asyncio.Event()
    running = asyncio.create_task(engine.run(stopping))
    try:
        await asyncio.sleep(0.2)
        published = [event(merchant) for _ in range(3)]  # no outlet: one at a time, in order
        await store.publish_events(published)
        engine.wake()
        async with asyncio.timeout(20):
            while len(sender.sent) < 3:
                await asyncio.sleep(0.05)
        assert [headers["webhook-id"] for _, headers, _ in sender.sent] == [e.event_id for e in published]
    finally:
        stopping.set()
        async with asyncio.timeout(10):
            await running
    assert sql(webhooks_database, "SELECT DISTINCT status FROM webhooks.deliveries") == [("succeeded",)]


# The sender (real HTTP to 127.0.0.1)


@pytest.fixture
async def receiver():
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def answer(request: web.Request):
        seen.append(request)
        bodies.append(await request.read())
        kind = request.match_info["kind"]
        if kind == "ok":
            return web.Response(status=200, text="thanks " + "x" * 5000)
        if kind == "redirect":
            return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
        if kind == "gone":
            return web.Response(status=410, text="gone")
        if kind == "slow":
            await asyncio.sleep(5)
        return web.Response(status=500, body=b"\xff broken")  # not UTF-8

    app = web.Application()
    app.router.add_post("/{kind}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen, bodies
    await runner.cleanup()


async def test_the_sender_posts_the_body_and_keeps_an_excerpt(receiver):
    base, seen, bodies = receiver
    sender = Sender(AddressPolicy(allow_loopback=True), timeout=3)
    result = await sender.send(f"{base}/ok", {"webhook-id": "abc"}, b'{"a":1}')
    assert result.succeeded and result.http_status == 200
    assert result.response_excerpt.startswith("thanks ") and len(result.response_excerpt) == EXCERPT_CHARS
    assert bodies == [b'{"a":1}']
    assert seen[0].headers["webhook-id"] == "abc"
    assert seen[0].headers["user-agent"] == "FiscalCloud-Webhooks/1"
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["host"] == base.removeprefix("http://")


async def test_the_sender_does_not_follow_redirects_and_reports_failures(receiver):
    base, seen, _ = receiver
    sender = Sender(AddressPolicy(allow_loopback=True), timeout=1)
    redirected = await sender.send(f"{base}/redirect", {}, b"{}")
    assert (redirected.succeeded, redirected.http_status) == (False, 302)
    assert "redirect" in redirected.error
    assert [request.path for request in seen] == ["/redirect"]
    gone = await sender.send(f"{base}/gone", {}, b"{}")
    assert (gone.succeeded, gone.http_status) == (False, 410)
    broken = await sender.send(f"{base}/broken", {}, b"{}")
    assert (broken.http_status, broken.response_excerpt) == (500, "\ufffd broken")
    slow = await sender.send(f"{base}/slow", {}, b"{}")
    assert (slow.succeeded, slow.http_status, slow.error) == (False, 0, "timeout after 1 s")


async def test_the_sender_refuses_loopback_without_the_development_allowance(receiver):
    base, seen, _ = receiver
    refused = await Sender(AddressPolicy(allow_loopback=False), timeout=1).send(f"{base}/ok", {}, b"{}")
    assert (refused.succeeded, refused.http_status) == (False, 0)
    assert refused.error.startswith("address not allowed")
    # https to a loopback name resolving to 127.0.0.1: also refused before any connection.
    named = await Sender(AddressPolicy(allow_loopback=False), timeout=1).send(
        base.replace("http://127.0.0.1", "https://localhost") + "/ok", {}, b"{}")
    assert named.error.startswith("address not allowed")
    assert seen == []


async def test_the_sender_reports_a_refused_connection():
    result = await Sender(AddressPolicy(allow_loopback=True), timeout=2).send("http://127.0.0.1:9/hook", {}, b"{}")
    assert (result.succeeded, result.http_status, result.error) == (False, 0, "connection refused")
