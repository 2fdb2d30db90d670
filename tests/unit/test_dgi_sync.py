"""The DGI upload sync without a database: the DGI document an invoice becomes (checked by the DGI
simulator's own parser), the retry schedule, how the client classifies answers, and the worker's
outcome rules against the real simulator app in this process (services/ledger/dgi_sync.py,
dgi_client.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jsonschema  # type: ignore[import-untyped, unused-ignore]
import pytest
from aiohttp import web

from services.ledger.dgi_client import DgiClient, classify
from services.ledger.dgi_sync import (
    Acknowledgement,
    Claimed,
    DgiRefused,
    DgiSyncWorker,
    DgiUnavailable,
    Outcome,
    SyncSettings,
    dgi_document,
    document_json,
    format_time,
    retry_delay,
)
from services.ledger.model import InvoiceRecord
from services.ledger.sealing import CreditNoteRequest
from simulators import dgi as simulator
from simulators.common import SimulatorState, control_routes
from tests.unit.fakes import ADMIN_KEY, Rig, sale

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "webhooks" / "schemas"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SETTINGS = SyncSettings(url="http://dgi.invalid", token="t0k", ifu=simulator.DEFAULT_IFU, batch=10,
                        poll_seconds=0.05, retry_base_seconds=0.1, retry_max_seconds=1.0, timeout_seconds=1.0,
                        lease_seconds=30.0)


async def sealed_pair() -> tuple[InvoiceRecord, InvoiceRecord]:
    rig = Rig()
    invoice = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    note = await rig.sealer.create_credit_note(ADMIN_KEY, CreditNoteRequest(
        original_invoice_id=invoice.id, client_invoice_id="refund-1", pos_terminal_id="T1", cashier_id="C1",
        reason="returned"))
    return invoice, note


def envelope(event) -> dict:
    return {"id": event.event_id, "type": event.event_type, "timestamp": format_time(NOW),
            "merchant_id": event.merchant_id, "outlet_id": event.outlet_id, "data": event.payload}


def schema_errors(event) -> list[str]:
    schema = json.loads((SCHEMAS / f"{event.event_type}.json").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(envelope(event))]


# --- the document --------------------------------------------------------------------------------

async def test_an_invoice_becomes_a_document_the_simulator_accepts_with_our_totals():
    invoice, _ = await sealed_pair()
    document = dgi_document(invoice, SETTINGS)
    assert (document["documentNumber"], document["type"], document["ifu"]) == (
        invoice.fiscal_number, "FV", simulator.DEFAULT_IFU)
    parsed = simulator.parse_document(json.loads(document_json(document), parse_float=simulator.Decimal,
                                                 parse_int=simulator.Decimal), simulator.DgiConfig())
    totals = simulator.compute_totals(parsed)
    assert totals["total"] == simulator.Decimal(invoice.invoice_body().total)
    # Group A (16 %) goes to the DGI's VAT group, E (exempt) to its exempt group.
    assert [item["taxGroup"] for item in document["items"]] == ["B", "A"]
    assert document["payment"] == [{"name": "ESPECES", "amount": 500}]


async def test_the_same_record_always_gives_the_same_bytes():
    invoice, _ = await sealed_pair()
    assert document_json(dgi_document(invoice, SETTINGS)) == document_json(dgi_document(invoice, SETTINGS))


async def test_a_credit_note_references_its_original_code_without_dashes():
    _, note = await sealed_pair()
    document = dgi_document(note, SETTINGS, original_code="SIMU-AAAA-BBBB-CCCC-DDDD-EEEE")
    assert (document["type"], document["reference"]) == ("FA", "SIMUAAAABBBBCCCCDDDDEEEE")


async def test_configured_tax_groups_win_over_the_rate_rule():
    invoice, _ = await sealed_pair()
    document = dgi_document(invoice, replace(SETTINGS, tax_groups={"A": "D", "E": "E"}))
    assert [item["taxGroup"] for item in document["items"]] == ["D", "E"]


def test_bad_tax_group_settings_stop_the_service():
    with pytest.raises(SystemExit):
        SyncSettings(url="x", tax_groups={"A": "Z"})
    with pytest.raises(SystemExit):
        SyncSettings(url="x", lease_seconds=10, timeout_seconds=10)


# --- the retry schedule --------------------------------------------------------------------------

def test_retry_delay_doubles_is_capped_and_jittered():
    low = [retry_delay(n, 1.0, 8.0, rng=lambda: 0.0) for n in range(1, 7)]
    high = [retry_delay(n, 1.0, 8.0, rng=lambda: 0.999999) for n in range(1, 7)]
    assert low == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(a < b <= 2 * a for a, b in zip(low, high, strict=True))
    assert max(high) <= 8.0


# --- the client's classification -----------------------------------------------------------------

def answer(status: int, body) -> httpx.Response:
    return httpx.Response(status, json=body) if body is not None else httpx.Response(status, content=b"<html>")


@pytest.mark.parametrize(("status", "body", "expected"), [
    (503, {"message": "Service Unavailable"}, DgiUnavailable),
    (502, None, DgiUnavailable),
    (401, {"message": "a valid bearer token is required"}, DgiUnavailable),
    (200, None, DgiUnavailable),
    (400, {"errorCode": "9", "errorDesc": "unknown tax group"}, DgiRefused),
    (409, {"errorCode": "99", "errorDesc": "different content"}, DgiRefused),
    (200, {"errorCode": "3", "errorDesc": "bad type"}, DgiRefused),  # an error in a 200 is still a refusal
    (422, {"message": "no"}, DgiRefused),
])
def test_answers_are_refusals_or_retryable(status, body, expected):
    with pytest.raises(expected):
        classify(answer(status, body))


def test_a_refusal_keeps_the_dgis_code_and_reason():
    with pytest.raises(DgiRefused) as refused:
        classify(answer(400, {"errorCode": "99", "errorDesc": "Numéro refusé par la DGI"}))
    assert (refused.value.code, refused.value.reason) == ("99", "Numéro refusé par la DGI")


@pytest.mark.parametrize("failure", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                                     httpx.RemoteProtocolError("dropped")])
async def test_transport_failures_are_retryable_and_do_not_show_the_token(failure):
    def fail(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer t0k"
        raise failure

    client = DgiClient(SETTINGS, transport=httpx.MockTransport(fail))
    try:
        with pytest.raises(DgiUnavailable) as error:
            await client.upload({"documentNumber": "X"})
        assert "t0k" not in str(error.value)
    finally:
        await client.close()


# --- the worker against the simulator --------------------------------------------------------------

class MemoryStore:
    """ledger.dgi_sync as a dict, with the lease rule of LedgerStore.dgi_claim."""

    def __init__(self, records: list[InvoiceRecord]):
        self.records = records
        self.rows: dict[str, dict] = {}
        self.events: list = []
        self.now = NOW

    async def dgi_discover(self, after_seq: int, limit: int) -> int:
        added = 0
        for seq, record in enumerate(self.records, start=1):
            if seq > after_seq and record.id not in self.rows and added < limit:
                self.rows[record.id] = {"seq": seq, "status": "pending", "attempts": 0, "next": self.now,
                                        "holder": None, "code": "", "reason": ""}
                added = seq
        return added

    async def dgi_highest_seq(self) -> int:
        return max((r["seq"] for r in self.rows.values()), default=0)

    async def dgi_claim(self, holder: str, lease_seconds: float, limit: int) -> list[Claimed]:
        by_id = {r.id: r for r in self.records}
        taken: list[Claimed] = []
        for invoice_id, row in sorted(self.rows.items(), key=lambda item: item[1]["seq"]):
            if row["status"] == "pending" and row["next"] <= self.now and row["holder"] is None and len(taken) < limit:
                row["holder"] = holder
                record = by_id[invoice_id]
                original = self.rows.get(record.original_invoice_id or "", {})
                taken.append(Claimed(record, row["attempts"], original_code=original.get("code") or None,
                                     original_status=original.get("status")))
        return taken

    async def dgi_record(self, holder: str, invoice_id: str, outcome: Outcome, now: datetime) -> bool:
        row = self.rows[invoice_id]
        if row["holder"] != holder or row["status"] != "pending":
            return False
        row.update(status=outcome.status, attempts=outcome.attempts, holder=None, reason=outcome.reason)
        if outcome.next_attempt_at is not None:
            row["next"] = outcome.next_attempt_at
        if outcome.acknowledgement is not None:
            row["code"] = outcome.acknowledgement.code
        if outcome.event is not None:
            self.events.append(outcome.event)
        return True

    async def dgi_release(self, holder: str, invoice_ids: list[str]) -> None:
        for invoice_id in invoice_ids:
            if self.rows[invoice_id]["holder"] == holder:
                self.rows[invoice_id]["holder"] = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def dgi():
    """The DGI simulator's app on a loopback port in this process: (base URL, control client)."""
    app = simulator.make_app(SimulatorState(), simulator.DgiConfig(token="t0k"))
    app.add_routes(control_routes(SimulatorState()))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as control:
        yield f"http://127.0.0.1:{port}", control
    await runner.cleanup()


