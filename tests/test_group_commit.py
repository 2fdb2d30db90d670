"""Group commit against the real mesh (two replicas of every service, 2 s leases): a ledger SIGKILLed in
the middle of a group commit leaves no gap and no duplicate and its range's numbers are reissued; a
replica whose lease expired while it held a signed batch cannot write it (the chain head's
compare-and-set refuses it; the batch is sealed again after the head); retries of sales that were in a
failed batch get one invoice each.

Both use the ledger's test-only hook FISCAL_TEST_HOLD_BEFORE_INSERT=<path> (services/ledger/wiring.py):
the first batch (of at least FISCAL_TEST_HOLD_MIN_BATCH seals) that passes its lease check writes its
client_invoice_ids to <path> and waits there until <path> is removed. Sales go straight to one ledger
replica over the mesh (as the gateway), so the test decides which replica seals what."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from fiscal.v1 import ledger_pb2, ledger_pb2_grpc
from google.protobuf import json_format

from tests.chain_verifier import assert_outlets_verify
from tests.harness import ledger_rows, numbers_by_outlet, provision, sale, verify_chains


@pytest.fixture(scope="module")
def replicated_mesh(start_mesh):
    return start_mesh(replicas=2, env={"FISCAL_LEASE_SECONDS": "2"})


def _address(mesh, replica: int) -> str:
    return f"127.0.0.1:{mesh.ports['ledger'][replica]}"


def _request(body: dict) -> ledger_pb2.SealInvoiceRequest:
    return json_format.ParseDict(body, ledger_pb2.SealInvoiceRequest())


def _seal(mesh, replica: int, body: dict, key: str, timeout: float = 30) -> ledger_pb2.Invoice:
    with mesh.certificates.channel(_address(mesh, replica), "gateway", "ledger") as channel:
        return ledger_pb2_grpc.InvoiceServiceStub(channel).SealInvoice(
            _request(body), timeout=timeout, metadata=[("authorization", f"Bearer {key}")], wait_for_ready=True)


def _seal_until_sealed(mesh, replica: int, body: dict, key: str) -> ledger_pb2.Invoice:
    """The POS's retry of the same sale while the answer says 'retry'."""
    for _ in range(40):
        try:
            return _seal(mesh, replica, body, key)
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED,
                                    grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            time.sleep(0.25)
    raise AssertionError(f"sale {body['client_invoice_id']} never sealed")


