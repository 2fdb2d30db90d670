"""The ledger's records, as the domain sees them (no gRPC, no SQLAlchemy)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from services.ledger.money import TaxGroup

INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
SERIES_BY_KIND = {"invoice": INVOICE_SERIES, "credit_note": CREDIT_NOTE_SERIES}


@dataclass(frozen=True)
class Outlet:
    id: str
    merchant_id: str
    code: str
    name: str
    taxpayer_id: str
    currency: str
    time_zone: str
    offline_grace_seconds: int
    tax_groups: dict[str, TaxGroup] = field(default_factory=dict)


@dataclass
class InvoiceRecord:
    """A sealed invoice or credit note, as stored."""

    id: str
    merchant_id: str
    outlet_id: str
    kind: str
    series: str
    number: int
    fiscal_number: str
    client_invoice_id: str
    request_hash: bytes
    pos_terminal_id: str
    cashier_id: str
    currency: str
    total: Decimal
    total_tax: Decimal
    payment_status: str
    status: str
    sold_at: datetime
    sealed_at: datetime
    original_invoice_id: str | None
    body: str
    statement: str
    body_digest: bytes
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str
    auth_code: str
    created_at: datetime | None = None

    def body_fields(self) -> dict:
        """The canonical body (lines, totals, outlet, chain link…) as a dict."""
        return json.loads(self.body)

    def invoice_body(self) -> InvoiceBody:
        """The canonical body, typed: read fields by attribute, not by string key."""
        return InvoiceBody.from_json(self.body)


def _record(cls, data: Mapping[str, Any]):
    """Build a frozen body part from its JSON object; a missing key is a ValueError, not a KeyError."""
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{name: data[name] for name in names if name in data})
    except TypeError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class BodyLine:
    description: str
    quantity: str
    unit_price: str
    tax_group: str
    line_total: str
    sku: str = ""


@dataclass(frozen=True)
class BodyTaxTotal:
    tax_group: str
    label: str
    rate: str  # "" for an exempt group
    taxable_amount: str
    tax_amount: str
    gross_amount: str


@dataclass(frozen=True)
class BodyPayment:
    method: str
    amount: str
    reference: str = ""


@dataclass(frozen=True)
class InvoiceBody:
    """The canonical body of a sealed invoice or credit note (what `body_digest` covers), typed.

    Amounts stay the decimal strings that were signed. Keys this class does not know (a newer body
    version) are kept in `extra`, so `to_json(from_json(text)) == text` for every canonical body."""

    v: int
    kind: str
    fiscal_number: str
    fiscal_authority_id: str
    outlet_id: str
    outlet_code: str
    outlet_name: str
    taxpayer_id: str
    time_zone: str
    series: str
    number: int
    prev_hash: str
    sealed_at: str
    sold_at: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    currency: str
    lines: tuple[BodyLine, ...]
    tax_totals: tuple[BodyTaxTotal, ...]
    total_taxable: str
    total_tax: str
    total: str
    payments: tuple[BodyPayment, ...]
    payment_status: str
    buyer: Mapping[str, str] = field(default_factory=dict)
    # credit notes only
    original_invoice_id: str | None = None
    original_fiscal_number: str | None = None
    reason: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    _PARTS: ClassVar[dict[str, type]] = {"lines": BodyLine, "tax_totals": BodyTaxTotal, "payments": BodyPayment}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InvoiceBody:
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {}
        for name in known & data.keys():
            part = cls._PARTS.get(name)
            values[name] = tuple(_record(part, item) for item in data[name]) if part else data[name]
        values["buyer"] = dict(data.get("buyer") or {})
        values["extra"] = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"not an invoice body: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> InvoiceBody:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an invoice body: not a JSON object")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in _CREDIT_NOTE_ONLY):
                continue
            if f.name in self._PARTS:
                value = [{p.name: getattr(item, p.name) for p in fields(item)} for item in value]
            elif f.name == "buyer":
                value = dict(value)
            data[f.name] = value
        return data

    def to_json(self) -> str:
        """The canonical JSON text (sorted keys, no spaces): the bytes the body digest covers."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_CREDIT_NOTE_ONLY = {"original_invoice_id", "original_fiscal_number", "reason"}


# --- payments recorded after the sale (issue #9): a view over the body, never part of it ---------------

PAYMENT_PROVIDERS = ("mpesa", "airtel_money", "orange_money")
RECORDED_STATUSES = ("pending", "confirmed", "failed", "cancelled", "expired")


@dataclass(frozen=True)
class RecordedPayment:
    """A mobile-money payment the payments service recorded against a sale (ledger.invoice_payments),
    sealed or not yet: it is matched to its invoice by (outlet_id, client_invoice_id)."""

    payment_id: str
    merchant_id: str
    outlet_id: str
    client_invoice_id: str
    invoice_id: str | None
    method: str
    provider_reference: str
    amount: Decimal
    currency: str
    phone_masked: str
    status: str
    confirmed_at: datetime | None
    amount_mismatch: bool