def worker_for(store: MemoryStore, url: str, holder: str = "w1", **changes) -> tuple[DgiSyncWorker, DgiClient]:
    settings = replace(SETTINGS, url=url, **changes)
    client = DgiClient(settings)
    return DgiSyncWorker(store, client, settings, holder, clock=lambda: store.now, monotonic=lambda: 0.0,
                         new_event_id=lambda: str(uuid.uuid4()), rng=lambda: 0.5), client


async def test_synced_once_with_a_success_event_per_document(dgi):
    url, control = dgi
    invoice, note = await sealed_pair()
    store = MemoryStore([invoice, note])
    worker, client = worker_for(store, url)
    try:
        await worker.cycle()  # the invoice syncs; the credit note waits for its code, uncounted
        assert store.rows[invoice.id]["status"] == "synced"
        assert (store.rows[note.id]["status"], store.rows[note.id]["attempts"]) == ("pending", 0)
        store.now += timedelta(seconds=1)
        await worker.cycle()
    finally:
        await client.close()
    assert [store.rows[r.id]["status"] for r in (invoice, note)] == ["synced", "synced"]
    books = (await control.get("/__sim/dgi")).json()
    assert (books["confirmed"], books["counters"]) == (2, {"FV": 1, "FA": 1})
    assert [e.event_type for e in store.events] == ["invoice.sync.success"] * 2
    assert store.events[0].payload["dgi_code"] == store.rows[invoice.id]["code"]
    assert [schema_errors(e) for e in store.events] == [[], []]


