"""The seal path: validate, total, take a gapless number, sign, write invoice + chain + outbox
in one transaction, then commit the number. Pure domain logic: the counter, the signer and the
store come in through the small interfaces below (gRPC clients and SQL live elsewhere).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

import structlog
from opentelemetry import trace

from services.ledger import receipt
from services.ledger.access import Principal
from services.ledger.model import (
    CREDIT_NOTE_SERIES,
    INVOICE_SERIES,
    ChainMoved,
    DuplicateClientInvoice,
    DuplicateNumber,
    InvoiceRecord,
    OutboxEvent,
    Outlet,
    SealerStore,
)
from services.ledger.money import (
    MAX_AMOUNT,
    MAX_QUANTITY,
    MAX_QUANTITY_DECIMALS,
    MAX_UNIT_PRICE,
    GroupTotal,
    PricedLine,
    TaxGroup,
    compute_refund_totals,
    compute_totals,
    fmt,
    minor_units,
    parse_signed_positive,
    price_line,
    shown,
)
from services.ledger.request_bounds import (
    BUYER_MAX,
    CHOICE_MAX,
    DESCRIPTION_MAX,
    MAX_PAYMENTS,
    PAYMENT_REFERENCE_MAX,
    REASON_MAX,
    SKU_MAX,
    check_choice,
    check_text,
    check_timestamp_text,
    require_identifier,
    require_uuid,
)
from services.runtime.faults import AlreadyExists, FailedPrecondition, Fault, InvalidArgument, NotFound, Unavailable
from services.runtime.telemetry import tracer

log = structlog.get_logger()

PAYMENT_METHODS = {"cash", "card", "mpesa", "airtel_money", "orange_money", "bank_transfer", "voucher", "other"}
MAX_LINES = 1000
MAX_SOLD_AT_AGE = timedelta(days=30)
MAX_SOLD_AT_SKEW = timedelta(minutes=5)
SEAL_ATTEMPTS = 3
MAX_BATCH = 64  # seals of one outlet and series numbered, signed and written together (group commit)
# How long one replica may keep a counter by letting its commits ride on its next Allocate; then it
# commits in a call of its own, which wakes other replicas waiting for the counter: they get turns.
MAX_HOLD_SECONDS = 0.1


# --- what the seal path needs from the outside ----------------------------------------------------

@dataclass(frozen=True)
class Lease:
    lease_id: str
    number: int
    expires_at: datetime  # the counter's clock: display only, never compared with ours
    deadline: float  # on this process's time.monotonic(): counted from before Allocate was sent
    last: int = 0  # a range lease covers number .. last (0: the single number)

    @property
    def through(self) -> int:
        return max(self.last, self.number)


class NumberAllocator(Protocol):
    async def allocate(self, outlet_id: str, series: str, holder: str, count: int = 1,
                       commit_first: Lease | None = None) -> Lease:
        """A lease on the next number, or on the next `count` numbers (a range, committed together).
        `commit_first`: this caller's previous lease on the counter, written to the ledger: the counter
        commits it in the same step (the commit rides on the next allocation)."""
        ...

    async def commit(self, lease: Lease) -> None: ...
    async def release(self, lease: Lease, reason: str) -> None: ...
    async def resync(self, lease: Lease, reason: str) -> None:
        """Give the number back and set the counter to the ledger's chain head (it was ahead)."""
        ...


class Signer(Protocol):
    async def sign_batch(self, statement_texts: list[str]) -> list[tuple[bytes, str]]:
        """One (raw r||s ES256 signature over SHA-256(statement), key id) per statement, in order, from
        one call. The signing service parses and checks every statement before signing any."""
        ...


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


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the sealer -------------------------------------------------------------------------------------

