"""The payments schema (migrations/versions/0001_initial.py) over an async SQLAlchemy engine.

Every query is filtered by merchant where a caller's data is read, so another merchant's id is "not
found". What must change together changes in one transaction: a callback's row (its dedupe key), the
payment, the outbox event and the callback counter (`apply`). Background work (reconcile.py) claims rows
with `FOR UPDATE SKIP LOCKED` and moves a per-job `*_at` forward, so replicas share it without a lock
in memory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.payments import domain
from services.payments.domain import Change, Payment
from services.payments.providers.base import PaymentStatus

_PAYMENT_COLUMNS = """
    id::text AS id, seq, merchant_id, outlet_id, provider, client_payment_id, amount, currency, phone_sealed,
    phone_masked, status, status_reason, invoice_id, client_invoice_id, provider_reference, provider_request_id,
    merchant_request_id, confirmed_amount, amount_mismatch, payment_url, callback_secret_sealed, sale,
    sale_state, ledger_version, ledger_recorded_version, created_at, updated_at, confirmed_at, final_at"""


@dataclass(frozen=True)
class Stored:
    """A payment with what only the service itself reads: the sealed phone number and callback secret, and
    the pay-first sale (SealInvoiceRequest bytes)."""

    payment: Payment
    phone_sealed: bytes | None
    callback_secret_sealed: bytes | None
    sale: bytes | None


@dataclass(frozen=True)
class NewPayment:
    id: str
    merchant_id: str
    outlet_id: str
    provider: str
    client_payment_id: str
    amount: Decimal
    currency: str
    phone_sealed: bytes
    phone_masked: str
    invoice_id: str
    client_invoice_id: str
    sale: bytes | None


@dataclass(frozen=True)
class Settings:
    id: str
    merchant_id: str
    outlet_id: str
    provider: str
    enabled: bool
    api_base_url: str
    secrets_sealed: bytes | None
    credentials_hint: dict[str, str]
    settings: dict[str, str]
    callback_source_cidrs: list[str]
    updated_at: datetime


@dataclass(frozen=True)
class CallbackRow:
    """A callback (or a reconciliation answer) to apply: its dedupe key claims it once per provider."""

    provider: str
    kind: str
    dedupe_key: str
    status: str
    result_code: str
    source: str = "callback"  # or "query"


@dataclass(frozen=True)
class Applied:
    """What `apply` did: `duplicate` (the dedupe key was seen: nothing changed), else the change (None: an
    authentic callback that changed nothing, e.g. a late failure after a confirmation) and the payment."""

    duplicate: bool
    change: Change | None
    payment: Payment | None
    outcome: str = ""


Decide = Callable[[Payment], tuple[Change | None, str]]


def _payment(row) -> Stored:
    payment = Payment(
        id=row.id, seq=row.seq, merchant_id=row.merchant_id, outlet_id=row.outlet_id, provider=row.provider,
        client_payment_id=row.client_payment_id, amount=Decimal(row.amount), currency=row.currency,
        phone_masked=row.phone_masked, status=PaymentStatus(row.status), status_reason=row.status_reason,
        invoice_id=row.invoice_id, client_invoice_id=row.client_invoice_id, provider_reference=row.provider_reference,
        provider_request_id=row.provider_request_id, merchant_request_id=row.merchant_request_id,
        confirmed_amount=Decimal(row.confirmed_amount) if row.confirmed_amount is not None else None,
        amount_mismatch=row.amount_mismatch, payment_url=row.payment_url, sale_state=row.sale_state,
        created_at=row.created_at, updated_at=row.updated_at, confirmed_at=row.confirmed_at, final_at=row.final_at,
        ledger_version=row.ledger_version, ledger_recorded_version=row.ledger_recorded_version)
    return Stored(payment, bytes(row.phone_sealed) if row.phone_sealed is not None else None,
                  bytes(row.callback_secret_sealed) if row.callback_secret_sealed is not None else None,
                  bytes(row.sale) if row.sale is not None else None)


def _settings(row) -> Settings:
    return Settings(row.id, row.merchant_id, row.outlet_id, row.provider, row.enabled, row.api_base_url,
                    bytes(row.secrets_sealed) if row.secrets_sealed is not None else None,
                    dict(row.credentials_hint or {}), dict(row.settings or {}), list(row.callback_source_cidrs),
                    row.updated_at)


_SETTINGS_COLUMNS = """id::text AS id, merchant_id, outlet_id, provider, enabled, api_base_url, secrets_sealed,
    credentials_hint, settings, callback_source_cidrs, updated_at"""

_ENSURE_MERCHANT = sa.text("""
INSERT INTO payments.merchants (merchant_id, callback_token_hash, callback_token_sealed)
VALUES (:merchant_id, :token_hash, :token_sealed) ON CONFLICT (merchant_id) DO NOTHING""")
_MERCHANT_TOKEN = sa.text("SELECT callback_token_sealed FROM payments.merchants WHERE merchant_id = :merchant_id")
_MERCHANT_BY_TOKEN = sa.text("SELECT merchant_id FROM payments.merchants WHERE callback_token_hash = :token_hash")

_GET_SETTINGS = sa.text(f"""SELECT {_SETTINGS_COLUMNS} FROM payments.provider_settings
WHERE outlet_id = :outlet_id AND provider = :provider""")
_LIST_SETTINGS = sa.text(f"""SELECT {_SETTINGS_COLUMNS} FROM payments.provider_settings
WHERE merchant_id = :merchant_id AND outlet_id = :outlet_id ORDER BY provider""")
_MERCHANT_SETTINGS = sa.text(f"""SELECT {_SETTINGS_COLUMNS} FROM payments.provider_settings
WHERE merchant_id = :merchant_id AND provider = :provider ORDER BY outlet_id""")
# The row id is the sealed secrets' associated data: an update that seals under a new id moves the id too.
_UPSERT_SETTINGS = sa.text(f"""
INSERT INTO payments.provider_settings AS s (id, merchant_id, outlet_id, provider, enabled, api_base_url,
    secrets_sealed, credentials_hint, settings, callback_source_cidrs)