async def test_a_crash_after_confirming_uploads_nothing_twice(dgi):
    url, control = dgi
    invoice, _ = await sealed_pair()
    store = MemoryStore([invoice])
    worker, client = worker_for(store, url)
    try:
        first = await client.upload(dgi_document(invoice, SETTINGS))  # confirmed, then "killed" before recording
        await worker.cycle()  # the next worker uploads it again
    finally:
        await client.close()
    books = (await control.get("/__sim/dgi")).json()
    assert (books["confirmed"], books["invoices"]) == (1, 1)
    assert store.rows[invoice.id]["code"] == first.code


async def test_down_keeps_documents_pending_and_postpones_the_batch_without_counting(dgi):
    url, control = dgi
    invoice, note = await sealed_pair()
    other = replace(invoice, id=str(uuid.uuid4()), fiscal_number=invoice.fiscal_number.replace("0001", "0009"))
    store = MemoryStore([invoice, other])
    worker, client = worker_for(store, url)
    try:
        await control.post("/__sim/dgi", json={"mode": "down"})
        await worker.cycle()
        first, second = store.rows[invoice.id], store.rows[other.id]
        assert (first["status"], first["attempts"], second["status"], second["attempts"]) == (
            "pending", 1, "pending", 0)
        assert first["next"] > store.now and second["next"] == first["next"]
        assert "503" in first["reason"] and store.events == []
        await worker.cycle()  # not due yet: nothing is tried
        assert first["attempts"] == 1
        await control.post("/__sim/dgi", json={"mode": "ok"})
        store.now += timedelta(seconds=5)
        await worker.cycle()
    finally:
        await client.close()
    assert [store.rows[r.id]["status"] for r in (invoice, other)] == ["synced", "synced"]
    assert [e.payload["attempts"] for e in store.events] == [2, 1]


async def test_a_refusal_fails_the_document_with_the_dgis_reason_and_the_others_go_on(dgi):
    url, control = dgi
    invoice, note = await sealed_pair()
    other = replace(invoice, id=str(uuid.uuid4()), fiscal_number=invoice.fiscal_number.replace("0001", "0009"))
    store = MemoryStore([invoice, note, other])
    worker, client = worker_for(store, url)
    await control.post("/__sim/dgi", json={"mode": "reject", "number_pattern": ".*-INV-0000000001",
                                           "error_code": "99", "error_desc": "documentNumber refusé"})
    try:
        await worker.cycle()
        # The credit note was taken with its original still pending: it waits, then fails with it.
        assert [store.rows[r.id]["status"] for r in (invoice, note, other)] == ["failed", "pending", "synced"]
        store.now += timedelta(seconds=1)
        await worker.cycle()
    finally:
        await client.close()
    assert [store.rows[r.id]["status"] for r in (invoice, note, other)] == ["failed", "failed", "synced"]
    assert store.rows[invoice.id]["reason"] == "documentNumber refusé"
    failed = [e for e in store.events if e.event_type == "invoice.sync.failed"]
    assert [(e.payload["invoice_id"], e.payload["dgi_error_code"]) for e in failed] == [
        (invoice.id, "99"), (note.id, None)]
    assert all(schema_errors(e) == [] for e in store.events)


async def test_a_lost_lease_records_nothing(dgi):
    url, _ = dgi
    invoice, _ = await sealed_pair()
    store = MemoryStore([invoice])
    worker, client = worker_for(store, url)
    try:
        await store.dgi_discover(0, 10)
        [claimed] = await store.dgi_claim("w1", 30, 10)
        store.rows[invoice.id]["holder"] = "w2"  # the lease ran out and another replica took it
        outcome = await worker.attempt(claimed)
        assert outcome.status == "synced"
        assert await store.dgi_record("w1", invoice.id, outcome, NOW) is False
    finally:
        await client.close()
    assert store.events == []


async def test_the_worker_stops_on_shutdown(dgi):
    url, _ = dgi
    store = MemoryStore([])
    worker, client = worker_for(store, url)
    stopping = asyncio.Event()
    task = asyncio.create_task(worker.run(stopping))
    await asyncio.sleep(0.1)
    stopping.set()
    await asyncio.wait_for(task, 2.0)
    await client.close()


def test_acknowledgement_and_refusal_are_bounded():
    assert len(DgiRefused("9" * 500, "x" * 5000).reason) == 1000
    assert Acknowledgement("u", "c", "1/1 FV", "").code == "c"
