"""Identical concurrent requests seal once: one number, one signature, not one per copy."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import sqlalchemy as sa

from tests.harness import _with_store, auth, ledger_rows, provision, run, sale


def _leases(mesh, outlet_id: str, series: str) -> int:
    """Numbers the counter handed out for one outlet and series (committed, released or expired)."""
    async def count(_, engine):
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(
                "SELECT count(*) FROM counter.leases WHERE outlet_id = :o AND series = :s"),
                {"o": outlet_id, "s": series})).scalar()
    return run(_with_store(mesh.database_url, count))


def _fire(mesh, path: str, body: dict, headers: dict, copies: int = 10) -> list[httpx.Response]:
    async def fire():
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=60) as client:
            return await asyncio.gather(*[client.post(path, json=body, headers=headers) for _ in range(copies)])
    return asyncio.run(fire())


def test_ten_concurrent_copies_take_one_number_and_one_signature(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])

    answers = _fire(mesh, "/v1/invoices", sale(outlet, terminal, cashier), headers)
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers if a.status_code != 200]
    assert len({a.json()["fiscal"]["signature"] for a in answers}) == 1
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 1, "outbox": 1}
    assert _leases(mesh, outlet["id"], "INV") == 1  # before: one lease per copy, nine of them released

    # The same for a credit note of that invoice.
    invoice = answers[0].json()
    note = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal, "cashier_id": cashier,
            "reason": "returned", "lines": [invoice["lines"][0]]}
    notes = _fire(mesh, f"/v1/invoices/{invoice['id']}/credit-notes", note, headers)
    assert {a.status_code for a in notes} == {200}, [a.text for a in notes if a.status_code != 200]
    assert len({a.json()["fiscal"]["signature"] for a in notes}) == 1
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 2, "outbox": 2}
    assert _leases(mesh, outlet["id"], "CN") == 1


def test_a_concurrent_copy_with_another_body_is_a_conflict(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])
    first = sale(outlet, terminal, cashier)
    other = dict(first, lines=[{"description": "Salt", "quantity": "1", "unit_price": "30.00", "tax_group": "A"}])

    async def fire():
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=60) as client:
            return await asyncio.gather(*[client.post("/v1/invoices", json=body, headers=headers)
                                          for body in [first] * 5 + [other] * 5])
    answers = asyncio.run(fire())
    # Whichever body sealed first: its five copies get it, the other five a 409.
    assert sorted(a.status_code for a in answers) == [200] * 5 + [409] * 5, [a.text for a in answers]
    sealed = {a.json()["fiscal"]["signature"] for a in answers if a.status_code == 200}
    assert len(sealed) == 1
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 1, "outbox": 1}
    assert _leases(mesh, outlet["id"], "INV") == 1
