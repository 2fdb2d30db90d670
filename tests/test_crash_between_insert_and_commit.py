"""The real ledger SIGKILLed after its insert committed and before counter.Commit: the counter's lease
expires, the counter reconciles against the (restarted) ledger's chain head and the outlet continues at
n+1; the killed sale is in the ledger once and its retry answers the same invoice.

The window is made with the ledger's test-only fault hook FISCAL_TEST_PAUSE_AFTER_INSERT=<path>: each
seal, once its insert has committed, writes its client_invoice_id to <path> and waits for ever."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from tests.harness import auth, ledger_rows, numbers_by_outlet, provision, sale, verify_chains

RETRYABLE = (502, 503, 504)


@pytest.fixture(scope="module")
def crash_mesh(start_mesh):
    # 2 s leases: the killed seal's number is reconciled soon after the kill.
    return start_mesh(env={"FISCAL_LEASE_SECONDS": "2"})


def _post_until_answered(client: httpx.Client, body: dict, headers: dict, attempts: int = 60) -> httpx.Response:
    """The POS's retry: the same sale again while the gateway answers 'retry' (a restarted ledger is
    back in Envoy's rotation after its health checks pass)."""
    for _ in range(attempts):
        answer = client.post("/v1/invoices", json=body, headers=headers)
        if answer.status_code not in RETRYABLE:
            return answer
        time.sleep(0.25)
    raise AssertionError(f"still {answer.status_code} after {attempts} tries: {answer.text}")


def _db_row(mesh, sql: str, *params):
    with psycopg.connect(mesh.database_url) as conn:
        return conn.execute(sql, params).fetchall()


def test_real_ledger_killed_between_insert_and_commit_continues_at_n_plus_1(crash_mesh, tmp_path):
    mesh = crash_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])
    ledger = mesh.processes["ledger"][0]
    marker = tmp_path / "paused-after-insert"

    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        for _ in range(3):
            assert _post_until_answered(client, sale(outlet, terminal, cashier), headers).status_code == 200

        # A ledger that stops every seal between its insert and counter.Commit.
        ledger.env["FISCAL_TEST_PAUSE_AFTER_INSERT"] = str(marker)
        mesh.restart(ledger)
        mesh.wait_healthy()
        crashed = sale(outlet, terminal, cashier)
        outcome: dict = {}

        def send() -> None:
            with httpx.Client(base_url=mesh.gateway_url, timeout=60) as own:
                for _ in range(40):  # until the seal reaches the ledger (it may be out of rotation briefly)
                    try:
                        outcome["answer"] = own.post("/v1/invoices", json=crashed, headers=headers)
                    except httpx.HTTPError as exc:
                        outcome["answer"] = exc
                    if marker.exists():
                        return
                    time.sleep(0.25)

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the seal never reached the pause: {outcome}"
        assert marker.read_text() == crashed["client_invoice_id"]

        # Inside the window: number 4 is in the ledger, its lease still open at the counter.
        assert _db_row(mesh, "SELECT number FROM ledger.invoices WHERE client_invoice_id = %s",
                       crashed["client_invoice_id"]) == [(4,)]
        assert _db_row(mesh, "SELECT last_committed, lease_number FROM counter.counters "
                             "WHERE outlet_id = %s AND series = 'INV'", outlet["id"]) == [(3, 4)]

        ledger.kill()  # SIGKILL: its counter.Commit never happens
        sender.join(timeout=60)
        assert not sender.is_alive()
        answer = outcome["answer"]
        assert isinstance(answer, httpx.HTTPError) or answer.status_code in RETRYABLE, answer  # never a 200

        ledger.env.pop("FISCAL_TEST_PAUSE_AFTER_INSERT")
        mesh.restart(ledger)
        # The next sale on the outlet waits out the 2 s lease; the counter asks the ledger's head (4).
        after = _post_until_answered(client, sale(outlet, terminal, cashier), headers)
        assert after.status_code == 200, after.text
        assert after.json()["fiscal"]["counter"] == "5"
        # The POS retries the killed sale: the same invoice, which was sealed exactly once.
        retried = _post_until_answered(client, crashed, headers)
        assert retried.status_code == 200, retried.text
        assert retried.json()["fiscal"]["counter"] == "4"

    rows = _db_row(mesh, "SELECT id::text, number FROM ledger.invoices WHERE client_invoice_id = %s",
                   crashed["client_invoice_id"])
    assert rows == [(retried.json()["id"], 4)]
    assert numbers_by_outlet(mesh, merchant["merchant"]["id"]) == {outlet["id"]: [1, 2, 3, 4, 5]}
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 5, "outbox": 5}
    checks = verify_chains(mesh, outlet["id"])
    assert checks and all(c.ok for c in checks), [c.problems[:5] for c in checks]
    # The counter learnt number 4 from the ledger: its lease is recorded as committed by reconciliation.
    assert _db_row(mesh, "SELECT status, reason FROM counter.leases WHERE outlet_id = %s AND number = 4 "
                         "AND status <> 'released'", outlet["id"]) == [
        ("committed", "reconciled after expiry: ledger head 4")]
