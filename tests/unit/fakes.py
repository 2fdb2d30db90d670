"""In-memory stand-ins for what the sealer talks to: the counter (NumberAllocator), the signing service
(Signer) and the ledger's storage (SealerStore). Each keeps the one rule the sealer relies on, nothing more,
and records what it was asked so a test can check the conversation."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from services.ledger.access import ADMIN, Principal
from services.ledger.model import (
    ChainMoved,
    DuplicateClientInvoice,
    DuplicateNumber,
    InvoiceRecord,
    OutboxEvent,
    Outlet,
)
from services.ledger.money import TaxGroup
from services.ledger.sealing import Lease, Payment, SaleLine, SaleRequest, Sealer

MERCHANT = "7d3c1f2e-0000-4000-8000-000000000001"
OUTLET = Outlet(id="7d3c1f2e-0000-4000-8000-0000000000a1", merchant_id=MERCHANT, code="UNIT001", name="Unit Shop",
                taxpayer_id="P000000001A", currency="KES", time_zone="Africa/Nairobi", offline_grace_seconds=3600,
                tax_groups={"A": TaxGroup("A", "VAT 16%", Decimal("16")), "E": TaxGroup("E", "Exempt", None)})
ADMIN_KEY = Principal(key_id="k1", merchant_id=MERCHANT, scope=ADMIN, outlet_id=None)


class FakeClock:
    """A wall clock and a monotonic clock that the test moves by hand, together."""

    def __init__(self, now: datetime | None = None):
        self.now = now or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        self.elapsed = 1000.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.elapsed += seconds


class FakeCounter:
    """A counter with the real one's rule: the next number is last committed + 1, one lease at a time.
    `chain_head` answers the ledger's last number, for a resync."""

    def __init__(self, clock: FakeClock, chain_head: Callable[[str, str], int], lease_seconds: float = 10.0):
        self.clock = clock
        self.chain_head = chain_head
        self.lease_seconds = lease_seconds
        self.committed: dict[tuple[str, str], int] = {}
        self.open: dict[str, tuple[tuple[str, str], int]] = {}
        self.allocated: list[int] = []
        self.counts: list[int] = []  # how many numbers each allocate asked for
        self.rolled: list[int] = []  # commits that rode on an allocate
        self.commits: list[int] = []
        self.releases: list[tuple[int, str]] = []
        self.resyncs: list[int] = []

    async def allocate(self, outlet_id: str, series: str, holder: str, count: int = 1,
                       commit_first: Lease | None = None) -> Lease:
        if commit_first is not None:
            self.rolled.append(commit_first.through)
            await self.commit(commit_first)
        key = (outlet_id, series)
        assert all(k != key for k, _ in self.open.values()), "a second lease on one counter"
        number = self.committed.get(key, 0) + 1
        # The sealer checks leases on its monotonic clock (the deadline), never on the wall clock.
        lease = Lease(str(uuid.uuid4()), number, self.clock() + timedelta(seconds=self.lease_seconds),
                      deadline=self.clock.monotonic() + self.lease_seconds, last=number + count - 1)
        self.open[lease.lease_id] = (key, lease.through)
        self.allocated.append(number)
        self.counts.append(count)
        return lease

    async def commit(self, lease: Lease) -> None:
        key, through = self.open.pop(lease.lease_id)
        self.committed[key] = max(self.committed.get(key, 0), through)
        self.commits.append(through)

    async def release(self, lease: Lease, reason: str) -> None:
        self.open.pop(lease.lease_id)
        self.releases.append((lease.number, reason))

    async def resync(self, lease: Lease, reason: str) -> None:
        key, _ = self.open.pop(lease.lease_id)
        self.committed[key] = self.chain_head(*key)
        self.resyncs.append(lease.number)


P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class FakeSigner:
    """ES256 over SHA-256 of the statement, with a key of its own; `fail_with` makes the next calls raise."""

    def __init__(self, key_id: str = "test-key"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = key_id
        self.signed: list[bytes] = []
        self.fail_with: BaseException | None = None
        self.before_sign: Callable[[], None] | None = None
        self.calls: list[int] = []  # statements per call

    async def sign_batch(self, statement_texts: list[str]) -> list[tuple[bytes, str]]:
        self.calls.append(len(statement_texts))
        return [await self.sign(text) for text in statement_texts]

    async def sign(self, statement_text: str) -> tuple[bytes, str]:
        digest = hashlib.sha256(statement_text.encode()).digest()
        if self.before_sign is not None:
            self.before_sign()
        if self.fail_with is not None:
            raise self.fail_with
        der = self.key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        s = min(s, P256_ORDER - s)  # low-S, as the real signer answers: one receipt, one valid signature
        self.signed.append(digest)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big"), self.key_id

    def public_jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "status": "active",
                "x": base64.urlsafe_b64encode(numbers.x.to_bytes(32, "big")).rstrip(b"=").decode(),
                "y": base64.urlsafe_b64encode(numbers.y.to_bytes(32, "big")).rstrip(b"=").decode()}