@dataclass(frozen=True)
class PaymentLineView:
    """One line of an invoice's `payments` as answered: declared in the sale (only method, amount and
    reference) or recorded afterwards (with its payment id, status, masked phone...)."""

    method: str
    amount: str
    reference: str = ""
    payment_id: str = ""
    status: str = ""
    phone_masked: str = ""
    confirmed_at: datetime | None = None
    amount_mismatch: bool = False


@dataclass(frozen=True)
class PaymentView:
    lines: tuple[PaymentLineView, ...]
    payment_status: str


def payment_view(body: InvoiceBody, recorded: list[RecordedPayment], refunded: Decimal, decimals: int
                 ) -> PaymentView:
    """An invoice's payments and payment_status as of now: the payments its sale declared plus those
    recorded since, and the credit notes against it. The signed body is read, never changed.

    A declared payment with the same method and reference as a recorded one (its provider reference, or
    its payment id when it has none) is the same payment (a pay-first sale is sealed with its confirmed
    payment in it, and the payment is recorded as well): it is shown and counted once, as the recorded
    line. Only confirmed recorded payments count, at the
    amount the provider confirmed. Status: refunded when credit notes refund the whole total, else
    unpaid / partially_paid / paid / overpaid by what was paid against the total. A credit note keeps
    its own ("refund")."""
    remaining = list(recorded)  # in the order they were first recorded
    lines: list[PaymentLineView] = []
    paid = Decimal(0)
    for declared in body.payments:
        match = next((p for p in remaining if declared.reference and p.method == declared.method
                      and (p.provider_reference or p.payment_id) == declared.reference), None)
        if match is None:
            lines.append(PaymentLineView(declared.method, declared.amount, declared.reference))
            paid += Decimal(declared.amount)
        else:
            remaining.remove(match)
            lines.append(_recorded_line(match, decimals))
            paid += match.amount if match.status == "confirmed" else Decimal(0)
    for payment in remaining:
        lines.append(_recorded_line(payment, decimals))
        paid += payment.amount if payment.status == "confirmed" else Decimal(0)
    total = Decimal(body.total)
    if body.kind != "invoice":
        status = body.payment_status
    elif refunded > 0 and refunded >= total:
        status = "refunded"
    elif paid <= 0:
        status = "unpaid"
    elif paid < total:
        status = "partially_paid"
    else:
        status = "paid" if paid == total else "overpaid"
    return PaymentView(tuple(lines), status)


def _recorded_line(payment: RecordedPayment, decimals: int) -> PaymentLineView:
    amount = payment.amount.quantize(Decimal(1).scaleb(-decimals))
    return PaymentLineView(payment.method, f"{amount:.{decimals}f}", payment.provider_reference,
                           payment.payment_id, payment.status, payment.phone_masked, payment.confirmed_at,
                           payment.amount_mismatch)


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    event_type: str
    merchant_id: str
    aggregate_id: str
    payload: dict
    outlet_id: str | None = None  # the outlet the event is about (None: none); webhooks filter on it


class DuplicateClientInvoice(Exception):
    """(outlet, client_invoice_id) already sealed: an idempotent retry, or a conflicting reuse."""


class DuplicateNumber(Exception):
    """(outlet, series, number) already in the ledger: the counter was behind the ledger."""


class ChainMoved(Exception):
    """The chain head is not the (number, hash) the batch was chained from: another writer (a stale
    replica, a zombie lease, a counter behind the ledger) moved it. Nothing was written."""


@dataclass(frozen=True)
class InvoiceFilter:
    merchant_id: str
    outlet_id: str | None = None
    pos_terminal_id: str | None = None
    cashier_id: str | None = None
    sealed_from: datetime | None = None
    sealed_to: datetime | None = None
    status: str | None = None
    kind: str | None = None
    sync_status: str | None = None  # the DGI sync status (pending | synced | failed), issue #10


class SealerStore(Protocol):
    """What the sealer needs from the ledger's storage (services.ledger.store.LedgerStore implements
    it with SQL; the unit tests with a dict). Only the calls the seal path makes: keep it that small."""

    async def invoice_by_client_id(self, outlet_id: str, client_invoice_id: str) -> InvoiceRecord | None: ...

    async def invoice(self, merchant_id: str, invoice_id: str) -> InvoiceRecord | None: ...

    async def entry_hash(self, outlet_id: str, series: str, number: int) -> bytes | None: ...

    async def credit_notes(self, original_invoice_id: str) -> list[InvoiceRecord]: ...

    async def invoices_by_client_ids(self, outlet_id: str, client_invoice_ids: list[str]
                                     ) -> dict[str, InvoiceRecord]:
        """The invoices already sealed under any of these client ids, by client id (one query)."""
        ...

    async def insert_sealed_batch(self, records: list[InvoiceRecord], events: list[OutboxEvent],
                                  prev_number: int, prev_hash: bytes) -> None:
        """One transaction: consecutive chain entries (records[0].number == prev_number + 1) with their
        outbox events, and a compare-and-set of the chain head from (prev_number, prev_hash) to the
        last record. Raises ChainMoved when the head is not (prev_number, prev_hash), and
        DuplicateClientInvoice or DuplicateNumber when a unique key says a sale or a number is already
        in the ledger; nothing is written then."""
