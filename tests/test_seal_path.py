"""The seal path end to end through Envoy: concurrency, idempotency, receipts, credit notes, reads."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import httpx

from tests.chain_verifier import assert_outlets_verify, published_keys, verify_outlet
from tests.harness import (
    assert_exactly_once,
    auth,
    ledger_rows,
    numbers_by_outlet,
    provision,
    sale,
    seal_many,
    verify_chains,
)


def assert_gapless_and_verified(mesh, merchant: dict, expected_per_outlet: int | None = None) -> None:
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        found = numbers.get(outlet["id"], [])
        n = expected_per_outlet if expected_per_outlet is not None else len(found)
        assert found == list(range(1, n + 1)), f"{outlet['code']}: not exactly 1..{n}"
        checks = verify_chains(mesh, outlet["id"])
        assert checks and all(c.ok for c in checks), [c.problems[:5] for c in checks]
    # And again by the verifier that shares no code with the sealer.
    assert_outlets_verify(mesh.database_url, mesh.gateway_url, [o["id"] for o in merchant["outlets"]])


def test_twenty_terminals_in_four_outlets_seal_2000_gapless(mesh):
    merchant = provision(mesh, outlets=4, terminals=5)
    result = asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=100))
    assert len(result["ok"]) == 2000 and not result["errors"]
    assert_gapless_and_verified(mesh, merchant, expected_per_outlet=500)
    assert_exactly_once(mesh, merchant, result)
    # Every invoice is traceable to the terminal and cashier that sold it.
    for invoice in result["ok"]:
        outlet_terminals = merchant["terminals"][invoice["outlet_id"]]
        assert invoice["pos_terminal_id"] in outlet_terminals
        assert invoice["cashier_id"] in merchant["cashiers"][invoice["outlet_id"]]
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 2000, "outbox": 2000}


def test_retry_returns_identical_invoice_and_different_body_conflicts(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])
    body = sale(outlet, terminal, cashier, client_invoice_id=str(uuid.uuid4()))
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        first = client.post("/v1/invoices", json=body, headers=headers)
        assert first.status_code == 200, first.text
        before = ledger_rows(mesh, merchant["merchant"]["id"])
        again = client.post("/v1/invoices", json=body, headers=headers)
        assert again.status_code == 200
        assert again.json() == first.json()  # same number, same signature, same everything
        changed = dict(body, lines=[{"description": "Other", "quantity": "1", "unit_price": "5.00",
                                     "tax_group": "A"}])
        conflict = client.post("/v1/invoices", json=changed, headers=headers)
        assert conflict.status_code == 409
        assert conflict.json()["code"] == 6 and "already used" in conflict.json()["message"]
        assert ledger_rows(mesh, merchant["merchant"]["id"]) == before == {"invoices": 1, "outbox": 1}


def test_concurrent_retries_of_one_sale_seal_it_once(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0])

    async def fire():
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as client:
            return await asyncio.gather(*[client.post("/v1/invoices", json=body,
                                                      headers=auth(merchant["pos_keys"][outlet["id"]]))
                                          for _ in range(10)])

    answers = asyncio.run(fire())
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["fiscal"]["signature"] for a in answers}) == 1
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 1, "outbox": 1}
    assert_gapless_and_verified(mesh, merchant, expected_per_outlet=1)


def test_receipt_carries_the_five_elements_and_its_qr_verifies(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0],
                payments=[{"method": "mpesa", "amount": "1111.00", "reference": "QK7H2X9"}],
                sold_at=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        answer = client.post("/v1/invoices", json=body, headers=auth(merchant["pos_keys"][outlet["id"]]))
        assert answer.status_code == 200, answer.text
        invoice = answer.json()
        fiscal = invoice["fiscal"]
        assert fiscal["fiscal_number"] == f"{outlet['code']}-INV-0000000001"
        assert fiscal["fiscal_authority_id"] and fiscal["sealed_at"].endswith("Z")
        assert len(fiscal["auth_code"]) == 14 and fiscal["auth_code"].count("-") == 2
        assert fiscal["sealed_at_local"].endswith("+03:00")  # Africa/Nairobi
        # Tax-inclusive prices: 210.00 at 16 % -> 28.97 tax; 901.00 exempt.
        assert invoice["total"] == "1111.00" and invoice["total_tax"] == "28.97"
        assert invoice["payment_status"] == "paid"
        assert invoice["sold_at"] < fiscal["sealed_at"]  # sold offline two hours before the seal
        qr = urlparse(fiscal["qr_code"])
        assert qr.path == "/v1/verify"
        params = {k: v[0] for k, v in parse_qs(qr.query).items()}
        assert params["fn"] == fiscal["fiscal_number"] and params["tt"] == "1111.00"
        verified = client.get(f"/v1/verify?{qr.query}")  # no API key: anyone can check
        assert verified.status_code == 200
        assert verified.json()["valid"] is True and verified.json()["registered"] is True
        forged = client.get("/v1/verify", params={**params, "tt": "1.00"})
        assert forged.status_code == 200 and forged.json()["valid"] is False
        assert "signature" in forged.json()["reason"]


def test_credit_note_has_its_own_series_and_cannot_over_refund(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        original = client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers).json()
        partial = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal, "cashier_id": cashier,
                   "reason": "damaged eggs",
                   "lines": [{"description": "Eggs (tray)", "quantity": "1", "unit_price": "450.50",
                              "tax_group": "E"}]}
        note = client.post(f"/v1/invoices/{original['id']}/credit-notes", json=partial, headers=headers)
        assert note.status_code == 200, note.text
        note = note.json()
        assert note["kind"] == "credit_note" and note["original_invoice_id"] == original["id"]
        assert note["fiscal"]["fiscal_number"] == f"{outlet['code']}-CN-0000000001"
        assert note["total"] == "450.50"
        whole = {**partial, "client_invoice_id": str(uuid.uuid4()), "lines": []}
        too_much = client.post(f"/v1/invoices/{original['id']}/credit-notes", json=whole, headers=headers)
        assert too_much.status_code == 400 and "exceeds" in too_much.json()["message"]
        unknown = client.post(f"/v1/invoices/{uuid.uuid4()}/credit-notes", json=whole, headers=headers)
        assert unknown.status_code == 404
    checks = verify_chains(mesh, outlet["id"])
    assert {c.series for c in checks} == {"INV", "CN"} and all(c.ok for c in checks)
    reports = verify_outlet(mesh.database_url, outlet["id"], published_keys(mesh.gateway_url))
    assert {r.series: (r.entries, r.ok) for r in reports} == {"INV": (1, True), "CN": (1, True)}


def test_get_and_list_with_filters_and_cursor_pagination(mesh):
    merchant = provision(mesh, outlets=2, terminals=2)
    asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=6))  # 12 per outlet
    first_outlet = merchant["outlets"][0]
    read = auth(merchant["read_key"])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        seen, token = [], ""
        while True:
            page = client.get("/v1/invoices", params={"outlet_id": first_outlet["id"], "page_size": 5,
                                                      "page_token": token}, headers=read)
            assert page.status_code == 200, page.text
            seen += page.json()["invoices"]
            token = page.json()["next_page_token"]
            if not token:
                break
        assert len(seen) == 12 and len({i["id"] for i in seen}) == 12
        assert {i["outlet_id"] for i in seen} == {first_outlet["id"]}
        terminal = merchant["terminals"][first_outlet["id"]][1]
        by_terminal = client.get("/v1/invoices", params={"pos_terminal_id": terminal}, headers=read).json()
        assert len(by_terminal["invoices"]) == 6
        assert {i["pos_terminal_id"] for i in by_terminal["invoices"]} == {terminal}
        one = client.get(f"/v1/invoices/{seen[0]['id']}", headers=read)
        # The DGI upload moves the sync block on its own schedule, between the two reads.
        without_sync = [{k: v for k, v in invoice.items() if k != "sync"} for invoice in (one.json(), seen[0])]
        assert one.status_code == 200 and without_sync[0] == without_sync[1]
        # A POS key sees only its own outlet.
        other = merchant["outlets"][1]
        pos = auth(merchant["pos_keys"][other["id"]])
        assert client.get(f"/v1/invoices/{seen[0]['id']}", headers=pos).status_code == 404
        assert client.get("/v1/invoices", params={"outlet_id": first_outlet["id"]}, headers=pos).status_code == 403
        listed = client.get("/v1/invoices", headers=pos).json()["invoices"]
        assert listed and {i["outlet_id"] for i in listed} == {other["id"]}
        future = client.get("/v1/invoices", params={"from": "2999-01-01T00:00:00Z"}, headers=read).json()
        assert future["invoices"] == []


def test_other_merchants_see_nothing(mesh):
    ours = provision(mesh, outlets=1, terminals=1)
    theirs = provision(mesh, outlets=1, terminals=1)
    asyncio.run(seal_many(mesh.gateway_url, ours, per_terminal=2))
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        mine = client.get("/v1/invoices", headers=auth(ours["admin_key"])).json()["invoices"]
        assert len(mine) == 2
        for key in (theirs["admin_key"], theirs["read_key"]):
            assert client.get("/v1/invoices", headers=auth(key)).json()["invoices"] == []
            assert client.get(f"/v1/invoices/{mine[0]['id']}", headers=auth(key)).status_code == 404
            assert client.get("/v1/invoices", params={"outlet_id": ours["outlets"][0]["id"]},
                              headers=auth(key)).json()["invoices"] == []
        assert client.get("/v1/terminals", headers=auth(theirs["admin_key"])).json()["terminals"][0][
            "outlet_id"] == theirs["outlets"][0]["id"]


def test_heartbeat_records_the_terminal_queue(mesh):
    merchant = provision(mesh, outlets=1, terminals=2)
    outlet = merchant["outlets"][0]
    terminal = merchant["terminals"][outlet["id"]][0]
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        answer = client.post(f"/v1/terminals/{terminal}/heartbeat", headers=auth(merchant["pos_keys"][outlet["id"]]),
                             json={"outlet_id": outlet["id"], "cashier_id": "C9", "draft_count": 42,
                                   "oldest_draft_age_seconds": 3600, "state": "offline", "sdk_version": "0.1.0"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["offline_grace_seconds"] == "259200"
        listed = client.get("/v1/terminals", params={"outlet_id": outlet["id"]},
                            headers=auth(merchant["read_key"])).json()["terminals"]
        row = next(t for t in listed if t["pos_terminal_id"] == terminal)
        assert row["draft_count"] == 42 and row["oldest_draft_age_seconds"] == "3600" and row["state"] == "offline"
        bad = client.post(f"/v1/terminals/{terminal}/heartbeat", headers=auth(merchant["pos_keys"][outlet["id"]]),
                          json={"outlet_id": outlet["id"], "draft_count": -1})
        assert bad.status_code == 400


def test_keys_are_public_and_grpc_internals_are_not_routed(mesh):
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        keys = client.get("/v1/keys")
        assert keys.status_code == 200
        assert keys.json()["keys"][0]["kty"] == "EC" and keys.json()["keys"][0]["status"] == "active"
        internal = client.post("/fiscal.v1.LedgerInternalService/GetChainHead",
                               headers={"content-type": "application/grpc"}, content=b"\x00\x00\x00\x00\x00")
        # Envoy answers a gRPC call it has no route for with grpc-status 12 (UNIMPLEMENTED, HTTP 404's twin).
        assert internal.headers.get("grpc-status") == "12", dict(internal.headers)
        assert client.get("/healthz").status_code == 200
        preflight = client.options("/v1/invoices", headers={"Origin": "http://till.example",
                                                            "Access-Control-Request-Method": "POST",
                                                            "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://till.example"
        assert "grpc-status" in preflight.headers["access-control-expose-headers"]
        # The answers themselves carry the CORS header too, or a till on another origin cannot read them.
        cross_origin = client.get("/v1/keys", headers={"Origin": "http://till.example"})
        assert cross_origin.headers["access-control-allow-origin"] == "http://till.example"
        refused = client.post("/v1/invoices", json={}, headers={"Origin": "http://till.example"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "http://till.example"
