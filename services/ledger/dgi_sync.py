"""DGI upload sync, the pure part: settings, which documents and how many at once, the retry schedule,
the DGI document an invoice or credit note becomes, and what an upload's outcome does to a document's
sync state. No I/O here: services/ledger/dgi_client.py talks to the DGI, services/ledger/store.py keeps
the state (ledger.dgi_sync), and DgiSyncWorker (below) drives both as a ledger background job.

A document's sync state: `pending` (not uploaded yet, or a transient failure: retried later), `synced`
(the DGI confirmed it: its uid, code and counters are kept) or `failed` (the DGI refused it, with its
reason; or retries ran out when FISCAL_DGI_MAX_ATTEMPTS is set). The worker never runs on the seal
path: it finds sealed documents itself, in seq order.

Re-uploads are idempotent at the DGI by `documentNumber` (our fiscal number): the same document sent
again answers the same uid, and confirming an already-confirmed uid answers the same code without
counting it again. So a worker that crashes between confirming and recording the answer loses
nothing and double-counts nothing when the document is taken again after its lease ran out.

Reports (X/Z, issue #10) do not exist yet: a sync row has a `kind` ("invoice", "credit_note"; later
"report") so that they can join the same table and worker.

Environment (services.runtime.config):
  FISCAL_DGI_URL            the DGI's base URL (e-MCF style; `.../api` is appended). Unset: no sync worker.
  FISCAL_DGI_TOKEN          the bearer token (a secret only the ledger gets).
  FISCAL_DGI_IFU            the taxpayer number (IFU) the token belongs to, put on every document as the
                            seller's; unset: the outlet's taxpayer_id.
  FISCAL_DGI_BATCH (20)     documents taken per cycle.
  FISCAL_DGI_POLL_SECONDS (2)            pause when nothing is due.
  FISCAL_DGI_RETRY_BASE_SECONDS (5)      first retry delay; doubles per attempt, with jitter.
  FISCAL_DGI_RETRY_MAX_SECONDS (3600)    cap of the retry delay.
  FISCAL_DGI_TIMEOUT_SECONDS (10)        deadline of each DGI call.
  FISCAL_DGI_LEASE_SECONDS (120)         how long a taken batch is this replica's; another replica
                                         takes its documents only after that.
  FISCAL_DGI_MAX_ATTEMPTS (0)            give up (`failed`) after this many transient failures; 0: never.
  FISCAL_DGI_TAX_GROUPS                  JSON {"<our tax group>": "<DGI group A-F>"}; a group not in it
                                         maps by rate: exempt or 0 % -> "A", any VAT rate -> "B".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import structlog

from services.ledger.model import InvoiceBody, InvoiceRecord, OutboxEvent
from services.runtime.config import env_float, env_int, env_str

log = structlog.get_logger()

SYNC_STATUSES = ("pending", "synced", "failed")
DGI_GROUPS = frozenset("ABCDEF")
# Our payment methods (sealing.PAYMENT_METHODS) and the e-MCF's payment types.
DGI_PAYMENT_TYPES = {"cash": "ESPECES", "card": "CARTEBANCAIRE", "mpesa": "MOBILEMONEY",
                     "airtel_money": "MOBILEMONEY", "orange_money": "MOBILEMONEY", "bank_transfer": "VIREMENT",
                     "voucher": "AUTRE", "other": "AUTRE"}
DGI_TYPE_BY_KIND = {"invoice": "FV", "credit_note": "FA"}
REASON_MAX = 1000  # the webhook schema's limit on `reason`
ERROR_CODE_MAX = 128
IFU_LENGTH = 13


@dataclass(frozen=True)
class SyncSettings:
    url: str = ""
    token: str = ""
    ifu: str = ""
    batch: int = 20
    poll_seconds: float = 2.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    timeout_seconds: float = 10.0
    lease_seconds: float = 120.0
    max_attempts: int = 0
    tax_groups: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 500:
            raise SystemExit(f"FISCAL_DGI_BATCH must be from 1 to 500, got {self.batch}")
        for name in ("poll_seconds", "retry_base_seconds", "retry_max_seconds", "timeout_seconds", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise SystemExit(f"DGI sync: {name} must be more than 0")
        if self.retry_max_seconds < self.retry_base_seconds:
            raise SystemExit("FISCAL_DGI_RETRY_MAX_SECONDS must be at least FISCAL_DGI_RETRY_BASE_SECONDS")
        # A document's two calls must fit well inside the lease, or another replica could take it meanwhile.
        if self.lease_seconds < 4 * self.timeout_seconds:
            raise SystemExit("FISCAL_DGI_LEASE_SECONDS must be at least 4 x FISCAL_DGI_TIMEOUT_SECONDS")
        if self.max_attempts < 0:
            raise SystemExit("FISCAL_DGI_MAX_ATTEMPTS must not be negative")
        for ours, theirs in (self.tax_groups or {}).items():
            if theirs not in DGI_GROUPS:
                raise SystemExit(f"FISCAL_DGI_TAX_GROUPS: {ours!r} maps to {theirs!r}, not one of A-F")

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @classmethod
    def from_env(cls) -> SyncSettings:
        raw_groups = env_str("FISCAL_DGI_TAX_GROUPS", "")
        try:
            groups = json.loads(raw_groups) if raw_groups else None
        except ValueError:
            raise SystemExit("FISCAL_DGI_TAX_GROUPS must be a JSON object") from None
        if groups is not None and (not isinstance(groups, dict)
                                   or not all(isinstance(v, str) for v in groups.values())):
            raise SystemExit("FISCAL_DGI_TAX_GROUPS must be a JSON object of strings")
        return cls(url=env_str("FISCAL_DGI_URL", "").rstrip("/"), token=env_str("FISCAL_DGI_TOKEN", ""),
                   ifu=env_str("FISCAL_DGI_IFU", ""), batch=env_int("FISCAL_DGI_BATCH", 20),
                   poll_seconds=env_float("FISCAL_DGI_POLL_SECONDS", 2.0),
                   retry_base_seconds=env_float("FISCAL_DGI_RETRY_BASE_SECONDS", 5.0),
                   retry_max_seconds=env_float("FISCAL_DGI_RETRY_MAX_SECONDS", 3600.0),
                   timeout_seconds=env_float("FISCAL_DGI_TIMEOUT_SECONDS", 10.0),
                   lease_seconds=env_float("FISCAL_DGI_LEASE_SECONDS", 120.0),
                   max_attempts=env_int("FISCAL_DGI_MAX_ATTEMPTS", 0), tax_groups=groups)


# --- what the DGI answered ------------------------------------------------------------------------

class DgiRefused(Exception):
    """The DGI refused the document (an errorCode in the body, or a 4xx about it): final, not retried."""

    def __init__(self, code: str | None, reason: str):
        super().__init__(reason)
        self.code = code[:ERROR_CODE_MAX] if code else None
        self.reason = (reason or "refused by the DGI")[:REASON_MAX]


class DgiUnavailable(Exception):
    """A transient failure (503, timeout, connection refused or dropped, 5xx, a bad answer): retried later."""


@dataclass(frozen=True)
class Acknowledgement:
    """The DGI's answer to a confirmed document (its security elements)."""

    uid: str
    code: str  # codeMECeFDGI, "XXXX-XXXX-..."
    counters: str
    date_time: str