def _rows(mesh, sql: str, *params):
    with psycopg.connect(mesh.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def _wait_for(marker: Path, what: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert marker.exists(), f"{what} never reached the hook"


def _with_hook(mesh, replica: int, marker: Path, min_batch: int = 1):
    ledger = mesh.processes["ledger"][replica]
    ledger.env["FISCAL_TEST_HOLD_BEFORE_INSERT"] = str(marker)
    ledger.env["FISCAL_TEST_HOLD_MIN_BATCH"] = str(min_batch)
    mesh.restart(ledger)
    mesh.wait_healthy()
    return ledger


def _without_hook(mesh, ledger) -> None:
    ledger.env.pop("FISCAL_TEST_HOLD_BEFORE_INSERT", None)
    ledger.env.pop("FISCAL_TEST_HOLD_MIN_BATCH", None)
    mesh.restart(ledger)
    mesh.wait_healthy()


def _assert_each_sale_once_and_chain_intact(mesh, merchant: dict, outlet: dict, answers: dict[str, int]) -> None:
    rows = dict(_rows(mesh, "SELECT client_invoice_id, number FROM ledger.invoices WHERE outlet_id = %s",
                      outlet["id"]))
    assert rows == answers  # every sale sent is in the ledger exactly once, with the number it was answered
    assert numbers_by_outlet(mesh, merchant["merchant"]["id"]) == {outlet["id"]: list(range(1, len(answers) + 1))}
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": len(answers), "outbox": len(answers)}
    checks = verify_chains(mesh, outlet["id"])
    assert checks and all(c.ok for c in checks), [c.problems[:5] for c in checks]
    assert_outlets_verify(mesh.database_url, mesh.gateway_url, [outlet["id"]])


def test_a_ledger_killed_in_the_middle_of_a_group_commit_leaves_no_gap_and_its_range_is_reissued(
        replicated_mesh, tmp_path):
    mesh = replicated_mesh
    merchant = provision(mesh, outlets=1, terminals=4)
    outlet = merchant["outlets"][0]
    key = merchant["pos_keys"][outlet["id"]]
    terminals, cashier = merchant["terminals"][outlet["id"]], merchant["cashiers"][outlet["id"]][0]
    marker = tmp_path / "held-batch"
    ledger = _with_hook(mesh, 0, marker, min_batch=2)
    sent: list[dict] = []

    async def load() -> None:
        # Rounds of sales arriving together on replica 0 until one of its batches (of 2 or more) is held.
        async with mesh.certificates.aio_channel(_address(mesh, 0), "gateway", "ledger") as channel:
            stub = ledger_pb2_grpc.InvoiceServiceStub(channel)
            for _ in range(40):
                if marker.exists():
                    return
                bodies = [sale(outlet, terminals[i % len(terminals)], cashier) for i in range(6)]
                sent.extend(bodies)
                await asyncio.gather(*(stub.SealInvoice(_request(b), timeout=60,
                                                        metadata=[("authorization", f"Bearer {key}")])
                                       for b in bodies), return_exceptions=True)

    loader = threading.Thread(target=lambda: asyncio.run(load()))
    loader.start()
    _wait_for(marker, "a batch of several sales", loader)
    held = marker.read_text().splitlines()
    assert len(held) >= 2
    # Inside the group commit: a range lease covers exactly the held batch, which is signed and unwritten.
    [(last_committed, first, last)] = _rows(
        mesh, "SELECT last_committed, lease_number, lease_last FROM counter.counters "
              "WHERE outlet_id = %s AND series = 'INV'", outlet["id"])
    assert (first, last) == (last_committed + 1, last_committed + len(held))
    assert _rows(mesh, "SELECT count(*) FROM ledger.invoices WHERE client_invoice_id = ANY(%s)", held) == [(0,)]

    ledger.kill()  # SIGKILL in the middle of the group commit
    loader.join(timeout=120)
    assert not loader.is_alive()

    # Replica 1 seals the next sale: once the range's lease expires, the counter reconciles against the
    # ledger's head and reissues the range's first number.
    after = sale(outlet, terminals[0], cashier)
    assert _seal_until_sealed(mesh, 1, after, key).fiscal.counter == first
    _without_hook(mesh, ledger)
    # Every sale sent is retried by its POS (the killed ones and those answered): one invoice each. The
    # held batch's sales go first: nothing else is sealing, so they take the numbers right after `after`.
    # (Other sales of the same round may also have died unsealed on replica 0; sent later, they follow.)
    answers = {after["client_invoice_id"]: first}
    held_first = sorted(sent, key=lambda body: body["client_invoice_id"] not in held)
    for body in held_first:
        answers[body["client_invoice_id"]] = _seal_until_sealed(mesh, len(answers) % 2, body, key).fiscal.counter
    assert {answers[cid] for cid in held} == set(range(first + 1, first + 1 + len(held)))
    _assert_each_sale_once_and_chain_intact(mesh, merchant, outlet, answers)


def test_a_replica_whose_lease_expired_cannot_write_its_batch(replicated_mesh, tmp_path):
    mesh = replicated_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    key = merchant["pos_keys"][outlet["id"]]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    marker = tmp_path / "zombie-batch"
    ledger = _with_hook(mesh, 0, marker)
    answers: dict[str, int] = {}
    for _ in range(2):
        body = sale(outlet, terminal, cashier)
        answers[body["client_invoice_id"]] = _seal(mesh, 1, body, key).fiscal.counter

    zombie_sale = sale(outlet, terminal, cashier)
    outcome: dict = {}

    def zombie() -> None:
        try:
            outcome["answer"] = _seal(mesh, 0, zombie_sale, key, timeout=60)
        except grpc.RpcError as error:
            outcome["answer"] = error

    held = threading.Thread(target=zombie)
    held.start()
    _wait_for(marker, "the zombie's sale", held)
    # Replica 0 holds number 3, signed, past its lease check. Its lease expires; replica 1 seals number 3.
    other = sale(outlet, terminal, cashier)
    assert _seal(mesh, 1, other, key).fiscal.counter == 3
    answers[other["client_invoice_id"]] = 3
    marker.unlink()  # the zombie resumes with its signed entry for number 3
    held.join(timeout=60)
    assert not held.is_alive()
    answer = outcome["answer"]
    assert isinstance(answer, ledger_pb2.Invoice), answer
    # Refused by the compare-and-set, then sealed again after the head: one invoice, the next number.
    assert answer.fiscal.counter == 4
    answers[zombie_sale["client_invoice_id"]] = 4
    assert "ChainMoved" in ledger.log_path.read_text()
    _without_hook(mesh, ledger)
    _assert_each_sale_once_and_chain_intact(mesh, merchant, outlet, answers)
