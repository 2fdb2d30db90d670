"""The sealer's lease checks in-process (fake counter, signer and store): a lease is a duration counted on
the ledger's monotonic clock, so a wrong wall clock cannot matter; a lease that ran out is given back;
a counter ahead of the ledger is resynced and the seal goes on with the next number after the head."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.ledger.access import POS, Principal
from services.ledger.model import Outlet
from services.ledger.money import TaxGroup
from services.ledger.sealing import Lease, SaleLine, SaleRequest, Sealer
from tests.unit.fakes import FakeSigner, FakeStore

LEASE_SECONDS = 10.0
OUTLET = Outlet(id=str(uuid.uuid4()), merchant_id=str(uuid.uuid4()), code="UNIT01", name="Unit outlet",
                taxpayer_id="P000000001X", currency="KES", time_zone="Africa/Nairobi", offline_grace_seconds=3600,
                tax_groups={"A": TaxGroup("A", "VAT 16%", Decimal("16"))})
PRINCIPAL = Principal(key_id="k1", merchant_id=OUTLET.merchant_id, scope=POS, outlet_id=OUTLET.id)


class Monotonic:
    """time.monotonic() as the test decides."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TrueClock:
    """The right time (the counter's database clock); the ledger's wall clock is this plus a skew."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class Counter:
    """The counter as the ledger sees it: last committed + 1 under a lease given as a duration."""

    def __init__(self, clock: TrueClock, monotonic: Monotonic, store: FakeStore):
        self.clock, self.monotonic, self.store = clock, monotonic, store
        self.last = 0
        self.open: Lease | None = None
        self.calls: list[tuple[str, int]] = []

    async def allocate(self, outlet_id: str, series: str, holder: str, count: int = 1,
                       commit_first: Lease | None = None) -> Lease:
        assert self.open is None, "a second lease on one counter"
        sent_at = self.monotonic()
        self.open = Lease(str(uuid.uuid4()), self.last + 1, self.clock() + timedelta(seconds=LEASE_SECONDS),
                          deadline=sent_at + LEASE_SECONDS)
        self.calls.append(("allocate", self.open.number))
        return self.open

    async def commit(self, lease: Lease) -> None:
        self.calls.append(("commit", lease.number))
        self.last, self.open = lease.number, None

    async def release(self, lease: Lease, reason: str) -> None:
        self.calls.append(("release", lease.number))
        self.open = None

    async def resync(self, lease: Lease, reason: str) -> None:
        self.calls.append(("resync", lease.number))
        self.last = max((n for (_, _, n) in self.store.by_number), default=0)  # the ledger's chain head
        self.open = None


def make_sealer(skew: timedelta = timedelta(0)):
    clock, monotonic, store, signer = TrueClock(), Monotonic(), FakeStore(), FakeSigner()
    counter = Counter(clock, monotonic, store)

    async def outlets(outlet_id: str):
        return OUTLET if outlet_id == OUTLET.id else None

    sealer = Sealer(store, counter, signer, authority_id="FC-TEST", public_url="http://test", outlets=outlets,
                    clock=lambda: clock() + skew, monotonic=monotonic)
    return sealer, counter, signer, monotonic, store


def sale() -> SaleRequest:
    return SaleRequest(outlet_id=OUTLET.id, client_invoice_id=str(uuid.uuid4()), pos_terminal_id="T1",
                       cashier_id="C1", currency="KES", lines=[SaleLine("Sugar 1kg", "2", "180.00", "A")])


async def test_a_ledger_wall_clock_10_s_fast_still_seals():
    sealer, counter, _, _, _ = make_sealer(skew=timedelta(seconds=10))
    numbers = [(await sealer.seal_invoice(PRINCIPAL, sale())).number for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert [c for c in counter.calls if c[0] == "release"] == []  # no lease judged expired


async def test_a_ledger_wall_clock_slow_does_not_stretch_a_lease():
    sealer, counter, signer, monotonic, store = make_sealer(skew=timedelta(seconds=-60))
    first = True

    def slow_signing() -> None:
        nonlocal first
        if first:  # the first signature takes longer than the lease, on the monotonic clock
            monotonic.now += LEASE_SECONDS + 1
            first = False

    signer.before_sign = slow_signing
    record = await sealer.seal_invoice(PRINCIPAL, sale())
    assert record.number == 1
    assert counter.calls == [("allocate", 1), ("release", 1), ("allocate", 1), ("commit", 1)]
    assert len(store.by_number) == 1


async def test_counter_ahead_is_resynced_and_the_seal_takes_the_next_number():
    sealer, counter, _, _, store = make_sealer()
    for _ in range(5):
        await sealer.seal_invoice(PRINCIPAL, sale())
    counter.last += 3  # as after a restore of the counter's database
    record = await sealer.seal_invoice(PRINCIPAL, sale())
    assert record.number == 6
    assert counter.calls[-3:] == [("resync", 9), ("allocate", 6), ("commit", 6)]
    assert sorted(n for (_, _, n) in store.by_number) == [1, 2, 3, 4, 5, 6]
