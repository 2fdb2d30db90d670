"""The seal path (services.ledger.sealing.Sealer) against in-memory fakes: no process, no database."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from services.ledger import receipt
from services.ledger.model import InvoiceBody, InvoiceRecord
from services.ledger.sealing import CreditNoteRequest, SaleLine
from services.runtime.faults import AlreadyExists, Fault, InvalidArgument, NotFound, Unavailable
from tests.unit.fakes import ADMIN_KEY, OUTLET, FakeSigner, Rig, sale


def verifies(signer: FakeSigner, record: InvoiceRecord) -> bool:
    der = encode_dss_signature(int.from_bytes(record.signature[:32], "big"), int.from_bytes(record.signature[32:], "big"))
    digest = receipt.Statement(record.fiscal_number, "FC-TEST", receipt.format_timestamp(record.sealed_at),
                               str(record.invoice_body().total), record.currency,
                               receipt.b64url(record.body_digest)).digest()
    try:
        signer.key.public_key().verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


async def test_numbers_are_gapless_in_order_and_chained():
    rig = Rig()
    records = [await rig.sealer.seal_invoice(ADMIN_KEY, sale(f"sale-{i}")) for i in range(5)]
    assert [r.number for r in records] == [1, 2, 3, 4, 5]
    assert [r.fiscal_number for r in records][-1] == "UNIT001-INV-0000000005"
    assert records[0].prev_hash == receipt.GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(records, records[1:], strict=False))
    assert rig.counter.commits == [1, 2, 3, 4, 5] and not rig.counter.releases and not rig.counter.open
    assert [e.aggregate_id for e in rig.store.events] == [r.id for r in records]
    assert all(verifies(rig.signer, r) for r in records)
    body = records[0].invoice_body()
    assert (body.total, body.total_tax, body.payment_status) == ("420.00", "49.66", "paid")
    assert [(t.tax_group, t.tax_amount) for t in body.tax_totals] == [("A", "49.66"), ("E", "0.00")]


async def test_a_replay_returns_the_same_invoice_and_takes_no_number():
    rig = Rig()
    first = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    again = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert again is first or (again.id, again.signature) == (first.id, first.signature)
    assert rig.counter.allocated == [1] and len(rig.signer.signed) == 1


async def test_a_conflicting_body_under_the_same_id_is_already_exists():
    rig = Rig()
    await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    with pytest.raises(AlreadyExists) as raised:
        await rig.sealer.seal_invoice(ADMIN_KEY, sale(quantity="3"))
    assert raised.value.reason == "CLIENT_INVOICE_ID_REUSED"
    assert rig.counter.allocated == [1]


async def test_a_concurrent_twin_committed_first_is_replayed_and_the_number_released():
    rig = Rig()
    twin_rig = Rig()
    twin = await twin_rig.sealer.seal_invoice(ADMIN_KEY, sale())
    rig.store.twin_on_insert = twin
    answer = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert answer is twin
    assert rig.counter.releases == [(1, "duplicate client_invoice_id")] and rig.counter.commits == []


async def test_a_lease_that_ran_out_before_the_insert_is_given_back_and_the_seal_retried():
    rig = Rig()
    calls = []

    def slow_first_signature() -> None:
        calls.append(1)
        if len(calls) == 1:
            rig.clock.advance(rig.counter.lease_seconds + 1)  # the first signature outlived the lease

    rig.signer.before_sign = slow_first_signature
    record = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert record.number == 1
    assert [number for number, _ in rig.counter.releases] == [1] and rig.counter.commits == [1]
    assert len(rig.store.by_number) == 1 and len(rig.store.events) == 1


async def test_a_signer_failure_is_unavailable_and_releases_the_number():
    rig = Rig()
    rig.signer.fail_with = ConnectionResetError("signing replica went away")
    with pytest.raises(Unavailable):
        await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    assert [number for number, _ in rig.counter.releases] == [1]
    assert rig.counter.commits == [] and not rig.store.by_number and not rig.store.events
    rig.signer.fail_with = None
    assert (await rig.sealer.seal_invoice(ADMIN_KEY, sale())).number == 1  # the number was not lost


async def test_a_number_already_in_the_ledger_moves_the_counter_past_it():
    rig = Rig()
    await rig.sealer.seal_invoice(ADMIN_KEY, sale("sale-a"))
    rig.counter.committed.clear()  # the counter restored from an older backup: behind the ledger
    record = await rig.sealer.seal_invoice(ADMIN_KEY, sale("sale-b"))
    assert record.number == 2
    assert rig.counter.commits == [1, 1, 2]  # 1 (sale-a), 1 again (skip past the ledger's), 2 (sale-b)
    assert record.prev_hash == rig.store.by_number[(OUTLET.id, "INV", 1)].hash


async def test_a_counter_ahead_of_the_ledger_is_resynced_and_the_sale_takes_the_next_number():
    rig = Rig()
    await rig.sealer.seal_invoice(ADMIN_KEY, sale("sale-a"))
    rig.counter.committed[(OUTLET.id, "INV")] = 4  # number 5 would leave 2-4 missing
    record = await rig.sealer.seal_invoice(ADMIN_KEY, sale("sale-b"))
    assert rig.counter.resyncs == [5] and record.number == 2
    assert len(rig.signer.signed) == 2  # nothing was signed for number 5


async def test_bad_input_is_refused_before_a_number_is_taken():
    rig = Rig()
    with pytest.raises(InvalidArgument) as raised:
        await rig.sealer.seal_invoice(ADMIN_KEY, sale(lines=[SaleLine("Sugar", "1", "1.00", "Z")]))
    assert raised.value.field == "lines[0].tax_group"
    with pytest.raises(NotFound):
        await rig.sealer.seal_invoice(ADMIN_KEY, sale(outlet_id="7d3c1f2e-0000-4000-8000-0000000000ff"))
    assert rig.counter.allocated == []


async def test_a_full_credit_note_refunds_the_invoice_once():
    rig = Rig()
    invoice = await rig.sealer.seal_invoice(ADMIN_KEY, sale())
    note = await rig.sealer.create_credit_note(ADMIN_KEY, CreditNoteRequest(
        original_invoice_id=invoice.id, client_invoice_id="refund-1", pos_terminal_id="T1", cashier_id="C1",
        reason="returned"))
    body = note.invoice_body()
    assert (note.series, note.number, body.kind) == ("CN", 1, "credit_note")
    assert (body.original_fiscal_number, body.total) == (invoice.fiscal_number, "420.00")
    for record in (invoice, note):  # the typed body neither loses nor reorders what was signed
        assert InvoiceBody.from_json(record.body).to_json() == record.body
    with pytest.raises(Fault) as raised:
        await rig.sealer.create_credit_note(ADMIN_KEY, CreditNoteRequest(
            original_invoice_id=invoice.id, client_invoice_id="refund-2", pos_terminal_id="T1", cashier_id="C1",
            reason="again"))
    assert raised.value.code in ("FAILED_PRECONDITION", "INVALID_ARGUMENT")  # a 4xx, and nothing sealed
    assert rig.counter.commits.count(1) == 2 and len(rig.store.by_number) == 2


def test_the_typed_body_reads_and_rewrites_the_canonical_text_exactly():
    body_text = receipt.canonical_json({
        "v": 1, "kind": "invoice", "fiscal_number": "X-INV-0000000001", "fiscal_authority_id": "FC", "outlet_id": "o",
        "outlet_code": "X", "outlet_name": "Shop", "taxpayer_id": "P1", "time_zone": "UTC", "series": "INV",
        "number": 1, "prev_hash": "AAAA", "sealed_at": "2026-11-24T12:00:00.000Z", "sold_at": "2026-11-24T12:00:00.000Z",
        "client_invoice_id": "c1", "pos_terminal_id": "T1", "cashier_id": "C1", "currency": "KES",
        "lines": [{"description": "Tea", "quantity": "1", "unit_price": "10.00", "tax_group": "A",
                   "line_total": "10.00", "sku": ""}],
        "tax_totals": [{"tax_group": "A", "label": "VAT", "rate": "16", "taxable_amount": "8.62",
                        "tax_amount": "1.38", "gross_amount": "10.00"}],
        "total_taxable": "8.62", "total_tax": "1.38", "total": "10.00", "payments": [], "payment_status": "unpaid",
        "buyer": {"name": "Amina"}, "a_future_field": [1, 2]})
    body = InvoiceBody.from_json(body_text)
    assert body.lines[0].line_total == "10.00" and body.buyer["name"] == "Amina" and body.reason is None
    assert body.extra == {"a_future_field": [1, 2]}
    assert body.to_json() == body_text
    with pytest.raises(ValueError):
        InvoiceBody.from_json('{"v": 1, "kind": "invoice"}')
    with pytest.raises(ValueError):
        InvoiceBody.from_json("[]")
