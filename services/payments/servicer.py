"""The payments service's gRPC layer: API keys and scopes, input bounds, protobuf in and out.

PaymentService (from the gateway) carries the caller's `authorization` metadata: the ledger says whose
key it is. merchant:admin does everything; outlet:pos creates and reads its own outlet's payments;
merchant:read reads. Every query is filtered by the key's merchant, so another merchant's payment id is
NOT_FOUND, like one that does not exist.

CreatePayment when the provider is down or slow: the payment is stored `failed` (status_reason says why,
a payment.failed event is written) and the call answers UNAVAILABLE (the provider timed out or answered
5xx: try again later with a new client_payment_id) or FAILED_PRECONDITION (the provider refused: bad
credentials, a refused number). Repeating the call with the same client_payment_id answers that failed
payment (200): it never pushes a second prompt. The sale is never touched.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import NoReturn

import grpc
import httpx
import structlog
from fiscal.v1 import ledger_pb2, payments_pb2, payments_pb2_grpc
from google.api import httpbody_pb2

from services.payments import domain
from services.payments.callbacks import CallbackProcessor
from services.payments.credentials import ProviderAccess, open_secrets, seal_secrets
from services.payments.domain import Change, Payment
from services.payments.ledger_client import LedgerClient
from services.payments.providers.base import PaymentStatus, ProviderError, callback_secret_lookup
from services.payments.providers.registry import ProviderRegistry, ProviderUnavailable
from services.payments.reconcile import collection_of
from services.payments.store import NewPayment, PaymentStore, Settings, Stored
from services.runtime.api_key_principal import ADMIN, POS, READ, ApiKeyAuthenticator, Principal, authorization_header
from services.runtime.faults import (
    AlreadyExists,
    FailedPrecondition,
    Fault,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.runtime.grpc_errors import fault_from_rpc_error, handles_faults
from services.runtime.position_tokens import page_token, parse_page_token
from services.runtime.secret_box import SecretBox
from services.runtime.timestamps import to_timestamp

log = structlog.get_logger()

SETTINGS_FIELD = {domain.MPESA: "mpesa", domain.AIRTEL: "airtel", domain.ORANGE: "orange"}



def payment_message(payment: Payment) -> payments_pb2.Payment:
    confirmed = payment.confirmed_amount if payment.status is PaymentStatus.CONFIRMED else None
    return payments_pb2.Payment(
        id=payment.id, outlet_id=payment.outlet_id, provider=payment.provider,
        amount=domain.format_amount(payment.amount, payment.currency), currency=payment.currency,
        phone_masked=payment.phone_masked, status=payment.status.value, status_reason=payment.status_reason,
        invoice_id=payment.invoice_id, client_invoice_id=payment.client_invoice_id,
        client_payment_id=payment.client_payment_id, provider_reference=payment.provider_reference,
        provider_request_id=payment.provider_request_id,
        confirmed_amount=domain.format_amount(confirmed, payment.currency) if confirmed is not None else "",
        amount_mismatch=payment.amount_mismatch, payment_url=payment.payment_url, sale_state=payment.sale_state,
        created_at=to_timestamp(payment.created_at), updated_at=to_timestamp(payment.updated_at),
        confirmed_at=to_timestamp(payment.confirmed_at))


def settings_message(settings: Settings, callback_urls: dict[str, str]) -> payments_pb2.ProviderSettings:
    return payments_pb2.ProviderSettings(
        outlet_id=settings.outlet_id, provider=settings.provider, enabled=settings.enabled,
        api_base_url=settings.api_base_url, credentials_hint=settings.credentials_hint, settings=settings.settings,
        callback_source_cidrs=settings.callback_source_cidrs, callback_urls=callback_urls,
        updated_at=to_timestamp(settings.updated_at))


class PaymentServicer(payments_pb2_grpc.PaymentServiceServicer):
    def __init__(self, authenticator: ApiKeyAuthenticator, store: PaymentStore, registry: ProviderRegistry,
                 access: ProviderAccess, box: SecretBox, ledger: LedgerClient, http: httpx.AsyncClient,
                 public_url: str, provider_timeout: float, on_change=lambda: None):
        self.authenticator = authenticator
        self.store = store
        self.registry = registry
        self.access = access
        self.box = box
        self.ledger = ledger
        self.http = http
        self.public_url = public_url
        self.provider_timeout = provider_timeout
        self.on_change = on_change

    async def _principal(self, context, allowed: tuple[str, ...], what: str) -> Principal:
        principal = await self.authenticator.authenticate(authorization_header(context))
        principal.require_scope(allowed, what)
        return principal

    @staticmethod
    def _outlet(principal: Principal, outlet_id: str) -> str:
        if not outlet_id:
            raise InvalidArgument("outlet_id is required", field="outlet_id")
        if principal.owns_outlet(outlet_id):
            return outlet_id
        if principal.scope == POS:
            raise PermissionDenied("this outlet:pos key is for another outlet")
        raise NotFound("outlet not found")

    async def _callback_token(self, merchant_id: str) -> str:
        token = domain.new_callback_token()
        sealed = await self.store.ensure_merchant(merchant_id, domain.token_hash(token),
                                                  self.box.seal(token, merchant_id.encode()))
        return self.box.open(sealed, merchant_id.encode())

    # Payments

    @handles_faults
    async def CreatePayment(self, request, context):
        principal = await self._principal(context, (ADMIN, POS), "creating a payment")
        outlet_id = self._outlet(principal, request.outlet_id)
        provider = domain.validate_provider(request.provider)
        amount = domain.parse_amount(request.amount, request.currency, provider)
        phone = domain.validate_phone(request.phone)
        client_payment_id = domain.validate_identifier(request.client_payment_id, "client_payment_id")
        has_sale = request.HasField("sale")
        target = domain.payment_target(request.invoice_id, request.client_invoice_id,
                                       request.sale.client_invoice_id if has_sale else None)
        sale_bytes, sale = None, None
        if has_sale:
            domain.check_sale(outlet_id, request.currency, request.sale.outlet_id, request.sale.currency,
                              len(request.sale.lines))
            sale = ledger_pb2.SealInvoiceRequest()
            sale.CopyFrom(request.sale)
            sale.outlet_id, sale.currency = outlet_id, request.currency
            sale_bytes = sale.SerializeToString(deterministic=True)
        try:
            adapter = self.registry.adapter(provider)
        except ProviderUnavailable as exc:
            raise FailedPrecondition(str(exc), reason="PROVIDER_UNAVAILABLE") from None

        def same_request(existing: Payment) -> Payment:
            if (existing.provider, existing.amount, existing.currency) != (provider, amount, request.currency) or \
                    (target.invoice_id and existing.invoice_id != target.invoice_id) or \
                    (target.client_invoice_id and existing.client_invoice_id != target.client_invoice_id):
                raise AlreadyExists("client_payment_id was already used for another payment of this outlet",
                                    field="client_payment_id")
            return existing

        existing = await self.store.by_client_payment_id(outlet_id, client_payment_id)
        if existing is not None:
            return payment_message(same_request(existing.payment))
        payment_id = str(uuid.uuid4())
        if sale is not None:
            await self._check_sale(principal.merchant_id, sale, payment_id, provider, amount, request.currency)
        client_invoice_id = target.client_invoice_id
        if target.invoice_id:
            client_invoice_id = await self._invoice(principal.merchant_id, outlet_id, target.invoice_id,
                                                    request.currency)
        credentials = await self.access.credentials(outlet_id, provider, adapter)
        token = await self._callback_token(principal.merchant_id)
        stored, created = await self.store.create_payment(NewPayment(
            id=payment_id, merchant_id=principal.merchant_id, outlet_id=outlet_id, provider=provider,
            client_payment_id=client_payment_id, amount=amount, currency=request.currency,
            phone_sealed=self.box.seal(phone, payment_id.encode()), phone_masked=domain.mask_phone(phone),
            invoice_id=target.invoice_id, client_invoice_id=client_invoice_id, sale=sale_bytes))
        if not created:  # the same call, concurrently: that one initiates
            return payment_message(same_request(stored.payment))
        callback_url = domain.initiation_callback_url(self.public_url, token, provider)
        try:
            async with asyncio.timeout(self.provider_timeout + 1.0):  # the client's own timeout is the first net
                initiated = await adapter.initiate(self.http, credentials,
                                                   collection_of(stored.payment, phone, callback_url))
        except ProviderError as error:
            await self._initiation_failed(stored, error.message, error.retryable)
        except (TimeoutError, httpx.HTTPError):
            await self._initiation_failed(stored, f"{provider} did not answer in time", True)
        secret = initiated.callback_secret
        updated = await self.store.mark_initiated(
            payment_id, provider_request_id=initiated.provider_request_id,
            merchant_request_id=initiated.merchant_request_id, payment_url=initiated.payment_url,
            callback_secret_sealed=self.box.seal(secret, payment_id.encode()) if secret else None,
            callback_secret_lookup=callback_secret_lookup(secret) if secret else "")
        log.info("payment initiated", payment_id=payment_id, provider=provider, outlet_id=outlet_id,
                 pay_first=target.pay_first)
        return payment_message((updated or stored).payment)

    async def _check_sale(self, merchant_id: str, sale: ledger_pb2.SealInvoiceRequest, payment_id: str,
                          provider: str, amount: Decimal, currency: str) -> None:
        """Pay-first: the ledger checks the sale (with this payment appended, as it will seal it) before
        anyone's phone is prompted, and the amount asked must be what the sale leaves to pay: the
        confirmation seals exactly that sale."""
        checked = await self.ledger.check_sale(merchant_id, sale, ledger_pb2.PaymentRecord(
            payment_id=payment_id, method=provider, amount=domain.format_amount(amount, currency), currency=currency,
            status=PaymentStatus.CONFIRMED.value))
        if amount != Decimal(checked.amount_due):
            left = "" if checked.amount_due == checked.total else f", {checked.amount_due} after its own payments"
            raise InvalidArgument(f"amount {domain.format_amount(amount, currency)} is not what the sale leaves to "
                                  f"pay: its total is {checked.total} {checked.currency}{left}", field="amount")

    async def _invoice(self, merchant_id: str, outlet_id: str, invoice_id: str, currency: str) -> str:
        """The invoice's client_invoice_id; NotFound unless it is this outlet's."""
        try:
            found = await self.ledger.find_invoice(merchant_id, outlet_id, invoice_id=invoice_id)
        except grpc.RpcError as error:
            raise fault_from_rpc_error(error, "ledger (asked for the invoice)",
                                       unavailable_reason="LEDGER_UNAVAILABLE") from error
        if found is None or found.outlet_id != outlet_id:
            raise NotFound("invoice not found for this outlet", field="invoice_id")
        if found.kind == "credit_note":
            raise InvalidArgument("a credit note is not paid by the customer", field="invoice_id")
        if found.currency and found.currency != currency:
            raise InvalidArgument(f"the invoice is in {found.currency}", field="currency")
        return found.client_invoice_id

    async def _initiation_failed(self, stored: Stored, message: str, retryable: bool) -> NoReturn:
        """Store the payment failed (with its event), then raise the call's answer."""
        now = datetime.now(UTC)
        reason = message[:domain.MAX_REASON_LENGTH]

        def decide(current: Payment) -> tuple[Change | None, str]:
            change = domain.apply_status(current, PaymentStatus.FAILED, reason=reason, provider_reference="",
                                         confirmed_amount=None, now=now)
            # Nothing reached the payer: nothing to show on the invoice.
            return (replace(change, record_in_ledger=False) if change is not None else None), "initiation_failed"

        await self.store.apply(stored.payment.id, decide)
        self.on_change()
        payment = stored.payment
        log.warning("payment initiation failed", payment_id=payment.id, provider=payment.provider,
                    retryable=retryable)
        text = f"payment {payment.id} failed: {reason}"
        if retryable:
            raise Unavailable(f"{text}; try again with a new client_payment_id", reason="PROVIDER_UNAVAILABLE")
        raise FailedPrecondition(text, reason="PROVIDER_REFUSED")

    @handles_faults
    async def GetPayment(self, request, context):
        principal = await self._principal(context, (ADMIN, READ, POS), "reading payments")
        if not domain.is_uuid(request.id):
            raise NotFound("payment not found")
        stored = await self.store.get_payment(principal.merchant_id, request.id)
        if stored is None or (principal.scope == POS and stored.payment.outlet_id != principal.outlet_id):
            raise NotFound("payment not found")
        return payment_message(stored.payment)

    @handles_faults
    async def ListPayments(self, request, context):
        principal = await self._principal(context, (ADMIN, READ, POS), "reading payments")
        outlet_id = request.outlet_id or None
        if principal.scope == POS:
            if outlet_id and outlet_id != principal.outlet_id:
                raise PermissionDenied("this outlet:pos key is for another outlet")
            outlet_id = principal.outlet_id
        invoice_id = domain.validate_uuid(request.invoice_id, "invoice_id") if request.invoice_id else None
        client_invoice_id = domain.validate_identifier(request.client_invoice_id, "client_invoice_id",
                                                       required=False) or None
        status = domain.validate_status_filter(request.status)
        page_size = domain.validate_page_size(request.page_size)
        payments = await self.store.list_payments(
            principal.merchant_id, outlet_id=outlet_id, status=status, invoice_id=invoice_id,
            client_invoice_id=client_invoice_id, before_seq=parse_page_token(request.page_token), limit=page_size + 1)
        more = len(payments) > page_size
        payments = payments[:page_size]
        return payments_pb2.ListPaymentsResponse(payments=[payment_message(p) for p in payments],
                                                 next_page_token=page_token(payments[-1].seq) if more else "")

    # Provider settings

    @handles_faults
    async def SetProviderSettings(self, request, context):
        principal = await self._principal(context, (ADMIN,), "setting payment providers")
        outlet_id = self._outlet(principal, request.outlet_id)
        provider = domain.validate_provider(request.provider)
        for other, field_name in SETTINGS_FIELD.items():
            if other != provider and request.HasField(field_name):
                raise InvalidArgument(f"{field_name} settings given for provider {provider}", field=field_name)
        try:
            adapter = self.registry.adapter(provider)
        except ProviderUnavailable as exc:
            raise FailedPrecondition(str(exc), reason="PROVIDER_UNAVAILABLE") from None
        message = getattr(request, SETTINGS_FIELD[provider])
        given = {field.name: getattr(message, field.name) for field in message.DESCRIPTOR.fields}
        new_secrets, settings = domain.split_credentials(given, adapter.secret_fields, adapter.setting_fields)
        api_base_url = domain.validate_api_base_url(request.api_base_url)
        cidrs = domain.validate_source_cidrs(list(request.callback_source_cidrs))
        # Credentials are write-only: one left empty keeps the stored value.
        existing = await self.store.get_settings(outlet_id, provider)
        secrets: dict[str, str] = {}
        if existing is not None:
            try:
                secrets = open_secrets(self.box, existing)
            except Fault:
                secrets = {}
        secrets.update(new_secrets)
        settings_id = str(uuid.uuid4())
        row = await self.store.put_settings(
            settings_id, principal.merchant_id, outlet_id, provider, enabled=request.enabled,
            api_base_url=api_base_url, secrets_sealed=seal_secrets(self.box, settings_id, secrets) if secrets else None,
            credentials_hint={name: domain.credential_hint(value) for name, value in sorted(secrets.items())},
            settings=settings, callback_source_cidrs=cidrs)
        if row is None:
            raise NotFound("outlet not found")
        token = await self._callback_token(principal.merchant_id)
        urls = domain.callback_urls(self.public_url, token, provider)
        log.info("payment provider settings changed", outlet_id=outlet_id, provider=provider,
                 merchant_id=principal.merchant_id, enabled=request.enabled)
        answer = settings_message(row, urls)
        if provider == domain.MPESA and request.enabled:
            answer.settings["c2b_registration"] = await self._register_c2b(outlet_id, adapter, urls)
        return answer

    async def _register_c2b(self, outlet_id: str, adapter, urls: dict[str, str]) -> str:
        """M-Pesa sends paybill/till payments (C2B) only to URLs registered for the short code (Daraja's
        registerurl). Best effort: the settings are saved whatever happens; the answer says how it went
        (`registered`, or `not registered: <why>`: register again by saving the settings, or in the
        Daraja portal)."""
        register = getattr(adapter, "register_c2b_urls", None)
        if register is None:
            return "not registered: this M-Pesa adapter cannot register URLs"
        try:
            credentials = await self.access.credentials(outlet_id, domain.MPESA, adapter)
            async with asyncio.timeout(self.provider_timeout + 1.0):
                await register(self.http, credentials, validation_url=urls[domain.C2B_VALIDATION],
                               confirmation_url=urls[domain.C2B_CONFIRMATION])
        except ProviderError as error:
            log.warning("M-Pesa C2B URL registration failed", outlet_id=outlet_id, reason=error.message)
            return f"not registered: {error.message}"
        except (TimeoutError, httpx.HTTPError):
            return "not registered: M-Pesa did not answer in time"
        except Fault as fault:
            return f"not registered: {fault}"
        return "registered"

    @handles_faults
    async def ListProviderSettings(self, request, context):
        principal = await self._principal(context, (ADMIN, READ), "reading payment providers")
        outlet_id = self._outlet(principal, request.outlet_id)
        rows = await self.store.list_settings(principal.merchant_id, outlet_id)
        token = await self._callback_token(principal.merchant_id) if rows else ""
        return payments_pb2.ListProviderSettingsResponse(providers=[
            settings_message(row, domain.callback_urls(self.public_url, token, row.provider)) for row in rows])


