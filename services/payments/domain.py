"""The payments service's rules, pure: no gRPC, no SQL, no I/O.

- Input: providers, amounts per currency and provider, phone numbers (validated, masked "2547******78"),
  client identifiers, provider settings (API base URL, source CIDRs).
- The state machine: pending -> confirmed | failed | cancelled | expired; final states stay final, except
  that a confirmation after failed/cancelled/expired moves to confirmed (money arrived: that wins).
- Callbacks: the amount rule (a confirmation for another amount is recorded, flagged; on an M-Pesa STK
  callback it is also counted as `amount_tampered`), the source-address check, the callback URLs and the
  merchant's route token.
- Pay-first: when to seal the attached sale, when it will never be sealed.
- What goes to the ledger (RecordPayment) and into the outbox (payment.confirmed / payment.failed, exactly
  the keys of docs/webhooks/schemas/payment.*.json).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlsplit

from services.payments.providers.base import FINAL_STATUSES, PaymentStatus
from services.runtime.currencies import MINOR_UNITS
from services.runtime.faults import InvalidArgument

# The provider names of the API (payments.proto), each with what its API takes.
MPESA, AIRTEL, ORANGE = "mpesa", "airtel_money", "orange_money"
PROVIDERS = (MPESA, AIRTEL, ORANGE)

# Pay-first: where the attached sale stands (Payment.sale_state).
NOT_APPLICABLE, WAITING, SEALED, NOT_SEALED, RETRYING = "not_applicable", "waiting", "sealed", "not_sealed", "retrying"

# The outcomes a callback is counted under (CallbackCount.outcome).
ACCEPTED, DUPLICATE = "accepted", "duplicate"
FORGED_TOKEN, FORGED_SIGNATURE = "forged_token", "forged_signature"
UNKNOWN_TRANSACTION, AMOUNT_TAMPERED = "unknown_transaction", "amount_tampered"
MALFORMED, SOURCE_REFUSED = "malformed", "source_refused"
OUTCOMES = (ACCEPTED, DUPLICATE, FORGED_TOKEN, FORGED_SIGNATURE, UNKNOWN_TRANSACTION, AMOUNT_TAMPERED, MALFORMED,
            SOURCE_REFUSED)

# Callback kinds, as in the routes (PaymentCallbackService) and ProviderAdapter.callback_kinds.
STK, C2B_VALIDATION, C2B_CONFIRMATION, NOTIFICATION = "stk", "c2b_validation", "c2b_confirmation", "notification"
CALLBACK_PATHS: dict[str, dict[str, str]] = {
    MPESA: {STK: "/v1/callbacks/mpesa/{token}/stk", C2B_VALIDATION: "/v1/callbacks/mpesa/{token}/c2b/validation",
            C2B_CONFIRMATION: "/v1/callbacks/mpesa/{token}/c2b/confirmation"},
    AIRTEL: {NOTIFICATION: "/v1/callbacks/airtel/{token}"},
    ORANGE: {NOTIFICATION: "/v1/callbacks/orange/{token}"},
}

MIN_PHONE_DIGITS = 8
MAX_PHONE_DIGITS = 15  # E.164
MAX_AMOUNT_TEXT = 32
MAX_SOURCE_CIDRS = 32
MAX_URL_LENGTH = 2048
MAX_SETTING_LENGTH = 256
MAX_SECRET_LENGTH = 4096
MAX_REASON_LENGTH = 500
HINT_MIN_LENGTH = 12  # a shorter credential is hinted as "…" alone: its last 4 characters would be most of it
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,17}(?:\.[0-9]{1,6})?", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII)


@dataclass(frozen=True)
class AmountRule:
    """What a provider takes: currencies, whole units only or not, the most one collection may ask."""

    currencies: frozenset[str]
    whole_units: bool
    maximum: Decimal


# M-Pesa (Daraja STK Push): Kenyan shillings, whole units (Amount is an integer), at most KES 250,000 a
# transaction. Airtel Money (collections): its operating countries' currencies. Orange Money Web Payment:
# the West/Central African francs and its other markets, whole units for the francs (minor units 0).
AMOUNT_RULES: dict[str, AmountRule] = {
    MPESA: AmountRule(frozenset({"KES"}), True, Decimal(250_000)),
    AIRTEL: AmountRule(frozenset({"KES", "UGX", "TZS", "RWF", "ZMW", "MWK", "CDF", "USD", "XAF", "XOF", "MGA",
                                  "NGN", "SCR"}), False, Decimal(10) ** 9),
    ORANGE: AmountRule(frozenset({"XOF", "XAF", "GNF", "CDF", "USD", "MGA", "MAD", "EUR", "SLE", "LRD"}), False,
                       Decimal(10) ** 9),
}


def shown(value: object, limit: int = 40) -> str:
    """A client's value quoted in a message, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# --- input -----------------------------------------------------------------------------------------