VALUES (CAST(:id AS uuid), :merchant_id, :outlet_id, :provider, :enabled, :api_base_url, :secrets_sealed,
        CAST(:hint AS jsonb), CAST(:settings AS jsonb), :cidrs)
ON CONFLICT (outlet_id, provider) DO UPDATE SET id = EXCLUDED.id, enabled = EXCLUDED.enabled,
    api_base_url = EXCLUDED.api_base_url, secrets_sealed = EXCLUDED.secrets_sealed,
    credentials_hint = EXCLUDED.credentials_hint, settings = EXCLUDED.settings,
    callback_source_cidrs = EXCLUDED.callback_source_cidrs, updated_at = now()
WHERE s.merchant_id = EXCLUDED.merchant_id
RETURNING {_SETTINGS_COLUMNS}""")

_CREATE_PAYMENT = sa.text(f"""
INSERT INTO payments.payments (id, merchant_id, outlet_id, provider, client_payment_id, amount, currency,
    phone_sealed, phone_masked, invoice_id, client_invoice_id, sale, sale_state)
VALUES (CAST(:id AS uuid), :merchant_id, :outlet_id, :provider, :client_payment_id, :amount, :currency,
        :phone_sealed, :phone_masked, :invoice_id, :client_invoice_id, :sale, :sale_state)
ON CONFLICT (outlet_id, client_payment_id) DO NOTHING
RETURNING {_PAYMENT_COLUMNS}""")
_BY_CLIENT_PAYMENT_ID = sa.text(f"""SELECT {_PAYMENT_COLUMNS} FROM payments.payments
WHERE outlet_id = :outlet_id AND client_payment_id = :client_payment_id""")
_GET_PAYMENT = sa.text(f"SELECT {_PAYMENT_COLUMNS} FROM payments.payments WHERE id = CAST(:id AS uuid) "
                       "AND merchant_id = :merchant_id")
_LOCK_PAYMENT = sa.text(f"SELECT {_PAYMENT_COLUMNS} FROM payments.payments WHERE id = CAST(:id AS uuid) FOR UPDATE")
_BY_REQUEST = sa.text(f"""SELECT {_PAYMENT_COLUMNS} FROM payments.payments
WHERE merchant_id = :merchant_id AND provider = :provider AND provider_request_id = :request_id""")
_LIST_PAYMENTS = sa.text(f"""SELECT {_PAYMENT_COLUMNS} FROM payments.payments
WHERE merchant_id = :merchant_id AND seq < :before
  AND (CAST(:outlet_id AS text) IS NULL OR outlet_id = :outlet_id)
  AND (CAST(:status AS text) IS NULL OR status = :status)
  AND (CAST(:invoice_id AS text) IS NULL OR invoice_id = :invoice_id)
  AND (CAST(:client_invoice_id AS text) IS NULL OR client_invoice_id = :client_invoice_id)