# --- the sync state of one document -----------------------------------------------------------------

@dataclass(frozen=True)
class SyncState:
    """A document's row in ledger.dgi_sync (or none yet: pending, 0 attempts)."""

    invoice_id: str
    status: str = "pending"
    attempts: int = 0
    dgi_uid: str = ""
    dgi_code: str = ""
    dgi_counters: str = ""
    dgi_error_code: str | None = None
    reason: str = ""
    next_attempt_at: datetime | None = None
    synced_at: datetime | None = None
    failed_at: datetime | None = None


@dataclass(frozen=True)
class Claimed:
    """A document a worker took (under its lease) for this cycle, with what it needs to upload it."""

    record: InvoiceRecord
    attempts: int  # uploads tried before this one
    original_code: str | None = None  # a credit note: its original's DGI code (None: not synced yet)
    original_status: str | None = None  # a credit note: its original's sync status


@dataclass(frozen=True)
class Outcome:
    """What to record for one document after an attempt."""

    status: str  # pending | synced | failed
    attempts: int
    next_attempt_at: datetime | None = None
    reason: str = ""
    dgi_error_code: str | None = None
    acknowledgement: Acknowledgement | None = None
    event: OutboxEvent | None = None
    # False: postponed without trying (a credit note waiting for its original; the rest of a batch after
    # the DGI was found unavailable)
    counts_attempt: bool = True


