"""The ledger's records, as the domain sees them (no gRPC, no SQLAlchemy)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

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


@dataclass(frozen=True)
class OutboxEvent:
    event_id: str
    event_type: str
    merchant_id: str
    aggregate_id: str
    payload: dict


class DuplicateClientInvoice(Exception):
    """(outlet, client_invoice_id) already sealed: an idempotent retry, or a conflicting reuse."""


class DuplicateNumber(Exception):
    """(outlet, series, number) already in the ledger: the counter was behind the ledger."""


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
