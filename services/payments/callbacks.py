"""Provider callbacks, from the route to the answer.

Each callback: the merchant by its route token (unknown: forged_token) -> parse (malformed) -> the payment
it is about (one of this merchant's requests, else unknown_transaction; C2B: the outlet owning the short
code) -> the source address when the outlet's settings restrict it (source_refused) -> the provider's own
authentication (Airtel's hash, Orange's notif_token: forged_signature) -> Orange: the success confirmed
with the status API -> apply, in one transaction: the dedupe key (duplicate), the payment, the outbox
event and the counter. Then, after the commit, the ledger hears of it (FollowUp).

A refusal is counted in its own transaction, changes nothing else, and is raised as a Fault (403 for
forged/unknown/source, 400 for malformed: Envoy answers JSON). Log lines carry provider, kind, outcome
and payment id: never a token, a credential or a whole phone number.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal

import grpc
import httpx
import structlog

from services.payments import domain
from services.payments.domain import Change, Payment
from services.payments.providers.base import (
    CALLBACK_SECRET_LOOKUP,
    CallbackAnswer,
    CallbackResult,
    ForgedCallback,
    MalformedCallback,
    PaymentStatus,
    ProviderAdapter,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.registry import ProviderUnavailable
from services.payments.reconcile import ProviderWork
from services.payments.store import CallbackRow, NewPayment, Settings, Stored
from services.runtime.faults import Fault, InvalidArgument, PermissionDenied, Unavailable
from services.runtime.secret_box import SecretBoxError

log = structlog.get_logger()

MAX_BODY_BYTES = 64 * 1024
MAX_TOKEN_LENGTH = 128
MAX_PROVIDER_AMOUNT = Decimal(10) ** 14  # what numeric(20, 6) holds with room; more is not a real amount
C2B_CURRENCY = "KES"  # M-Pesa C2B (Daraja) is Kenyan shillings


class Refused(Exception):
    """A callback refused: counted under `outcome`, answered 4xx."""

    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome
        self.message = message

    def fault(self) -> Fault:
        if self.outcome == domain.MALFORMED:
            return InvalidArgument(f"callback refused: {self.message}", reason="CALLBACK_MALFORMED")
        return PermissionDenied(f"callback refused: {self.message}", reason=f"CALLBACK_{self.outcome.upper()}")


def _counted(outcome: str) -> str:
    """The counter an applied callback's outcome goes under ("ignored" ones were authentic: accepted)."""
    return domain.ACCEPTED if outcome == "ignored" else outcome


