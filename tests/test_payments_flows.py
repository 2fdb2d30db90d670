"""Mobile-money payments end to end (issue #9): a real mesh, the provider simulators, everything through
Envoy. A payment is started with POST /v1/payments, the simulator plays the customer and the provider and
calls back our gateway, and the invoice's payment view (GET /v1/invoices/{id}) changes, never its seal."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from tests.harness import auth, verify_chains
from tests.payments_shop import PROVIDERS, db_rows, new_phone


def _recorded(invoice: dict, payment_id: str) -> list[dict]:
    return [line for line in invoice.get("payments", []) if line.get("payment_id") == payment_id]


def _payment_view(invoice: dict) -> tuple:
    """What a till shows of an invoice's payments, without ids, references or times."""
    lines = sorted((p["method"], p["amount"], p.get("status", ""), p.get("phone_masked", ""),
                    bool(p.get("amount_mismatch"))) for p in invoice.get("payments", []))
    return invoice["payment_status"], invoice["total"], tuple(lines)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_initiate_then_callback_shows_the_payment_on_the_invoice_paid(shop_for, provider):
    pay_shop = shop_for(provider)
    invoice = pay_shop.seal()
    assert pay_shop.invoice(invoice["id"])["payment_status"] == "unpaid"
    phone = new_phone()
    payment = pay_shop.pay(provider, invoice["total"], phone, invoice_id=invoice["id"])
    assert payment["provider"] == provider and payment["outlet_id"] == pay_shop.outlet()["id"]
    assert payment["status"] in ("pending", "confirmed") and payment["provider_request_id"], payment
    assert payment["invoice_id"] == invoice["id"] and Decimal(payment["amount"]) == Decimal(invoice["total"])
    # Never the whole phone number in an answer.
    assert phone not in json.dumps(payment) and payment["phone_masked"][:4] == phone[:4], payment["phone_masked"]
    if provider == "orange_money":
        assert payment["payment_url"].startswith("http"), payment

    confirmed = pay_shop.wait_payment(payment["id"])
    assert confirmed["status"] == "confirmed", confirmed
    assert confirmed["provider_reference"] and not confirmed["amount_mismatch"]
    assert Decimal(confirmed["confirmed_amount"]) == Decimal(invoice["total"]) and confirmed["confirmed_at"]
    # The simulator's callback came through the gateway and was answered 200.
    sent = pay_shop.wait_callbacks_sent(provider, payment, 1)
    assert [s["status"] for s in sent] == [200], sent

    after = pay_shop.invoice(invoice["id"])
    assert after["payment_status"] == "paid", after
    [line] = _recorded(after, payment["id"])
    assert line["method"] == provider and Decimal(line["amount"]) == Decimal(invoice["total"])
    assert line["reference"] == confirmed["provider_reference"] and line["status"] == "confirmed"
    assert line["phone_masked"] == payment["phone_masked"] and line["confirmed_at"]
    # Payment data is not part of the signed body: the seal is exactly as it was.
    assert after["fiscal"] == invoice["fiscal"] and after["lines"] == invoice["lines"]
    # The outlet's POS key sees its payment and its invoice's payments too.
    listed = pay_shop.http.get("/v1/payments", params={"invoice_id": invoice["id"]},
                               headers=auth(pay_shop.pos_key())).json()["payments"]
    assert [p["id"] for p in listed] == [payment["id"]]


