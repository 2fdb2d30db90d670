"""Payments on invoices (issue #9), the ledger's side: what the payments service records through the
ledger's internal API (as the mesh identity "payments"), and what GetInvoice / ListInvoices answer.
The signed body never changes. Real mesh: Envoy, the services as processes, PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import urlparse

import grpc
import httpx
import psycopg
import pytest
from fiscal.v1 import ledger_pb2, ledger_pb2_grpc
from google.protobuf import json_format

from tests.harness import auth, provision, sale, verify_chains

TOTAL = "1111.00"  # tests.harness.sale: 210.00 + 2 x 450.50


@pytest.fixture(scope="module")
def merchant(mesh):
    return provision(mesh, outlets=2, terminals=1)


@pytest.fixture(scope="module")
def other_merchant(mesh):
    return provision(mesh, outlets=1, terminals=1)


@pytest.fixture(scope="module")
def ledger(mesh):
    """The ledger's internal API as the payments service calls it."""
    with mesh.channel("ledger", "payments") as channel:
        yield ledger_pb2_grpc.LedgerInternalServiceStub(channel)


@pytest.fixture
def client(mesh):
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        yield client


def outlet_of(merchant: dict, index: int = 0) -> dict:
    return merchant["outlets"][index]


def new_sale(merchant: dict, index: int = 0, **overrides) -> dict:
    outlet = outlet_of(merchant, index)
    return sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0], **overrides)


def sale_message(body: dict) -> ledger_pb2.SealInvoiceRequest:
    return json_format.ParseDict(body, ledger_pb2.SealInvoiceRequest())


def seal(client, merchant: dict, body: dict) -> dict:
    answer = client.post("/v1/invoices", json=body, headers=auth(merchant["pos_keys"][body["outlet_id"]]))
    assert answer.status_code == 200, answer.text
    return answer.json()


def get_invoice(client, merchant: dict, invoice_id: str) -> dict:
    answer = client.get(f"/v1/invoices/{invoice_id}", headers=auth(merchant["admin_key"]))
    assert answer.status_code == 200, answer.text
    return answer.json()


def listed(client, merchant: dict, invoice_id: str, outlet_id: str) -> dict:
    answer = client.get("/v1/invoices", params={"outlet_id": outlet_id, "page_size": 50},
                        headers=auth(merchant["read_key"]))
    assert answer.status_code == 200, answer.text
    [found] = [i for i in answer.json()["invoices"] if i["id"] == invoice_id]
    return found


def payment(amount: str = TOTAL, status: str = "confirmed", payment_id: str | None = None, **fields
            ) -> ledger_pb2.PaymentRecord:
    values = {"payment_id": payment_id or str(uuid.uuid4()), "method": "mpesa", "amount": amount,
              "currency": "KES", "phone_masked": "2547******78", "status": status,
              "provider_reference": f"Q{uuid.uuid4().hex[:9].upper()}"}
    values.update(fields)
    record = ledger_pb2.PaymentRecord(**values)
    if status == "confirmed" and "confirmed_at" not in fields:
        record.confirmed_at.FromDatetime(datetime.now(UTC))
    return record


def record(ledger, merchant: dict, pay: ledger_pb2.PaymentRecord, *, invoice_id: str = "", outlet_id: str = "",
           client_invoice_id: str = "") -> ledger_pb2.RecordPaymentResponse:
    return ledger.RecordPayment(ledger_pb2.RecordPaymentRequest(
        merchant_id=merchant["merchant"]["id"], outlet_id=outlet_id, invoice_id=invoice_id,
        client_invoice_id=client_invoice_id, payment=pay), timeout=10)


def recorded_lines(invoice: dict) -> list[dict]:
    return [p for p in invoice["payments"] if p["payment_id"]]


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        fn()
    return error.value


def stored_seal(mesh, invoice_id: str) -> tuple:
    """What the seal covers, as stored: the body, its digest, the chain hash and the signature."""
    with psycopg.connect(mesh.database_url) as conn:
        return conn.execute("SELECT body, body_digest, hash, signature, payment_status FROM ledger.invoices "
                            "WHERE id = %s", (invoice_id,)).fetchone()


