"""Payments recorded against invoices after the sale (issue #9): what the payments service asks of the
ledger (RecordPayment, FindInvoice, SealSaleForPayment), and the payment view GetInvoice/ListInvoices
answer. Pure domain logic: the store and the sealer come in from the wiring.

The signed body never changes. A recorded payment lives in ledger.invoice_payments, keyed by the
payments service's payment id and matched to its sale by (outlet, client_invoice_id), so a payment
confirmed before its sale reaches the ledger (an offline till) shows once the sale is sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from services.ledger.access import ADMIN, POS, Principal
from services.ledger.model import (
    PAYMENT_PROVIDERS,
    RECORDED_STATUSES,
    InvoiceRecord,
    Outlet,
    PaymentView,
    RecordedPayment,
    payment_view,
)
from services.ledger.money import MAX_AMOUNT, fmt, minor_units, parse_signed_positive, shown
from services.ledger.request_bounds import (
    PAYMENT_REFERENCE_MAX,
    check_choice,
    check_text,
    require_identifier,
    require_uuid,
)
from services.ledger.sealing import Payment, SaleRequest, Sealer, request_hash
from services.runtime.faults import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

PHONE_MASKED_MAX = 32


class PaymentStore(Protocol):
    async def invoice(self, merchant_id: str, invoice_id: str) -> InvoiceRecord | None: ...

    async def invoice_by_client_id(self, outlet_id: str, client_invoice_id: str) -> InvoiceRecord | None: ...

    async def record_payment(self, payment: RecordedPayment) -> None: ...

    async def payments_and_refunds(self, records: list[InvoiceRecord]
                                   ) -> tuple[dict[tuple[str, str], list[RecordedPayment]], dict[str, Decimal]]: ...


@dataclass(frozen=True)
class PaymentInput:
    """A payment as the payments service describes it (ledger.proto PaymentRecord), not yet checked."""

    payment_id: str
    method: str
    provider_reference: str
    amount: str
    currency: str
    phone_masked: str
    status: str
    confirmed_at: datetime | None
    amount_mismatch: bool


@dataclass(frozen=True)
class CheckedSale:
    total: str
    currency: str
    amount_due: str  # the total less the sale's own payments


@dataclass(frozen=True)
class Recorded:
    invoice: InvoiceRecord | None  # None: not sealed yet; the payment is held until it is
    view: PaymentView | None


class InvoicePayments:
    def __init__(self, store: PaymentStore, sealer: Sealer, clock=lambda: datetime.now(UTC)):
        self.store = store
        self.sealer = sealer
        self.clock = clock

    # .. the read side ..

    async def views(self, records: list[InvoiceRecord]) -> list[PaymentView]:
        """Each invoice's payments and payment_status as of now: one query for the whole page."""
        payments, refunded = await self.store.payments_and_refunds(records)
        return [payment_view(record.invoice_body(), payments.get((record.outlet_id, record.client_invoice_id), []),
                             refunded.get(record.id, Decimal(0)), minor_units(record.currency))
                for record in records]

    # .. what the payments service calls ..

    async def record(self, merchant_id: str, outlet_id: str, invoice_id: str, client_invoice_id: str,
                     payment: PaymentInput) -> Recorded:
        """Record (or update) a payment against an invoice by id, or against a sale by (outlet,
        client_invoice_id) whether sealed yet or not."""
        merchant_id = require_uuid(merchant_id, "merchant_id", "merchant")
        invoice: InvoiceRecord | None
        if invoice_id:
            invoice = await self.store.invoice(merchant_id, require_uuid(invoice_id, "invoice_id", "invoice"))
            if invoice is None or (outlet_id and outlet_id.lower() != invoice.outlet_id):
                raise NotFound(f"invoice {invoice_id} not found")
            if client_invoice_id and client_invoice_id != invoice.client_invoice_id:
                raise InvalidArgument("client_invoice_id is not that invoice's", field="client_invoice_id")
            outlet = await self._outlet(merchant_id, invoice.outlet_id)
        elif client_invoice_id:
            outlet = await self._outlet(merchant_id, outlet_id)
            require_identifier(client_invoice_id, "client_invoice_id")
            invoice = await self.store.invoice_by_client_id(outlet.id, client_invoice_id)
        else:
            raise InvalidArgument("invoice_id or client_invoice_id is required", field="invoice_id")
        if invoice is not None and invoice.kind != "invoice":
            raise FailedPrecondition("a payment is recorded against an invoice, not a credit note")
        recorded = self._checked(merchant_id, outlet, invoice.client_invoice_id if invoice else client_invoice_id,
                                 invoice.id if invoice else None, payment)
        await self.store.record_payment(recorded)
        if invoice is None:
            return Recorded(None, None)
        [view] = await self.views([invoice])
        return Recorded(invoice, view)

    async def find(self, merchant_id: str, outlet_id: str, invoice_id: str, client_invoice_id: str
                   ) -> InvoiceRecord | None:
        """The merchant's invoice by id, or by (outlet, client_invoice_id); None when there is none (an id
        that is not even well formed names none either)."""
        try:
            merchant_id = require_uuid(merchant_id, "merchant_id", "merchant")
            if invoice_id:
                record = await self.store.invoice(merchant_id, require_uuid(invoice_id, "invoice_id", "invoice"))
                if record is not None and outlet_id and outlet_id.lower() != record.outlet_id:
                    return None
                return record
            if not (outlet_id and client_invoice_id):
                raise InvalidArgument("invoice_id, or outlet_id and client_invoice_id, are required",
                                      field="invoice_id")
            require_identifier(client_invoice_id, "client_invoice_id")
            record = await self.store.invoice_by_client_id(require_uuid(outlet_id, "outlet_id", "outlet"),
                                                           client_invoice_id)
        except NotFound:
            return None
        return record if record is not None and record.merchant_id == merchant_id else None

    async def check_sale(self, merchant_id: str, sale: SaleRequest, payment: PaymentInput) -> CheckedSale:
        """Pay-first, before the customer's phone is prompted: what seal_sale would seal, validated and
        totalled by the seal path (the sale as the outlet's POS, the payment appended as seal_sale appends
        it) without taking a number or signing. Refuses what seal_sale would refuse, the field named."""
        merchant_id = require_uuid(merchant_id, "merchant_id", "merchant")
        principal = Principal(key_id="mesh:payments", merchant_id=merchant_id, scope=POS,
                              outlet_id=sale.outlet_id.lower())
        outlet = await self.sealer.outlet_for(principal, sale.outlet_id)
        principal.require_write(outlet.id)
        require_identifier(sale.client_invoice_id, "sale.client_invoice_id")
        if await self.store.invoice_by_client_id(outlet.id, sale.client_invoice_id) is not None:
            raise AlreadyExists("this outlet already sealed a sale with this client_invoice_id: pay that invoice "
                                "by its invoice_id", field="sale.client_invoice_id")
        # The payment as it will be appended (confirmed, for the amount asked), so that its own bounds
        # (method, amount, the number of payments) are checked too.
        checked = self._checked(merchant_id, outlet, sale.client_invoice_id, None,
                                replace(payment, status="confirmed", amount_mismatch=False))
        decimals = minor_units(outlet.currency)
        paid_sale = replace(sale, payments=[*sale.payments, Payment(checked.method, fmt(checked.amount, decimals),
                                                                     checked.provider_reference or checked.payment_id)])
        # SealInvoice's own validation and totals (Sealer.seal_invoice up to numbering): what would not
        # seal is refused here with the same message and field.
        body = self.sealer.check_sale(outlet, paid_sale)
        declared = sum((Decimal(p["amount"]) for p in body["payments"][:-1]), Decimal(0))
        return CheckedSale(total=body["total"], currency=outlet.currency,
                           amount_due=fmt(Decimal(body["total"]) - declared, decimals))

    async def seal_sale(self, merchant_id: str, sale: SaleRequest, payment: PaymentInput) -> InvoiceRecord:
        """Pay-first: seal the sale the payments service held, with its confirmed payment appended to the
        sale's payments, through the same seal path as POST /v1/invoices (as the sale's outlet). The
        payment is recorded first (held by client_invoice_id), so it shows on the invoice whatever
        happens to the seal. Idempotent on (outlet, client_invoice_id): the same sale and payment
        answer the invoice already sealed, and so does the same sale sealed by the till itself."""
        merchant_id = require_uuid(merchant_id, "merchant_id", "merchant")
        principal = Principal(key_id="mesh:payments", merchant_id=merchant_id, scope=POS,
                              outlet_id=sale.outlet_id.lower())
        outlet = await self.sealer.outlet_for(principal, sale.outlet_id)
        require_identifier(sale.client_invoice_id, "sale.client_invoice_id")
        if payment.status != "confirmed":
            raise FailedPrecondition(f"only a confirmed payment seals its sale (this one is "
                                     f"{shown(payment.status)})")
        if payment.amount_mismatch:
            raise FailedPrecondition("a payment whose amount is not the amount asked does not seal its sale")
        recorded = self._checked(merchant_id, outlet, sale.client_invoice_id, None, payment)
        await self.store.record_payment(recorded)
        line = Payment(recorded.method, fmt(recorded.amount, minor_units(outlet.currency)),
                       recorded.provider_reference or recorded.payment_id)
        paid_sale = SaleRequest(
            outlet_id=sale.outlet_id, client_invoice_id=sale.client_invoice_id, pos_terminal_id=sale.pos_terminal_id,
            cashier_id=sale.cashier_id, currency=sale.currency, lines=sale.lines,
            payments=[*sale.payments, line], buyer=sale.buyer, sold_at=sale.sold_at)
        try:
            return await self.sealer.seal_invoice(principal, paid_sale)
        except AlreadyExists:
            # The till sealed this very sale itself meanwhile (it came back online and sent its queue):
            # that invoice is the sale, and the payment recorded above shows on it. A different sale
            # under the same client_invoice_id stays a conflict.
            existing = await self.store.invoice_by_client_id(outlet.id, sale.client_invoice_id)
            if existing is not None and existing.request_hash == request_hash(sale):
                return existing
            raise

    # .. checks ..

    async def _outlet(self, merchant_id: str, outlet_id: str) -> Outlet:
        merchant = Principal(key_id="mesh:payments", merchant_id=merchant_id, scope=ADMIN, outlet_id=None)
        return await self.sealer.outlet_for(merchant, outlet_id)

    def _checked(self, merchant_id: str, outlet: Outlet, client_invoice_id: str, invoice_id: str | None,
                 payment: PaymentInput) -> RecordedPayment:
        require_identifier(payment.payment_id, "payment.payment_id")
        check_choice(payment.method, "payment.method", PAYMENT_PROVIDERS)
        check_choice(payment.status, "payment.status", RECORDED_STATUSES)
        if payment.currency != outlet.currency:
            raise InvalidArgument(f"payment.currency {shown(payment.currency)} is not the outlet's currency "
                                  f"({outlet.currency})", field="payment.currency")
        amount = parse_signed_positive(payment.amount, "payment.amount", max_decimals=minor_units(outlet.currency),
                                       allow_zero=False, maximum=MAX_AMOUNT - 1)
        check_text(payment.provider_reference, "payment.provider_reference", PAYMENT_REFERENCE_MAX)
        check_text(payment.phone_masked, "payment.phone_masked", PHONE_MASKED_MAX)
        # A whole phone number is personal data the invoice must not carry: it comes masked or not at all.
        if sum(c.isdigit() for c in payment.phone_masked) > 6:
            raise InvalidArgument("payment.phone_masked must be masked (at most 6 digits shown)",
                                  field="payment.phone_masked")
        confirmed_at = payment.confirmed_at
        if payment.status == "confirmed" and confirmed_at is None:
            confirmed_at = self.clock()
        return RecordedPayment(
            payment_id=payment.payment_id, merchant_id=merchant_id, outlet_id=outlet.id,
            client_invoice_id=client_invoice_id, invoice_id=invoice_id, method=payment.method,
            provider_reference=payment.provider_reference, amount=amount, currency=outlet.currency,
            phone_masked=payment.phone_masked, status=payment.status,
            confirmed_at=confirmed_at if payment.status == "confirmed" else None,
            amount_mismatch=payment.amount_mismatch)
