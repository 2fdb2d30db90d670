"""The DGI upload sync through a real mesh (two ledger replicas) and the DGI simulator (issue #10): the
DGI down while documents are sealed, then back, syncs every one exactly once and emits the events; two
replicas confirm no document twice; a SIGKILL of a ledger in the middle of a batch uploads nothing twice
in effect; a refused invoice is `failed` with the DGI's reason while the others go on; the invoice's
`sync` block and ListInvoices?sync_status= show it. Counts are taken at the simulator (GET /__sim/dgi and
its request log), not inferred from the ledger."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import psycopg
import pytest

from tests.harness import auth, provision, run, seal_many

GUARD_SECONDS = 60  # hang guards, not timing assertions
DGI_ENV = {"FISCAL_DGI_POLL_SECONDS": "0.2", "FISCAL_DGI_RETRY_BASE_SECONDS": "0.2",
           "FISCAL_DGI_RETRY_MAX_SECONDS": "1.0", "FISCAL_DGI_TIMEOUT_SECONDS": "1.0",
           "FISCAL_DGI_LEASE_SECONDS": "5.0", "FISCAL_DGI_BATCH": "10"}


@pytest.fixture(scope="module")
def mesh(start_mesh):
    return start_mesh(service_replicas={"ledger": 2}, service_env={"ledger": DGI_ENV})


@pytest.fixture(scope="module")
def dgi(mesh):
    with httpx.Client(base_url=mesh.dgi_url, timeout=10.0) as client:
        yield client


def set_mode(dgi: httpx.Client, **knobs) -> None:
    answer = dgi.post("/__sim/dgi", json=knobs)
    assert answer.status_code == 200, answer.text


def books(dgi: httpx.Client) -> dict:
    return dgi.get("/__sim/dgi").json()


def sync_rows(mesh, merchant_id: str) -> dict[str, dict]:
    """ledger.dgi_sync of one merchant's documents, by invoice id (documents without a row: absent)."""
    with psycopg.connect(mesh.database_url) as conn:
        rows = conn.execute(
            "SELECT invoice_id::text, status, attempts, dgi_uid, dgi_code, dgi_error_code, reason "
            "FROM ledger.dgi_sync WHERE merchant_id = %s", (merchant_id,)).fetchall()
    return {r[0]: {"status": r[1], "attempts": r[2], "uid": r[3], "code": r[4], "error_code": r[5], "reason": r[6]}
            for r in rows}


def sync_events(mesh, merchant_id: str) -> list[tuple[str, str, dict, bool]]:
    with psycopg.connect(mesh.database_url) as conn:
        return [(r[0], r[1], r[2], r[3]) for r in conn.execute(
            "SELECT event_type, aggregate_id::text, payload, published_at IS NOT NULL FROM ledger.outbox "
            "WHERE merchant_id = %s AND event_type LIKE 'invoice.sync.%%' ORDER BY seq", (merchant_id,)).fetchall()]


def leased_by(mesh, merchant_id: str, pid: int) -> int:
    """How many of the merchant's pending documents a ledger process (by pid) holds under its lease."""
    with psycopg.connect(mesh.database_url) as conn:
        return conn.execute("SELECT count(*) FROM ledger.dgi_sync WHERE merchant_id = %s AND status = 'pending' "
                            "AND lease_holder LIKE %s AND lease_until > now()",
                            (merchant_id, f"%:{pid}:%")).fetchone()[0]