class Sealer:
    def __init__(self, store: SealerStore, allocator: NumberAllocator, signer: Signer, *, authority_id: str,
                 public_url: str, outlets: Callable, clock: Callable[[], datetime] = utcnow,
                 lease_margin: timedelta = timedelta(milliseconds=500),
                 monotonic: Callable[[], float] = time.monotonic,
                 after_insert: Callable[[InvoiceRecord], Awaitable[None]] | None = None,
                 before_insert: Callable[[list[InvoiceRecord]], Awaitable[None]] | None = None):
        self.store = store
        self.allocator = allocator
        self.signer = signer
        self.authority_id = authority_id
        self.public_url = public_url
        self.outlets = outlets  # async (outlet_id) -> Outlet | None, cached by the caller
        self.clock = clock  # wall clock: seal times only, never lease checks
        self.lease_margin = lease_margin
        self.monotonic = monotonic  # lease deadlines
        self.after_insert = after_insert  # a test-only fault hook (see wiring); None in production
        self.before_insert = before_insert  # likewise: a batch held after its lease check, before its insert
        # (outlet, series) -> (number, hash) of the last entry this process wrote: the next seal of the
        # outlet usually links to it without a query. A hash never changes once written, so a stale
        # entry is simply not used (the number will not match).
        self._last_entry: dict[tuple[str, str], tuple[int, bytes]] = {}
        # (outlet, client_invoice_id) -> the answer of the copy of that request being sealed now.
        self._in_flight: dict[tuple[str, str], asyncio.Future[InvoiceRecord]] = {}
        # Group commit: (outlet, series) -> the seals waiting for the next batch, and the one task that
        # drains them (present while there is work).
        self._queues: dict[tuple[str, str], list[_Pending]] = {}
        self._drainers: dict[tuple[str, str], asyncio.Task] = {}
        # A batch's lease whose numbers are written while more seals wait: committed by the next Allocate.
        self._carried: dict[tuple[str, str], Lease] = {}
        self._holding_since: dict[tuple[str, str], float] = {}
        self.max_hold_seconds = MAX_HOLD_SECONDS
        self.max_batch = MAX_BATCH

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
        return await self._once(outlet.id, request.client_invoice_id, fingerprint,
                                lambda: self._group_commit(outlet, request, fingerprint, sale))

    async def _once(self, outlet_id: str, client_invoice_id: str, fingerprint: bytes,
                    seal: Callable[[], Awaitable[InvoiceRecord]]) -> InvoiceRecord:
        """Identical concurrent requests seal once: the first copy in this process seals, the others
        wait for its answer instead of taking a number and a signature of their own. (Across replicas,
        a look-up under the counter's lease does the same before anything is signed.)"""
        key = (outlet_id, client_invoice_id)
        while (first := self._in_flight.get(key)) is not None:
            try:
                return self._replay(await asyncio.shield(first), fingerprint)
            except Fault:
                raise
            except Exception:  # noqa: BLE001 - the first copy failed (e.g. 503): this copy tries itself
                existing = await self.store.invoice_by_client_id(outlet_id, client_invoice_id)
                if existing is not None:
                    return self._replay(existing, fingerprint)
        outcome: asyncio.Future[InvoiceRecord] = asyncio.get_running_loop().create_future()
        outcome.add_done_callback(_retrieve)
        self._in_flight[key] = outcome
        try:
            try:
                record = await seal()
            except _AlreadySealed as twin:
                record = twin.record
            outcome.set_result(record)
            return self._replay(record, fingerprint)
        except BaseException as exc:
            if not outcome.done():
                outcome.set_exception(exc if isinstance(exc, Exception) else _Interrupted())
            raise
        finally:
            del self._in_flight[key]

    async def _not_sealed_meanwhile(self, outlet_id: str, client_invoice_id: str) -> None:
        """Called under the number's lease, before signing. A twin sealed by another replica committed its
        insert before it gave up the lease this seal now holds, so it is visible here: answer with it
        rather than sign a second time (the number goes back unused)."""
        existing = await self.store.invoice_by_client_id(outlet_id, client_invoice_id)
        if existing is not None:
            raise _AlreadySealed(existing)

    def check_sale(self, outlet: Outlet, request: SaleRequest) -> dict:
        """The body seal_invoice would seal for this sale (validated, priced, totalled): no number, no signature."""
        return self._validate_sale(outlet, request)

    def _validate_sale(self, outlet: Outlet, request: SaleRequest) -> dict:
        require_identifier(request.pos_terminal_id, "pos_terminal_id")
        require_identifier(request.cashier_id, "cashier_id")
        if not request.currency:
            raise InvalidArgument("currency is required", field="currency")
        if request.currency != outlet.currency:
            raise InvalidArgument(f"currency {shown(request.currency)} is not this outlet's currency "
                                  f"({outlet.currency})", field="currency")
        if len(request.payments) > MAX_PAYMENTS:
            raise InvalidArgument(f"payments: at most {MAX_PAYMENTS} payments", field="payments")
        decimals = minor_units(outlet.currency)
        lines = self._price_lines(request.lines, outlet.tax_groups, decimals)
        totals = compute_totals(lines, outlet.tax_groups, decimals)
        payments = []
        for index, payment in enumerate(request.payments):
            name = f"payments[{index}]"
            check_choice(payment.method, f"{name}.method", PAYMENT_METHODS)
            amount = parse_signed_positive(payment.amount, f"{name}.amount", max_decimals=decimals, allow_zero=False,
                                           maximum=MAX_AMOUNT - 1)
            check_text(payment.reference, f"{name}.reference", PAYMENT_REFERENCE_MAX)
            payments.append({"method": payment.method, "amount": fmt(amount, decimals),
                             "reference": payment.reference})
        for key, value in request.buyer.items():
            if key not in BUYER_MAX:
                raise InvalidArgument(f"buyer.{shown(key)} is not a buyer field", field="buyer")
            check_text(value, f"buyer.{key}", BUYER_MAX[key])
        return {
            **self._totals_body(lines, totals, decimals),
            "payments": payments,
            # Each payment is below MAX_AMOUNT and there are at most MAX_PAYMENTS: the sum is exact.
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
            if not description or len(description) > DESCRIPTION_MAX:
                raise InvalidArgument(f"{name}.description must be 1-{DESCRIPTION_MAX} characters",
                                      field=f"{name}.description")
            check_text(description, f"{name}.description", DESCRIPTION_MAX)
            if not line.quantity:
                raise InvalidArgument(f"{name}.quantity is required", field=f"{name}.quantity")
            quantity = parse_signed_positive(line.quantity, f"{name}.quantity", max_decimals=MAX_QUANTITY_DECIMALS,
                                             allow_zero=False, maximum=MAX_QUANTITY)
            if not line.unit_price:
                raise InvalidArgument(f"{name}.unit_price is required", field=f"{name}.unit_price")
            unit_price = parse_signed_positive(line.unit_price, f"{name}.unit_price", max_decimals=decimals,
                                               allow_zero=True, maximum=MAX_UNIT_PRICE)
            group = groups.get(line.tax_group) if len(line.tax_group) <= CHOICE_MAX else None
            if group is None:
                known = ", ".join(sorted(groups)) or "none"
                raise InvalidArgument(f"{name}.tax_group {shown(line.tax_group)} is not one of this merchant's "
                                      f"tax groups ({known})", field=f"{name}.tax_group")
            check_text(line.sku, f"{name}.sku", SKU_MAX)
            priced.append(price_line(description, quantity, unit_price, group, line.sku, decimals,
                                     field=f"{name}.quantity"))
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
        check_timestamp_text(text, "sold_at")
        try:
            moment = receipt.parse_timestamp(text)
        except ValueError:
            raise InvalidArgument(f"sold_at must be an RFC 3339 time with a zone, got {shown(text)}",
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
        check_text(request.reason, "reason", REASON_MAX)
        decimals = minor_units(original.currency)
        original_body = original.body_fields()
        # The refund is priced at the original invoice's rates and labels, not the merchant's current ones.
        original_groups = _groups_of(original_body)
        if request.lines:
            for index, line in enumerate(request.lines[:MAX_LINES]):
                if line.tax_group not in original_groups:
                    raise InvalidArgument(f"lines[{index}].tax_group {shown(line.tax_group)} is not on the "
                                          "original invoice", field=f"lines[{index}].tax_group")
            lines = self._price_lines(request.lines, original_groups, decimals)
        else:
            lines = self._price_lines([SaleLine(l["description"], l["quantity"], l["unit_price"], l["tax_group"],
                                                l["sku"]) for l in original_body["lines"]], original_groups,
                                      decimals)
        # Checked once before taking a number (a refused refund costs no lease) and again under the CN
        # lease, where credit notes of this outlet are serialised and the balance cannot move.
        await self._refund_totals(original, original_body, lines, original_groups, decimals)

        async def content(_number: int) -> dict:
            await self._not_sealed_meanwhile(outlet.id, request.client_invoice_id)
            totals = await self._refund_totals(original, original_body, lines, original_groups, decimals)
            return {
                **self._totals_body(lines, totals, decimals),
                "payments": [], "payment_status": "refund", "buyer": original_body.get("buyer", {}),
                "sold_at": None, "pos_terminal_id": request.pos_terminal_id, "cashier_id": request.cashier_id,
                "currency": original.currency, "original_invoice_id": original.id,
                "original_fiscal_number": original.fiscal_number, "reason": request.reason,
            }

        return await self._once(outlet.id, request.client_invoice_id, fingerprint, lambda: self._seal(
            outlet, "credit_note", request, fingerprint, content, original=original))

    async def _refund_totals(self, original: InvoiceRecord, original_body: dict, lines: list[PricedLine],
                             groups: dict[str, TaxGroup], decimals: int):
        """The credit note's totals, or FAILED_PRECONDITION when a tax group would get back more than the
        invoice charged in it minus what earlier credit notes already refunded in it."""
        charged = {t["tax_group"]: Decimal(t["gross_amount"]) for t in original_body["tax_totals"]}
        refunded: dict[str, GroupTotal] = {}
        for note in await self.store.credit_notes(original.id):
            for total in note.body_fields()["tax_totals"]:
                code = total["tax_group"]
                earlier = refunded.get(code)
                gross, tax = Decimal(total["gross_amount"]), Decimal(total["tax_amount"])
                refunded[code] = GroupTotal(groups[code], gross + (earlier.gross if earlier else 0),
                                            tax + (earlier.tax if earlier else 0))
        totals = compute_refund_totals(lines, groups, decimals, refunded)
        for group_total in totals.groups:
            group = group_total.group
            left = charged[group.code] - (refunded[group.code].gross if group.code in refunded else 0)
            if group_total.gross > left:
                raise FailedPrecondition(
                    f"refund of {fmt(group_total.gross, decimals)} in tax group {group.code} ({group.label}) "
                    f"exceeds what is left to refund in that group on {original.fiscal_number} "
                    f"({fmt(left, decimals)})", reason="REFUND_EXCEEDS_INVOICE")
        return totals

    # .. group commit (invoices) ..

    async def _group_commit(self, outlet: Outlet, request: SaleRequest, fingerprint: bytes, sale: dict
                            ) -> InvoiceRecord:
        """Queue the sale for its outlet's next batch and wait for the batch's commit. The first seal of an
        idle (outlet, series) starts the task that drains the queue; seals arriving while a batch is in
        flight form the next one, so batches grow with load and add no wait when idle."""
        key = (outlet.id, INVOICE_SERIES)
        pending = _Pending(outlet, request, fingerprint, sale,
                           asyncio.get_running_loop().create_future(), contextvars.copy_context(),
                           trace.get_current_span().get_span_context())
        pending.outcome.add_done_callback(_retrieve)
        self._queues.setdefault(key, []).append(pending)
        if key not in self._drainers:
            self._drainers[key] = asyncio.create_task(self._drain(key))
        # Shielded: a caller that goes away does not take its seal out of a batch being written.
        return await asyncio.shield(pending.outcome)

    async def _drain(self, key: tuple[str, str]) -> None:
        try:
            while True:
                queue = self._queues.get(key)
                if not queue and key in self._carried:  # nothing more to ride on: commit it now
                    await self._commit(self._carried.pop(key))
                    continue
                if not queue:
                    self._queues.pop(key, None)
                    self._holding_since.pop(key, None)
                    del self._drainers[key]  # no await since the check: an arrival now starts a new drainer
                    return
                batch = queue[:self.max_batch]
                del queue[:len(batch)]
                # The batch's work runs in the first seal's context: its spans hang under that request's
                # span (the others are linked from the insert's span).
                task = asyncio.create_task(self._seal_batch(batch), context=batch[0].context)
                try:
                    await task
                except Exception as exc:  # noqa: BLE001 - each caller gets the batch's failure
                    _fail(batch, exc)
                _fail(batch, Unavailable("the seal was not completed; retry"))  # a safety net: none is left
        except BaseException:
            for pending in self._queues.pop(key, []):
                _fail([pending], _Interrupted())
            self._drainers.pop(key, None)
            raise

    async def _seal_batch(self, batch: list[_Pending]) -> None:
        """Number a batch from one range lease, chain it in memory, sign it in one call, write it in one
        transaction (compare-and-set on the chain head), commit the range, then answer every caller."""
        outlet = batch[0].outlet
        series = INVOICE_SERIES
        waiting = list(batch)
        failures = 0
        while waiting:
            if failures >= SEAL_ATTEMPTS:
                raise Unavailable("could not take a fiscal number after several attempts; retry")
            first_id = waiting[0].request.client_invoice_id
            holder = f"{outlet.code}/{first_id}" + (f"+{len(waiting) - 1}" if len(waiting) > 1 else "")
            carried = self._carried.pop((outlet.id, series), None)
            try:
                if carried is None:
                    lease = await self.allocator.allocate(outlet.id, series, holder, count=len(waiting))
                else:
                    lease = await self.allocator.allocate(outlet.id, series, holder, count=len(waiting),
                                                          commit_first=carried)
            except BaseException:
                if carried is not None:
                    await self._commit(carried)
                raise
            # A counter that grants fewer numbers than asked (never the real one): number what it granted.
            current = waiting[:lease.through - lease.number + 1]
            try:
                # Twins sealed by another replica committed before they gave up this counter's lease:
                # one look-up under the lease finds them, and nothing is signed for them.
                already = await self.store.invoices_by_client_ids(
                    outlet.id, [p.request.client_invoice_id for p in current])
                if already:
                    for pending in current:
                        twin = already.get(pending.request.client_invoice_id)
                        if twin is not None:
                            pending.outcome.set_result(twin)
                    waiting = [p for p in waiting if not p.outcome.done()]
                    await self._release(lease, "sealed meanwhile by another replica")
                    continue
                records = await self._sign_batch_entries(outlet, series, lease, current)
                if self.monotonic() > lease.deadline - self.lease_margin.total_seconds():
                    raise _LeaseRanOut()
                if self.before_insert is not None:
                    await self.before_insert(records)  # tests: a pause here outlives the lease (a zombie)
                links = [trace.Link(p.span) for p in current[1:] if p.span.is_valid]
                with tracer.start_as_current_span("ledger.insert_sealed", links=links,
                                                  attributes={"fiscal.batch_size": len(records)}):
                    await self.store.insert_sealed_batch(records, [sealed_event(r) for r in records],
                                                         lease.number - 1, records[0].prev_hash)
            except _CounterAhead:
                failures += 1
                await self._resync(lease)
                continue
            except _LeaseRanOut:
                failures += 1
                log.warning("lease ran out before the insert; sealing again", outlet=outlet.code, series=series,
                            number=lease.number, through=lease.through, attempt=failures)
                await self._release(lease, "lease ran out before the insert")
                continue
            except DuplicateClientInvoice:
                failures += 1
                await self._release(lease, "duplicate client_invoice_id")
                # A twin committed by another replica after our look-up: answer it; the rest seal again.
                found = await self.store.invoices_by_client_ids(
                    outlet.id, [p.request.client_invoice_id for p in current])
                if not found:
                    raise Unavailable("a copy of a sale in this batch is being sealed; retry") from None
                for pending in current:
                    twin = found.get(pending.request.client_invoice_id)
                    if twin is not None:
                        pending.outcome.set_result(twin)
                waiting = [p for p in waiting if not p.outcome.done()]
                continue
            except (DuplicateNumber, ChainMoved) as moved:
                failures += 1
                log.warning("the chain moved under the batch; counter behind the ledger or a stale lease",
                            outlet=outlet.code, series=series, number=lease.number, through=lease.through,
                            reason=type(moved).__name__, attempt=failures)
                await self._moved_past(lease)
                continue
            except BaseException as exc:
                await self._release(lease, f"seal failed: {type(exc).__name__}")
                raise
            self._last_entry[(outlet.id, series)] = (records[-1].number, records[-1].hash)
            if self.after_insert is not None:
                await self.after_insert(records[0])
            # The range's counter commit rides on the next batch's Allocate when more seals wait (for at
            # most max_hold_seconds), else it is sent before the answers: when the last caller of a
            # drain has its answer, no lease of this process is left open (a SIGTERM drains cleanly).
            waiting = waiting[len(current):]
            key = (outlet.id, series)
            since = self._holding_since.setdefault(key, self.monotonic())
            if (waiting or self._queues.get(key)) and self.monotonic() - since < self.max_hold_seconds:
                self._carried[key] = lease
            else:
                del self._holding_since[key]
                await self._commit(lease)
            for pending, record in zip(current, records, strict=True):
                pending.outcome.set_result(record)

    async def _sign_batch_entries(self, outlet: Outlet, series: str, lease: Lease, batch: list[_Pending]
                                  ) -> list[InvoiceRecord]:
        prev_hash = await self._prev_hash(outlet, series, lease.number)
        drafts = []
        for offset, pending in enumerate(batch):
            draft = self._draft(outlet, "invoice", series, lease.number + offset, prev_hash, pending.request,
                                pending.fingerprint, pending.sale, original=None)
            drafts.append(draft)
            prev_hash = draft.statement.entry_hash()
        signatures = await self._signatures([d.statement.text() for d in drafts])
        return [d.record(signature, key_id) for d, (signature, key_id) in zip(drafts, signatures, strict=True)]

    # .. one seal at a time (credit notes: their refund check runs under the CN lease) ..

    async def _seal(self, outlet: Outlet, kind: str, request, fingerprint: bytes, content, original) -> InvoiceRecord:
        series = INVOICE_SERIES if kind == "invoice" else CREDIT_NOTE_SERIES
        holder = f"{outlet.code}/{request.client_invoice_id}"
        for attempt in range(1, SEAL_ATTEMPTS + 1):
            lease = await self.allocator.allocate(outlet.id, series, holder, count=1)
            try:
                record = await self._sign_entry(outlet, kind, series, lease, request, fingerprint, content, original)
                if self.monotonic() > lease.deadline - self.lease_margin.total_seconds():
                    # The counter may already have reconciled and reissued this number: don't race it.
                    # Nothing was written; give the number back and start over with a fresh lease.
                    raise _LeaseRanOut()
                with tracer.start_as_current_span("ledger.insert_sealed"):
                    await self.store.insert_sealed_batch([record], [sealed_event(record)], record.number - 1,
                                                         record.prev_hash)
            except _CounterAhead:
                # Nothing written. The counter gives the number back and moves to the ledger's head.
                await self._resync(lease)
                continue
            except _LeaseRanOut:
                log.warning("lease ran out before the insert; sealing again", outlet=outlet.code, series=series,
                            number=lease.number, attempt=attempt)
                await self._release(lease, "lease ran out before the insert")
                continue
            except DuplicateClientInvoice:
                await self._release(lease, "duplicate client_invoice_id")
                existing = await self.store.invoice_by_client_id(outlet.id, request.client_invoice_id)
                if existing is None:  # the unique key saw a twin this read cannot: let the client retry
                    raise Unavailable("a copy of this sale is being sealed; retry") from None
                return self._replay(existing, fingerprint)
            except (DuplicateNumber, ChainMoved):
                # The ledger already holds this number (the counter was behind): move the counter past it.
                log.warning("number already in ledger; counter behind", outlet=outlet.code, series=series,
                            number=lease.number, attempt=attempt)
                await self._moved_past(lease)
                continue
            except BaseException as exc:
                await self._release(lease, f"seal failed: {type(exc).__name__}")
                raise
            self._last_entry[(outlet.id, series)] = (record.number, record.hash)
            if self.after_insert is not None:
                await self.after_insert(record)
            await self._commit(lease)
            return record
        raise Unavailable("could not take a fiscal number after several attempts; retry")

    async def _sign_entry(self, outlet, kind, series, lease: Lease, request, fingerprint, content, original
                          ) -> InvoiceRecord:
        prev_hash = await self._prev_hash(outlet, series, lease.number)
        body_content = await content(lease.number)
        draft = self._draft(outlet, kind, series, lease.number, prev_hash, request, fingerprint, body_content,
                            original)
        [(signature, key_id)] = await self._signatures([draft.statement.text()])
        return draft.record(signature, key_id)

    async def _prev_hash(self, outlet: Outlet, series: str, number: int) -> bytes:
        cached = self._last_entry.get((outlet.id, series))
        if number == 1:
            return receipt.GENESIS_HASH
        if cached is not None and cached[0] == number - 1:
            return cached[1]
        prev_hash = await self.store.entry_hash(outlet.id, series, number - 1)
        if prev_hash is None:
            # Would be a gap: the counter is ahead of the ledger. Refuse rather than break invariant 1.
            log.error("counter ahead of ledger; asking it to resync", outlet=outlet.code, series=series,
                      number=number)
            raise _CounterAhead()
        return prev_hash

    async def _signatures(self, statements: list[str]) -> list[tuple[bytes, str]]:
        try:
            signatures = await self.signer.sign_batch(statements)
        except Fault:
            raise
        except Exception as exc:  # the adapter maps RPC errors; anything else is still "signing failed"
            raise Unavailable("signing failed; retry") from exc
        if len(signatures) != len(statements):
            raise Unavailable("signing answered the wrong number of signatures; retry")
        return signatures

    def _draft(self, outlet: Outlet, kind: str, series: str, number: int, prev_hash: bytes, request,
               fingerprint: bytes, body_content: dict, original) -> _Draft:
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
        return _Draft(outlet, kind, series, number, prev_hash, request.client_invoice_id, fingerprint, body,
                      body_text, statement, sealed_at, original.id if original else None)

    async def _commit(self, lease: Lease) -> None:
        try:
            await self.allocator.commit(lease)
        except Exception as exc:  # noqa: BLE001 - the ledger is the truth; the lease reconciles on expiry
            log.warning("counter commit failed; will reconcile on lease expiry", error=str(exc))

    async def _resync(self, lease: Lease) -> None:
        try:
            await self.allocator.resync(lease, "counter ahead of the ledger")
        except Exception as exc:  # noqa: BLE001 - the lease then expires and is reconciled the same way
            log.warning("counter resync failed; the lease reconciles on expiry", error=str(exc))

    async def _moved_past(self, lease: Lease) -> None:
        """The ledger already holds (some of) the lease's numbers. A single number: commit it, so the
        counter moves past it (as it always did). A range: resync the counter to the ledger's head."""
        if lease.through == lease.number:
            await self._commit(lease)
        else:
            await self._resync(lease)

    async def _release(self, lease: Lease, reason: str) -> None:
        try:
            await self.allocator.release(lease, reason)
        except Exception as exc:  # noqa: BLE001 - expiry + reconciliation frees the number anyway
            log.warning("counter release failed; number frees on lease expiry", error=str(exc))


@dataclass
class _Pending:
    """A sale waiting in its outlet's group-commit queue."""

    outlet: Outlet
    request: SaleRequest
    fingerprint: bytes
    sale: dict
    outcome: asyncio.Future[InvoiceRecord]
    context: contextvars.Context  # the request's (trace) context, for the batch it leads
    span: trace.SpanContext


@dataclass
class _Draft:
    """A chain entry before its signature: everything the statement commits to."""

    outlet: Outlet
    kind: str
    series: str
    number: int
    prev_hash: bytes
    client_invoice_id: str
    fingerprint: bytes
    body: dict
    body_text: str
    statement: receipt.Statement
    sealed_at: datetime
    original_invoice_id: str | None

    def record(self, signature: bytes, key_id: str) -> InvoiceRecord:
        body, outlet = self.body, self.outlet
        return InvoiceRecord(
            id=str(uuid.uuid4()), merchant_id=outlet.merchant_id, outlet_id=outlet.id, kind=self.kind,
            series=self.series, number=self.number, fiscal_number=body["fiscal_number"],
            client_invoice_id=self.client_invoice_id, request_hash=self.fingerprint,
            pos_terminal_id=body["pos_terminal_id"], cashier_id=body["cashier_id"], currency=body["currency"],
            total=Decimal(body["total"]), total_tax=Decimal(body["total_tax"]),
            payment_status=body["payment_status"], status="sealed", sold_at=receipt.parse_timestamp(body["sold_at"]),
            sealed_at=self.sealed_at, original_invoice_id=self.original_invoice_id, body=self.body_text,
            statement=self.statement.text(), body_digest=receipt.body_digest(self.body_text),
            prev_hash=self.prev_hash, hash=self.statement.entry_hash(), signature=signature, key_id=key_id,
            auth_code=receipt.auth_code(signature), created_at=self.sealed_at,
        )


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.outcome.done():
            pending.outcome.set_exception(exc)


class _AlreadySealed(Exception):
    """The same (outlet, client_invoice_id) was sealed by another replica while this copy waited."""

    def __init__(self, record: InvoiceRecord):
        super().__init__(record.fiscal_number)
        self.record = record


class _Interrupted(Exception):
    """The first copy of a request was cancelled: the copies waiting for it try for themselves."""


def _retrieve(outcome: asyncio.Future) -> None:
    """Mark a first copy's failure as seen even when no twin waited for it (asyncio logs it otherwise)."""
    if not outcome.cancelled():
        outcome.exception()


class _LeaseRanOut(Exception):
    """The seal took longer than its number's lease: the number must not be used."""


class _CounterAhead(Exception):
    """The ledger holds no entry before the leased number: using it would leave a gap."""


def _groups_of(body: dict) -> dict[str, TaxGroup]:
    """The tax groups as a sealed body charged them: code, label and rate (\"\" for exempt)."""
    return {t["tax_group"]: TaxGroup(t["tax_group"], t["label"], Decimal(t["rate"]) if t["rate"] else None)
            for t in body["tax_totals"]}


def payment_status(paid: Decimal, total: Decimal) -> str:
    if paid >= total:
        return "paid"
    return "partially_paid" if paid > 0 else "unpaid"


def sealed_event(record: InvoiceRecord) -> OutboxEvent:
    return OutboxEvent(
        event_id=str(uuid.uuid4()), event_type="invoice.sealed", merchant_id=record.merchant_id,
        aggregate_id=record.id, outlet_id=record.outlet_id,
        payload={"invoice_id": record.id, "kind": record.kind, "outlet_id": record.outlet_id,
                 "fiscal_number": record.fiscal_number, "client_invoice_id": record.client_invoice_id,
                 "pos_terminal_id": record.pos_terminal_id, "cashier_id": record.cashier_id,
                 "total": record.invoice_body().total, "currency": record.currency,
                 "sealed_at": receipt.format_timestamp(record.sealed_at),
                 "original_invoice_id": record.original_invoice_id},
    )
