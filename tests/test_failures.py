"""Killed, stopped and failing services in the middle of seals: no gap, no duplicate, nothing lost,
and the clients saw only answers they may retry."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.chain_verifier import assert_outlets_verify
from tests.harness import (
    assert_exactly_once,
    assert_only_retryable_errors,
    auth,
    errors_between,
    ledger_rows,
    numbers_by_outlet,
    provision,
    sale,
    seal_many,
    verify_chains,
    wait_for_error,
)

SHUTDOWN_GRACE_SECONDS = 3.0


@pytest.fixture(scope="module")
def fragile_mesh(start_mesh):
    # Short leases so a seal abandoned by a killed ledger frees its number in about a second; a short
    # shutdown grace so that "exits within the grace" is checked against a small number.
    return start_mesh(env={"FISCAL_LEASE_SECONDS": "1.5", "FISCAL_SIGNING_KEY_REFRESH_SECONDS": "1",
                           "FISCAL_SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS)})


def _assert_exactly_once_and_gapless(mesh, merchant, sales_per_outlet: int, result: dict | None = None) -> None:
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        assert numbers.get(outlet["id"]) == list(range(1, sales_per_outlet + 1)), outlet["code"]
        checks = verify_chains(mesh, outlet["id"])
        assert all(c.ok for c in checks), [c.problems[:5] for c in checks]
    assert_outlets_verify(mesh.database_url, mesh.gateway_url, [o["id"] for o in merchant["outlets"]])
    rows = ledger_rows(mesh, merchant["merchant"]["id"])
    assert rows == {"invoices": sales_per_outlet * len(merchant["outlets"]),
                    "outbox": sales_per_outlet * len(merchant["outlets"])}
    if result is not None:
        assert_exactly_once(mesh, merchant, result)


def _load_while(mesh, merchant, per_terminal: int, disrupt) -> dict:
    """Run the load in a thread, call disrupt(live_error_log) while it runs, wait for the load to finish.
    The result carries the outage window (time.monotonic() before and after disrupt) for errors_between."""
    result: dict = {}
    sealed, live_errors = [], []
    thread = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal, tolerate_errors=True, on_progress=lambda: sealed.append(1),
        error_log=live_errors))))
    thread.start()
    while len(sealed) < 20 and thread.is_alive():
        time.sleep(0.05)
    result["sealed_before_disruption"] = len(sealed)
    assert thread.is_alive(), "the load ended before the disruption: it would test nothing"
    outage_start = time.monotonic()
    result["disruption"] = disrupt(live_errors)
    result["outage"] = (outage_start, time.monotonic())
    thread.join(timeout=240)
    assert not thread.is_alive(), "load did not finish"
    return result


@pytest.mark.parametrize("victim", ["signing", "ledger", "counter"])
def test_service_killed_mid_seal_leaves_no_gap_and_no_duplicate(fragile_mesh, victim):
    mesh = fragile_mesh
    merchant = provision(mesh, outlets=2, terminals=3)
    per_terminal = 25

    def kill_and_restart(live_errors):
        process = mesh.processes[victim][0]
        killed_at = time.monotonic()
        process.kill()  # SIGKILL: no graceful anything
        wait_for_error(live_errors, since=killed_at)  # down until the clients feel it, however long that takes
        mesh.restart(process)

    result = _load_while(mesh, merchant, per_terminal, kill_and_restart)
    assert len(result["ok"]) == 2 * 3 * per_terminal
    # The kill landed mid-load: sales were sealed before it and after it, and the clients felt it.
    assert 0 < result["sealed_before_disruption"] < 2 * 3 * per_terminal
    assert errors_between(result, *result["outage"]), "no client saw the outage: the kill tested nothing"
    # Only "retry" answers (503 unavailable, 409 counter busy) or a dropped connection; never a 500, never
    # a 409 ALREADY_EXISTS for a sale retried with the same body.
    assert_only_retryable_errors(result)
    _assert_exactly_once_and_gapless(mesh, merchant, 3 * per_terminal, result)


def test_signing_down_answers_503_writes_nothing_and_the_next_seal_takes_the_number(fragile_mesh):
    mesh = fragile_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
    headers = auth(merchant["pos_keys"][outlet["id"]])
    signing = mesh.processes["signing"][0]
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        assert client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers).status_code == 200
        signing.stop()
        try:
            failed = client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers)
            assert failed.status_code == 503, failed.text
            assert failed.json()["code"] == 14 and "signing" in failed.json()["message"]
            assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 1, "outbox": 1}
        finally:
            mesh.restart(signing)
        nxt = client.post("/v1/invoices", json=sale(outlet, terminal, cashier), headers=headers)
        assert nxt.status_code == 200, nxt.text
        assert nxt.json()["fiscal"]["counter"] == "2"  # the failed seal's number was released, not lost
    _assert_exactly_once_and_gapless(mesh, merchant, 2)


@pytest.mark.parametrize("victim", ["counter", "signing", "ledger"])
def test_sigterm_under_load_drains_exits_cleanly_and_loses_nothing(fragile_mesh, victim):
    """SIGTERM with seals in flight: they complete or get a retryable answer, the process exits 0 within
    its shutdown grace, and once it is back every sale is sealed exactly once, gapless."""
    mesh = fragile_mesh
    merchant = provision(mesh, outlets=2, terminals=3)
    # Enough sales to outlast the drain (the process keeps serving FISCAL_SHUTDOWN_DRAIN_SECONDS after
    # SIGTERM while the gateway moves away) and reach the time it is really gone.
    per_terminal = 150
    process = mesh.processes[victim][0]

    def terminate_and_restart(live_errors):
        earlier = len(process.log_path.read_text())
        stopped_at = time.monotonic()
        code = process.stop(timeout=SHUTDOWN_GRACE_SECONDS + 5)  # beyond that, stop() SIGKILLs: code -9
        stopped_log = process.log_path.read_text()[earlier:]  # this run's lines only
        wait_for_error(live_errors, since=stopped_at)  # stay down until the clients feel it
        mesh.restart(process)
        return code, stopped_log

    result = _load_while(mesh, merchant, per_terminal, terminate_and_restart)
    code, stopped_log = result["disruption"]
    assert code == 0, stopped_log[-2000:]
    assert '"event": "stopped"' in stopped_log
    assert 0 < result["sealed_before_disruption"] < 2 * 3 * per_terminal
    assert errors_between(result, *result["outage"]), "no client saw the service go: SIGTERM tested nothing"
    assert_only_retryable_errors(result)
    assert len(result["ok"]) == 2 * 3 * per_terminal
    _assert_exactly_once_and_gapless(mesh, merchant, 3 * per_terminal, result)
