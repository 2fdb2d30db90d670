"""The seal path: validate, total, take a gapless number, sign, write invoice + chain + outbox
in one transaction, then commit the number. Pure domain logic: the counter, the signer and the
store come in through the small interfaces below (gRPC clients and SQL live elsewhere).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import structlog

from services.ledger import receipt
from services.ledger.access import Principal
from services.ledger.model import (
    CREDIT_NOTE_SERIES,
    INVOICE_SERIES,
    DuplicateClientInvoice,
    DuplicateNumber,
    InvoiceRecord,
    OutboxEvent,
    Outlet,
)
from services.ledger.money import (
    MAX_QUANTITY_DECIMALS,
    PricedLine,
    TaxGroup,
    compute_totals,
    fmt,
    minor_units,
    parse_signed_positive,
    price_line,
)
from services.runtime.faults import AlreadyExists, FailedPrecondition, Fault, InvalidArgument, NotFound, Unavailable
from services.runtime.telemetry import tracer

log = structlog.get_logger()

_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}$")
PAYMENT_METHODS = {"cash", "card", "mpesa", "airtel_money", "orange_money", "bank_transfer", "voucher", "other"}
MAX_LINES = 1000
MAX_SOLD_AT_AGE = timedelta(days=30)
MAX_SOLD_AT_SKEW = timedelta(minutes=5)
SEAL_ATTEMPTS = 3


# --- what the seal path needs from the outside ----------------------------------------------------

@dataclass(frozen=True)
class Lease:
    lease_id: str
    number: int
    expires_at: datetime


class NumberAllocator(Protocol):
    async def allocate(self, outlet_id: str, series: str, holder: str) -> Lease: ...
    async def commit(self, lease: Lease) -> None: ...
    async def release(self, lease: Lease, reason: str) -> None: ...


class Signer(Protocol):
    async def sign(self, digest: bytes) -> tuple[bytes, str]: ...


# --- requests ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaleLine:
    description: str
    quantity: str
    unit_price: str
    tax_group: str
    sku: str = ""


@dataclass(frozen=True)
class Payment:
    method: str
    amount: str
    reference: str = ""


@dataclass(frozen=True)
class SaleRequest:
    outlet_id: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    currency: str
    lines: list[SaleLine]
    payments: list[Payment] = field(default_factory=list)
    buyer: dict[str, str] = field(default_factory=dict)
    sold_at: str = ""


@dataclass(frozen=True)
class CreditNoteRequest:
    original_invoice_id: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    reason: str
    lines: list[SaleLine] = field(default_factory=list)


def request_hash(request) -> bytes:
    """Fingerprint of a request as sent: the same id with a different body is a conflict (409)."""
    return hashlib.sha256(receipt.canonical_json(asdict(request)).encode()).digest()


def require_identifier(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument(f"{field_name} is required", field=field_name)
    if not _IDENTIFIER.match(value):
        raise InvalidArgument(f"{field_name} must be 1-64 characters of letters, digits and . _ : @ / -",
                              field=field_name)
    return value


def require_uuid(value: str, field_name: str, what: str) -> str:
    if not value:
        raise InvalidArgument(f"{field_name} is required", field=field_name)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the sealer -------------------------------------------------------------------------------------

class Sealer:
    def __init__(self, store, allocator: NumberAllocator, signer: Signer, *, authority_id: str, public_url: str,
                 outlets: Callable, clock: Callable[[], datetime] = utcnow,
                 lease_margin: timedelta = timedelta(milliseconds=500)):
        self.store = store
        self.allocator = allocator
        self.signer = signer
        self.authority_id = authority_id
        self.public_url = public_url
        self.outlets = outlets  # async (outlet_id) -> Outlet | None, cached by the caller
        self.clock = clock
        self.lease_margin = lease_margin
        # (outlet, series) -> (number, hash) of the last entry this process wrote: the next seal of the
        # outlet usually links to it without a query. A hash never changes once written, so a stale
        # entry is simply not used (the number will not match).
        self._last_entry: dict[tuple[str, str], tuple[int, bytes]] = {}

    async def outlet_for(self, principal: Principal, outlet_id: str) -> Outlet:
        outlet_id = require_uuid(outlet_id, "outlet_id", "outlet")
        outlet = await self.outlets(outlet_id)
        # Another merchant's outlet answers exactly like a missing one: no existence leaks across tenants.
        if outlet is None or outlet.merchant_id != principal.merchant_id:
            raise NotFound(f"outlet {outlet_id} not found")
        return outlet

    # .. invoices ..

    async def seal_invoice(self, principal: Principal, request: SaleRequest) -> InvoiceRecord:
        outlet = await self.outlet_for(principal, request.outlet_id)
        principal.require_write(outlet.id)
        require_identifier(request.client_invoice_id, "client_invoice_id")
        fingerprint = request_hash(request)
        existing = await self.store.invoice_by_client_id(outlet.id, request.client_invoice_id)
        if existing is not None:
            return self._replay(existing, fingerprint)
        sale = self._validate_sale(outlet, request)

        async def content(_number: int) -> dict:
            return sale

        return await self._seal(outlet, "invoice", request, fingerprint, content, original=None)

    def _validate_sale(self, outlet: Outlet, request: SaleRequest) -> dict:
        require_identifier(request.pos_terminal_id, "pos_terminal_id")
        require_identifier(request.cashier_id, "cashier_id")
        if not request.currency:
            raise InvalidArgument("currency is required", field="currency")
        if request.currency != outlet.currency:
            raise InvalidArgument(f"currency {request.currency!r} is not this outlet's currency ({outlet.currency})",
                                  field="currency")
        decimals = minor_units(outlet.currency)
        lines = self._price_lines(request.lines, outlet.tax_groups, decimals)
        totals = compute_totals(lines, outlet.tax_groups, decimals)
        payments = []
        for index, payment in enumerate(request.payments):
            name = f"payments[{index}]"
            if payment.method not in PAYMENT_METHODS:
                raise InvalidArgument(f"{name}.method must be one of {', '.join(sorted(PAYMENT_METHODS))}",
                                      field=f"{name}.method")
            amount = parse_signed_positive(payment.amount, f"{name}.amount", max_decimals=decimals, allow_zero=False)
            if len(payment.reference) > 100:
                raise InvalidArgument(f"{name}.reference is longer than 100 characters", field=f"{name}.reference")
            payments.append({"method": payment.method, "amount": fmt(amount, decimals),
                             "reference": payment.reference})
        for key, value in request.buyer.items():
            if len(value) > 200:
                raise InvalidArgument(f"buyer.{key} is longer than 200 characters", field=f"buyer.{key}")
        return {
            **self._totals_body(lines, totals, decimals),
            "payments": payments,
            "payment_status": payment_status(sum((Decimal(p["amount"]) for p in payments), Decimal(0)),
                                             totals.gross),
            "buyer": {k: v for k, v in sorted(request.buyer.items()) if v},
            "sold_at": self._sold_at(request.sold_at),
            "pos_terminal_id": request.pos_terminal_id,
            "cashier_id": request.cashier_id,
            "currency": outlet.currency,
        }

    def _price_lines(self, lines: list[SaleLine], groups: dict[str, TaxGroup], decimals: int) -> list[PricedLine]:
        if not lines:
            raise InvalidArgument("lines: at least one line is required", field="lines")
        if len(lines) > MAX_LINES:
            raise InvalidArgument(f"lines: at most {MAX_LINES} lines", field="lines")
        priced = []
        for index, line in enumerate(lines):
            name = f"lines[{index}]"
            description = line.description.strip()
            if not description or len(description) > 200:
                raise InvalidArgument(f"{name}.description must be 1-200 characters", field=f"{name}.description")
            if not line.quantity:
                raise InvalidArgument(f"{name}.quantity is required", field=f"{name}.quantity")
            quantity = parse_signed_positive(line.quantity, f"{name}.quantity", max_decimals=MAX_QUANTITY_DECIMALS,
                                             allow_zero=False)
            if not line.unit_price:
                raise InvalidArgument(f"{name}.unit_price is required", field=f"{name}.unit_price")
            unit_price = parse_signed_positive(line.unit_price, f"{name}.unit_price", max_decimals=decimals,
                                               allow_zero=True)
            group = groups.get(line.tax_group)
            if group is None:
                known = ", ".join(sorted(groups)) or "none"
                raise InvalidArgument(f"{name}.tax_group {line.tax_group!r} is not one of this merchant's tax "
                                      f"groups ({known})", field=f"{name}.tax_group")
            if len(line.sku) > 64:
                raise InvalidArgument(f"{name}.sku is longer than 64 characters", field=f"{name}.sku")
            priced.append(price_line(description, quantity, unit_price, group, line.sku, decimals))
        return priced

    @staticmethod
    def _totals_body(lines: list[PricedLine], totals, decimals: int) -> dict:
        return {
            "lines": [{"description": l.description, "quantity": format(l.quantity.normalize(), "f"),
                       "unit_price": fmt(l.unit_price, decimals), "tax_group": l.tax_group,
                       "line_total": fmt(l.line_total, decimals), "sku": l.sku} for l in lines],
            "tax_totals": [{"tax_group": g.group.code, "label": g.group.label, "rate": g.group.rate_text,
                            "taxable_amount": fmt(g.taxable, decimals), "tax_amount": fmt(g.tax, decimals),
                            "gross_amount": fmt(g.gross, decimals)} for g in totals.groups],
            "total_taxable": fmt(totals.taxable, decimals),
            "total_tax": fmt(totals.tax, decimals),
            "total": fmt(totals.gross, decimals),
        }

    def _sold_at(self, text: str) -> str | None:
        if not text:
            return None  # the seal time, filled in once known
        try:
            moment = receipt.parse_timestamp(text)
        except ValueError:
            raise InvalidArgument(f"sold_at must be an RFC 3339 time with a zone, got {text!r}",
                                  field="sold_at") from None
        now = self.clock()
        if moment > now + MAX_SOLD_AT_SKEW:
            raise InvalidArgument("sold_at is in the future", field="sold_at")
        if moment < now - MAX_SOLD_AT_AGE:
            raise InvalidArgument("sold_at is more than 30 days old", field="sold_at")
        return receipt.format_timestamp(moment)

    @staticmethod
    def _replay(existing: InvoiceRecord, fingerprint: bytes) -> InvoiceRecord:
        if existing.request_hash != fingerprint:
            raise AlreadyExists(f"client_invoice_id {existing.client_invoice_id!r} was already used for a "
                                f"different sale ({existing.fiscal_number})", reason="CLIENT_INVOICE_ID_REUSED")
        return existing

    # .. credit notes ..

    async def create_credit_note(self, principal: Principal, request: CreditNoteRequest) -> InvoiceRecord:
        original_id = require_uuid(request.original_invoice_id, "id", "invoice")
        original = await self.store.invoice(principal.merchant_id, original_id)
        if original is None:
            raise NotFound(f"invoice {original_id} not found")
        outlet = await self.outlet_for(principal, original.outlet_id)
        principal.require_write(outlet.id)
        if original.kind != "invoice":
            raise FailedPrecondition("a credit note can only refund an invoice, not another credit note")
        require_identifier(request.client_invoice_id, "client_invoice_id")
        fingerprint = request_hash(request)
        existing = await self.store.invoice_by_client_id(outlet.id, request.client_invoice_id)
        if existing is not None:
            return self._replay(existing, fingerprint)
        require_identifier(request.pos_terminal_id, "pos_terminal_id")
        require_identifier(request.cashier_id, "cashier_id")
        if len(request.reason) > 500:
            raise InvalidArgument("reason is longer than 500 characters", field="reason")
        decimals = minor_units(original.currency)
        original_body = original.body_fields()
        original_groups = {t["tax_group"] for t in original_body["lines"]}
        if request.lines:
            for index, line in enumerate(request.lines):
                if line.tax_group not in original_groups:
                    raise InvalidArgument(f"lines[{index}].tax_group {line.tax_group!r} is not on the original "
                                          "invoice", field=f"lines[{index}].tax_group")
            lines = self._price_lines(request.lines, outlet.tax_groups, decimals)
        else:
            lines = self._price_lines([SaleLine(l["description"], l["quantity"], l["unit_price"], l["tax_group"],
                                                l["sku"]) for l in original_body["lines"]], outlet.tax_groups,
                                      decimals)
        totals = compute_totals(lines, outlet.tax_groups, decimals)
        note = {
            **self._totals_body(lines, totals, decimals),
            "payments": [], "payment_status": "refund", "buyer": original_body.get("buyer", {}),
            "sold_at": None, "pos_terminal_id": request.pos_terminal_id, "cashier_id": request.cashier_id,
            "currency": original.currency, "original_invoice_id": original.id,
            "original_fiscal_number": original.fiscal_number, "reason": request.reason,
        }

        async def content(_number: int) -> dict:
            # Under the CN lease, credit notes of this outlet are serialised: the refundable balance holds.
            refunded = await self.store.credited_total(original.id)
            if refunded + totals.gross > original.total:
                raise FailedPrecondition(
                    f"refund of {fmt(totals.gross, decimals)} exceeds what is left to refund on "
                    f"{original.fiscal_number} ({fmt(original.total - refunded, decimals)})",
                    reason="REFUND_EXCEEDS_INVOICE")
            return note

        return await self._seal(outlet, "credit_note", request, fingerprint, content, original=original)

    # .. the common path ..

    async def _seal(self, outlet: Outlet, kind: str, request, fingerprint: bytes, content, original) -> InvoiceRecord:
        series = INVOICE_SERIES if kind == "invoice" else CREDIT_NOTE_SERIES
        holder = f"{outlet.code}/{request.client_invoice_id}"
        for attempt in range(1, SEAL_ATTEMPTS + 1):
            lease = await self.allocator.allocate(outlet.id, series, holder)
            try:
                record = await self._sign_entry(outlet, kind, series, lease, request, fingerprint, content, original)
                if self.clock() > lease.expires_at - self.lease_margin:
                    # The counter may already have reconciled and reissued this number: don't race it.
                    # Nothing was written; give the number back and start over with a fresh lease.
                    raise _LeaseRanOut()
                with tracer.start_as_current_span("ledger.insert_sealed"):
                    await self.store.insert_sealed(record, sealed_event(record))
            except _LeaseRanOut:
                log.warning("lease ran out before the insert; sealing again", outlet=outlet.code, series=series,
                            number=lease.number, attempt=attempt)
                await self._release(lease, "lease ran out before the insert")
                continue
            except DuplicateClientInvoice:
                await self._release(lease, "duplicate client_invoice_id")
                existing = await self.store.invoice_by_client_id(outlet.id, request.client_invoice_id)
                return self._replay(existing, fingerprint)
            except DuplicateNumber:
                # The ledger already holds this number (the counter was behind): move the counter past it.
                log.warning("number already in ledger; counter behind", outlet=outlet.code, series=series,
                            number=lease.number, attempt=attempt)
                await self._commit(lease)
                continue
            except BaseException as exc:
                await self._release(lease, f"seal failed: {type(exc).__name__}")
                raise
            self._last_entry[(outlet.id, series)] = (record.number, record.hash)
            await self._commit(lease)
            return record
        raise Unavailable("could not take a fiscal number after several attempts; retry")

    async def _sign_entry(self, outlet, kind, series, lease: Lease, request, fingerprint, content, original
                          ) -> InvoiceRecord:
        number = lease.number
        cached = self._last_entry.get((outlet.id, series))
        if number == 1:
            prev_hash = receipt.GENESIS_HASH
        elif cached is not None and cached[0] == number - 1:
            prev_hash = cached[1]
        else:
            prev_hash = await self.store.entry_hash(outlet.id, series, number - 1)
            if prev_hash is None:
                # Would be a gap: the counter is ahead of the ledger. Refuse rather than break invariant 1.
                log.error("counter ahead of ledger", outlet=outlet.code, series=series, number=number)
                raise Unavailable("fiscal counter out of step with the ledger; retry")
        body_content = await content(number)
        sealed_at = receipt.truncate_to_millis(self.clock())
        sealed_text = receipt.format_timestamp(sealed_at)
        number_text = receipt.fiscal_number(outlet.code, series, number)
        body = {
            **body_content,
            "v": 1,
            "kind": kind,
            "fiscal_number": number_text,
            "fiscal_authority_id": self.authority_id,
            "outlet_id": outlet.id,
            "outlet_code": outlet.code,
            "outlet_name": outlet.name,
            "taxpayer_id": outlet.taxpayer_id,
            "time_zone": outlet.time_zone,
            "series": series,
            "number": number,
            "prev_hash": receipt.b64url(prev_hash),
            "sealed_at": sealed_text,
            "sold_at": body_content["sold_at"] or sealed_text,
            "client_invoice_id": request.client_invoice_id,
        }
        body_text = receipt.canonical_json(body)
        statement = receipt.Statement(number_text, self.authority_id, sealed_text, body["total"], body["currency"],
                                      receipt.b64url(receipt.body_digest(body_text)))
        try:
            signature, key_id = await self.signer.sign(statement.digest())
        except Fault:
            raise
        except Exception as exc:  # the adapter maps RPC errors; anything else is still "signing failed"
            raise Unavailable("signing failed; retry") from exc
        return InvoiceRecord(
            id=str(uuid.uuid4()), merchant_id=outlet.merchant_id, outlet_id=outlet.id, kind=kind, series=series,
            number=number, fiscal_number=number_text, client_invoice_id=request.client_invoice_id,
            request_hash=fingerprint, pos_terminal_id=body["pos_terminal_id"], cashier_id=body["cashier_id"],
            currency=body["currency"], total=Decimal(body["total"]), total_tax=Decimal(body["total_tax"]),
            payment_status=body["payment_status"], status="sealed",
            sold_at=receipt.parse_timestamp(body["sold_at"]), sealed_at=sealed_at,
            original_invoice_id=original.id if original else None, body=body_text, statement=statement.text(),
            body_digest=receipt.body_digest(body_text), prev_hash=prev_hash, hash=statement.entry_hash(),
            signature=signature, key_id=key_id, auth_code=receipt.auth_code(signature), created_at=sealed_at,
        )

    async def _commit(self, lease: Lease) -> None:
        try:
            await self.allocator.commit(lease)
        except Exception as exc:  # noqa: BLE001 - the ledger is the truth; the lease reconciles on expiry
            log.warning("counter commit failed; will reconcile on lease expiry", error=str(exc))

    async def _release(self, lease: Lease, reason: str) -> None:
        try:
            await self.allocator.release(lease, reason)
        except Exception as exc:  # noqa: BLE001 - expiry + reconciliation frees the number anyway
            log.warning("counter release failed; number frees on lease expiry", error=str(exc))


class _LeaseRanOut(Exception):
    """The seal took longer than its number's lease: the number must not be used."""


def payment_status(paid: Decimal, total: Decimal) -> str:
    if paid >= total:
        return "paid"
    return "partially_paid" if paid > 0 else "unpaid"


def sealed_event(record: InvoiceRecord) -> OutboxEvent:
    return OutboxEvent(
        event_id=str(uuid.uuid4()), event_type="invoice.sealed", merchant_id=record.merchant_id,
        aggregate_id=record.id,
        payload={"invoice_id": record.id, "kind": record.kind, "outlet_id": record.outlet_id,
                 "fiscal_number": record.fiscal_number, "client_invoice_id": record.client_invoice_id,
                 "pos_terminal_id": record.pos_terminal_id, "cashier_id": record.cashier_id,
                 "total": record.body_fields()["total"], "currency": record.currency,
                 "sealed_at": receipt.format_timestamp(record.sealed_at),
                 "original_invoice_id": record.original_invoice_id},
    )