class PaymentOpsServicer(payments_pb2_grpc.PaymentOpsServiceServicer):
    def __init__(self, store: PaymentStore):
        self.store = store

    @handles_faults
    async def GetCallbackStats(self, request, context):
        return payments_pb2.CallbackStats(counts=[
            payments_pb2.CallbackCount(provider=provider, outcome=outcome, count=count)
            for provider, outcome, count in await self.store.callback_counts()])


def _headers(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The request headers Envoy forwarded (lower-case names; binary metadata left out)."""
    return {key: value for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str) and not key.endswith("-bin")}


class PaymentCallbackServicer(payments_pb2_grpc.PaymentCallbackServiceServicer):
    def __init__(self, processor: CallbackProcessor):
        self.processor = processor

    async def _handle(self, provider: str, kind: str, request, context) -> httpbody_pb2.HttpBody:
        answer = await self.processor.handle(provider, kind, request.token, bytes(request.body.data),
                                             _headers(context))
        return httpbody_pb2.HttpBody(content_type=answer.content_type, data=answer.body)

    @handles_faults
    async def MpesaStkCallback(self, request, context):
        return await self._handle(domain.MPESA, domain.STK, request, context)

    @handles_faults
    async def MpesaC2bValidation(self, request, context):
        return await self._handle(domain.MPESA, domain.C2B_VALIDATION, request, context)

    @handles_faults
    async def MpesaC2bConfirmation(self, request, context):
        return await self._handle(domain.MPESA, domain.C2B_CONFIRMATION, request, context)

    @handles_faults
    async def AirtelCallback(self, request, context):
        return await self._handle(domain.AIRTEL, domain.NOTIFICATION, request, context)

    @handles_faults
    async def OrangeNotification(self, request, context):
        return await self._handle(domain.ORANGE, domain.NOTIFICATION, request, context)