def test_sealed_then_paid_and_paid_then_sealed_end_in_the_same_invoice_state(pay_shop):
    # A: the usual order. B: the till was offline; the customer paid against the sale's client_invoice_id
    # and the sale was sealed later (the payment waited for it).
    sealed_first = pay_shop.seal()
    phone_a = phone_b = new_phone()  # one customer: the views compare equal to the masked phone
    paid_a = pay_shop.pay("mpesa", sealed_first["total"], phone_a, invoice_id=sealed_first["id"])
    paid_a = pay_shop.wait_payment(paid_a["id"])

    offline_sale = pay_shop.sale()
    paid_b = pay_shop.pay("mpesa", sealed_first["total"], phone_b,
                          client_invoice_id=offline_sale["client_invoice_id"])
    paid_b = pay_shop.wait_payment(paid_b["id"])
    assert paid_a["status"] == paid_b["status"] == "confirmed", (paid_a, paid_b)
    assert paid_b["invoice_id"] == "" and not pay_shop.invoices_with_client_id(offline_sale["client_invoice_id"])

    sealed_later = pay_shop.seal(body=offline_sale)
    a, b = pay_shop.invoice(sealed_first["id"]), pay_shop.invoice(sealed_later["id"])
    assert _payment_view(a) == _payment_view(b), (a["payments"], b["payments"])
    assert b["payment_status"] == "paid"
    [line] = _recorded(b, paid_b["id"])
    assert line["reference"] == paid_b["provider_reference"]
    # The held payment now names its invoice.
    assert pay_shop.wait_payment(paid_b["id"], lambda p: p["invoice_id"] == sealed_later["id"], timeout=10)
    # The payment changed neither body nor chain: every seal of the outlet still verifies.
    checks = verify_chains(pay_shop.mesh, pay_shop.outlet()["id"])
    assert checks and all(check.ok for check in checks), checks


def test_pay_first_confirmed_seals_the_attached_sale_once_though_the_callback_came_three_times(pay_shop):
    phone = new_phone()
    pay_shop.behave("mpesa", phone, callback="twice")
    body = pay_shop.sale()
    total = Decimal("1111.00")  # sale(): 210.00 + 2 x 450.50
    payment = pay_shop.pay("mpesa", str(total), phone, sale=body)
    assert payment["sale_state"] == "waiting" and payment["client_invoice_id"] == body["client_invoice_id"]
    assert not pay_shop.invoices_with_client_id(body["client_invoice_id"])  # nothing sealed before the money

    sent = pay_shop.wait_callbacks_sent("mpesa", payment, 2)
    # The third delivery: the same bytes again, as a provider retrying would send them.
    third = pay_shop.post_callback(sent[0]["url"], sent[0]["body"])
    assert third.status_code == 200, third.text
    sealed = pay_shop.wait_payment(payment["id"], lambda p: p["sale_state"] in ("sealed", "not_sealed"))
    assert (sealed["status"], sealed["sale_state"]) == ("confirmed", "sealed"), sealed

    [invoice_row] = pay_shop.invoices_with_client_id(body["client_invoice_id"])
    assert sealed["invoice_id"] == invoice_row.id
    invoice = pay_shop.invoice(sealed["invoice_id"])
    assert Decimal(invoice["total"]) == total and invoice["payment_status"] == "paid"
    mpesa_lines = [p for p in invoice["payments"] if p["method"] == "mpesa"]
    assert len(mpesa_lines) == 1 and mpesa_lines[0]["reference"] == sealed["provider_reference"], invoice["payments"]
    assert [s["status"] for s in pay_shop.callbacks_sent("mpesa", payment)] == [200, 200]
    assert len(pay_shop.payments(client_invoice_id=body["client_invoice_id"])) == 1
    # One payment.confirmed event for one payment, however many callbacks.
    events = db_rows(pay_shop.mesh, "SELECT event_type FROM payments.outbox WHERE merchant_id = :m "
                     "AND payload->>'payment_id' = :p", m=pay_shop.merchant_id, p=payment["id"])
    assert [e.event_type for e in events] == ["payment.confirmed"]


def test_pay_first_cancelled_by_the_customer_seals_nothing(pay_shop):
    phone = new_phone()
    pay_shop.behave("mpesa", phone, outcome="cancel")
    body = pay_shop.sale()
    payment = pay_shop.pay("mpesa", "1111.00", phone, sale=body)
    done = pay_shop.wait_payment(payment["id"], lambda p: p["status"] in ("failed", "cancelled", "expired")
                                 and p["sale_state"] != "waiting")
    assert (done["status"], done["sale_state"]) == ("cancelled", "not_sealed"), done
    assert done["status_reason"] == "Request cancelled by user" and done["invoice_id"] == ""
    sent = pay_shop.wait_callbacks_sent("mpesa", payment, 1)
    assert '"ResultCode": 1032' in sent[0]["body"] or '"ResultCode":1032' in sent[0]["body"], sent[0]["body"]
    assert not pay_shop.invoices_with_client_id(body["client_invoice_id"])
    assert pay_shop.row_counts()["invoice_payments"] == 0
    events = db_rows(pay_shop.mesh, "SELECT event_type FROM payments.outbox WHERE merchant_id = :m "
                     "AND payload->>'payment_id' = :p", m=pay_shop.merchant_id, p=payment["id"])
    assert [e.event_type for e in events] == ["payment.failed"]
    # The till may still seal the sale itself (paid another way): the sale was never used up.
    sealed = pay_shop.seal(body={**body, "payments": [{"method": "cash", "amount": "1111.00"}]})
    assert sealed["client_invoice_id"] == body["client_invoice_id"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["twice", "out_of_order"])