def wait_until(check, what: str, timeout: float = GUARD_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def settled(mesh, merchant_id: str, document_ids: set[str]) -> dict[str, dict] | None:
    rows = sync_rows(mesh, merchant_id)
    if set(rows) >= document_ids and all(rows[d]["status"] != "pending" for d in document_ids):
        return rows
    return None


def confirms_by_uid(dgi: httpx.Client) -> Counter:
    received = dgi.get("/__sim/requests").json()["received"]
    return Counter(r["path"].split("/")[3] for r in received
                   if r["method"] == "PUT" and r["path"].endswith("/confirm"))


def seal(mesh, shop: dict, per_terminal: int) -> list[dict]:
    result = run(seal_many(mesh.gateway_url, shop, per_terminal))
    assert not result["errors"]
    return result["ok"]


def refund(mesh, shop: dict, invoice: dict) -> dict:
    outlet_id = invoice["outlet_id"]
    answer = httpx.post(f"{mesh.gateway_url}/v1/invoices/{invoice['id']}/credit-notes", headers=auth(
        shop["pos_keys"][outlet_id]), json={"client_invoice_id": str(uuid.uuid4()), "reason": "returned",
                                            "pos_terminal_id": invoice["pos_terminal_id"],
                                            "cashier_id": invoice["cashier_id"]}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_dgi_down_while_sealing_then_back_syncs_every_document_exactly_once(mesh, dgi):
    shop = provision(mesh, outlets=1, terminals=2)
    merchant_id = shop["merchant"]["id"]
    before = books(dgi)
    set_mode(dgi, mode="down", how="503")
    try:
        invoices = seal(mesh, shop, per_terminal=25)
        notes = [refund(mesh, shop, invoice) for invoice in invoices[:2]]
        documents = {d["id"] for d in invoices + notes}
        assert len(documents) == 52
        # The workers try while the DGI is down: attempts are counted, nothing is synced or failed.
        rows = wait_until(lambda: (r := sync_rows(mesh, merchant_id)) and any(v["attempts"] >= 2 for v in r.values())
                          and r, "attempts while the DGI answers 503")
        assert {v["status"] for v in rows.values()} == {"pending"}
        assert any("503" in v["reason"] for v in rows.values())
        set_mode(dgi, mode="down", how="close")  # now the connection drops without an answer
        wait_until(lambda: any("could not be reached" in v["reason"] for v in sync_rows(mesh, merchant_id).values()),
                   "a dropped connection recorded as a transient failure")
        assert books(dgi)["confirmed"] == before["confirmed"]
    finally:
        set_mode(dgi, mode="ok")
    rows = wait_until(lambda: settled(mesh, merchant_id, documents), "every document synced")
    assert {rows[d]["status"] for d in documents} == {"synced"}
    after = books(dgi)
    # Exactly once at the DGI: one kept document and one confirmation per sealed document.
    assert after["confirmed"] - before["confirmed"] == 52
    assert after["invoices"] - before["invoices"] == 52
    assert len({rows[d]["code"] for d in documents}) == 52
    confirms = confirms_by_uid(dgi)
    assert all(confirms[rows[d]["uid"]] == 1 for d in documents), "a document was confirmed twice"
    # One invoice.sync.success per document, and the relay publishes them.
    events = wait_until(lambda: (e := sync_events(mesh, merchant_id)) and all(p for *_, p in e) and e,
                        "the sync events published")
    assert sorted(aggregate for kind, aggregate, _, _ in events if kind == "invoice.sync.success") == sorted(documents)
    assert [e for e in events if e[0] != "invoice.sync.success"] == []
    kinds = Counter(payload["kind"] for _, _, payload, _ in events)
    assert kinds == {"invoice": 50, "credit_note": 2}
    # GET /v1/invoices/{id}: the sync block.
    invoice = invoices[0]
    read = httpx.get(f"{mesh.gateway_url}/v1/invoices/{invoice['id']}", headers=auth(shop["admin_key"]), timeout=30)
    assert read.status_code == 200, read.text
    sync = read.json()["sync"]
    assert (sync["status"], sync["dgi_code"], sync["dgi_uid"]) == (
        "synced", rows[invoice["id"]]["code"], rows[invoice["id"]]["uid"])
    assert sync["attempts"] >= 1 and sync["synced_at"]


def test_two_replicas_confirm_no_document_twice(mesh, dgi):
    shop = provision(mesh, outlets=2, terminals=2)
    merchant_id = shop["merchant"]["id"]
    before = books(dgi)
    invoices = seal(mesh, shop, per_terminal=10)
    documents = {d["id"] for d in invoices}
    rows = wait_until(lambda: settled(mesh, merchant_id, documents), "every document synced")
    assert {rows[d]["status"] for d in documents} == {"synced"}
    assert books(dgi)["confirmed"] - before["confirmed"] == len(documents)
    confirms = confirms_by_uid(dgi)
    assert sorted(confirms[rows[d]["uid"]] for d in documents) == [1] * len(documents)


def test_a_ledger_killed_mid_batch_uploads_nothing_twice(mesh, dgi):
    shop = provision(mesh, outlets=1, terminals=2)
    merchant_id = shop["merchant"]["id"]
    before = books(dgi)
    victim = mesh.processes["ledger"][0]
    set_mode(dgi, mode="slow", delay_seconds=0.3)  # a batch takes seconds: room to kill in its middle
    try:
        invoices = seal(mesh, shop, per_terminal=10)
        documents = {d["id"] for d in invoices}
        wait_until(lambda: sum(v["status"] == "synced" for v in sync_rows(mesh, merchant_id).values()) >= 2,
                   "the first documents synced")
        # Mid-batch: the victim holds documents it has not finished (its holder id carries its pid).
        wait_until(lambda: leased_by(mesh, merchant_id, victim.popen.pid), "the victim holding a batch")
        victim.kill()  # SIGKILL: its leased batch stays taken until the lease runs out
    finally:
        set_mode(dgi, mode="ok")
    mesh.restart(victim)
    rows = wait_until(lambda: settled(mesh, merchant_id, documents), "every document synced after the kill")
    assert {rows[d]["status"] for d in documents} == {"synced"}
    after = books(dgi)
    assert after["confirmed"] - before["confirmed"] == len(documents)
    assert after["invoices"] - before["invoices"] == len(documents)
    events = wait_until(lambda: (e := sync_events(mesh, merchant_id)) and len(e) >= len(documents) and e,
                        "the sync events")
    assert sorted(aggregate for _, aggregate, _, _ in events) == sorted(documents), "one event per document"


def test_a_refused_invoice_fails_with_the_dgis_reason_and_the_others_go_on(mesh, dgi):
    shop = provision(mesh, outlets=1, terminals=1)
    merchant_id = shop["merchant"]["id"]
    code = shop["outlets"][0]["code"]
    set_mode(dgi, mode="reject", number_pattern=f"{code}-INV-0000000003", error_code="99",
             error_desc="documentNumber refusé: IFU non autorisé")
    try:
        invoices = seal(mesh, shop, per_terminal=5)
        documents = {d["id"] for d in invoices}
        rows = wait_until(lambda: settled(mesh, merchant_id, documents), "every document settled")
    finally:
        set_mode(dgi, mode="ok")
    [refused] = [d for d in invoices if d["fiscal"]["fiscal_number"] == f"{code}-INV-0000000003"]
    assert rows[refused["id"]] | {"uid": "", "code": ""} == {
        "status": "failed", "attempts": 1, "uid": "", "code": "", "error_code": "99",
        "reason": "documentNumber refusé: IFU non autorisé"}
    assert sorted(rows[d]["status"] for d in documents) == ["failed"] + ["synced"] * 4
    events = sync_events(mesh, merchant_id)
    [failed] = [payload for kind, _, payload, _ in events if kind == "invoice.sync.failed"]
    assert (failed["invoice_id"], failed["reason"], failed["dgi_error_code"], failed["attempts"]) == (
        refused["id"], "documentNumber refusé: IFU non autorisé", "99", 1)
    headers = auth(shop["admin_key"])
    listed = httpx.get(f"{mesh.gateway_url}/v1/invoices", params={"sync_status": "failed"}, headers=headers,
                       timeout=30).json()["invoices"]
    assert [(i["id"], i["sync"]["status"], i["sync"]["reason"], i["sync"]["dgi_error_code"]) for i in listed] == [
        (refused["id"], "failed", "documentNumber refusé: IFU non autorisé", "99")]
    synced = httpx.get(f"{mesh.gateway_url}/v1/invoices", params={"sync_status": "synced"}, headers=headers,
                       timeout=30).json()["invoices"]
    assert sorted(i["id"] for i in synced) == sorted(documents - {refused["id"]})
    bad = httpx.get(f"{mesh.gateway_url}/v1/invoices", params={"sync_status": "lost"}, headers=headers, timeout=30)
    assert bad.status_code == 400, bad.text