ORDER BY seq DESC LIMIT :limit""")
_BY_CALLBACK_SECRET = sa.text(f"""SELECT {_PAYMENT_COLUMNS} FROM payments.payments
WHERE merchant_id = :merchant_id AND provider = :provider AND callback_secret_lookup = :lookup LIMIT 2""")
_MARK_INITIATED = sa.text(f"""
UPDATE payments.payments SET provider_request_id = :request_id, merchant_request_id = :merchant_request_id,
    payment_url = :payment_url, callback_secret_sealed = :secret_sealed,
    callback_secret_lookup = :secret_lookup, updated_at = now()
WHERE id = CAST(:id AS uuid) AND provider_request_id = ''
RETURNING {_PAYMENT_COLUMNS}""")
_UPDATE_PAYMENT = sa.text("""
UPDATE payments.payments SET status = :status, status_reason = :status_reason, invoice_id = :invoice_id,
    provider_reference = :provider_reference, confirmed_amount = :confirmed_amount,
    amount_mismatch = :amount_mismatch, sale_state = :sale_state, confirmed_at = :confirmed_at,
    final_at = :final_at, updated_at = now(),
    ledger_version = ledger_version + CASE WHEN :record THEN 1 ELSE 0 END,
    ledger_retry_at = CASE WHEN :record THEN now() + :retry_delay ELSE ledger_retry_at END,
    seal_retry_at = CASE WHEN :seal THEN now() + :retry_delay ELSE seal_retry_at END
WHERE id = CAST(:id AS uuid)""")
_INSERT_CALLBACK = sa.text("""
INSERT INTO payments.callbacks (provider, kind, dedupe_key, merchant_id, payment_id, status, result_code, outcome,
    source)
VALUES (:provider, :kind, :dedupe_key, :merchant_id, CAST(:payment_id AS uuid), :status, :result_code, :outcome,
        :source)
