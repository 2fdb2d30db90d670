"""Lease clocks and counter reconciliation with real processes: a ledger whose wall clock is 10 s fast
still seals (leases are durations on its monotonic clock); a counter put ahead of the ledger (as a
restore would) resyncs to the ledger's chain head with no gap; a database that blocks answers a
retryable UNAVAILABLE within the pool/statement/lock timeouts instead of hanging past a lease."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import httpx
import psycopg
import pytest
from fiscal.v1 import counter_pb2, counter_pb2_grpc

from services.ledger import receipt
from stack.processes import free_port, service_process, wait_serving
from tests.harness import auth, ledger_rows, numbers_by_outlet, provision, sale, verify_chains

CLOCK_OFFSET_SECONDS = 10


@pytest.fixture(scope="module")
def skewed_mesh(start_mesh):
    # Short leases (2 s) and a ledger 10 s fast: with the old wall-clock comparison every seal ran out
    # of lease before its insert and answered 503.
    return start_mesh(env={"FISCAL_LEASE_SECONDS": "2"},
                      service_env={"ledger": {"FISCAL_TEST_CLOCK_OFFSET_SECONDS": str(CLOCK_OFFSET_SECONDS)}})


def _one_outlet(mesh) -> tuple[dict, dict, dict, str, str]:
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    return merchant, outlet, auth(merchant["pos_keys"][outlet["id"]]), terminal, cashier


def test_a_ledger_clock_10_s_fast_still_seals(skewed_mesh):
    merchant, outlet, headers, terminal, cashier = _one_outlet(skewed_mesh)
    with httpx.Client(base_url=skewed_mesh.gateway_url, timeout=30) as client:
        answers = [client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers)
                   for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], answers[-1].text
    assert [a.json()["fiscal"]["counter"] for a in answers] == ["1", "2", "3"]
    # The skew is real (else this test would prove nothing): the ledger stamps its own, fast, time.
    sealed_at = receipt.parse_timestamp(answers[-1].json()["fiscal"]["sealed_at"])
    assert sealed_at > datetime.now(UTC) + timedelta(seconds=CLOCK_OFFSET_SECONDS / 2)
    assert numbers_by_outlet(skewed_mesh, merchant["merchant"]["id"]) == {outlet["id"]: [1, 2, 3]}


def test_a_counter_ahead_of_the_ledger_resyncs_to_its_chain_head(skewed_mesh):
    mesh = skewed_mesh
    merchant, outlet, headers, terminal, cashier = _one_outlet(mesh)
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        for _ in range(5):
            answer = client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers)
            assert answer.status_code == 200, answer.text
        # As a restore of the counter's database (or three Commits without inserts) would leave it.
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            moved = conn.execute("UPDATE counter.counters SET last_committed = last_committed + 3 "
                                 "WHERE outlet_id = %s AND series = 'INV' RETURNING last_committed",
                                 (outlet["id"],)).fetchall()
        assert moved == [(8,)]
        answer = client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers)
        assert answer.status_code == 200, answer.text  # one try: no 503 storm, no operator edit
        assert answer.json()["fiscal"]["counter"] == "6"
        assert client.post("/v1/invoices", json=sale(outlet, terminal, cashier),
                           headers=headers).json()["fiscal"]["counter"] == "7"
    assert numbers_by_outlet(mesh, merchant["merchant"]["id"]) == {outlet["id"]: list(range(1, 8))}
    checks = verify_chains(mesh, outlet["id"])
    assert checks and all(c.ok for c in checks), [c.problems[:5] for c in checks]
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 7, "outbox": 7}
    with psycopg.connect(mesh.database_url) as conn:
        resynced = conn.execute("SELECT number, status, reason FROM counter.leases WHERE outlet_id = %s "
                                "AND reason LIKE '%%resynced to ledger head%%'", (outlet["id"],)).fetchall()
    assert [(n, s) for n, s, _ in resynced] == [(9, "released")]
    # Loud: a counter moving backwards is an operator-visible event in the counter's log.
    counter_log = mesh.processes["counter"][0].log_path.read_text()
    assert "counter was ahead of the ledger" in counter_log and outlet["id"] in counter_log


# --- database timeouts: a blocked database answers UNAVAILABLE, within the timeouts -----------------

@pytest.fixture(scope="module", params=[("0.3", "5"), ("5", "0.3")], ids=["lock_timeout", "statement_timeout"])
def blocked_counter(request, database_url, mesh_certificates, work_dir):
    """A counter whose database waits are bounded far below its lease, by lock_timeout or by
    statement_timeout (whichever is the shorter fires on a row-lock wait)."""
    lock_timeout, statement_timeout = request.param
    env = {"DATABASE_URL": database_url, "FISCAL_LEDGER_ADDR": f"127.0.0.1:{free_port()}",
           "FISCAL_LEASE_SECONDS": "10", "FISCAL_DB_LOCK_TIMEOUT_SECONDS": lock_timeout,
           "FISCAL_DB_STATEMENT_TIMEOUT_SECONDS": statement_timeout, **mesh_certificates.env("counter")}
    process = service_process("counter", free_port(), env, work_dir / "logs", replica=41 + request.param_index).start()
    try:
        wait_serving(process)
        yield process
    finally:
        process.stop()


async def test_a_locked_counter_row_answers_unavailable_not_a_hang(blocked_counter, database_url,
                                                                  mesh_certificates):
    outlet = f"outlet-{uuid.uuid4().hex[:12]}"
    channel = mesh_certificates.aio_channel(f"127.0.0.1:{blocked_counter.port}", "ledger", "counter")
    stub = counter_pb2_grpc.CounterServiceStub(channel)
    request = counter_pb2.AllocateRequest(outlet_id=outlet, series="INV", holder="test")
    try:
        first = await stub.Allocate(request, timeout=5)
        await stub.Commit(counter_pb2.CommitRequest(lease_id=first.lease_id), timeout=5)
        assert first.ttl.ToTimedelta() == timedelta(seconds=10)  # the lease as a duration
        # Someone holds the counter row's lock (a stuck transaction): the counter's UPDATE waits on it.
        with psycopg.connect(database_url) as blocker:
            blocker.execute("SELECT 1 FROM counter.counters WHERE outlet_id = %s FOR UPDATE", (outlet,))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                # Without the timeouts this waited for the whole 3 s deadline (DEADLINE_EXCEEDED).
                await stub.Allocate(request, timeout=3)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
            blocker.rollback()
        second = await stub.Allocate(request, timeout=5)  # lock gone: served again
        assert second.number == 2
    finally:
        await channel.close()
    assert "database unavailable" in blocked_counter.log_path.read_text()
