"""What happens after a payment changes, and the background job that makes sure it did.

`FollowUp`, straight after a change commits: tell the ledger (RecordPayment) and, for a confirmed
pay-first payment, seal its sale (SealSaleForPayment, idempotent in the ledger on (outlet,
client_invoice_id): however many callbacks and replicas try, the sale is sealed once).

`Reconciler`, every FISCAL_PAYMENTS_RECONCILE_EVERY_SECONDS: asks the provider about payments still
pending after FISCAL_PAYMENTS_RECONCILE_AFTER_SECONDS (the callback never came) and expires those still
pending after FISCAL_PAYMENTS_EXPIRE_AFTER_SECONDS; every FISCAL_PAYMENTS_SEAL_RETRY_SECONDS it retries
what the ledger has not heard yet (the ledger was unavailable, or this process died after the commit).
Replicas share the work: rows are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import structlog

from services.payments import domain
from services.payments.credentials import ProviderAccess
from services.payments.domain import Change, Payment
from services.payments.ledger_client import LedgerClient, LedgerRefused, LedgerUnavailable
from services.payments.providers.base import (
    CallbackResult,
    Collection,
    PaymentStatus,
    ProviderAdapter,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.registry import ProviderRegistry, ProviderUnavailable
from services.payments.store import CallbackRow, PaymentStore, Stored
from services.runtime.config import env_float
from services.runtime.faults import Fault
from services.runtime.secret_box import SecretBox, SecretBoxError

log = structlog.get_logger()

BATCH = 50
QUERY_CONCURRENCY = 8


@dataclass(frozen=True)
class ReconcileSettings:
    reconcile_after_seconds: float = 60.0
    reconcile_every_seconds: float = 15.0
    expire_after_seconds: float = 900.0
    seal_retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        for name in ("reconcile_after_seconds", "reconcile_every_seconds", "expire_after_seconds",
                     "seal_retry_seconds"):
            if not 0 < getattr(self, name) <= 86_400:
                raise SystemExit(f"payments: {name} must be more than 0 and at most a day")

    @classmethod
    def from_env(cls) -> ReconcileSettings:
        return cls(reconcile_after_seconds=env_float("FISCAL_PAYMENTS_RECONCILE_AFTER_SECONDS", 60.0),
                   reconcile_every_seconds=env_float("FISCAL_PAYMENTS_RECONCILE_EVERY_SECONDS", 15.0),
                   expire_after_seconds=env_float("FISCAL_PAYMENTS_EXPIRE_AFTER_SECONDS", 900.0),
                   seal_retry_seconds=env_float("FISCAL_PAYMENTS_SEAL_RETRY_SECONDS", 2.0))


def open_phone(box: SecretBox, stored: Stored) -> str:
    if stored.phone_sealed is None:
        return ""
    try:
        return box.open(stored.phone_sealed, stored.payment.id.encode())
    except SecretBoxError:
        return ""


def collection_of(payment: Payment, phone: str, callback_url: str) -> Collection:
    """The collection as it was asked of the provider (for a status query, or the initiation itself)."""
    reference = payment.client_invoice_id or payment.invoice_id or payment.id
    return Collection(payment_id=payment.id, amount=payment.amount, currency=payment.currency, phone=phone,
                      account_reference=reference[:12], description=f"Payment {reference}"[:100],
                      callback_url=callback_url)


class ProviderWork:
    """What the callback processor and the reconciler share: the store, the providers (adapters, the
    outlets' credentials, the HTTP client), the follow-up after a change, and the outbox relay's wake-up."""

    def __init__(self, store: PaymentStore, registry: ProviderRegistry, access: ProviderAccess, box: SecretBox,
                 http: httpx.AsyncClient, follow_up: FollowUp, on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.store = store
        self.registry = registry
        self.access = access
        self.box = box
        self.http = http
        self.follow_up = follow_up
        self.on_change = on_change  # the outbox relay's wake-up
        self.clock = clock

    async def query(self, adapter: ProviderAdapter, credentials: ProviderCredentials, stored: Stored) -> CallbackResult:
        """The provider's status answer about a payment (ProviderError, httpx.HTTPError when it cannot say)."""
        return await adapter.query_status(self.http, credentials, stored.payment.provider_request_id,
                                          collection_of(stored.payment, open_phone(self.box, stored), ""))


class FollowUp:
    def __init__(self, store: PaymentStore, ledger: LedgerClient):
        self.store = store
        self.ledger = ledger

    async def after_change(self, change: Change, sale: bytes | None) -> None:
        """Best effort, straight after the commit: what fails here is retried by the Reconciler."""
        payment = change.payment
        if change.seal_sale and sale is not None:
            await self.seal(payment, sale)
        if change.record_in_ledger:
            await self.record(payment, payment.ledger_version + 1)

    async def record(self, payment: Payment, version: int) -> bool:
        try:
            recorded = await self.ledger.record_payment(payment)
        except LedgerUnavailable:
            log.info("ledger unavailable: the payment is recorded later", payment_id=payment.id)
            return False
        except LedgerRefused as refused:
            log.error("the ledger refused a payment record; retried later", payment_id=payment.id,
                      code=refused.code, detail=refused.message)
            return False
        if not recorded.invoice_found and not payment.invoice_id:
            # Held by the ledger until the till seals the sale: asked again later, so that the payment
            # names its invoice once there is one.
            await self.store.mark_held(payment.id, version)
        else:
            await self.store.mark_recorded(payment.id, version, recorded.invoice_id)
        return True

    async def seal(self, payment: Payment, sale: bytes) -> None:
        try:
            invoice_id = await self.ledger.seal_sale(payment, sale)
        except LedgerUnavailable:
            await self.store.mark_seal_retrying(payment.id)
            log.info("ledger unavailable: the pay-first sale is sealed later", payment_id=payment.id)
            return
        except LedgerRefused as refused:
            log.warning("the ledger refused to seal a pay-first sale", payment_id=payment.id, code=refused.code)
            refused_payment = await self.store.mark_seal_refused(
                payment.id, f"the sale was not sealed ({refused.code}): {refused.message}")
            if refused_payment is not None:
                await self.record(refused_payment, refused_payment.ledger_version)
            return
        if await self.store.mark_sealed(payment.id, invoice_id) is not None:
            log.info("pay-first sale sealed", payment_id=payment.id, invoice_id=invoice_id)


class Reconciler(ProviderWork):
    def __init__(self, store: PaymentStore, registry: ProviderRegistry, access: ProviderAccess, box: SecretBox,
                 http: httpx.AsyncClient, follow_up: FollowUp, settings: ReconcileSettings,
                 on_change: Callable[[], None] = lambda: None, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        super().__init__(store, registry, access, box, http, follow_up, on_change, clock)
        self.settings = settings

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_query = loop.time()
        log.info("payments reconciler started")
        while not stopping.is_set():
            try:
                if loop.time() >= next_query:
                    next_query = loop.time() + self.settings.reconcile_every_seconds
                    await self.query_due()
                await self.retry_seals()
                await self.retry_ledger()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database or a peer is down: try again next round
                log.warning("payments reconciler round failed", error=type(exc).__name__)
            pause = min(self.settings.seal_retry_seconds, max(next_query - loop.time(), 0.05))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause)
        log.info("payments reconciler stopped")

    async def query_due(self) -> int:
        """Ask the provider about pending payments whose callback is late; expire the ones too old."""
        due = await self.store.claim_due_queries(self.settings.reconcile_after_seconds,
                                                 self.settings.reconcile_every_seconds, BATCH)
        gate = asyncio.Semaphore(QUERY_CONCURRENCY)

        async def one(stored: Stored) -> None:
            async with gate:
                try:
                    await self.settle(stored)
                except Exception as exc:  # noqa: BLE001 - one payment's trouble does not stop the others
                    log.warning("reconciling a payment failed", payment_id=stored.payment.id,
                                error=type(exc).__name__)

        await asyncio.gather(*(one(stored) for stored in due))
        return len(due)

    async def settle(self, stored: Stored) -> None:
        payment = stored.payment
        result_status, reason, reference, amount, dedupe, code = None, "", "", None, "", ""
        if payment.provider_request_id:
            try:
                adapter = self.registry.adapter(payment.provider)
                credentials: ProviderCredentials = await self.access.credentials(payment.outlet_id, payment.provider,
                                                                                 adapter)
                result = await self.query(adapter, credentials, stored)
            except (ProviderError, ProviderUnavailable, Fault, httpx.HTTPError) as exc:
                log.info("status query failed", payment_id=payment.id, provider=payment.provider,
                         error=type(exc).__name__)
            else:
                if result.status is not PaymentStatus.PENDING:
                    result_status, reason, reference = result.status, result.reason, result.provider_transaction_id
                    amount, dedupe, code = result.amount, result.dedupe_key, result.result_code
        elif (self.clock() - payment.created_at).total_seconds() >= self.settings.reconcile_after_seconds:
            # Inserted, never initiated (the process stopped in between): no callback can match it.
            result_status, reason = PaymentStatus.FAILED, "the initiation did not complete; start a new payment"
        if result_status is None and domain.expired(payment, self.clock(), self.settings.expire_after_seconds):
            result_status = PaymentStatus.EXPIRED
            reason = f"no confirmation within {round(self.settings.expire_after_seconds)} s"
        if result_status is None:
            return
        callback = CallbackRow(payment.provider, "query", dedupe, result_status.value, code, source="query") \
            if dedupe else None
        status, now = result_status, self.clock()

        def decide(current: Payment) -> tuple[Change | None, str]:
            change = domain.apply_status(current, status, reason=reason, provider_reference=reference,
                                         confirmed_amount=amount, now=now)
            return change, domain.ACCEPTED if change is not None else "ignored"

        applied = await self.store.apply(payment.id, decide, callback)
        if applied.change is not None:
            log.info("payment settled by reconciliation", payment_id=payment.id, provider=payment.provider,
                     status=applied.change.payment.status.value)
            self.on_change()
            await self.follow_up.after_change(applied.change, stored.sale)

    async def retry_ledger(self) -> int:
        due = await self.store.claim_ledger_due(self.settings.seal_retry_seconds, BATCH * 2)
        for stored in due:
            if not await self.follow_up.record(stored.payment, stored.payment.ledger_version):
                break  # the ledger is down or refusing: the rest waits for the next round
        return len(due)

    async def retry_seals(self) -> int:
        due = await self.store.claim_seals_due(self.settings.seal_retry_seconds, BATCH)
        for stored in due:
            if stored.sale is not None and not stored.payment.amount_mismatch:
                await self.follow_up.seal(stored.payment, stored.sale)
        return len(due)