def test_a_payment_recorded_before_its_sale_is_sealed_shows_once_it_is(mesh, ledger, client, merchant):
    body = new_sale(merchant)
    pay = payment()
    held = record(ledger, merchant, pay, outlet_id=body["outlet_id"], client_invoice_id=body["client_invoice_id"])
    assert (held.invoice_found, held.invoice_id, held.payment_status) == (False, "", "")

    sealed = seal(client, merchant, body)
    # The seal answers the body as sealed: the sale declared no payment.
    assert sealed["payments"] == [] and sealed["payment_status"] == "unpaid"
    for invoice in (get_invoice(client, merchant, sealed["id"]), listed(client, merchant, sealed["id"],
                                                                         body["outlet_id"])):
        assert invoice["payment_status"] == "paid"
        [line] = invoice["payments"]
        assert line["payment_id"] == pay.payment_id and line["status"] == "confirmed"
        assert (line["method"], line["amount"], line["reference"]) == ("mpesa", TOTAL, pay.provider_reference)
        assert line["phone_masked"] == "2547******78" and line["confirmed_at"].endswith("Z")
        assert line["amount_mismatch"] is False
    # Recorded again now that the invoice exists: found, one line still.
    again = record(ledger, merchant, pay, outlet_id=body["outlet_id"], client_invoice_id=body["client_invoice_id"])
    assert (again.invoice_found, again.invoice_id, again.payment_status) == (True, sealed["id"], "paid")
    assert len(get_invoice(client, merchant, sealed["id"])["payments"]) == 1


def test_a_payment_recorded_after_the_seal_and_its_status_changes(mesh, ledger, client, merchant):
    sealed = seal(client, merchant, new_sale(merchant, payments=[{"method": "cash", "amount": "111.00"}]))
    assert sealed["payment_status"] == "partially_paid"
    pending = payment(amount="500.00", status="pending")
    answer = record(ledger, merchant, pending, invoice_id=sealed["id"])
    assert (answer.invoice_found, answer.invoice_id, answer.payment_status) == (True, sealed["id"], "partially_paid")
    invoice = get_invoice(client, merchant, sealed["id"])
    assert [(p["method"], p["amount"], p["status"]) for p in invoice["payments"]] == [
        ("cash", "111.00", ""), ("mpesa", "500.00", "pending")]
    assert "confirmed_at" not in invoice["payments"][1]  # not confirmed: no time

    # Confirmed: counts now. Recorded twice (a retried call): still one line.
    confirmed = payment(amount="500.00", payment_id=pending.payment_id, provider_reference=pending.provider_reference)
    for _ in range(2):
        assert record(ledger, merchant, confirmed, invoice_id=sealed["id"]).payment_status == "partially_paid"
    invoice = get_invoice(client, merchant, sealed["id"])
    assert [(p["amount"], p["status"]) for p in recorded_lines(invoice)] == [("500.00", "confirmed")]

    # A late "failed" for a confirmed payment changes nothing: money arrived.
    late = payment(amount="500.00", status="failed", payment_id=pending.payment_id)
    assert record(ledger, merchant, late, invoice_id=sealed["id"]).payment_status == "partially_paid"
    assert [p["status"] for p in recorded_lines(get_invoice(client, merchant, sealed["id"]))] == ["confirmed"]

    # A failed payment shows, and does not count; the rest (500.00) makes it paid.
    failed = payment(amount="500.00", status="failed", provider_reference="")
    assert record(ledger, merchant, failed, invoice_id=sealed["id"]).payment_status == "partially_paid"
    rest = payment(amount="500.00", method="airtel_money", phone_masked="2547******11")
    assert record(ledger, merchant, rest, invoice_id=sealed["id"]).payment_status == "paid"
    invoice = get_invoice(client, merchant, sealed["id"])
    assert invoice["payment_status"] == "paid"
    assert [(p["method"], p["status"]) for p in invoice["payments"]] == [
        ("cash", ""), ("mpesa", "confirmed"), ("mpesa", "failed"), ("airtel_money", "confirmed")]


def test_overpaid_and_a_flagged_amount(mesh, ledger, client, merchant):
    sealed = seal(client, merchant, new_sale(merchant))
    answer = record(ledger, merchant, payment(amount="1200.00", amount_mismatch=True), invoice_id=sealed["id"])
    assert answer.payment_status == "overpaid"
    [line] = get_invoice(client, merchant, sealed["id"])["payments"]
    assert (line["amount"], line["amount_mismatch"]) == ("1200.00", True)