def test_the_same_callback_three_times_and_out_of_order_records_one_payment(shop_for, provider, mode):
    pay_shop = shop_for(provider)
    invoice = pay_shop.seal()
    phone = new_phone()
    pay_shop.behave(provider, phone, callback=mode)
    payment = pay_shop.pay(provider, invoice["total"], phone, invoice_id=invoice["id"])
    sent = pay_shop.wait_callbacks_sent(provider, payment, 2)
    confirmed = pay_shop.wait_payment(payment["id"])
    assert confirmed["status"] == "confirmed", confirmed
    # The last one again, by hand: a third delivery of a callback already applied.
    again = pay_shop.post_callback(sent[-1]["url"], sent[-1]["body"])
    assert again.status_code == 200, again.text

    listed = pay_shop.payments(invoice_id=invoice["id"])
    assert [p["id"] for p in listed] == [payment["id"]]
    assert pay_shop.payment(payment["id"]) == confirmed  # nothing moved after the first confirmation
    after = pay_shop.invoice(invoice["id"])
    assert len(_recorded(after, payment["id"])) == 1 and after["payment_status"] == "paid", after["payments"]
    recorded = db_rows(pay_shop.mesh, "SELECT count(*) FROM ledger.invoice_payments WHERE payment_id = :p",
                       p=payment["id"])
    assert recorded[0][0] == 1


@pytest.mark.parametrize("reference", ["invoice_id", "client_invoice_id"])
def test_an_mpesa_paybill_payment_c2b_naming_the_sale_is_recorded_on_its_invoice(shop_for, reference):
    """A customer pays by paybill (C2B) with the invoice's id, or the sale's client_invoice_id (a UUID too),
    as the account: saving the
    outlet's M-Pesa settings registers our C2B URLs with Daraja, the simulator then calls validation and
    confirmation as Safaricom does, and the invoice shows the payment."""
    shop = shop_for("mpesa")
    outlet = shop.outlet()
    admin = auth(shop.merchant["admin_key"])
    settings = shop.http.put(f"/v1/outlets/{outlet['id']}/payment-providers/mpesa", headers=admin, json={
        "enabled": True, "mpesa": {"consumer_key": "sim-mpesa-key", "consumer_secret": "sim-mpesa-secret",
                                   "passkey": "sim-passkey", "short_code": "174379",
                                   "transaction_type": "CustomerPayBillOnline"}})
    assert settings.status_code == 200, settings.text
    assert settings.json()["settings"]["c2b_registration"] == "registered", settings.json()
    assert "sim-mpesa-secret" not in settings.text  # credentials are write-only

    invoice = shop.seal()
    answer = shop.sims.post(f"{shop.sim('mpesa')}/__sim/c2b", json={
        "short_code": "174379", "bill_ref_number": invoice["id"] if reference == "invoice_id" else invoice["client_invoice_id"], "amount": invoice["total"],
        "phone": new_phone()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["confirmed"] and answer.json()["confirmation_status"] == 200, answer.json()

    deadline = time.monotonic() + 30
    while True:
        after = shop.invoice(invoice["id"])
        recorded = [p for p in after["payments"] if p.get("payment_id")]
        if recorded or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(p["method"], p["status"], Decimal(p["amount"])) for p in recorded] == [
        ("mpesa", "confirmed", Decimal(invoice["total"]))], after["payments"]
    assert recorded[0]["reference"] == answer.json()["trans_id"] and after["payment_status"] == "paid"