def retry_delay(attempts: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after `attempts` failed ones: base x 2^(attempts-1), capped, with
    "equal jitter" (half fixed, half random) so that replicas and documents spread out after an outage."""
    exponential = min(cap, base * 2 ** min(max(attempts, 1) - 1, 60))
    return exponential / 2 + rng() * exponential / 2


def format_time(moment: datetime) -> str:
    """The webhook schemas' timestamp: RFC 3339 UTC with milliseconds."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def success_event(record: InvoiceRecord, acknowledgement: Acknowledgement, attempts: int, now: datetime,
                  event_id: str) -> OutboxEvent:
    return OutboxEvent(
        event_id=event_id, event_type="invoice.sync.success", merchant_id=record.merchant_id,
        aggregate_id=record.id, outlet_id=record.outlet_id,
        payload={"invoice_id": record.id, "kind": record.kind, "outlet_id": record.outlet_id,
                 "fiscal_number": record.fiscal_number, "dgi_code": acknowledgement.code,
                 "attempts": attempts, "synced_at": format_time(now)})


def failed_event(record: InvoiceRecord, reason: str, error_code: str | None, attempts: int, now: datetime,
                 event_id: str) -> OutboxEvent:
    return OutboxEvent(
        event_id=event_id, event_type="invoice.sync.failed", merchant_id=record.merchant_id,
        aggregate_id=record.id, outlet_id=record.outlet_id,
        payload={"invoice_id": record.id, "kind": record.kind, "outlet_id": record.outlet_id,
                 "fiscal_number": record.fiscal_number, "reason": reason[:REASON_MAX] or "refused",
                 "dgi_error_code": error_code, "attempts": max(attempts, 1), "failed_at": format_time(now)})


def synced(claimed: Claimed, acknowledgement: Acknowledgement, now: datetime, event_id: str) -> Outcome:
    attempts = claimed.attempts + 1
    return Outcome("synced", attempts, acknowledgement=acknowledgement,
                   event=success_event(claimed.record, acknowledgement, attempts, now, event_id))


def refused(claimed: Claimed, error: DgiRefused, now: datetime, event_id: str) -> Outcome:
    attempts = claimed.attempts + 1
    return Outcome("failed", attempts, reason=error.reason, dgi_error_code=error.code,
                   event=failed_event(claimed.record, error.reason, error.code, attempts, now, event_id))


def unavailable(claimed: Claimed, error: Exception, settings: SyncSettings, now: datetime, event_id: str,
                rng: Callable[[], float] = random.random) -> Outcome:
    """A transient failure: pending with the next attempt later, or failed once FISCAL_DGI_MAX_ATTEMPTS ran out."""
    attempts = claimed.attempts + 1
    reason = (str(error) or type(error).__name__)[:REASON_MAX]
    if settings.max_attempts and attempts >= settings.max_attempts:
        reason = f"gave up after {attempts} attempts: {reason}"[:REASON_MAX]
        return Outcome("failed", attempts, reason=reason,
                       event=failed_event(claimed.record, reason, None, attempts, now, event_id))
    delay = retry_delay(attempts, settings.retry_base_seconds, settings.retry_max_seconds, rng)
    return Outcome("pending", attempts, next_attempt_at=now + timedelta(seconds=delay), reason=reason)


def blocked_by_original(claimed: Claimed, settings: SyncSettings, now: datetime, event_id: str) -> Outcome | None:
    """A credit note needs its original's DGI code (its `reference`). None: it can go now. Original
    failed: the credit note fails too (the DGI would refuse it). Original not synced yet: wait, without
    counting an attempt."""
    if claimed.record.kind != "credit_note" or claimed.original_code:
        return None
    if claimed.original_status == "failed":
        reason = "its original invoice was not accepted by the DGI"
        attempts = max(claimed.attempts, 1)
        return Outcome("failed", attempts, reason=reason,
                       event=failed_event(claimed.record, reason, None, attempts, now, event_id))
    return Outcome("pending", claimed.attempts, counts_attempt=False,
                   next_attempt_at=now + timedelta(seconds=settings.retry_base_seconds),
                   reason="waiting for its original invoice to be synced")