def validate_provider(provider: str) -> str:
    if provider not in PROVIDERS:
        raise InvalidArgument(f"provider must be one of {', '.join(PROVIDERS)}, got {shown(provider)}",
                              field="provider")
    return provider


def minor_units(currency: str) -> int:
    if currency not in MINOR_UNITS:
        raise InvalidArgument(f"unsupported currency {shown(currency)}", field="currency")
    return MINOR_UNITS[currency]


def parse_amount(text: str, currency: str, provider: str) -> Decimal:
    """The amount asked: a positive decimal string within the currency's minor units and the provider's
    limits ("150.00" KES is 150 for M-Pesa, which takes whole shillings only)."""
    rule = AMOUNT_RULES[validate_provider(provider)]
    decimals = minor_units(currency)
    if currency not in rule.currencies:
        raise InvalidArgument(f"{provider} does not collect {currency} (it takes {', '.join(sorted(rule.currencies))})",
                              field="currency")
    if not isinstance(text, str) or len(text) > MAX_AMOUNT_TEXT or not _DECIMAL.fullmatch(text):
        raise InvalidArgument(f"amount must be a positive decimal string like \"150.00\", got {shown(text)}",
                              field="amount")
    amount = Decimal(text)
    if amount <= 0:
        raise InvalidArgument("amount must be greater than zero", field="amount")
    if amount != amount.quantize(Decimal(1).scaleb(-decimals)):
        raise InvalidArgument(f"amount has more decimals than {currency} has ({decimals})", field="amount")
    if rule.whole_units and amount != amount.to_integral_value():
        raise InvalidArgument(f"{provider} collects whole {currency} only", field="amount")
    if amount > rule.maximum:
        raise InvalidArgument(f"amount must be at most {format(rule.maximum, ',f')} {currency} for {provider}",
                              field="amount")
    return amount


def format_amount(amount: Decimal, currency: str) -> str:
    """In the currency's minor units ("150.00"); an amount a provider gave with more decimals keeps them
    (it is never rounded into agreement)."""
    decimals = MINOR_UNITS.get(currency, 2)
    if amount != amount.quantize(Decimal(1).scaleb(-decimals)):
        return format(amount.normalize(), "f")
    return f"{amount:.{decimals}f}"


def validate_phone(phone: str) -> str:
    """E.164 digits without "+" (a leading "+" is dropped): 8 to 15 digits, no leading zero."""
    digits = phone[1:] if isinstance(phone, str) and phone.startswith("+") else phone
    if not isinstance(digits, str) or not _DIGITS.fullmatch(digits) or not \
            MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS or digits.startswith("0"):
        raise InvalidArgument("phone must be the payer's number in international form, digits only "
                              "(e.g. 254712345678)", field="phone")
    return digits


def mask_phone(phone: str) -> str:
    """"2547******78": the country and network prefix and the last two digits, never the whole number."""
    if not phone:
        return ""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:4] + "*" * (len(phone) - 6) + phone[-2:]


