"""Group commit with fakes: seals of one outlet that arrive together take one range lease, one signing
call and one insert transaction; what goes wrong in a batch (a twin, a moved chain, a failed signer)
leaves every caller with one invoice, the chain gapless and linked."""

from __future__ import annotations

import asyncio

import pytest

from services.ledger import receipt
from services.ledger.sealing import Sealer
from services.runtime.faults import Unavailable
from tests.unit.fakes import ADMIN_KEY, FakeCounter, Rig, sale
from tests.unit.test_sealer import verifies


def chain_of(rig: Rig) -> list:
    return [rig.store.by_number[k] for k in sorted(k for k in rig.store.by_number if k[1] == "INV")]


def assert_linked(rig: Rig) -> None:
    chain = chain_of(rig)
    assert [r.number for r in chain] == list(range(1, len(chain) + 1))
    prev = receipt.GENESIS_HASH
    for record in chain:
        assert record.prev_hash == prev
        prev = record.hash


async def seal_together(rig: Rig, ids: list[str]):
    return await asyncio.gather(*(rig.sealer.seal_invoice(ADMIN_KEY, sale(i)) for i in ids),
                                return_exceptions=True)


def _held_allocations(rig: Rig) -> tuple[asyncio.Event, asyncio.Event]:
    """The first allocation waits until the test lets it go: (started, release). No timing involved."""
    allocate = rig.counter.allocate
    started, release = asyncio.Event(), asyncio.Event()

    async def held(outlet_id: str, series: str, holder: str, count: int = 1, commit_first=None):
        if not started.is_set():
            started.set()
            await release.wait()
        return await allocate(outlet_id, series, holder, count, commit_first)

    rig.counter.allocate = held
    return started, release


async def test_sales_arriving_together_are_numbered_signed_and_written_as_one_batch():
    rig = Rig()
    records = await seal_together(rig, [f"sale-{i}" for i in range(10)])
    assert [r.number for r in records] == list(range(1, 11))  # in arrival order
    assert rig.counter.counts == [10] and rig.counter.commits == [10]
    assert rig.signer.calls == [10] and rig.store.batches == [10] and len(rig.store.events) == 10
    assert all(verifies(rig.signer, r) for r in records)
    assert_linked(rig)


async def test_sales_arriving_during_a_batch_form_the_next_batch():
    rig = Rig()
    started, release = _held_allocations(rig)
    first = asyncio.ensure_future(rig.sealer.seal_invoice(ADMIN_KEY, sale("first")))
    await started.wait()  # the first batch (of one) is waiting for its lease
    rest_sealed = asyncio.ensure_future(seal_together(rig, [f"sale-{i}" for i in range(5)]))
    for _ in range(20):  # let the five reach the outlet's queue behind the held batch
        await asyncio.sleep(0)
    release.set()
    rest = await rest_sealed
    assert (await first).number == 1 and [r.number for r in rest] == [2, 3, 4, 5, 6]
    assert rig.store.batches == [1, 5] and rig.signer.calls == [1, 5]
    assert rig.counter.rolled == [1] and rig.counter.commits == [1, 6]  # batch 1's commit rode on batch 2's lease
    assert not rig.sealer._queues and not rig.sealer._drainers  # idle: nothing held
    assert_linked(rig)


async def test_a_batch_larger_than_the_limit_is_split():
    rig = Rig()
    rig.sealer.max_batch = 4
    records = await seal_together(rig, [f"sale-{i}" for i in range(10)])
    assert [r.number for r in records] == list(range(1, 11))
    assert rig.store.batches == [4, 4, 2]
    assert rig.counter.rolled == [4, 8] and rig.counter.commits == [4, 8, 10]
    assert_linked(rig)


async def test_a_twin_in_a_batch_committed_by_another_replica_is_answered_and_the_rest_sealed_again():
    rig, other_replica = Rig(), Rig()
    twin = await other_replica.sealer.seal_invoice(ADMIN_KEY, sale("sale-1"))
    rig.store.twin_on_insert = twin  # committed by the other replica between our look-up and our insert
    answers = await seal_together(rig, ["sale-0", "sale-1", "sale-2"])
    assert answers[1] is twin
    assert [answers[0].number, answers[2].number] == [2, 3]  # after the twin's number 1
    assert len(rig.store.by_client_id) == 3
    assert_linked(rig)


async def test_a_chain_moved_under_a_batch_is_refused_and_the_batch_sealed_after_the_head():
    rig = Rig()
    await rig.sealer.seal_invoice(ADMIN_KEY, sale("sale-a"))
    # A second writer on the same ledger with a counter of its own (a stale replica): it writes number 2
    # while our counter still says 1.
    stale_counter = FakeCounter(rig.clock, rig.store.chain_head)
    stale = Sealer(rig.store, stale_counter, rig.signer, authority_id="FC-TEST", public_url="http://t",
                   outlets=rig.sealer.outlets, clock=rig.clock, monotonic=rig.clock.monotonic)
    assert (await stale.seal_invoice(ADMIN_KEY, sale("elsewhere"))).number == 2
    answers = await seal_together(rig, ["sale-b", "sale-c"])
    assert rig.counter.resyncs == [2]  # the range 2..3 was refused; the counter moved to the head (2)
    assert [a.number for a in answers] == [3, 4]
    assert_linked(rig)


async def test_idempotent_retries_of_a_failed_batch_get_one_invoice_each():
    rig = Rig()
    rig.signer.fail_with = ConnectionResetError("signing replica went away")
    failed = await seal_together(rig, [f"sale-{i}" for i in range(4)])
    assert all(isinstance(f, Unavailable) for f in failed)
    assert not rig.store.by_number and [n for n, _ in rig.counter.releases] == [1]
    rig.signer.fail_with = None
    retried = await seal_together(rig, [f"sale-{i}" for i in range(4)] * 2)  # every retry sent twice
    assert [r.number for r in retried] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert len(rig.store.by_client_id) == 4 and rig.store.batches == [4]
    assert_linked(rig)


async def test_a_failed_batch_frees_the_queue():
    rig = Rig()
    rig.store.fail_with = RuntimeError("database down")
    with pytest.raises(RuntimeError):
        await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert not rig.sealer._queues and not rig.sealer._drainers