# --- the DGI document ------------------------------------------------------------------------------

class NotMappable(ValueError):
    """The document cannot be expressed as a DGI document (refused locally, as a DGI refusal would be)."""


def dgi_tax_group(code: str, rate: str, mapping: Mapping[str, str] | None) -> str:
    """Our tax group's DGI group: the configured one, else by rate (exempt or 0 % -> A, VAT -> B)."""
    if mapping and code in mapping:
        return mapping[code]
    if not rate or Decimal(rate) == 0:
        return "A"
    return "B"


def _number(text: str) -> Decimal:
    """A decimal string of the signed body as a JSON number (no exponent, trailing zeros dropped)."""
    value = Decimal(text)
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def dgi_document(record: InvoiceRecord, settings: SyncSettings, original_code: str | None = None) -> dict[str, Any]:
    """The e-MCF document for a sealed invoice or credit note, from its signed body only (so the same
    document always gives the same bytes: the DGI's duplicate rule depends on it)."""
    body: InvoiceBody = record.invoice_body()
    dgi_type = DGI_TYPE_BY_KIND.get(record.kind)
    if dgi_type is None:
        raise NotMappable(f"no DGI document type for a {record.kind}")
    ifu = settings.ifu or body.taxpayer_id
    rates = {t.tax_group: t.rate for t in body.tax_totals}
    items = [{"name": (line.description or line.sku or "item")[:200], "price": _number(line.unit_price),
              "quantity": _number(line.quantity),
              "taxGroup": dgi_tax_group(line.tax_group, rates.get(line.tax_group, ""), settings.tax_groups)}
             for line in body.lines]
    document: dict[str, Any] = {
        "documentNumber": record.fiscal_number, "ifu": ifu, "type": dgi_type, "currency": record.currency,
        "operator": {"id": body.cashier_id, "name": body.cashier_id}, "items": items,
        "payment": [{"name": DGI_PAYMENT_TYPES.get(p.method, "AUTRE"), "amount": _number(p.amount)}
                    for p in body.payments],
    }
    buyer = dict(body.buyer)
    if buyer.get("name") or buyer.get("tax_id"):
        client: dict[str, str] = {}
        if buyer.get("name"):
            client["name"] = buyer["name"]
        tax_id = buyer.get("tax_id", "")
        if len(tax_id) == IFU_LENGTH and tax_id.isdigit():
            client["ifu"] = tax_id
        if buyer.get("phone") or buyer.get("email"):
            client["contact"] = buyer.get("phone") or buyer.get("email", "")
        if client:
            document["client"] = client
    if record.kind == "credit_note":
        if not original_code:
            raise NotMappable("a credit note needs its original's DGI code")
        document["reference"] = original_code.replace("-", "")
    return document


def document_json(document: dict[str, Any]) -> bytes:
    """The document's bytes: sorted keys and plain JSON numbers for the amounts, always the same."""

    def number(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        raise TypeError(f"{type(value).__name__} is not JSON")

    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=number).encode()


# --- the worker: a ledger background job (no SQL, no HTTP here: a store and a client are given) ------

# A document sealed with a lower seq may commit after one with a higher seq: discovery looks back this
# many seqs behind the highest it has seen, so such a late commit is still found.
DISCOVERY_LOOKBACK = 10_000
DISCOVERY_LIMIT = 1_000


class SyncStore(Protocol):
    """What the worker needs from the ledger's storage (services.ledger.store.LedgerStore)."""

    async def dgi_discover(self, after_seq: int, limit: int) -> int: ...

    async def dgi_highest_seq(self) -> int: ...

    async def dgi_claim(self, holder: str, lease_seconds: float, limit: int) -> list[Claimed]: ...

    async def dgi_record(self, holder: str, invoice_id: str, outcome: Outcome, now: datetime) -> bool: ...

    async def dgi_release(self, holder: str, invoice_ids: list[str]) -> None: ...


