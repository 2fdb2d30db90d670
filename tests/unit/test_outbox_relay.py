"""The outbox relay's decisions (backoff, batching, pauses, mapping) and its loop over an in-memory
outbox: nothing dropped, nothing marked before its publish succeeded, stops on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime

import pytest
from fiscal.v1 import webhooks_pb2

from services.runtime import outbox_relay
from services.runtime.outbox_relay import (
    MAX_DATA_BYTES,
    Backoff,
    OutboxRecord,
    OutboxRelay,
    RelaySettings,
    gap_left,
    pause_after,
    publishable_prefix,
    webhooks_publisher,
)

MERCHANT = str(uuid.uuid4())
OUTLET = str(uuid.uuid4())


def record(seq: int, payload: dict | None = None, outlet_id: str | None = OUTLET) -> OutboxRecord:
    payload = payload if payload is not None else {"invoice_id": f"inv-{seq}", "total": "1.00"}
    return OutboxRecord(seq=seq, event_id=str(uuid.UUID(int=seq)), event_type="invoice.sealed",
                        merchant_id=MERCHANT, outlet_id=outlet_id, payload_json=json.dumps(payload, ensure_ascii=False),
                        created_at=datetime(2026, 11, 25, 10, 0, seq % 60, tzinfo=UTC))


# --- pure decisions --------------------------------------------------------------------------------------

def test_backoff_doubles_up_to_its_cap_and_starts_again_after_a_success():
    backoff = Backoff(0.2, 10.0)
    assert [backoff.failed() for _ in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert backoff.succeeded() == 8
    assert backoff.failed() == 0.2
    assert backoff.succeeded() == 1 and backoff.succeeded() == 0


def test_backoff_stays_finite_after_very_many_failures():
    backoff = Backoff(0.2, 10.0)
    for _ in range(10_000):
        delay = backoff.failed()
    assert delay == 10.0


def test_pause_is_the_backoff_after_a_failure_none_after_a_full_batch_and_the_poll_otherwise():
    assert pause_after(0, 200, failed=True, backoff_delay=3.2, poll_seconds=0.2) == 3.2
    assert pause_after(200, 200, failed=False, backoff_delay=0.0, poll_seconds=0.2) == 0.0
    assert pause_after(57, 200, failed=False, backoff_delay=0.0, poll_seconds=0.2) == 0.2
    assert pause_after(0, 200, failed=False, backoff_delay=0.0, poll_seconds=0.5) == 0.5


def test_wake_ups_start_cycles_at_most_once_per_min_gap():
    assert gap_left(cycle_started=10.0, now=10.01, min_gap=0.05) == pytest.approx(0.04)
    assert gap_left(cycle_started=10.0, now=10.05, min_gap=0.05) == 0.0
    assert gap_left(cycle_started=10.0, now=12.0, min_gap=0.05) == 0.0
    assert gap_left(cycle_started=10.0, now=10.0, min_gap=0.0) == 0.0


def test_one_call_carries_the_records_that_fit_its_byte_budget_and_always_at_least_one():
    small = [record(n) for n in range(1, 6)]
    assert publishable_prefix(small) == 5
    size = len(small[0].data_json().encode())
    assert publishable_prefix(small, max_bytes=size * 3) == 3
    assert publishable_prefix(small, max_bytes=size * 3 - 1) == 2
    assert publishable_prefix(small, max_bytes=1) == 1  # never stuck: the first one always goes
    assert publishable_prefix([]) == 0


def test_data_json_is_the_payload_as_stored_and_an_oversized_one_becomes_the_truncation_marker():
    assert record(1, {"b": "ü", "a": [1, 2]}).data_json() == '{"b": "ü", "a": [1, 2]}'
    marker = {"truncated": True, "reason": "payload over 256 KB"}
    assert json.loads(record(2, {"blob": "x" * MAX_DATA_BYTES}).data_json()) == marker
    # Counted in bytes: 100,000 three-byte characters are over 256 KB although fewer characters.
    assert json.loads(record(3, {"blob": "€" * 100_000}).data_json()) == marker
    small = {"blob": "€" * 80_000}  # 240,000 bytes: under
    assert json.loads(record(4, small).data_json()) == small


@pytest.mark.parametrize(("name", "value", "message"), [
    ("FISCAL_OUTBOX_BATCH", "0", "FISCAL_OUTBOX_BATCH"),
    ("FISCAL_OUTBOX_BATCH", "501", "FISCAL_OUTBOX_BATCH"),
    ("FISCAL_OUTBOX_BATCH", "many", "FISCAL_OUTBOX_BATCH"),
    ("FISCAL_OUTBOX_POLL_SECONDS", "0", "poll_seconds"),
    ("FISCAL_OUTBOX_PUBLISH_TIMEOUT_SECONDS", "-1", "publish_timeout"),
    ("FISCAL_OUTBOX_BACKOFF_MAX_SECONDS", "0.1", "BACKOFF_MAX"),
    ("FISCAL_OUTBOX_MIN_GAP_SECONDS", "-1", "MIN_GAP"),
])
def test_bad_settings_stop_the_process_with_a_clear_message(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        RelaySettings.from_env()


def test_settings_from_the_environment(monkeypatch):
    assert RelaySettings.from_env() == RelaySettings(batch=200, poll_seconds=0.2, min_gap_seconds=0.05,
                                                     publish_timeout=5.0, backoff_seconds=0.2,
                                                     backoff_max_seconds=10.0)
    monkeypatch.setenv("FISCAL_OUTBOX_BATCH", "500")
    monkeypatch.setenv("FISCAL_OUTBOX_POLL_SECONDS", "1.5")
    settings = RelaySettings.from_env()
    assert (settings.batch, settings.poll_seconds) == (500, 1.5)


# --- the loop over an in-memory outbox -------------------------------------------------------------------

class MemoryOutbox:
    """Rows with published flags; a claim takes the oldest unpublished ones not claimed by another
    (SKIP LOCKED) and marks them only if the block ends without an exception (commit)."""

    name = "memory"

    def __init__(self, count: int):
        self.rows = {n: record(n) for n in range(1, count + 1)}
        self.published: dict[int, int] = {}  # seq -> times marked
        self.locked: set[int] = set()

    def unpublished(self) -> list[int]:
        return sorted(seq for seq in self.rows if seq not in self.published)

    @contextlib.asynccontextmanager
    async def claim(self, limit: int):
        taken = [seq for seq in self.unpublished() if seq not in self.locked][:limit]
        self.locked.update(taken)
        marks: list[int] = []

        class _Claim:
            records = [self.rows[seq] for seq in taken]

            async def mark_published(self_inner, seqs):
                marks.extend(seqs)

        try:
            yield _Claim()
            for seq in marks:  # commit
                self.published[seq] = self.published.get(seq, 0) + 1
        finally:
            self.locked.difference_update(taken)


class FlakyPublisher:
    """Fails its first `failures` calls; records what each successful call carried."""

    def __init__(self, outbox: MemoryOutbox, failures: int = 0, fail_after_send: bool = False):
        self.outbox, self.failures, self.fail_after_send = outbox, failures, fail_after_send
        self.calls = 0
        self.received: list[int] = []  # every seq the receiving side saw, duplicates included
        self.marked_before_success: list[int] = []

    async def __call__(self, records):
        self.calls += 1
        # Nothing of this call may already be marked published: marking comes after a successful publish.
        self.marked_before_success += [r.seq for r in records if r.seq in self.outbox.published]
        if self.calls <= self.failures:
            if self.fail_after_send:  # the receiver got it, the answer was lost
                self.received += [r.seq for r in records]
            raise ConnectionError("webhooks unavailable")
        self.received += [r.seq for r in records]


def fast_settings(batch: int = 4) -> RelaySettings:
    return RelaySettings(batch=batch, poll_seconds=0.001, min_gap_seconds=0.0, publish_timeout=1.0,
                         backoff_seconds=0.001, backoff_max_seconds=0.004)


async def run_until_empty(relay: OutboxRelay, outbox: MemoryOutbox, max_cycles_guard: float = 20.0) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))

    async def drained():
        while outbox.unpublished():
            await asyncio.sleep(0.001)

    try:
        await asyncio.wait_for(drained(), max_cycles_guard)  # a hang guard, not a timing assertion
    finally:
        stopping.set()
        await asyncio.wait_for(task, max_cycles_guard)


async def test_a_publish_that_fails_several_times_loses_nothing_and_marks_nothing_early():
    outbox = MemoryOutbox(10)
    publisher = FlakyPublisher(outbox, failures=5)
    relay = OutboxRelay(outbox, publisher, fast_settings())
    await run_until_empty(relay, outbox)
    assert publisher.calls >= 5 + 3  # five failures, then 10 events in batches of at most 4
    assert sorted(publisher.received) == list(range(1, 11))  # every event once, in order of seq
    assert publisher.received == sorted(publisher.received)
    assert outbox.published == {seq: 1 for seq in range(1, 11)}
    assert publisher.marked_before_success == []
    assert relay.backoff.failures == 0  # the successes reset it


async def test_a_call_that_reached_the_receiver_but_failed_is_published_again_not_dropped():
    outbox = MemoryOutbox(3)
    publisher = FlakyPublisher(outbox, failures=2, fail_after_send=True)
    await run_until_empty(OutboxRelay(outbox, publisher, fast_settings()), outbox)
    assert publisher.received == [1, 2, 3] * 3  # at least once: twice lost answers, once confirmed
    assert outbox.published == {1: 1, 2: 1, 3: 1}


async def test_the_failure_log_names_the_error_and_never_the_payload(monkeypatch):
    logged: list[dict] = []

    class CapturingLog:
        def warning(self, event, **fields):
            logged.append({"event": event, **fields})

        def info(self, event, **fields):
            pass

    monkeypatch.setattr(outbox_relay, "log", CapturingLog())
    outbox = MemoryOutbox(1)
    outbox.rows[1] = record(1, {"buyer": "secret-buyer-name"})
    await run_until_empty(OutboxRelay(outbox, FlakyPublisher(outbox, failures=1), fast_settings()), outbox)
    assert len(logged) == 1
    assert logged[0]["error_type"] == "ConnectionError" and logged[0]["failures"] == 1
    assert "secret-buyer-name" not in repr(logged)


async def test_the_relay_stops_when_shutdown_starts_even_while_backing_off():
    outbox = MemoryOutbox(2)
    publisher = FlakyPublisher(outbox, failures=10**9)  # the webhooks service never answers
    relay = OutboxRelay(outbox, publisher, RelaySettings(batch=4, poll_seconds=0.001, publish_timeout=1.0,
                                                         backoff_seconds=3600.0, backoff_max_seconds=3600.0))
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    while publisher.calls == 0:
        await asyncio.sleep(0.001)
    stopping.set()
    await asyncio.wait_for(task, 10)  # returns although the backoff asked for an hour
    assert outbox.published == {} and outbox.unpublished() == [1, 2]


async def test_a_wake_up_cuts_the_poll_short():
    outbox = MemoryOutbox(0)
    publisher = FlakyPublisher(outbox)
    relay = OutboxRelay(outbox, publisher, RelaySettings(batch=4, poll_seconds=3600.0, publish_timeout=1.0))
    stopping = asyncio.Event()
    task = asyncio.create_task(relay.run(stopping))
    await asyncio.sleep(0.01)  # the relay found nothing and waits for an hour's poll
    outbox.rows[1] = record(1)
    relay.wake()
    await asyncio.wait_for(_until(lambda: outbox.published == {1: 1}), 10)
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert publisher.received == [1]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def test_the_webhooks_publisher_maps_rows_to_outbox_events_with_a_deadline():
    sent: list[tuple] = []

    class Channel:
        def unary_unary(self, method, request_serializer=None, response_deserializer=None, **_):
            async def call(request, timeout=None, **kwargs):
                sent.append((method, request, timeout))
                return webhooks_pb2.PublishEventsResponse(stored=len(request.events))
            return call

    publish = webhooks_publisher(Channel(), timeout=2.5)
    await publish([record(7), record(8, outlet_id=None)])
    (method, request, timeout), = sent
    assert method == "/fiscal.v1.WebhookIngestService/PublishEvents" and timeout == 2.5
    first, second = request.events
    assert first.event_id == str(uuid.UUID(int=7)) and first.event_type == "invoice.sealed"
    assert first.merchant_id == MERCHANT and first.outlet_id == OUTLET and second.outlet_id == ""
    assert first.occurred_at.ToDatetime(tzinfo=UTC) == record(7).created_at
    assert first.data_json == record(7).payload_json
