"""The ledger's LedgerInternalService as the payments service uses it: RecordPayment, SealSaleForPayment,
FindInvoice, each with a deadline.

A failed call is either `LedgerUnavailable` (try again later: the background job retries) or
`LedgerRefused` (the ledger said no to this request: retrying the same request will not help).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from fiscal.v1 import ledger_pb2, ledger_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.payments.domain import Payment, format_amount
from services.runtime.faults import (
    AlreadyExists,
    FailedPrecondition,
    Fault,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.runtime.timestamps import to_timestamp

# Codes that mean "not now": the same request may succeed later.
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
              grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}


# The ledger's refusals of a pay-first sale, answered to the client as they are (its input, not ours).
_SALE_REFUSALS: dict[grpc.StatusCode, type[Fault]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.NOT_FOUND: NotFound, grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


class LedgerUnavailable(Exception):
    pass


class LedgerRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _failure(error: grpc.RpcError) -> Exception:
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = (error.details() if callable(getattr(error, "details", None)) else "") or ""
    if code in _RETRYABLE or not isinstance(code, grpc.StatusCode):
        return LedgerUnavailable(f"ledger unavailable ({getattr(code, 'name', 'UNKNOWN')})")
    return LedgerRefused(code.name, details[:300])


@dataclass(frozen=True)
class Recorded:
    invoice_found: bool
    invoice_id: str
    payment_status: str


@dataclass(frozen=True)
class FoundInvoice:
    invoice_id: str
    outlet_id: str
    client_invoice_id: str
    total: str
    currency: str
    kind: str


def payment_record(payment: Payment) -> ledger_pb2.PaymentRecord:
    """What the ledger shows of a payment on the invoice (never the phone number: only its masked form)."""
    amount = payment.confirmed_amount if payment.confirmed_amount is not None else payment.amount
    return ledger_pb2.PaymentRecord(
        payment_id=payment.id, method=payment.provider, provider_reference=payment.provider_reference,
        amount=format_amount(amount, payment.currency), currency=payment.currency,
        phone_masked=payment.phone_masked, status=payment.status.value,
        confirmed_at=to_timestamp(payment.confirmed_at), amount_mismatch=payment.amount_mismatch)


@dataclass(frozen=True)
class CheckedSale:
    total: str
    currency: str
    amount_due: str


def _ledger_field(error: grpc.RpcError) -> str:
    """The field the ledger named in its refusal (google.rpc.BadRequest), as the client sent it: the
    payment's own fields are the request's ("payment.amount" -> "amount"), the rest the sale's."""
    try:
        status = rpc_status.from_call(error)
    except (ValueError, AttributeError, TypeError):
        return "sale"
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            name = bad.field_violations[0].field
            if name.startswith("payment."):
                return name.removeprefix("payment.")
            return name if name.startswith("sale") else f"sale.{name}"
    return "sale"


class LedgerClient:
    def __init__(self, channel: grpc.aio.Channel, timeout: float, seal_timeout: float):
        self.stub = ledger_pb2_grpc.LedgerInternalServiceStub(channel)
        self.timeout = timeout
        self.seal_timeout = seal_timeout

    async def record_payment(self, payment: Payment) -> Recorded:
        request = ledger_pb2.RecordPaymentRequest(
            merchant_id=payment.merchant_id, outlet_id=payment.outlet_id, payment=payment_record(payment))
        if payment.invoice_id:
            request.invoice_id = payment.invoice_id
        else:
            request.client_invoice_id = payment.client_invoice_id
        try:
            answer = await self.stub.RecordPayment(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise _failure(error) from None
        return Recorded(answer.invoice_found, answer.invoice_id, answer.payment_status)

    async def seal_sale(self, payment: Payment, sale: bytes) -> str:
        """The sealed invoice's id. Idempotent in the ledger on (outlet, client_invoice_id)."""
        sale_request = ledger_pb2.SealInvoiceRequest.FromString(sale)
        request = ledger_pb2.SealSaleForPaymentRequest(merchant_id=payment.merchant_id, sale=sale_request,
                                                       payment=payment_record(payment))
        try:
            invoice = await self.stub.SealSaleForPayment(request, timeout=self.seal_timeout)
        except grpc.RpcError as error:
            raise _failure(error) from None
        return str(invoice.id)

    async def check_sale(self, merchant_id: str, sale: ledger_pb2.SealInvoiceRequest,
                         payment: ledger_pb2.PaymentRecord) -> CheckedSale:
        """Pay-first, before the customer is asked: the sale as SealSaleForPayment would seal it, checked by
        the ledger's seal path without sealing. Raises the Fault the client gets: the ledger's refusal of
        the sale (its message, the field named), or UNAVAILABLE."""
        try:
            answer = await self.stub.CheckSale(ledger_pb2.SealSaleForPaymentRequest(
                merchant_id=merchant_id, sale=sale, payment=payment), timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code() if callable(getattr(error, "code", None)) else None
            details = ((error.details() if callable(getattr(error, "details", None)) else "") or "")[:300]
            refusal = _SALE_REFUSALS.get(code) if isinstance(code, grpc.StatusCode) else None
            if refusal is None:
                raise Unavailable("the ledger could not check the sale; retry", reason="LEDGER_UNAVAILABLE") from None
            raise refusal(f"the sale would not seal: {details}", field=_ledger_field(error)) from None
        return CheckedSale(answer.total, answer.currency, answer.amount_due)

    async def find_invoice(self, merchant_id: str, outlet_id: str, *, invoice_id: str = "",
                           client_invoice_id: str = "") -> FoundInvoice | None:
        """Raises grpc.RpcError as is (the caller turns it into its answer)."""
        answer = await self.stub.FindInvoice(ledger_pb2.FindInvoiceRequest(
            merchant_id=merchant_id, outlet_id=outlet_id, invoice_id=invoice_id, client_invoice_id=client_invoice_id),
            timeout=self.timeout)
        if not answer.found:
            return None
        return FoundInvoice(answer.invoice_id, answer.outlet_id, answer.client_invoice_id, answer.total,
                            answer.currency, answer.kind)