class Uploader(Protocol):
    async def upload(self, document: dict[str, Any]) -> Acknowledgement: ...


def postponed(claimed: Claimed, until: datetime) -> Outcome:
    """Not tried: the DGI was unavailable for an earlier document of the batch. No attempt is counted."""
    return Outcome("pending", claimed.attempts, next_attempt_at=until, counts_attempt=False,
                   reason="postponed: the DGI was unavailable")


class DgiSyncWorker:
    """Uploads sealed documents to the DGI. Every ledger replica runs one; the lease and SKIP LOCKED
    share the documents between them. `run(stopping)` is a Mounted.background job."""

    def __init__(self, store: SyncStore, uploader: Uploader, settings: SyncSettings, holder: str,
                 clock: Callable[[], datetime], monotonic: Callable[[], float],
                 new_event_id: Callable[[], str], rng: Callable[[], float] = random.random):
        self.store, self.uploader, self.settings, self.holder = store, uploader, settings, holder
        self.clock, self.monotonic, self.new_event_id, self.rng = clock, monotonic, new_event_id, rng
        self.highest_seen: int | None = None  # None: not scanned yet (the first scan looks at everything)

    async def discover(self) -> None:
        if self.highest_seen is None:
            await self.store.dgi_discover(0, DISCOVERY_LIMIT)
            self.highest_seen = await self.store.dgi_highest_seq()
            return
        highest = await self.store.dgi_discover(max(0, self.highest_seen - DISCOVERY_LOOKBACK), DISCOVERY_LIMIT)
        self.highest_seen = max(self.highest_seen, highest)

    async def cycle(self, stopping: asyncio.Event | None = None) -> int:
        """Find new documents, take a batch, upload each. Returns how many documents were taken."""
        await self.discover()
        started = self.monotonic()
        batch = await self.store.dgi_claim(self.holder, self.settings.lease_seconds, self.settings.batch)
        # Stop starting uploads while a document's two calls could still end after the lease.
        last_start = started + self.settings.lease_seconds - 2.5 * self.settings.timeout_seconds
        unavailable_until: datetime | None = None
        for index, claimed in enumerate(batch):
            if (stopping is not None and stopping.is_set()) or self.monotonic() > last_start:
                await self.store.dgi_release(self.holder, [c.record.id for c in batch[index:]])
                break
            if unavailable_until is not None:
                outcome = postponed(claimed, unavailable_until)
            else:
                outcome = await self.attempt(claimed)
                if outcome.status == "pending" and outcome.counts_attempt:
                    unavailable_until = outcome.next_attempt_at
            await self.store.dgi_record(self.holder, claimed.record.id, outcome, self.clock())
        return len(batch)

    async def attempt(self, claimed: Claimed) -> Outcome:
        now = self.clock()
        waiting = blocked_by_original(claimed, self.settings, now, self.new_event_id())
        if waiting is not None:
            return waiting
        try:
            document = dgi_document(claimed.record, self.settings, claimed.original_code)
            acknowledgement = await self.uploader.upload(document)
        except NotMappable as exc:
            return refused(claimed, DgiRefused(None, str(exc)), self.clock(), self.new_event_id())
        except DgiRefused as exc:
            return refused(claimed, exc, self.clock(), self.new_event_id())
        except DgiUnavailable as exc:
            return unavailable(claimed, exc, self.settings, self.clock(), self.new_event_id(), self.rng)
        return synced(claimed, acknowledgement, self.clock(), self.new_event_id())

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("dgi sync started", batch=self.settings.batch)
        failures = 0
        while not stopping.is_set():
            try:
                taken = await self.cycle(stopping)
                failures = 0
                pause = 0.0 if taken >= self.settings.batch else self.settings.poll_seconds
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away, say: try again later, never die
                failures += 1
                pause = retry_delay(failures, self.settings.poll_seconds, max(self.settings.poll_seconds, 30.0),
                                    self.rng)
                log.warning("dgi sync cycle failed", error=type(exc).__name__, failures=failures)
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), pause)
        log.info("dgi sync stopped")
