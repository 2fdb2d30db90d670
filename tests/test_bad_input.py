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