def test_a_credit_note_for_the_whole_invoice_makes_it_refunded(mesh, ledger, client, merchant):
    sealed = seal(client, merchant, new_sale(merchant))
    record(ledger, merchant, payment(), invoice_id=sealed["id"])
    outlet_id = sealed["outlet_id"]
    terminal = merchant["terminals"][outlet_id][0]
    cashier = merchant["cashiers"][outlet_id][0]
    partial = client.post(f"/v1/invoices/{sealed['id']}/credit-notes", headers=auth(merchant["pos_keys"][outlet_id]),
                          json={"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal,
                                "cashier_id": cashier, "reason": "one line back",
                                "lines": [{"description": "Maize flour 2kg", "quantity": "1",
                                           "unit_price": "210.00", "tax_group": "A"}]})
    assert partial.status_code == 200, partial.text
    assert get_invoice(client, merchant, sealed["id"])["payment_status"] == "paid"
    rest = client.post(f"/v1/invoices/{sealed['id']}/credit-notes", headers=auth(merchant["pos_keys"][outlet_id]),
                       json={"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal,
                             "cashier_id": cashier, "reason": "the rest back",
                             "lines": [{"description": "Eggs (tray)", "quantity": "2", "unit_price": "450.50",
                                        "tax_group": "E"}]})
    assert rest.status_code == 200, rest.text
    assert get_invoice(client, merchant, sealed["id"])["payment_status"] == "refunded"
    assert listed(client, merchant, sealed["id"], outlet_id)["payment_status"] == "refunded"
    # A credit note keeps its own status, and takes no payment.
    assert get_invoice(client, merchant, rest.json()["id"])["payment_status"] == "refund"
    error = rpc_error(lambda: record(ledger, merchant, payment(), invoice_id=rest.json()["id"]))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_pay_first_seals_the_sale_once_with_its_payment(mesh, ledger, client, merchant):
    body = new_sale(merchant, index=1)
    pay = payment()
    request = ledger_pb2.SealSaleForPaymentRequest(merchant_id=merchant["merchant"]["id"], sale=sale_message(body),
                                                   payment=pay)
    first = ledger.SealSaleForPayment(request, timeout=10)
    again = ledger.SealSaleForPayment(request, timeout=10)  # the callback delivered again
    assert first.id == again.id and first.fiscal.fiscal_number == again.fiscal.fiscal_number
    assert first.payment_status == "paid"
    [line] = first.payments
    assert (line.payment_id, line.method, line.amount, line.reference, line.status) == (
        pay.payment_id, "mpesa", TOTAL, pay.provider_reference, "confirmed")
    # The signed body carries the payment as the sale's own.
    with psycopg.connect(mesh.database_url) as conn:
        count, body_text = conn.execute(
            "SELECT count(*), min(body) FROM ledger.invoices WHERE outlet_id = %s AND client_invoice_id = %s",
            (body["outlet_id"], body["client_invoice_id"])).fetchone()
    assert count == 1 and pay.provider_reference in body_text
    # Recording the same payment against the invoice afterwards shows it once.
    assert record(ledger, merchant, pay, invoice_id=first.id).payment_status == "paid"
    invoice = get_invoice(client, merchant, first.id)
    assert [p["payment_id"] for p in invoice["payments"]] == [pay.payment_id]
    assert invoice["fiscal"]["fiscal_number"] == first.fiscal.fiscal_number

    # The till sealed the same sale itself first (it came back online): that invoice is the sale, the
    # payment shows on it; a different sale under the same client_invoice_id stays a conflict.
    own = new_sale(merchant, index=1)
    till_sealed = seal(client, merchant, own)
    till_paid = payment()
    answer = ledger.SealSaleForPayment(ledger_pb2.SealSaleForPaymentRequest(
        merchant_id=merchant["merchant"]["id"], sale=sale_message(own), payment=till_paid), timeout=10)
    assert answer.id == till_sealed["id"] and answer.payment_status == "paid"
    assert [p.payment_id for p in answer.payments] == [till_paid.payment_id]
    changed = sale_message({**own, "cashier_id": merchant["cashiers"][own["outlet_id"]][-1], "lines": own["lines"][:1]})
    error = rpc_error(lambda: ledger.SealSaleForPayment(ledger_pb2.SealSaleForPaymentRequest(
        merchant_id=merchant["merchant"]["id"], sale=changed, payment=payment()), timeout=10))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    # Only a confirmed payment of the right amount seals.
    for refused in (payment(status="cancelled"), payment(amount_mismatch=True)):
        other = sale_message(new_sale(merchant, index=1))
        error = rpc_error(lambda other=other, refused=refused: ledger.SealSaleForPayment(
            ledger_pb2.SealSaleForPaymentRequest(merchant_id=merchant["merchant"]["id"], sale=other,
                                                 payment=refused), timeout=10))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The sale is checked like any POST /v1/invoices.
    bad = sale_message(new_sale(merchant, index=1, currency="USD"))
    error = rpc_error(lambda: ledger.SealSaleForPayment(ledger_pb2.SealSaleForPaymentRequest(
        merchant_id=merchant["merchant"]["id"], sale=bad, payment=payment()), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "currency" in error.details()


def test_find_invoice_and_another_merchants_invoice_is_not_found(mesh, ledger, client, merchant, other_merchant):
    sealed = seal(client, merchant, new_sale(merchant))
    mine = merchant["merchant"]["id"]
    theirs = other_merchant["merchant"]["id"]

    def find(merchant_id, **fields):
        return ledger.FindInvoice(ledger_pb2.FindInvoiceRequest(merchant_id=merchant_id, **fields), timeout=10)

    by_id = find(mine, invoice_id=sealed["id"])
    assert (by_id.found, by_id.invoice_id, by_id.outlet_id, by_id.client_invoice_id, by_id.total, by_id.currency,
            by_id.kind) == (True, sealed["id"], sealed["outlet_id"], sealed["client_invoice_id"], TOTAL, "KES",
                            "invoice")
    assert find(mine, outlet_id=sealed["outlet_id"], client_invoice_id=sealed["client_invoice_id"]).invoice_id \
        == sealed["id"]
    assert not find(mine, outlet_id=sealed["outlet_id"], client_invoice_id="never-sealed").found
    assert not find(mine, invoice_id="not-a-uuid").found
    assert not find(theirs, invoice_id=sealed["id"]).found
    assert not find(theirs, outlet_id=sealed["outlet_id"], client_invoice_id=sealed["client_invoice_id"]).found

    for call in (
        lambda: record(ledger, other_merchant, payment(), invoice_id=sealed["id"]),
        lambda: record(ledger, other_merchant, payment(), outlet_id=sealed["outlet_id"],
                       client_invoice_id=sealed["client_invoice_id"]),
    ):
        assert rpc_error(call).code() == grpc.StatusCode.NOT_FOUND
    other_sale = sale_message(new_sale(merchant))
    error = rpc_error(lambda: ledger.SealSaleForPayment(ledger_pb2.SealSaleForPaymentRequest(
        merchant_id=theirs, sale=other_sale, payment=payment()), timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    # Nothing of theirs was recorded against our invoice.
    assert recorded_lines(get_invoice(client, merchant, sealed["id"])) == []


def test_bad_payment_records_are_refused_clearly(mesh, ledger, client, merchant):
    sealed = seal(client, merchant, new_sale(merchant))
    cases = {
        "payment.method": payment(method="cash"),
        "payment.status": payment(status="paid"),
        "payment.currency": payment(currency="USD"),
        "payment.amount": payment(amount="-5"),
        "payment.phone_masked": payment(phone_masked="254712345678"),
        "payment.payment_id": payment(payment_id="has space"),
    }
    for field, bad in cases.items():
        error = rpc_error(lambda bad=bad: record(ledger, merchant, bad, invoice_id=sealed["id"]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, error.details())
        assert field in error.details(), (field, error.details())
    error = rpc_error(lambda: record(ledger, merchant, payment()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert recorded_lines(get_invoice(client, merchant, sealed["id"])) == []


def test_payments_never_change_the_signed_body_or_its_verification(mesh, ledger, client, merchant):
    sealed = seal(client, merchant, new_sale(merchant, payments=[{"method": "cash", "amount": "100.00"}]))
    before = stored_seal(mesh, sealed["id"])
    record(ledger, merchant, payment(amount="1011.00"), invoice_id=sealed["id"])
    record(ledger, merchant, payment(amount="50.00", method="orange_money"), invoice_id=sealed["id"])
    after = stored_seal(mesh, sealed["id"])
    assert after == before and after[4] == "partially_paid"  # stored as sealed
    invoice = get_invoice(client, merchant, sealed["id"])
    assert invoice["payment_status"] == "overpaid" and len(invoice["payments"]) == 3
    assert invoice["fiscal"] == sealed["fiscal"]
    verified = client.get(f"/v1/verify?{urlparse(invoice['fiscal']['qr_code']).query}")
    assert verified.status_code == 200 and verified.json()["valid"] is True and verified.json()["registered"]
    checks = verify_chains(mesh, sealed["outlet_id"])
    assert checks and all(check.ok for check in checks), checks


def test_only_the_payments_service_may_record_payments(mesh):
    request = ledger_pb2.FindInvoiceRequest(merchant_id=str(uuid.uuid4()), invoice_id=str(uuid.uuid4()))
    for identity in ("gateway", "webhooks", "counter", "operator"):
        with mesh.channel("ledger", identity) as channel:
            error = rpc_error(lambda channel=channel: ledger_pb2_grpc.LedgerInternalServiceStub(channel).FindInvoice(
                request, timeout=10))
            assert error.code() == grpc.StatusCode.PERMISSION_DENIED, identity