class CallbackProcessor(ProviderWork):
    async def handle(self, provider: str, kind: str, token: str, body: bytes,
                     headers: Mapping[str, str]) -> CallbackAnswer:
        """The provider's answer for an accepted callback; raises a Fault (after counting) for a refused one."""
        try:
            adapter = self.registry.adapter(provider)
        except ProviderUnavailable as exc:
            raise Unavailable(str(exc), reason="PROVIDER_UNAVAILABLE") from None
        try:
            return await self._handle(adapter, provider, kind, token, body, headers)
        except Refused as refused:
            await self.store.count(provider, refused.outcome)
            log.warning("payment callback refused", provider=provider, kind=kind, outcome=refused.outcome)
            raise refused.fault() from None

    async def _handle(self, adapter: ProviderAdapter, provider: str, kind: str, token: str, body: bytes,
                      headers: Mapping[str, str]) -> CallbackAnswer:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise Refused(domain.FORGED_TOKEN, "unknown callback token")
        merchant_id = await self.store.merchant_by_token(domain.token_hash(token))
        if merchant_id is None:
            raise Refused(domain.FORGED_TOKEN, "unknown callback token")
        result = self._parse(adapter, kind, body, headers)
        if kind in (domain.C2B_VALIDATION, domain.C2B_CONFIRMATION):
            return await self._c2b(adapter, merchant_id, kind, result, body, headers)
        stored = await self._payment_of(merchant_id, provider, result)
        if stored is None:
            raise Refused(domain.UNKNOWN_TRANSACTION, "no such request of this merchant")
        payment = stored.payment
        settings = await self.store.get_settings(payment.outlet_id, provider)
        if settings is not None and not domain.source_allowed(headers.get("x-forwarded-for", ""),
                                                              settings.callback_source_cidrs):
            raise Refused(domain.SOURCE_REFUSED, "source address not allowed")
        credentials = await self._credentials(adapter, payment.outlet_id, provider)
        try:
            adapter.authenticate_callback(kind, body, headers, credentials, self._callback_secret(stored))
        except ForgedCallback:
            raise Refused(domain.FORGED_SIGNATURE, "the callback's authentication failed") from None
        if domain.confirm_by_query(provider):
            result = await self._confirm_by_query(adapter, credentials, stored)
        return await self._apply(adapter, kind, stored, result)

    async def _payment_of(self, merchant_id: str, provider: str, result: CallbackResult) -> Stored | None:
        """The merchant's payment a callback is about: by the request id it names, or (Orange: it names
        none) by the lookup key of the secret it presents."""
        if result.provider_request_id:
            return await self.store.by_request(merchant_id, provider, result.provider_request_id)
        return await self.store.by_callback_secret(merchant_id, provider,
                                                   result.extra.get(CALLBACK_SECRET_LOOKUP, ""))

    def _parse(self, adapter: ProviderAdapter, kind: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        if len(body) > MAX_BODY_BYTES:
            raise Refused(domain.MALFORMED, "body too large")
        try:
            result = adapter.parse_callback(kind, body, headers)
        except MalformedCallback:
            raise Refused(domain.MALFORMED, "not the provider's documented shape") from None
        if result.amount is not None and not (0 <= result.amount < MAX_PROVIDER_AMOUNT
                                              and result.amount.as_tuple().exponent >= -6):  # type: ignore[operator]
            raise Refused(domain.MALFORMED, "the amount is out of range")
        if len(result.dedupe_key) > 200 or len(result.provider_request_id) > 200:
            raise Refused(domain.MALFORMED, "an identifier is too long")
        return result

    async def _credentials(self, adapter: ProviderAdapter, outlet_id: str, provider: str) -> ProviderCredentials | None:
        try:
            return await self.access.credentials(outlet_id, provider, adapter)
        except Fault:
            return None  # not configured any more: the adapter checks what it can without them

    def _callback_secret(self, stored: Stored) -> str:
        if stored.callback_secret_sealed is None:
            return ""
        try:
            return self.box.open(stored.callback_secret_sealed, stored.payment.id.encode())
        except SecretBoxError:
            return ""

    async def _confirm_by_query(self, adapter: ProviderAdapter, credentials: ProviderCredentials | None,
                                stored: Stored) -> CallbackResult:
        """What the provider's status API says about the payment, in place of the notification's claim:
        its dedupe key is the receipt, else "<pay_token>:<STATUS>" (one per state the payment reaches)."""
        if credentials is None:
            raise Unavailable("the provider is not configured any more: cannot confirm the notification")
        try:
            confirmed = await self.query(adapter, credentials, stored)
        except (ProviderError, httpx.HTTPError):
            # Not refused: the provider notifies again, or the reconciler asks later.
            raise Unavailable("could not confirm the notification with the provider; retry",
                              reason="PROVIDER_UNAVAILABLE") from None
        # The status API's word replaces the notification's (a pending answer changes nothing yet: the
        # reconciler asks again later). Our own request id, so that the dedupe key never lacks it.
        return replace(confirmed, provider_request_id=stored.payment.provider_request_id,
                       result_code=confirmed.result_code or confirmed.status.value.upper())

    async def _apply(self, adapter: ProviderAdapter, kind: str, stored: Stored, result: CallbackResult) -> CallbackAnswer:
        provider, now = stored.payment.provider, self.clock()

        def decide(current: Payment) -> tuple[Change | None, str]:
            change = domain.apply_status(current, result.status, reason=result.reason,
                                         provider_reference=result.provider_transaction_id,
                                         confirmed_amount=result.amount, now=now)
            if change is None:
                return None, "ignored"
            return change, domain.accepted_outcome(provider, kind, result.status, change.payment.amount_mismatch)

        callback = CallbackRow(provider, kind, result.dedupe_key, result.status.value, result.result_code)
        applied = await self.store.apply(stored.payment.id, decide, callback, _counted)
        log.info("payment callback", provider=provider, kind=kind, outcome=applied.outcome,
                 payment_id=stored.payment.id,
                 status=applied.payment.status.value if applied.payment is not None else "")
        if applied.change is not None:
            self.on_change()
            await self.follow_up.after_change(applied.change, stored.sale)
        return adapter.callback_answer(kind, True)

    async def _c2b_target(self, merchant_id: str, outlet_id: str, target: domain.PaymentTarget
                          ) -> domain.PaymentTarget:
        """A UUID account reference is an invoice id, or else the client_invoice_id of a sale (the POS SDK's
        are UUIDs too, and the sale may not be sealed yet): the ledger says which. If it cannot be asked
        now, the reference stays an invoice id and RecordPayment's retries settle it."""
        if not target.invoice_id:
            return target
        try:
            found = await self.follow_up.ledger.find_invoice(merchant_id, outlet_id, invoice_id=target.invoice_id)
        except grpc.RpcError:
            return target
        return target if found is not None else domain.PaymentTarget(client_invoice_id=target.invoice_id)

    async def _c2b(self, adapter: ProviderAdapter, merchant_id: str, kind: str, result: CallbackResult,
                   body: bytes, headers: Mapping[str, str]) -> CallbackAnswer:
        """A customer paid the merchant's paybill/till with our reference as the account number."""
        settings = await self.store.merchant_settings(merchant_id, domain.MPESA)
        by_code: dict[str, Settings] = {}
        for row in settings:
            for name in ("short_code", "till_number"):
                if row.settings.get(name):
                    by_code.setdefault(row.settings[name], row)
        outlet_settings = by_code.get(result.short_code.strip()) if result.short_code else None
        target = domain.c2b_reference(result.bill_reference)
        if outlet_settings is not None and not domain.source_allowed(headers.get("x-forwarded-for", ""),
                                                                     outlet_settings.callback_source_cidrs):
            raise Refused(domain.SOURCE_REFUSED, "source address not allowed")
        if kind == domain.C2B_VALIDATION:
            accepted = outlet_settings is not None and target is not None and result.amount is not None
            await self.store.count(domain.MPESA, domain.ACCEPTED if accepted else domain.UNKNOWN_TRANSACTION)
            log.info("payment callback", provider=domain.MPESA, kind=kind,
                     outcome=domain.ACCEPTED if accepted else "rejected")
            return adapter.callback_answer(kind, accepted, "" if accepted else "unknown account or short code")
        if outlet_settings is None or target is None:
            raise Refused(domain.UNKNOWN_TRANSACTION, "no outlet with this short code, or an unknown account")
        if result.amount is None or result.amount <= 0 or not result.provider_transaction_id:
            raise Refused(domain.MALFORMED, "a C2B confirmation needs an amount and a transaction id")
        target = await self._c2b_target(merchant_id, outlet_settings.outlet_id, target)
        credentials = await self._credentials(adapter, outlet_settings.outlet_id, domain.MPESA)
        try:
            adapter.authenticate_callback(kind, body, headers, credentials, "")
        except ForgedCallback:
            raise Refused(domain.FORGED_SIGNATURE, "the callback's authentication failed") from None
        payment_id = str(uuid.uuid4())
        phone = result.phone if result.phone.isdigit() else ""
        new = NewPayment(
            id=payment_id, merchant_id=merchant_id, outlet_id=outlet_settings.outlet_id, provider=domain.MPESA,
            client_payment_id=f"c2b:{result.provider_transaction_id}"[:64], amount=result.amount,
            currency=C2B_CURRENCY, phone_sealed=self.box.seal(phone, payment_id.encode()),
            phone_masked=domain.mask_phone(phone), invoice_id=target.invoice_id,
            client_invoice_id=target.client_invoice_id, sale=None)
        now = self.clock()

        def decide(current: Payment) -> tuple[Change | None, str]:
            change = domain.apply_status(current, PaymentStatus.CONFIRMED, reason=result.reason,
                                         provider_reference=result.provider_transaction_id,
                                         confirmed_amount=result.amount, now=now)
            return change, domain.ACCEPTED if change is not None else "ignored"

        callback = CallbackRow(domain.MPESA, kind, result.dedupe_key, PaymentStatus.CONFIRMED.value, result.result_code)
        applied = await self.store.record_c2b(new, result.provider_transaction_id, callback, decide, _counted)
        log.info("payment callback", provider=domain.MPESA, kind=kind, outcome=applied.outcome,
                 payment_id=applied.payment.id if applied.payment is not None else "")
        if applied.change is not None:
            self.on_change()
            await self.follow_up.after_change(applied.change, None)
        return adapter.callback_answer(kind, True)