ON CONFLICT (provider, dedupe_key) DO NOTHING RETURNING id""")
_COUNT = sa.text("""
INSERT INTO payments.callback_counts (provider, outcome, count) VALUES (:provider, :outcome, 1)
ON CONFLICT (provider, outcome) DO UPDATE SET count = payments.callback_counts.count + 1""")
_COUNTS = sa.text("SELECT provider, outcome, count AS n FROM payments.callback_counts ORDER BY provider, outcome")
_OUTBOX = sa.text("""
INSERT INTO payments.outbox (event_id, event_type, merchant_id, outlet_id, payload)
VALUES (CAST(:event_id AS uuid), :event_type, CAST(:merchant_id AS uuid), CAST(:outlet_id AS uuid),
        CAST(:payload AS jsonb))""")

_CLAIM_QUERIES = sa.text(f"""
UPDATE payments.payments SET query_at = now() + :every, query_count = query_count + 1
WHERE id IN (SELECT id FROM payments.payments
             WHERE status = 'pending' AND created_at <= now() - :after AND query_at <= now()
             ORDER BY query_at LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING {_PAYMENT_COLUMNS}""")
_CLAIM_LEDGER = sa.text(f"""
UPDATE payments.payments SET ledger_retry_at = now() + :retry
WHERE id IN (SELECT id FROM payments.payments
             WHERE ledger_recorded_version < ledger_version AND ledger_retry_at <= now()
             ORDER BY ledger_retry_at LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING {_PAYMENT_COLUMNS}""")
_CLAIM_SEALS = sa.text(f"""
UPDATE payments.payments SET seal_retry_at = now() + :retry
WHERE id IN (SELECT id FROM payments.payments
             WHERE status = 'confirmed' AND sale_state IN ('waiting', 'retrying') AND seal_retry_at <= now()
             ORDER BY seal_retry_at LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING {_PAYMENT_COLUMNS}""")
_MARK_RECORDED = sa.text("""
UPDATE payments.payments SET ledger_recorded_version = GREATEST(ledger_recorded_version, :version),
    invoice_id = CASE WHEN invoice_id = '' THEN :invoice_id ELSE invoice_id END
WHERE id = CAST(:id AS uuid)""")
# The ledger holds the payment against a sale it has not sealed yet: ask again later (the delay doubles
# from the retry delay up to MAX_ATTACH_DELAY), and after MAX_ATTACH_CHECKS stop asking (the invoice
# still shows the payment when the sale is sealed: the ledger matches it by client_invoice_id).
_MARK_HELD = sa.text("""
UPDATE payments.payments SET attach_checks = attach_checks + 1,
    ledger_recorded_version = CASE WHEN attach_checks + 1 >= :max_checks
        THEN GREATEST(ledger_recorded_version, :version) ELSE ledger_recorded_version END,
    ledger_retry_at = now() + make_interval(secs => LEAST(:base * power(2, attach_checks), :cap))
WHERE id = CAST(:id AS uuid) AND ledger_recorded_version < :version""")
MAX_ATTACH_CHECKS = 40
MAX_ATTACH_DELAY_SECONDS = 900.0
_MARK_SEALED = sa.text(f"""
UPDATE payments.payments SET sale_state = 'sealed', invoice_id = :invoice_id, updated_at = now()
WHERE id = CAST(:id AS uuid) AND sale_state IN ('waiting', 'retrying')
RETURNING {_PAYMENT_COLUMNS}""")
_MARK_SEAL_RETRYING = sa.text("""
UPDATE payments.payments SET sale_state = 'retrying', updated_at = now()
WHERE id = CAST(:id AS uuid) AND sale_state = 'waiting'""")
# The ledger refused the held sale: it stays unsealed; the payment is recorded against its
# client_invoice_id instead, so it shows if the till seals the sale itself.
_MARK_SEAL_REFUSED = sa.text(f"""
UPDATE payments.payments SET sale_state = 'not_sealed', status_reason = :reason, updated_at = now(),
    ledger_version = ledger_version + 1, ledger_retry_at = now()
WHERE id = CAST(:id AS uuid) AND sale_state IN ('waiting', 'retrying')
RETURNING {_PAYMENT_COLUMNS}""")


class PaymentStore:
    def __init__(self, engine: AsyncEngine, retry_delay_seconds: float = 2.0):
        self.engine = engine
        # Single statements: autocommit makes each one round trip, still atomic.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # After a change that the ledger must hear of, the background job waits this long before it
        # retries (the caller tries once straight after the commit).
        self.retry_delay = timedelta(seconds=retry_delay_seconds)

    async def _run(self, statement, **params) -> list[sa.Row]:
        async with self.autocommit.connect() as conn:
            result = await conn.execute(statement, params)
            return list(result.all()) if result.returns_rows else []

    async def ping(self) -> None:
        await self._run(sa.text("SELECT 1"))

    # Merchants (the callback route token)

    async def ensure_merchant(self, merchant_id: str, token_hash: bytes, token_sealed: bytes) -> bytes:
        """The merchant's sealed token: the one stored, or (first use) the one given."""
        async with self.engine.begin() as conn:
            await conn.execute(_ENSURE_MERCHANT, {"merchant_id": merchant_id, "token_hash": token_hash,
                                                  "token_sealed": token_sealed})
            return bytes((await conn.execute(_MERCHANT_TOKEN, {"merchant_id": merchant_id})).scalar_one())

    async def merchant_token_sealed(self, merchant_id: str) -> bytes | None:
        rows = await self._run(_MERCHANT_TOKEN, merchant_id=merchant_id)
        return bytes(rows[0].callback_token_sealed) if rows else None

    async def merchant_by_token(self, token_hash: bytes) -> str | None:
        rows = await self._run(_MERCHANT_BY_TOKEN, token_hash=token_hash)
        return rows[0].merchant_id if rows else None

    # Provider settings

    async def get_settings(self, outlet_id: str, provider: str) -> Settings | None:
        rows = await self._run(_GET_SETTINGS, outlet_id=outlet_id, provider=provider)
        return _settings(rows[0]) if rows else None

    async def list_settings(self, merchant_id: str, outlet_id: str) -> list[Settings]:
        return [_settings(row) for row in await self._run(_LIST_SETTINGS, merchant_id=merchant_id, outlet_id=outlet_id)]

    async def merchant_settings(self, merchant_id: str, provider: str) -> list[Settings]:
        """Every outlet's settings of the merchant for one provider (C2B: which outlet owns a short code)."""
        return [_settings(row) for row in await self._run(_MERCHANT_SETTINGS, merchant_id=merchant_id,
                                                           provider=provider)]

    async def put_settings(self, settings_id: str, merchant_id: str, outlet_id: str, provider: str, *, enabled: bool,
                           api_base_url: str, secrets_sealed: bytes | None, credentials_hint: dict[str, str],
                           settings: dict[str, str], callback_source_cidrs: Sequence[str]) -> Settings | None:
        """None only if the outlet's row belongs to another merchant (outlet ids are unique: it cannot)."""
        rows = await self._run(_UPSERT_SETTINGS, id=settings_id, merchant_id=merchant_id, outlet_id=outlet_id,
                               provider=provider, enabled=enabled, api_base_url=api_base_url,
                               secrets_sealed=secrets_sealed, hint=json.dumps(credentials_hint),
                               settings=json.dumps(settings), cidrs=list(callback_source_cidrs))
        return _settings(rows[0]) if rows else None

    # Payments

    async def create_payment(self, new: NewPayment) -> tuple[Stored, bool]:
        """(the payment, whether it was created now): an (outlet, client_payment_id) already used answers
        the payment stored then."""
        rows = await self._run(
            _CREATE_PAYMENT, id=new.id, merchant_id=new.merchant_id, outlet_id=new.outlet_id, provider=new.provider,
            client_payment_id=new.client_payment_id, amount=new.amount, currency=new.currency,
            phone_sealed=new.phone_sealed, phone_masked=new.phone_masked, invoice_id=new.invoice_id,
            client_invoice_id=new.client_invoice_id, sale=new.sale,
            sale_state=domain.WAITING if new.sale is not None else domain.NOT_APPLICABLE)
        if rows:
            return _payment(rows[0]), True
        existing = await self.by_client_payment_id(new.outlet_id, new.client_payment_id)
        if existing is None:  # deleted in between: cannot happen (nothing deletes payments)
            raise RuntimeError("a payment vanished between its insert and its read")
        return existing, False

    async def by_client_payment_id(self, outlet_id: str, client_payment_id: str) -> Stored | None:
        rows = await self._run(_BY_CLIENT_PAYMENT_ID, outlet_id=outlet_id, client_payment_id=client_payment_id)
        return _payment(rows[0]) if rows else None

    async def get_payment(self, merchant_id: str, payment_id: str) -> Stored | None:
        rows = await self._run(_GET_PAYMENT, id=payment_id, merchant_id=merchant_id)
        return _payment(rows[0]) if rows else None

    async def by_request(self, merchant_id: str, provider: str, provider_request_id: str) -> Stored | None:
        if not provider_request_id:
            return None
        rows = await self._run(_BY_REQUEST, merchant_id=merchant_id, provider=provider, request_id=provider_request_id)
        return _payment(rows[0]) if rows else None

    async def by_callback_secret(self, merchant_id: str, provider: str, lookup: str) -> Stored | None:
        """The payment whose callback secret (Orange's notif_token) has this lookup key; None if none, or
        (never in practice: random tokens) if two share it."""
        if not lookup:
            return None
        rows = await self._run(_BY_CALLBACK_SECRET, merchant_id=merchant_id, provider=provider, lookup=lookup)
        return _payment(rows[0]) if len(rows) == 1 else None

    async def list_payments(self, merchant_id: str, *, outlet_id: str | None, status: str | None,
                            invoice_id: str | None, client_invoice_id: str | None, before_seq: int | None,
                            limit: int) -> list[Payment]:
        """Newest first."""
        rows = await self._run(_LIST_PAYMENTS, merchant_id=merchant_id, outlet_id=outlet_id, status=status,
                               invoice_id=invoice_id, client_invoice_id=client_invoice_id,
                               before=before_seq if before_seq is not None else 2**63 - 1, limit=limit)
        return [_payment(row).payment for row in rows]

    async def mark_initiated(self, payment_id: str, *, provider_request_id: str, merchant_request_id: str,
                             payment_url: str, callback_secret_sealed: bytes | None,
                             callback_secret_lookup: str = "") -> Stored | None:
        rows = await self._run(_MARK_INITIATED, id=payment_id, request_id=provider_request_id,
                               merchant_request_id=merchant_request_id, payment_url=payment_url,
                               secret_sealed=callback_secret_sealed, secret_lookup=callback_secret_lookup)
        return _payment(rows[0]) if rows else None

    async def apply(self, payment_id: str, decide: Decide, callback: CallbackRow | None = None,
                    count_outcome: Callable[[str], str | None] | None = None) -> Applied:
        """In one transaction: lock the payment, `decide` its change (and the callback's outcome), claim the
        callback's dedupe key (taken: a duplicate, nothing changes), write the change and its outbox event,
        count the callback. `count_outcome(outcome)` names the counter to bump (None: none)."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(_LOCK_PAYMENT, {"id": payment_id})).all()
            if not rows:
                return Applied(False, None, None)
            payment = _payment(rows[0]).payment
            change, outcome = decide(payment)
            if callback is not None:
                claimed = (await conn.execute(_INSERT_CALLBACK, {
                    "provider": callback.provider, "kind": callback.kind, "dedupe_key": callback.dedupe_key,
                    "merchant_id": payment.merchant_id, "payment_id": payment.id, "status": callback.status,
                    "result_code": callback.result_code, "outcome": outcome, "source": callback.source})).all()
                if not claimed:
                    if count_outcome is not None and (counter := count_outcome(domain.DUPLICATE)):
                        await conn.execute(_COUNT, {"provider": callback.provider, "outcome": counter})
                    return Applied(True, None, payment, domain.DUPLICATE)
            if change is not None:
                await self._write_change(conn, change)
            if callback is not None and count_outcome is not None and (counter := count_outcome(outcome)):
                await conn.execute(_COUNT, {"provider": callback.provider, "outcome": counter})
        return Applied(False, change, change.payment if change is not None else payment, outcome)

    async def _write_change(self, conn: AsyncConnection, change: Change) -> None:
        p = change.payment
        await conn.execute(_UPDATE_PAYMENT, {
            "id": p.id, "status": p.status.value, "status_reason": p.status_reason, "invoice_id": p.invoice_id,
            "provider_reference": p.provider_reference, "confirmed_amount": p.confirmed_amount,
            "amount_mismatch": p.amount_mismatch, "sale_state": p.sale_state, "confirmed_at": p.confirmed_at,
            "final_at": p.final_at, "record": change.record_in_ledger, "seal": change.seal_sale,
            "retry_delay": self.retry_delay})
        if change.event_type is not None:
            await conn.execute(_OUTBOX, {
                "event_id": str(uuid.uuid4()), "event_type": change.event_type, "merchant_id": p.merchant_id,
                "outlet_id": p.outlet_id, "payload": json.dumps(domain.event_data(p), separators=(",", ":"))})

    async def record_c2b(self, new: NewPayment, provider_request_id: str, callback: CallbackRow,
                         decide: Decide, count_outcome: Callable[[str], str | None]) -> Applied:
        """A C2B confirmation (a customer paid our paybill/till with no request of ours): the callback's
        dedupe key, a new payment for it, its confirmation, the event and the counter, in one transaction."""
        async with self.engine.begin() as conn:
            claimed = (await conn.execute(_INSERT_CALLBACK, {
                "provider": callback.provider, "kind": callback.kind, "dedupe_key": callback.dedupe_key,
                "merchant_id": new.merchant_id, "payment_id": new.id, "status": callback.status,
                "result_code": callback.result_code, "outcome": domain.ACCEPTED, "source": callback.source})).all()
            if not claimed:
                if counter := count_outcome(domain.DUPLICATE):
                    await conn.execute(_COUNT, {"provider": callback.provider, "outcome": counter})
                return Applied(True, None, None, domain.DUPLICATE)
            rows = (await conn.execute(_CREATE_PAYMENT, {
                "id": new.id, "merchant_id": new.merchant_id, "outlet_id": new.outlet_id, "provider": new.provider,
                "client_payment_id": new.client_payment_id, "amount": new.amount, "currency": new.currency,
                "phone_sealed": new.phone_sealed, "phone_masked": new.phone_masked, "invoice_id": new.invoice_id,
                "client_invoice_id": new.client_invoice_id, "sale": None,
                "sale_state": domain.NOT_APPLICABLE})).all()
            if not rows:  # the same C2B transaction id already made a payment (its callback row says so)
                if counter := count_outcome(domain.DUPLICATE):
                    await conn.execute(_COUNT, {"provider": callback.provider, "outcome": counter})
                return Applied(True, None, None, domain.DUPLICATE)
            await conn.execute(_MARK_INITIATED, {"id": new.id, "request_id": provider_request_id,
                                                 "merchant_request_id": "", "payment_url": "", "secret_sealed": None,
                                                 "secret_lookup": ""})
            payment = _payment(rows[0]).payment
            change, outcome = decide(payment)
            if change is not None:
                await self._write_change(conn, change)
            if counter := count_outcome(outcome):
                await conn.execute(_COUNT, {"provider": callback.provider, "outcome": counter})
        return Applied(False, change, change.payment if change is not None else payment, outcome)

    async def count(self, provider: str, outcome: str) -> None:
        """A refused callback's counter (its own transaction: the refusal changes nothing else)."""
        await self._run(_COUNT, provider=provider, outcome=outcome)

    async def callback_counts(self) -> list[tuple[str, str, int]]:
        return [(row.provider, row.outcome, int(row.n)) for row in await self._run(_COUNTS)]

    # Background work

    async def claim_due_queries(self, after_seconds: float, every_seconds: float, limit: int) -> list[Stored]:
        """Pending payments older than `after_seconds`, not asked about for `every_seconds`."""
        rows = await self._run(_CLAIM_QUERIES, after=timedelta(seconds=after_seconds),
                               every=timedelta(seconds=every_seconds), limit=limit)
        return [_payment(row) for row in rows]

    async def claim_ledger_due(self, retry_seconds: float, limit: int) -> list[Stored]:
        rows = await self._run(_CLAIM_LEDGER, retry=timedelta(seconds=retry_seconds), limit=limit)
        return [_payment(row) for row in rows]

    async def claim_seals_due(self, retry_seconds: float, limit: int) -> list[Stored]:
        rows = await self._run(_CLAIM_SEALS, retry=timedelta(seconds=retry_seconds), limit=limit)
        return [_payment(row) for row in rows]

    async def mark_recorded(self, payment_id: str, version: int, invoice_id: str) -> None:
        await self._run(_MARK_RECORDED, id=payment_id, version=version, invoice_id=invoice_id)

    async def mark_held(self, payment_id: str, version: int) -> None:
        """The ledger recorded the payment against a sale not sealed yet: record it again later."""
        await self._run(_MARK_HELD, id=payment_id, version=version, max_checks=MAX_ATTACH_CHECKS,
                        base=self.retry_delay.total_seconds(), cap=MAX_ATTACH_DELAY_SECONDS)

    async def mark_sealed(self, payment_id: str, invoice_id: str) -> Payment | None:
        rows = await self._run(_MARK_SEALED, id=payment_id, invoice_id=invoice_id)
        return _payment(rows[0]).payment if rows else None

    async def mark_seal_retrying(self, payment_id: str) -> None:
        await self._run(_MARK_SEAL_RETRYING, id=payment_id)

    async def mark_seal_refused(self, payment_id: str, reason: str) -> Payment | None:
        rows = await self._run(_MARK_SEAL_REFUSED, id=payment_id, reason=reason[:domain.MAX_REASON_LENGTH])
        return _payment(rows[0]).payment if rows else None