def validate_identifier(value: str, field: str, *, required: bool = True) -> str:
    """A client-chosen identifier (client_payment_id, client_invoice_id): 1-64 letters, digits and . _ : @ / -."""
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return ""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidArgument(f"{field} must be 1-64 letters, digits and . _ : @ / - (a UUID is best)", field=field)
    return value


def is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except (ValueError, AttributeError, TypeError):
        return False


def validate_uuid(value: str, field: str) -> str:
    if not is_uuid(value):
        raise InvalidArgument(f"{field} must be a UUID", field=field)
    return value.lower()


@dataclass(frozen=True)
class PaymentTarget:
    """What a payment pays: an invoice (by id), a sale by its client_invoice_id, or a held sale (pay-first)."""

    invoice_id: str = ""
    client_invoice_id: str = ""
    pay_first: bool = False


def payment_target(invoice_id: str, client_invoice_id: str, sale_client_invoice_id: str | None) -> PaymentTarget:
    """Exactly one of invoice_id, client_invoice_id and sale (`sale_client_invoice_id` is None without a
    sale, the sale's client_invoice_id with one)."""
    given = [name for name, present in (("invoice_id", bool(invoice_id)), ("client_invoice_id", bool(client_invoice_id)),
                                        ("sale", sale_client_invoice_id is not None)) if present]
    if len(given) != 1:
        raise InvalidArgument("give exactly one of invoice_id, client_invoice_id or sale "
                              f"(got {', '.join(given) or 'none'})", field="invoice_id")
    if invoice_id:
        return PaymentTarget(invoice_id=validate_uuid(invoice_id, "invoice_id"))
    if client_invoice_id:
        return PaymentTarget(client_invoice_id=validate_identifier(client_invoice_id, "client_invoice_id"))
    return PaymentTarget(client_invoice_id=validate_identifier(sale_client_invoice_id or "", "sale.client_invoice_id"),
                         pay_first=True)


def check_sale(outlet_id: str, currency: str, sale_outlet_id: str, sale_currency: str, line_count: int) -> None:
    """A pay-first sale's shape, checked before anything is pushed to a phone (the ledger validates the
    rest when it seals it): this outlet's, in the payment's currency, with lines."""
    if sale_outlet_id and sale_outlet_id != outlet_id:
        raise InvalidArgument("sale.outlet_id must be the payment's outlet_id", field="sale.outlet_id")
    if sale_currency and sale_currency != currency:
        raise InvalidArgument("sale.currency must be the payment's currency", field="sale.currency")
    if line_count == 0:
        raise InvalidArgument("sale needs at least one line", field="sale.lines")


def validate_page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def validate_status_filter(status: str) -> str | None:
    if not status:
        return None
    if status not in {s.value for s in PaymentStatus}:
        raise InvalidArgument(f"status must be one of {', '.join(s.value for s in PaymentStatus)}", field="status")
    return status


# --- provider settings ----------------------------------------------------------------------------

def validate_api_base_url(url: str) -> str:
    """Empty (the deployment's URL) or an https:// URL; http:// only to loopback (a development simulator).
    No userinfo, query or fragment: credentials are sent there."""
    if not url:
        return ""
    if len(url) > MAX_URL_LENGTH or any(ch.isspace() for ch in url):
        raise InvalidArgument("api_base_url is not a URL", field="api_base_url")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidArgument("api_base_url is not a URL", field="api_base_url") from None
    if parts.scheme not in ("https", "http") or not host or "@" in parts.netloc or parts.query or parts.fragment:
        raise InvalidArgument("api_base_url must be https://host[/path] (no credentials, query or fragment)",
                              field="api_base_url")
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise InvalidArgument("api_base_url must be https:// (http:// only to a loopback simulator)",
                                  field="api_base_url")
    return url.rstrip("/")


