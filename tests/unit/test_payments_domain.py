"""The payments service's pure rules (services/payments/domain.py): input, the state machine ("confirmed
wins over expired/failed"), the amount-mismatch rule, pay-first decisions, callback URLs and sources, and
the events' data against docs/webhooks/schemas/payment.*.json."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.payments import domain
from services.payments.domain import Payment
from services.payments.providers.base import PaymentStatus
from services.runtime.api_key_principal import ADMIN, POS, READ, Principal
from services.runtime.faults import InvalidArgument, PermissionDenied
from tests.unit.test_webhook_schemas import validate

NOW = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
MERCHANT, OUTLET = str(uuid.uuid4()), str(uuid.uuid4())


def payment(**changes) -> Payment:
    base = Payment(
        id=str(uuid.uuid4()), seq=1, merchant_id=MERCHANT, outlet_id=OUTLET, provider="mpesa",
        client_payment_id="pay-1", amount=Decimal("150"), currency="KES", phone_masked="2547******78",
        status=PaymentStatus.PENDING, status_reason="", invoice_id="", client_invoice_id="sale-1",
        provider_reference="", provider_request_id="ws_CO_1", merchant_request_id="", confirmed_amount=None,
        amount_mismatch=False, payment_url="", sale_state=domain.NOT_APPLICABLE, created_at=NOW, updated_at=NOW,
        confirmed_at=None, final_at=None)
    return replace(base, **changes)


def envelope(p: Payment, event_type: str) -> dict:
    return {"id": str(uuid.uuid4()), "type": event_type, "timestamp": domain.event_time(NOW),
            "merchant_id": p.merchant_id, "outlet_id": p.outlet_id, "data": domain.event_data(p)}


# --- input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, currency, provider, expected", [
    ("150", "KES", "mpesa", Decimal(150)),
    ("150.00", "KES", "mpesa", Decimal(150)),
    ("12.50", "KES", "airtel_money", Decimal("12.50")),
    ("5000", "XOF", "orange_money", Decimal(5000)),
    ("250000", "KES", "mpesa", Decimal(250000)),
])
def test_amounts_within_the_currency_and_provider(text, currency, provider, expected):
    assert domain.parse_amount(text, currency, provider) == expected


@pytest.mark.parametrize("text, currency, provider, complaint", [
    ("150.50", "KES", "mpesa", "whole KES"),
    ("250001", "KES", "mpesa", "at most"),
    ("0", "KES", "mpesa", "greater than zero"),
    ("-5", "KES", "mpesa", "positive decimal"),
    ("1e3", "KES", "mpesa", "positive decimal"),
    ("12.345", "KES", "airtel_money", "more decimals"),
    ("10.5", "XOF", "orange_money", "more decimals"),
    ("10", "KES", "orange_money", "does not collect KES"),
    ("10", "XXX", "mpesa", "unsupported currency"),
    ("10", "KES", "paypal", "provider must be one of"),
    ("١٢", "KES", "mpesa", "positive decimal"),
])
def test_bad_amounts_are_refused_with_the_reason(text, currency, provider, complaint):
    with pytest.raises(InvalidArgument, match=complaint):
        domain.parse_amount(text, currency, provider)


def test_phone_numbers_are_validated_and_masked():
    assert domain.validate_phone("254712345678") == "254712345678"
    assert domain.validate_phone("+254712345678") == "254712345678"
    for bad in ("0712345678", "2547123", "2547123456789012", "25471234567a", "", "+", "+ 254712345678"):
        with pytest.raises(InvalidArgument):
            domain.validate_phone(bad)
    assert domain.mask_phone("254712345678") == "2547******78"
    assert domain.mask_phone("22507123456") == "2250*****56"
    masked = domain.mask_phone("243812345678901")
    assert masked.startswith("2438") and masked.endswith("01") and "12345678" not in masked


def test_exactly_one_target():
    invoice = str(uuid.uuid4())
    assert domain.payment_target(invoice, "", None) == domain.PaymentTarget(invoice_id=invoice)
    assert domain.payment_target("", "sale-1", None) == domain.PaymentTarget(client_invoice_id="sale-1")
    assert domain.payment_target("", "", "sale-2") == domain.PaymentTarget(client_invoice_id="sale-2", pay_first=True)
    for args in (("", "", None), (invoice, "sale-1", None), ("", "sale-1", "sale-2"), (invoice, "", "x")):
        with pytest.raises(InvalidArgument, match="exactly one"):
            domain.payment_target(*args)
    with pytest.raises(InvalidArgument, match="UUID"):
        domain.payment_target("not-a-uuid", "", None)
    with pytest.raises(InvalidArgument, match="sale.client_invoice_id"):
        domain.payment_target("", "", "")


def test_a_pay_first_sale_must_be_this_outlets_in_this_currency():
    domain.check_sale(OUTLET, "KES", "", "", 2)
    domain.check_sale(OUTLET, "KES", OUTLET, "KES", 1)
    with pytest.raises(InvalidArgument, match="outlet_id"):
        domain.check_sale(OUTLET, "KES", str(uuid.uuid4()), "KES", 1)
    with pytest.raises(InvalidArgument, match="currency"):
        domain.check_sale(OUTLET, "KES", OUTLET, "UGX", 1)
    with pytest.raises(InvalidArgument, match="line"):
        domain.check_sale(OUTLET, "KES", OUTLET, "KES", 0)


def test_provider_settings_input():
    assert domain.validate_api_base_url("") == ""
    assert domain.validate_api_base_url("https://sandbox.safaricom.co.ke/") == "https://sandbox.safaricom.co.ke"
    assert domain.validate_api_base_url("http://127.0.0.1:9100") == "http://127.0.0.1:9100"
    for bad in ("http://example.com", "ftp://x", "https://user:pw@host", "https://host/?a=1", "https://", "x"):
        with pytest.raises(InvalidArgument):
            domain.validate_api_base_url(bad)
    assert domain.validate_source_cidrs(["196.201.214.0/24", "196.201.214.7", "196.201.214.0/24"]) == [
        "196.201.214.0/24", "196.201.214.7/32"]
    with pytest.raises(InvalidArgument, match="not a CIDR"):
        domain.validate_source_cidrs(["nope"])
    secrets, settings = domain.split_credentials(
        {"consumer_key": "key-123456789", "passkey": "", "short_code": "174379", "other": "x"},
        ("consumer_key", "consumer_secret", "passkey"), ("short_code",))
    assert secrets == {"consumer_key": "key-123456789"} and settings == {"short_code": "174379"}
    assert domain.credential_hint("a-long-consumer-secret-abcd") == "…abcd"
    assert domain.credential_hint("short") == "…"


def test_scopes():
    admin = Principal("k", MERCHANT, ADMIN, frozenset({OUTLET}))
    pos = Principal("k", MERCHANT, POS, frozenset({OUTLET, "other"}), outlet_id=OUTLET)
    read = Principal("k", MERCHANT, READ, frozenset({OUTLET}))
    admin.require_scope((ADMIN, POS), "creating a payment")
    pos.require_scope((ADMIN, POS), "creating a payment")
    with pytest.raises(PermissionDenied, match="read-only"):
        read.require_scope((ADMIN, POS), "creating a payment")
    with pytest.raises(PermissionDenied, match="merchant:admin"):
        pos.require_scope((ADMIN,), "setting payment providers")
    assert pos.owns_outlet(OUTLET) and not pos.owns_outlet("other")
    assert admin.owns_outlet(OUTLET) and not admin.owns_outlet("another merchant's")


# --- the state machine ----------------------------------------------------------------------------

FINALS = (PaymentStatus.FAILED, PaymentStatus.CANCELLED, PaymentStatus.EXPIRED)


def test_pending_moves_to_any_final_state_and_pending_changes_nothing():
    for status in (PaymentStatus.CONFIRMED, *FINALS):
        assert domain.transition(PaymentStatus.PENDING, status).status is status
    assert domain.transition(PaymentStatus.PENDING, PaymentStatus.PENDING).status is None


def test_confirmed_is_final_and_confirmed_wins_over_failed_and_expired():
    for status in (PaymentStatus.CONFIRMED, *FINALS):
        assert domain.transition(PaymentStatus.CONFIRMED, status).status is None
    for current in FINALS:
        assert domain.transition(current, PaymentStatus.CONFIRMED).status is PaymentStatus.CONFIRMED
        for other in FINALS:
            assert domain.transition(current, other).status is None


def test_a_confirmation_for_the_amount_asked():
    change = domain.apply_status(payment(), PaymentStatus.CONFIRMED, reason="ok", provider_reference="RCP1",
                                 confirmed_amount=Decimal("150.00"), now=NOW)
    assert change is not None and change.event_type == "payment.confirmed"
    assert change.payment.status is PaymentStatus.CONFIRMED and not change.payment.amount_mismatch
    assert change.payment.provider_reference == "RCP1" and change.payment.confirmed_at == NOW
    assert change.record_in_ledger and not change.seal_sale


def test_a_confirmation_for_another_amount_is_recorded_flagged():
    change = domain.apply_status(payment(), PaymentStatus.CONFIRMED, reason="", provider_reference="RCP1",
                                 confirmed_amount=Decimal(1), now=NOW)
    assert change is not None and change.payment.amount_mismatch and change.payment.confirmed_amount == 1
    assert change.payment.status is PaymentStatus.CONFIRMED and change.record_in_ledger
    assert domain.accepted_outcome("mpesa", domain.STK, PaymentStatus.CONFIRMED, True) == domain.AMOUNT_TAMPERED
    assert domain.accepted_outcome("airtel_money", domain.NOTIFICATION, PaymentStatus.CONFIRMED, True) == domain.ACCEPTED
    assert domain.accepted_outcome("mpesa", domain.STK, PaymentStatus.CONFIRMED, False) == domain.ACCEPTED
    # The provider not saying an amount is not a mismatch.
    assert not domain.amount_mismatch(Decimal(150), None)


def test_a_late_failure_after_a_confirmation_changes_nothing():
    confirmed = payment(status=PaymentStatus.CONFIRMED)
    assert domain.apply_status(confirmed, PaymentStatus.FAILED, reason="x", provider_reference="",
                               confirmed_amount=None, now=NOW) is None


def test_money_after_expiry_confirms_and_emits_payment_confirmed():
    expired = payment(status=PaymentStatus.EXPIRED, status_reason="no confirmation", final_at=NOW)
    change = domain.apply_status(expired, PaymentStatus.CONFIRMED, reason="", provider_reference="RCP2",
                                 confirmed_amount=Decimal(150), now=NOW + timedelta(minutes=20))
    assert change is not None and change.payment.status is PaymentStatus.CONFIRMED
    assert change.event_type == "payment.confirmed" and change.payment.status_reason == ""


def test_failures_carry_the_providers_words_or_a_default():
    change = domain.apply_status(payment(), PaymentStatus.CANCELLED, reason="Request cancelled by user",
                                 provider_reference="", confirmed_amount=None, now=NOW)
    assert change is not None and change.event_type == "payment.failed"
    assert change.payment.status_reason == "Request cancelled by user"
    change = domain.apply_status(payment(), PaymentStatus.EXPIRED, reason="", provider_reference="",
                                 confirmed_amount=None, now=NOW)
    assert change is not None and change.payment.status_reason


def test_expiry_by_age():
    assert domain.expired(payment(created_at=NOW - timedelta(seconds=901)), NOW, 900)
    assert not domain.expired(payment(created_at=NOW - timedelta(seconds=899)), NOW, 900)
    assert not domain.expired(payment(status=PaymentStatus.CONFIRMED, created_at=NOW - timedelta(days=1)), NOW, 900)


# --- pay-first ------------------------------------------------------------------------------------

def test_pay_first_confirmed_for_the_asked_amount_seals_and_is_not_recorded_separately():
    held = payment(sale_state=domain.WAITING)
    change = domain.apply_status(held, PaymentStatus.CONFIRMED, reason="", provider_reference="R",
                                 confirmed_amount=Decimal(150), now=NOW)
    assert change is not None and change.seal_sale and not change.record_in_ledger
    assert change.payment.sale_state == domain.WAITING and domain.should_seal(change.payment)


def test_pay_first_with_another_amount_is_never_sealed_but_recorded():
    held = payment(sale_state=domain.WAITING)
    change = domain.apply_status(held, PaymentStatus.CONFIRMED, reason="", provider_reference="R",
                                 confirmed_amount=Decimal(149), now=NOW)
    assert change is not None and not change.seal_sale and change.payment.sale_state == domain.NOT_SEALED
    assert change.record_in_ledger and not domain.should_seal(change.payment)


@pytest.mark.parametrize("status", FINALS)
def test_pay_first_failed_cancelled_or_expired_seals_nothing(status):
    change = domain.apply_status(payment(sale_state=domain.WAITING), status, reason="", provider_reference="",
                                 confirmed_amount=None, now=NOW)
    assert change is not None and not change.seal_sale and change.payment.sale_state == domain.NOT_SEALED
    assert not change.record_in_ledger


def test_pay_first_confirmed_after_expiry_is_sealed_then():
    expired = payment(sale_state=domain.NOT_SEALED, status=PaymentStatus.EXPIRED)
    change = domain.apply_status(expired, PaymentStatus.CONFIRMED, reason="", provider_reference="R",
                                 confirmed_amount=Decimal(150), now=NOW)
    assert change is not None and change.seal_sale and change.payment.sale_state == domain.WAITING


def test_sealing_retries_only_while_confirmed_and_not_sealed():
    assert domain.should_seal(payment(status=PaymentStatus.CONFIRMED, sale_state=domain.RETRYING))
    assert not domain.should_seal(payment(status=PaymentStatus.CONFIRMED, sale_state=domain.SEALED))
    assert not domain.should_seal(payment(status=PaymentStatus.PENDING, sale_state=domain.WAITING))
    assert not domain.should_seal(payment(status=PaymentStatus.CONFIRMED, sale_state=domain.NOT_APPLICABLE))


def test_what_the_ledger_hears_of():
    assert not domain.needs_ledger_record(payment())  # pending
    assert domain.needs_ledger_record(payment(status=PaymentStatus.FAILED))
    assert not domain.needs_ledger_record(payment(status=PaymentStatus.FAILED, client_invoice_id=""))


# --- callbacks ------------------------------------------------------------------------------------

def test_callback_urls_carry_the_token():
    urls = domain.callback_urls("https://api.example.com/", "tok", "mpesa")
    assert urls == {"stk": "https://api.example.com/v1/callbacks/mpesa/tok/stk",
                    "c2b_validation": "https://api.example.com/v1/callbacks/mpesa/tok/c2b/validation",
                    "c2b_confirmation": "https://api.example.com/v1/callbacks/mpesa/tok/c2b/confirmation"}
    assert domain.initiation_callback_url("https://x", "t", "orange_money") == "https://x/v1/callbacks/orange/t"
    assert domain.initiation_callback_url("https://x", "t", "airtel_money") == "https://x/v1/callbacks/airtel/t"


def test_route_tokens_are_random_and_looked_up_by_hash():
    first, second = domain.new_callback_token(), domain.new_callback_token()
    assert first != second and len(first) >= 43
    assert domain.token_hash(first) == domain.token_hash(first) != domain.token_hash(second)


def test_source_addresses():
    assert domain.source_allowed("", [])
    assert domain.source_allowed("196.201.214.200", ["196.201.214.0/24"])
    assert domain.source_allowed("10.0.0.1, 196.201.214.200", ["196.201.214.0/24"])  # the last is Envoy's
    assert not domain.source_allowed("196.201.214.200, 10.0.0.1", ["196.201.214.0/24"])
    assert not domain.source_allowed("", ["196.201.214.0/24"])
    assert not domain.source_allowed("garbage", ["196.201.214.0/24"])
    assert domain.source_allowed("::ffff:196.201.214.9", ["196.201.214.0/24"])


def test_every_orange_notification_is_confirmed_by_query():
    assert domain.confirm_by_query("orange_money")
    assert not domain.confirm_by_query("mpesa") and not domain.confirm_by_query("airtel_money")


def test_c2b_references():
    invoice = str(uuid.uuid4())
    assert domain.c2b_reference(invoice.upper()) == domain.PaymentTarget(invoice_id=invoice)
    assert domain.c2b_reference(" sale-9 ") == domain.PaymentTarget(client_invoice_id="sale-9")
    assert domain.c2b_reference("") is None and domain.c2b_reference("bad ref!") is None


# --- events ---------------------------------------------------------------------------------------

def test_the_confirmed_event_matches_its_schema():
    p = payment(status=PaymentStatus.CONFIRMED, provider_reference="RCP1", confirmed_amount=Decimal(149),
                amount_mismatch=True, confirmed_at=NOW)
    data = domain.event_data(p)
    assert data["amount"] == "149.00" and data["requested_amount"] == "150.00" and data["amount_mismatch"] is True
    assert data["confirmed_at"] == "2026-11-27T10:00:00.123Z" and data["invoice_id"] is None
    assert validate("payment.confirmed", envelope(p, "payment.confirmed")) == []


def test_the_failed_event_matches_its_schema():
    invoice = str(uuid.uuid4())
    p = payment(status=PaymentStatus.CANCELLED, status_reason="Request cancelled by user", final_at=NOW,
                invoice_id=invoice, client_invoice_id="")
    data = domain.event_data(p)
    assert data["status"] == "cancelled" and data["provider_reference"] is None and data["invoice_id"] == invoice
    assert validate("payment.failed", envelope(p, "payment.failed")) == []


def test_a_schema_check_that_can_fail():
    p = payment(status=PaymentStatus.CONFIRMED, confirmed_at=NOW)
    broken = envelope(p, "payment.confirmed")
    del broken["data"]["requested_amount"]
    assert validate("payment.confirmed", broken) != []


def test_amount_formatting_never_rounds_a_providers_amount():
    assert domain.format_amount(Decimal("150"), "KES") == "150.00"
    assert domain.format_amount(Decimal("150.005"), "KES") == "150.005"
    assert domain.format_amount(Decimal("5000"), "XOF") == "5000"
