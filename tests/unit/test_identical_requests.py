"""Identical concurrent requests against the sealer with fakes: one number and one signature for all."""

from __future__ import annotations

import asyncio

from tests.unit.fakes import ADMIN_KEY, Rig, sale


def _slow_allocations(rig: Rig, before_answer=None) -> None:
    """The counter answers after a pause (a real Allocate is a network call), so the copies overlap."""
    allocate = rig.counter.allocate

    async def slow(outlet_id: str, series: str, holder: str, count: int = 1, commit_first=None):
        await asyncio.sleep(0.01)
        if before_answer is not None:
            before_answer()
        return await allocate(outlet_id, series, holder, count, commit_first)

    rig.counter.allocate = slow


async def test_copies_in_one_process_wait_for_the_first():
    rig = Rig()
    _slow_allocations(rig)
    answers = await asyncio.gather(*[rig.sealer.seal_invoice(ADMIN_KEY, sale()) for _ in range(10)])
    assert len({(a.id, a.signature) for a in answers}) == 1
    assert rig.counter.allocated == [1] and len(rig.signer.signed) == 1
    assert not rig.sealer._in_flight


async def test_a_copy_with_another_body_waiting_for_the_first_is_a_conflict():
    rig = Rig()
    _slow_allocations(rig)
    answers = await asyncio.gather(rig.sealer.seal_invoice(ADMIN_KEY, sale()),
                                   rig.sealer.seal_invoice(ADMIN_KEY, sale(quantity="3")), return_exceptions=True)
    assert type(answers[1]).__name__ == "AlreadyExists"
    assert rig.counter.allocated == [1] and len(rig.signer.signed) == 1


async def test_a_twin_sealed_by_another_replica_while_waiting_for_the_number_is_not_signed_again():
    rig, other_replica = Rig(), Rig()
    twin = await other_replica.sealer.seal_invoice(ADMIN_KEY, sale())
    # The other replica's insert commits while this one waits for the counter's lease.
    _slow_allocations(rig, before_answer=lambda: rig.store.put(twin))
    answer = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert (answer.id, answer.signature) == (twin.id, twin.signature)
    assert rig.signer.signed == [] and rig.counter.commits == []
    assert [number for number, _ in rig.counter.releases] == [1]  # the number goes back unused
