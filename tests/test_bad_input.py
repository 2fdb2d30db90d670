"""Bad input gets a clear 4xx JSON error and writes nothing."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.harness import auth, ledger_rows, provision, sale


@pytest.fixture(scope="module")
def shop(mesh):
    return provision(mesh, outlets=1, terminals=1)


@pytest.fixture(scope="module")
def other_shop(mesh):
    return provision(mesh, outlets=1, terminals=1)


def _good(shop) -> dict:
    outlet = shop["outlets"][0]
    return sale(outlet, shop["terminals"][outlet["id"]][0], shop["cashiers"][outlet["id"]][0])


def _without(body: dict, field: str) -> dict:
    return {k: v for k, v in body.items() if k != field}


def _line(**changes) -> list[dict]:
    return [{"description": "Soap", "quantity": "1", "unit_price": "50.00", "tax_group": "A", **changes}]


CASES = {
    # name: (change the body, expected HTTP status, words the message must contain)
    "missing outlet_id": (lambda b: _without(b, "outlet_id"), 400, "outlet_id is required"),
    "missing client_invoice_id": (lambda b: _without(b, "client_invoice_id"), 400, "client_invoice_id is required"),
    "missing pos_terminal_id": (lambda b: _without(b, "pos_terminal_id"), 400, "pos_terminal_id is required"),
    "missing cashier_id": (lambda b: _without(b, "cashier_id"), 400, "cashier_id is required"),
    "missing currency": (lambda b: _without(b, "currency"), 400, "currency is required"),
    "no lines": (lambda b: dict(b, lines=[]), 400, "at least one line"),
    "missing quantity": (lambda b: dict(b, lines=[{k: v for k, v in _line()[0].items() if k != "quantity"}]), 400,
                         "quantity is required"),
    "zero quantity": (lambda b: dict(b, lines=_line(quantity="0")), 400, "greater than zero"),
    "negative quantity": (lambda b: dict(b, lines=_line(quantity="-2")), 400, "must not be negative"),
    "quantity not a number": (lambda b: dict(b, lines=_line(quantity="two")), 400, "decimal string"),
    "negative price": (lambda b: dict(b, lines=_line(unit_price="-1.00")), 400, "must not be negative"),
    "too many decimals": (lambda b: dict(b, lines=_line(unit_price="1.001")), 400, "more than 2 decimals"),
    "unknown tax group": (lambda b: dict(b, lines=_line(tax_group="Z")), 400, "not one of this merchant's tax groups"),
    "wrong currency": (lambda b: dict(b, currency="USD"), 400, "not this outlet's currency"),
    "unknown currency": (lambda b: dict(b, currency="ZZZ"), 400, "not this outlet's currency"),
    "bad sold_at": (lambda b: dict(b, sold_at="yesterday"), 400, "RFC 3339"),
    "future sold_at": (lambda b: dict(b, sold_at="2999-01-01T00:00:00Z"), 400, "in the future"),
    "bad payment method": (lambda b: dict(b, payments=[{"method": "cheque", "amount": "1.00"}]), 400,
                           "method must be one of"),
    "wrong type": (lambda b: dict(b, lines="soap"), 400, ""),
    "bad terminal id": (lambda b: dict(b, pos_terminal_id="till 1; drop table"), 400, "pos_terminal_id must be"),
    "outlet id not a uuid": (lambda b: dict(b, outlet_id="not-a-uuid"), 404, "not found"),
    # Finding 1: amounts that overflowed answered 500 (and the POS SDK retries a 5xx forever).
    "huge quantity x huge price": (lambda b: dict(b, lines=_line(quantity="999999999999999",
                                                                 unit_price="999999999999999")), 400,
                                   "quantity must be at most 1,000,000"),
    "barcode scanned into quantity": (lambda b: dict(b, lines=_line(quantity="5900000000000", unit_price="100000")),
                                      400, "quantity must be at most 1,000,000"),
    "price over the limit": (lambda b: dict(b, lines=_line(unit_price="1000000000000.01")), 400,
                             "unit_price must be at most 1,000,000,000,000"),
    "line total over the limit": (lambda b: dict(b, lines=_line(quantity="1000000", unit_price="1000000000000")),
                                  400, "line total"),
    "invoice total over the limit": (lambda b: dict(b, lines=_line(quantity="1000", unit_price="600000000000") * 2),
                                     400, "invoice total"),
    "payment over the limit": (lambda b: dict(b, payments=[{"method": "cash", "amount": "1" + "0" * 15}]), 400,
                               "at most"),
    "amount too long to parse": (lambda b: dict(b, lines=_line(unit_price="1" * 5000)), 400, "decimal string"),
    "exponent in an amount": (lambda b: dict(b, lines=_line(quantity="1e3")), 400, "decimal string"),
    # Finding 1: only ASCII digits, identifiers matched in full.
    "arabic-indic digits": (lambda b: dict(b, lines=_line(quantity="\u0661\u0662")), 400, "decimal string"),
    "fullwidth digits": (lambda b: dict(b, lines=_line(unit_price="\uff15\uff10")), 400, "decimal string"),
    "identifier with a trailing newline": (lambda b: dict(b, pos_terminal_id=b["pos_terminal_id"] + "\n"), 400,
                                           "pos_terminal_id must be"),
    "client id with a trailing newline": (lambda b: dict(b, client_invoice_id=b["client_invoice_id"] + "\n"), 400,
                                          "client_invoice_id must be"),
    "cashier id too long": (lambda b: dict(b, cashier_id="C" * 65), 400, "cashier_id must be"),
    "outlet id with a trailing newline": (lambda b: dict(b, outlet_id=b["outlet_id"] + "\n"), 404, "not found"),
    # Every field bounded; no control characters in text.
    "control character in a description": (lambda b: dict(b, lines=_line(description="Soap\x1b[2J")), 400,
                                           "control characters"),
    "line break in a description": (lambda b: dict(b, lines=_line(description="Soap\nFREE")), 400,
                                    "control characters"),
    "description too long": (lambda b: dict(b, lines=_line(description="x" * 201)), 400, "1-200 characters"),
    "sku too long": (lambda b: dict(b, lines=_line(sku="s" * 65)), 400, "sku is longer than 64"),
    "tax group too long": (lambda b: dict(b, lines=_line(tax_group="A" * 5000)), 400, "tax_group"),
    "line_total too long": (lambda b: dict(b, lines=_line(line_total="9" * 100)), 400, "line_total"),
    "too many lines": (lambda b: dict(b, lines=_line() * 1001), 400, "at most 1000 lines"),
    "too many payments": (lambda b: dict(b, payments=[{"method": "cash", "amount": "1.00"}] * 21), 400,
                          "at most 20 payments"),
    "payment reference too long": (lambda b: dict(b, payments=[{"method": "cash", "amount": "1.00",
                                                                "reference": "r" * 101}]), 400, "reference"),
    "control character in a payment reference": (lambda b: dict(b, payments=[
        {"method": "cash", "amount": "1.00", "reference": "QK7\x00"}]), 400, "control characters"),
    "buyer name too long": (lambda b: dict(b, buyer={"name": "n" * 201}), 400, "buyer.name is longer than 200"),
    "buyer email too long": (lambda b: dict(b, buyer={"email": "e" * 255}), 400, "buyer.email is longer than 254"),
    "line break in a buyer field": (lambda b: dict(b, buyer={"tax_id": "P051\nX"}), 400, "control characters"),
    "sold_at in other digits": (lambda b: dict(b, sold_at="\u0662\u0660\u0662\u0666-11-24T10:00:00Z"), 400,
                                "RFC 3339"),
    "sold_at too long": (lambda b: dict(b, sold_at="2026-11-24T10:00:00Z" + " " * 100), 400, "RFC 3339"),
    "currency too long": (lambda b: dict(b, currency="K" * 5000), 400, "not this outlet's currency"),
    "unknown outlet": (lambda b: dict(b, outlet_id=str(uuid.uuid4())), 404, "not found"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sale_is_refused_with_a_clear_json_error_and_writes_nothing(mesh, shop, case):
    change, status, words = CASES[case]
    outlet = shop["outlets"][0]
    before = ledger_rows(mesh, shop["merchant"]["id"])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        answer = client.post("/v1/invoices", json=change(_good(shop)), headers=auth(shop["pos_keys"][outlet["id"]]))
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert isinstance(error["code"], int) and error["code"] != 0
    assert words in error["message"], error
    assert "Traceback" not in answer.text
    assert len(answer.text) < 1000  # a message never echoes a long value back
    assert ledger_rows(mesh, shop["merchant"]["id"]) == before


def test_transport_level_bad_requests(mesh, shop):
    outlet = shop["outlets"][0]
    headers = auth(shop["pos_keys"][outlet["id"]])
    before = ledger_rows(mesh, shop["merchant"]["id"])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        malformed = client.post("/v1/invoices", content=b'{"outlet_id": ', headers=headers)
        assert malformed.status_code == 400 and malformed.json()["code"] == 3
        huge = client.post("/v1/invoices", content=b'{"outlet_id": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                           headers=headers)
        assert huge.status_code == 413 and "too large" in huge.json()["message"]
        unknown_path = client.get("/v1/nothing-here", headers=headers)
        assert unknown_path.status_code == 404 and unknown_path.json()["code"] == 5
        root = client.get("/")
        assert root.status_code == 404
        bad_token = client.get("/v1/invoices", params={"page_token": "garbage!"}, headers=headers)
        assert bad_token.status_code == 400 and "page_token" in bad_token.json()["message"]
        bad_size = client.get("/v1/invoices", params={"page_size": 100000}, headers=headers)
        assert bad_size.status_code == 400
        bad_time = client.get("/v1/invoices", params={"from": "last week"}, headers=headers)
        assert bad_time.status_code == 400
        bad_verify = client.get("/v1/verify", params={"fn": "X"})
        assert bad_verify.status_code == 200 and bad_verify.json()["valid"] is False
        empty_verify = client.get("/v1/verify")
        assert empty_verify.status_code == 400
    assert ledger_rows(mesh, shop["merchant"]["id"]) == before


def test_every_other_public_request_is_bounded(mesh, shop):
    outlet = shop["outlets"][0]
    headers = auth(shop["pos_keys"][outlet["id"]])
    terminal = shop["terminals"][outlet["id"]][0]
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        sealed = client.post("/v1/invoices", json=_good(shop), headers=headers)
        assert sealed.status_code == 200, sealed.text
        invoice = sealed.json()
        before = ledger_rows(mesh, shop["merchant"]["id"])

        def refused(answer, words: str, status: int = 400):
            assert answer.status_code == status, answer.text
            assert words in answer.json()["message"] and len(answer.text) < 1000, answer.text

        heartbeat = {"outlet_id": outlet["id"], "draft_count": 0, "state": "online"}
        beat = f"/v1/terminals/{terminal}/heartbeat"
        refused(client.post(beat, json=dict(heartbeat, draft_count=2_000_000), headers=headers), "draft_count")
        refused(client.post(beat, json=dict(heartbeat, oldest_draft_age_seconds=10**12), headers=headers),
                "oldest_draft_age_seconds")
        refused(client.post(beat, json=dict(heartbeat, sdk_version="1.0\n"), headers=headers), "control characters")
        refused(client.post(beat, json=dict(heartbeat, sdk_version="v" * 65), headers=headers), "sdk_version")
        refused(client.post(beat, json=dict(heartbeat, cashier_id="C1\n"), headers=headers), "cashier_id must be")
        refused(client.post(f"/v1/terminals/{terminal}%0A/heartbeat", json=heartbeat, headers=headers),
                "pos_terminal_id must be")

        refused(client.get("/v1/invoices", params={"from": "\u0662\u0660\u0662\u0666-01-01T00:00:00Z"},
                           headers=headers), "RFC 3339")
        refused(client.get("/v1/invoices", params={"to": "2026-01-01T00:00:00Z" + "0" * 100}, headers=headers),
                "RFC 3339")
        refused(client.get("/v1/invoices", params={"cashier_id": "C1\n"}, headers=headers), "cashier_id must be")
        refused(client.get("/v1/invoices", params={"page_token": "A" * 5000}, headers=headers), "page_token")
        refused(client.get(f"/v1/invoices/{invoice['id']}%0A", headers=headers), "not found", 404)
        refused(client.get("/v1/terminals", params={"outlet_id": outlet["id"] + "\n"}, headers=auth(shop["admin_key"])),
                "not found", 404)

        qr = dict(httpx.URL(invoice["fiscal"]["qr_code"]).params)
        assert client.get("/v1/verify", params=qr).json()["valid"] is True
        for name in ("fn", "fa", "ts", "tt", "cur", "d", "ac", "kid", "sg"):
            refused(client.get("/v1/verify", params=dict(qr, **{name: qr[name] + "x" * 200})), name)

        note = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal,
                "cashier_id": shop["cashiers"][outlet["id"]][0], "reason": "returned"}
        notes = f"/v1/invoices/{invoice['id']}/credit-notes"
        refused(client.post(notes, json=dict(note, reason="r" * 501), headers=headers), "reason is longer than 500")
        refused(client.post(notes, json=dict(note, reason="damaged\x07"), headers=headers), "control characters")
        refused(client.post(notes, json=dict(note, client_invoice_id="CN1\n"), headers=headers),
                "client_invoice_id must be")
        refused(client.post(notes, json=dict(note, lines=_line(quantity="\u0661")), headers=headers), "decimal string")
        refused(client.post(notes, json=dict(note, lines=_line(quantity="5900000000000", unit_price="100000")),
                            headers=headers), "at most 1,000,000")
        refused(client.post(notes, json=dict(note, lines=_line() * 1001), headers=headers), "at most 1000 lines")
        # Normal text in any script is fine.
        fine = client.post(notes, json=dict(note, reason="Imerudishwa — مرتجع ✓",
                                            lines=_line(description="Sabuni ya kufulia", unit_price="1.00")),
                           headers=headers)
        assert fine.status_code == 200, fine.text
    assert ledger_rows(mesh, shop["merchant"]["id"]) == {"invoices": before["invoices"] + 1,
                                                         "outbox": before["outbox"] + 1}


def test_keys_and_tenancy_are_enforced(mesh, shop, other_shop):
    outlet = shop["outlets"][0]
    body = _good(shop)
    before = ledger_rows(mesh, shop["merchant"]["id"])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        no_key = client.post("/v1/invoices", json=body)
        assert no_key.status_code == 401 and "missing API key" in no_key.json()["message"]
        wrong_key = client.post("/v1/invoices", json=body, headers=auth("fk_pos_not-a-real-key"))
        assert wrong_key.status_code == 401 and "unknown or revoked" in wrong_key.json()["message"]
        not_bearer = client.post("/v1/invoices", json=body, headers={"Authorization": "Basic abc"})
        assert not_bearer.status_code == 401
        read_only = client.post("/v1/invoices", json=body, headers=auth(shop["read_key"]))
        assert read_only.status_code == 403 and "read-only" in read_only.json()["message"]
        # Another merchant's keys cannot reach this merchant's outlet: it does not exist for them.
        for key in (other_shop["admin_key"], other_shop["pos_keys"][other_shop["outlets"][0]["id"]]):
            foreign = client.post("/v1/invoices", json=body, headers=auth(key))
            assert foreign.status_code == 404, foreign.text
        # A POS key of one outlet cannot seal for a sibling outlet of its own merchant.
        sibling = provision(mesh, outlets=2, terminals=1)
        a, b = sibling["outlets"]
        cross = client.post("/v1/invoices", headers=auth(sibling["pos_keys"][a["id"]]),
                            json=sale(b, sibling["terminals"][b["id"]][0], sibling["cashiers"][b["id"]][0]))
        assert cross.status_code == 403 and "another outlet" in cross.json()["message"]
        assert ledger_rows(mesh, sibling["merchant"]["id"]) == {"invoices": 0, "outbox": 0}
        # Keys never show up in the ledger's logs.
    assert ledger_rows(mesh, shop["merchant"]["id"]) == before
    logs = "".join(p.log_path.read_text(errors="replace") for p in mesh.all_processes())
    assert shop["pos_keys"][outlet["id"]] not in logs and shop["admin_key"] not in logs
