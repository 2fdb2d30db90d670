"""Bad POST /v1/payments requests: each gets a JSON 4xx naming the problem, and nothing is written (no
payment row, no provider call, no ledger row, no event)."""

from __future__ import annotations

import pytest

from tests.harness import auth, provision
from tests.harness import sale as make_sale
from tests.payments_shop import new_phone

INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED = 3, 5, 7


def _refused(shop, phone: str, answer, status: int, code: int, *words: str) -> dict:
    assert answer.status_code == status, (answer.status_code, answer.text)
    error = answer.json()
    assert error["code"] == code, error
    assert all(word in error["message"].lower() for word in words), error
    assert shop.row_counts() == {"payments": 0, "invoice_payments": 0, "events": 0}
    assert not [r for r in shop.sim_log("mpesa")["received"] if phone in r["body"]], "the provider was called"
    return error


@pytest.mark.parametrize(("field", "value", "word"), [
    ("phone", "0712345678", "phone"),             # not E.164 (no country code)
    ("phone", "2547123456789012", "phone"),       # 16 digits
    ("phone", "", "phone"),
    ("provider", "paypal", "provider"),
    ("provider", "", "provider"),
    ("amount", "0", "amount"),
    ("amount", "-5.00", "amount"),
    ("amount", "10.001", "amount"),                # more decimals than KES has
    ("amount", "1e3", "amount"),
    ("amount", "100000000000000000000", "amount"),
    ("amount", "abc", "amount"),
    ("currency", "USD", "collect"),                # M-Pesa collects KES only
])
def test_a_bad_field_is_refused_and_nothing_written(pay_shop, field, value, word):
    phone = new_phone()
    invoice = pay_shop.seal()
    before = pay_shop.row_counts()
    fields = {"provider": "mpesa", "amount": "100.00", "phone": phone, field: value}
    answer = pay_shop.create_payment(fields.pop("provider"), fields.pop("amount"), fields.pop("phone"),
                                     invoice_id=invoice["id"], **fields)
    assert before["payments"] == 0
    _refused(pay_shop, phone, answer, 400, INVALID_ARGUMENT, word)


def test_no_reference_or_two_references_are_refused(pay_shop):
    phone = new_phone()
    invoice = pay_shop.seal()
    sale = pay_shop.sale()
    for fields in ({}, {"invoice_id": invoice["id"], "sale": sale},
                   {"client_invoice_id": sale["client_invoice_id"], "sale": sale},
                   {"invoice_id": invoice["id"], "client_invoice_id": invoice["client_invoice_id"]}):
        _refused(pay_shop, phone, pay_shop.create_payment("mpesa", "100.00", phone, **fields), 400, INVALID_ARGUMENT)


def test_a_pay_first_sale_that_would_not_seal_is_refused_before_the_customer_is_asked(pay_shop):
    phone = new_phone()
    bad_sale = pay_shop.sale(lines=[{"description": "x", "quantity": "1", "unit_price": "10.00", "tax_group": "Q"}])
    _refused(pay_shop, phone, pay_shop.create_payment("mpesa", "10.00", phone, sale=bad_sale), 400, INVALID_ARGUMENT)
    # The amount asked must be the sale's total: the confirmation seals exactly that sale.
    _refused(pay_shop, phone, pay_shop.create_payment("mpesa", "5.00", phone, sale=pay_shop.sale()), 400,
             INVALID_ARGUMENT, "total")


def test_another_merchants_invoice_or_outlet_is_refused(pay_shop, payments_mesh):
    phone = new_phone()
    other = provision(payments_mesh, outlets=1, terminals=1)
    other_outlet = other["outlets"][0]
    sealed = pay_shop.http.post("/v1/invoices", json=make_sale(other_outlet, other["terminals"][other_outlet["id"]][0],
                                                      other["cashiers"][other_outlet["id"]][0]),
                       headers=auth(other["pos_keys"][other_outlet["id"]]))
    assert sealed.status_code == 200, sealed.text
    # Their invoice, with our admin key: not found (never "it exists, but not yours").
    answer = pay_shop.create_payment("mpesa", sealed.json()["total"], phone, key=pay_shop.merchant["admin_key"],
                                     invoice_id=sealed.json()["id"])
    _refused(pay_shop, phone, answer, 404, NOT_FOUND)
    # Their outlet, with our admin key.
    answer = pay_shop.http.post("/v1/payments", headers=auth(pay_shop.merchant["admin_key"]), json={
        "outlet_id": other_outlet["id"], "provider": "mpesa", "amount": "10.00", "currency": "KES",
        "phone": phone, "client_invoice_id": "c-1"})
    assert answer.status_code in (403, 404), answer.text
    # Our other outlet's invoice with this outlet's POS key (a POS key is for its own outlet).
    invoice = pay_shop.seal(index=1)
    answer = pay_shop.create_payment("mpesa", invoice["total"], phone, index=1, key=pay_shop.pos_key(0),
                                     invoice_id=invoice["id"])
    assert answer.status_code in (403, 404), answer.text
    _refused(pay_shop, phone, answer, answer.status_code, answer.json()["code"])


def test_a_read_only_key_cannot_create_a_payment_but_can_look(pay_shop):
    phone = new_phone()
    invoice = pay_shop.seal()
    answer = pay_shop.create_payment("mpesa", invoice["total"], phone, key=pay_shop.merchant["read_key"],
                                     invoice_id=invoice["id"])
    _refused(pay_shop, phone, answer, 403, PERMISSION_DENIED)
    listed = pay_shop.http.get("/v1/payments", headers=auth(pay_shop.merchant["read_key"]))
    assert listed.status_code == 200 and listed.json()["payments"] == [], listed.text
    # No key at all.
    bare = pay_shop.http.post("/v1/payments", json={"outlet_id": pay_shop.outlet()["id"], "provider": "mpesa",
                                                    "amount": "1.00", "currency": "KES", "phone": phone,
                                                    "invoice_id": invoice["id"]})
    assert bare.status_code == 401, bare.text


def test_an_unknown_payment_is_not_found(pay_shop):
    answer = pay_shop.http.get("/v1/payments/0190c0de-0000-7000-8000-000000000000",
                               headers=auth(pay_shop.merchant["admin_key"]))
    assert answer.status_code == 404 and answer.json()["code"] == NOT_FOUND, answer.text
    answer = pay_shop.http.get("/v1/payments/not-a-uuid", headers=auth(pay_shop.merchant["admin_key"]))
    assert answer.status_code in (400, 404), answer.text