def validate_source_cidrs(cidrs: Sequence[str]) -> list[str]:
    if len(cidrs) > MAX_SOURCE_CIDRS:
        raise InvalidArgument(f"at most {MAX_SOURCE_CIDRS} callback_source_cidrs", field="callback_source_cidrs")
    checked: list[str] = []
    for cidr in cidrs:
        try:
            network = str(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise InvalidArgument(f"callback_source_cidrs: {shown(cidr)} is not a CIDR",
                                  field="callback_source_cidrs") from None
        if network not in checked:
            checked.append(network)
    return checked


def split_credentials(given: Mapping[str, str], secret_fields: Iterable[str],
                      setting_fields: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(secrets, settings) of one provider's settings message, empty values left out."""
    secret_names, setting_names = set(secret_fields), set(setting_fields)
    found_secrets, found_settings = {}, {}
    for name, value in given.items():
        if not value:
            continue
        if name in secret_names:
            if len(value) > MAX_SECRET_LENGTH:
                raise InvalidArgument(f"{name} is longer than {MAX_SECRET_LENGTH} characters", field=name)
            found_secrets[name] = value
        elif name in setting_names:
            if len(value) > MAX_SETTING_LENGTH or any(ord(ch) < 0x20 for ch in value):
                raise InvalidArgument(f"{name} must be at most {MAX_SETTING_LENGTH} printable characters", field=name)
            found_settings[name] = value
    return found_secrets, found_settings


def credential_hint(secret: str) -> str:
    """"…abcd": the last 4 characters of a credential, enough to tell which one is stored."""
    return "…" + secret[-4:] if len(secret) >= HINT_MIN_LENGTH else "…"


# --- callbacks ------------------------------------------------------------------------------------

def new_callback_token() -> str:
    """A merchant's route token: 32 random bytes, urlsafe base64."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def callback_urls(public_url: str, token: str, provider: str) -> dict[str, str]:
    """The URLs to register with the provider, by callback kind."""
    base = public_url.rstrip("/")
    return {kind: base + path.format(token=token) for kind, path in CALLBACK_PATHS[provider].items()}


def initiation_callback_url(public_url: str, token: str, provider: str) -> str:
    """Where the provider calls back about a collection we start (STK for M-Pesa)."""
    urls = callback_urls(public_url, token, provider)
    return urls[STK] if provider == MPESA else urls[NOTIFICATION]


def source_allowed(forwarded_for: str, cidrs: Sequence[str]) -> bool:
    """Whether the callback's source (the address Envoy put in x-forwarded-for: the last entry) is in one
    of `cidrs`; no CIDRs: any source."""
    if not cidrs:
        return True
    last = (forwarded_for or "").split(",")[-1].strip()
    try:
        address = ipaddress.ip_address(last)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for cidr in cidrs:
        network = ipaddress.ip_network(cidr, strict=False)
        if address.version == network.version and address in network:
            return True
    return False


def amount_mismatch(asked: Decimal, confirmed: Decimal | None) -> bool:
    """A confirmation for another amount than asked (the provider's word wins, flagged). None: it did not say."""
    return confirmed is not None and confirmed != asked


def accepted_outcome(provider: str, kind: str, status: PaymentStatus, mismatch: bool) -> str:
    """How an authentic, applied callback is counted. An M-Pesa STK callback carries no signature: one that
    confirms another amount than asked is counted as `amount_tampered` (and recorded, flagged)."""
    if mismatch and status is PaymentStatus.CONFIRMED and provider == MPESA and kind == STK:
        return AMOUNT_TAMPERED
    return ACCEPTED


def confirm_by_query(provider: str) -> bool:
    """Orange Money's notification is only a claim (its notif_token is all that authenticates it, and it
    names neither our order nor the pay_token): every one, success or not, is replaced by what the status
    API answers about that payment before anything is applied."""
    return provider == ORANGE


# --- the state machine -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Transition:
    """What an incoming status does to a payment: `status` the new one, or None (nothing changes)."""

    status: PaymentStatus | None
    why_ignored: str = ""


def transition(current: PaymentStatus, incoming: PaymentStatus) -> Transition:
    if incoming is PaymentStatus.PENDING:
        return Transition(None, "still pending")
    if current is PaymentStatus.PENDING:
        return Transition(incoming)
    if current is PaymentStatus.CONFIRMED:
        return Transition(None, "already confirmed")
    # failed / cancelled / expired: only money arriving changes that.
    if incoming is PaymentStatus.CONFIRMED:
        return Transition(PaymentStatus.CONFIRMED)
    return Transition(None, f"already {current.value}")


@dataclass(frozen=True)
class Payment:
    """A payment as stored (the store's row), what the rules below read."""

    id: str
    seq: int
    merchant_id: str
    outlet_id: str
    provider: str
    client_payment_id: str
    amount: Decimal
    currency: str
    phone_masked: str
    status: PaymentStatus
    status_reason: str
    invoice_id: str
    client_invoice_id: str
    provider_reference: str
    provider_request_id: str
    merchant_request_id: str
    confirmed_amount: Decimal | None
    amount_mismatch: bool
    payment_url: str
    sale_state: str
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    final_at: datetime | None
    ledger_version: int = 0
    ledger_recorded_version: int = 0

    @property
    def pay_first(self) -> bool:
        return self.sale_state != NOT_APPLICABLE

    @property
    def ledger_recorded(self) -> bool:
        return self.ledger_recorded_version >= self.ledger_version


@dataclass(frozen=True)
class Change:
    """A payment's new state after a status arrives, and what follows from it."""

    payment: Payment
    event_type: str | None      # payment.confirmed / payment.failed, or None
    record_in_ledger: bool      # RecordPayment (after commit; retried until the ledger has it)
    seal_sale: bool             # pay-first: SealSaleForPayment (after commit; retried)


def apply_status(payment: Payment, incoming: PaymentStatus, *, reason: str, provider_reference: str,
                 confirmed_amount: Decimal | None, now: datetime) -> Change | None:
    """The state machine applied: None when nothing changes."""
    step = transition(payment.status, incoming)
    if step.status is None:
        return None
    new = step.status
    if new is PaymentStatus.CONFIRMED:
        mismatch = amount_mismatch(payment.amount, confirmed_amount)
        sale_state = payment.sale_state
        if payment.pay_first and sale_state != SEALED:
            # A held sale is sealed only for the amount asked: another amount is flagged for a person.
            sale_state = NOT_SEALED if mismatch else WAITING
        # A confirmation without a receipt (M-Pesa's STK query names none) is referenced by the request
        # id the provider knows it by.
        changed = replace(payment, status=new, status_reason="" if not mismatch else
                          "the provider confirmed another amount than asked", amount_mismatch=mismatch,
                          confirmed_amount=confirmed_amount if confirmed_amount is not None else payment.amount,
                          provider_reference=provider_reference or payment.provider_reference
                          or payment.provider_request_id,
                          confirmed_at=now, final_at=now, updated_at=now, sale_state=sale_state)
        seal = changed.pay_first and sale_state == WAITING
        return Change(changed, "payment.confirmed", record_in_ledger=needs_ledger_record(changed), seal_sale=seal)
    sale_state = NOT_SEALED if payment.pay_first and payment.sale_state != SEALED else payment.sale_state
    changed = replace(payment, status=new, status_reason=(reason or default_reason(new))[:MAX_REASON_LENGTH],
                      provider_reference=provider_reference or payment.provider_reference, final_at=now,
                      updated_at=now, sale_state=sale_state)
    return Change(changed, "payment.failed", record_in_ledger=needs_ledger_record(changed), seal_sale=False)


def default_reason(status: PaymentStatus) -> str:
    return {PaymentStatus.FAILED: "the provider reported a failure",
            PaymentStatus.CANCELLED: "cancelled by the payer",
            PaymentStatus.EXPIRED: "no confirmation came in time"}.get(status, status.value)


def needs_ledger_record(payment: Payment) -> bool:
    """Whether the ledger must hear of this payment (RecordPayment): every final payment of an invoice or
    sale, except a pay-first one whose sale is (or will be) sealed with it in the body, or whose sale was
    never sealed because the payment failed (nothing to show it on)."""
    if payment.status not in FINAL_STATUSES or not (payment.invoice_id or payment.client_invoice_id):
        return False
    if payment.pay_first:
        return payment.status is PaymentStatus.CONFIRMED and payment.sale_state == NOT_SEALED
    return True


def should_seal(payment: Payment) -> bool:
    return (payment.pay_first and payment.status is PaymentStatus.CONFIRMED and not payment.amount_mismatch
            and payment.sale_state in (WAITING, RETRYING))


def expired(payment: Payment, now: datetime, expire_after_seconds: float) -> bool:
    return payment.status is PaymentStatus.PENDING and (now - payment.created_at).total_seconds() >= expire_after_seconds


# --- events ---------------------------------------------------------------------------------------

def event_time(moment: datetime) -> str:
    """RFC 3339, UTC, milliseconds: 2026-11-25T10:00:00.123Z (the schemas' timestamp)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _identifier_or_none(value: str) -> str | None:
    return value if value and _IDENTIFIER.fullmatch(value) else None


def _uuid_or_none(value: str) -> str | None:
    return value if value and _UUID.fullmatch(value) else None


def event_data(payment: Payment) -> dict:
    """The data of the event a final payment emits, with exactly the keys of its JSON Schema."""
    common = {
        "payment_id": payment.id, "outlet_id": payment.outlet_id, "provider": payment.provider,
        "requested_amount": format_amount(payment.amount, payment.currency), "currency": payment.currency,
        "invoice_id": _uuid_or_none(payment.invoice_id),
        "client_invoice_id": _identifier_or_none(payment.client_invoice_id),
    }
    if payment.status is PaymentStatus.CONFIRMED:
        confirmed = payment.confirmed_amount if payment.confirmed_amount is not None else payment.amount
        return {**common,
                "provider_reference": (payment.provider_reference or payment.provider_request_id or payment.id)[:100],
                "amount": format_amount(confirmed, payment.currency), "amount_mismatch": payment.amount_mismatch,
                "phone_masked": payment.phone_masked or "unknown",
                "confirmed_at": event_time(payment.confirmed_at or payment.updated_at)}
    return {**common, "status": payment.status.value,
            "reason": (payment.status_reason or default_reason(payment.status))[:MAX_REASON_LENGTH],
            "provider_reference": payment.provider_reference[:100] or None,
            "failed_at": event_time(payment.final_at or payment.updated_at)}


def event_type_for(status: PaymentStatus) -> str | None:
    if status is PaymentStatus.CONFIRMED:
        return "payment.confirmed"
    if status in FINAL_STATUSES:
        return "payment.failed"
    return None


# --- C2B (the customer pays a paybill/till with our reference as the account) ----------------------

def c2b_outlet(short_code: str, outlets_by_short_code: Mapping[str, str]) -> str | None:
    """The outlet whose M-Pesa settings name this short code (or till number), if any."""
    return outlets_by_short_code.get(short_code.strip()) if short_code else None


def c2b_reference(bill_reference: str) -> PaymentTarget | None:
    """What the account number a customer typed refers to: an invoice id (a UUID) or a client_invoice_id."""
    reference = (bill_reference or "").strip()
    if not reference:
        return None
    if is_uuid(reference.lower()):
        return PaymentTarget(invoice_id=reference.lower())
    if _IDENTIFIER.fullmatch(reference):
        return PaymentTarget(client_invoice_id=reference)
    return None