class FakeStore:
    """The ledger's tables as dicts, with the two unique keys the database enforces."""

    def __init__(self) -> None:
        self.by_client_id: dict[tuple[str, str], InvoiceRecord] = {}
        self.by_number: dict[tuple[str, str, int], InvoiceRecord] = {}
        self.events: list[OutboxEvent] = []
        # A concurrent twin: committed by "another replica" just before our insert, invisible before.
        self.twin_on_insert: InvoiceRecord | None = None
        self.fail_with: BaseException | None = None  # a database that is down, or a bug
        self.heartbeats: list[tuple] = []
        self.batches: list[int] = []  # records per insert transaction

    def put(self, record: InvoiceRecord) -> None:
        self.by_client_id[(record.outlet_id, record.client_invoice_id)] = record
        self.by_number[(record.outlet_id, record.series, record.number)] = record

    def fail_reads(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def chain_head(self, outlet_id: str, series: str) -> int:
        return max((n for (o, s, n) in self.by_number if (o, s) == (outlet_id, series)), default=0)

    async def invoice_by_client_id(self, outlet_id: str, client_invoice_id: str) -> InvoiceRecord | None:
        self.fail_reads()
        return self.by_client_id.get((outlet_id, client_invoice_id))

    async def invoice(self, merchant_id: str, invoice_id: str) -> InvoiceRecord | None:
        return next((r for r in self.by_client_id.values() if r.id == invoice_id and r.merchant_id == merchant_id),
                    None)

    async def sync_states(self, invoice_ids: list[str]) -> dict:
        return {}  # no DGI sync rows: every document reads as pending

    async def invoice_by_fiscal_number(self, fiscal_number: str) -> InvoiceRecord | None:
        return next((r for r in self.by_number.values() if r.fiscal_number == fiscal_number), None)

    async def entry_hash(self, outlet_id: str, series: str, number: int) -> bytes | None:
        record = self.by_number.get((outlet_id, series, number))
        return record.hash if record else None

    async def credited_total(self, original_invoice_id: str) -> Decimal:
        return sum((r.total for r in self.by_client_id.values() if r.original_invoice_id == original_invoice_id),
                   Decimal(0))

    async def credit_notes(self, original_invoice_id: str) -> list[InvoiceRecord]:
        return [r for r in self.by_client_id.values() if r.original_invoice_id == original_invoice_id]

    async def record_heartbeat(self, outlet_id: str, pos_terminal_id: str, *rest) -> None:
        self.heartbeats.append((outlet_id, pos_terminal_id, *rest))

    async def invoices_by_client_ids(self, outlet_id: str, client_invoice_ids: list[str]
                                     ) -> dict[str, InvoiceRecord]:
        self.fail_reads()
        return {cid: self.by_client_id[(outlet_id, cid)] for cid in client_invoice_ids
                if (outlet_id, cid) in self.by_client_id}

    async def insert_sealed_batch(self, records: list[InvoiceRecord], events: list[OutboxEvent],
                                  prev_number: int, prev_hash: bytes) -> None:
        self.batches.append(len(records))
        if self.twin_on_insert is not None:
            self.put(self.twin_on_insert)
            self.twin_on_insert = None
        for record in records:  # all or nothing, as in one transaction
            if (record.outlet_id, record.client_invoice_id) in self.by_client_id:
                raise DuplicateClientInvoice(record.client_invoice_id)
            if (record.outlet_id, record.series, record.number) in self.by_number:
                raise DuplicateNumber(record.fiscal_number)
        first = records[0]
        head = self.chain_head(first.outlet_id, first.series)
        if head != prev_number or (head and self.by_number[(first.outlet_id, first.series, head)].hash != prev_hash):
            raise ChainMoved(f"head is {head}, not {prev_number}")
        for record in records:
            self.put(record)
        self.events.extend(events)


class Rig:
    """A Sealer wired to the fakes above, for one outlet (OUTLET) and one admin key (ADMIN_KEY)."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.store = FakeStore()
        self.counter = FakeCounter(self.clock, self.store.chain_head)
        self.signer = FakeSigner()

        async def outlets(outlet_id: str) -> Outlet | None:
            return OUTLET if outlet_id == OUTLET.id else None

        self.sealer = Sealer(self.store, self.counter, self.signer, authority_id="FC-TEST", public_url="http://t",
                             outlets=outlets, clock=self.clock, monotonic=self.clock.monotonic)


def sale(client_invoice_id: str = "sale-1", quantity: str = "2", **changes) -> SaleRequest:
    request = SaleRequest(outlet_id=OUTLET.id, client_invoice_id=client_invoice_id, pos_terminal_id="T1",
                          cashier_id="C1", currency="KES",
                          lines=[SaleLine("Sugar 1kg", quantity, "180.00", "A"), SaleLine("Bread", "1", "60", "E")],
                          payments=[Payment("cash", "500.00")])
    return dataclasses.replace(request, **changes)
