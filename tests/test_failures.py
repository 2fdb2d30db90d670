"""Killed and failing services in the middle of seals: no gap, no duplicate, nothing lost."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.harness import auth, ledger_rows, numbers_by_outlet, provision, sale, seal_many, verify_chains


@pytest.fixture(scope="module")
def fragile_mesh(start_mesh):
    # Short leases so a seal abandoned by a killed ledger frees its number in about a second.
    return start_mesh(env={"FISCAL_LEASE_SECONDS": "1.5", "FISCAL_SIGNING_KEY_REFRESH_SECONDS": "1"})


def _assert_exactly_once_and_gapless(mesh, merchant, sales_per_outlet: int) -> None:
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        assert numbers.get(outlet["id"]) == list(range(1, sales_per_outlet + 1)), outlet["code"]
        checks = verify_chains(mesh, outlet["id"])
        assert all(c.ok for c in checks), [c.problems[:5] for c in checks]
    rows = ledger_rows(mesh, merchant["merchant"]["id"])
    assert rows == {"invoices": sales_per_outlet * len(merchant["outlets"]),
                    "outbox": sales_per_outlet * len(merchant["outlets"])}


def _load_while(mesh, merchant, per_terminal: int, disrupt) -> dict:
    """Run the load in a thread, call disrupt() while it runs, wait for the load to finish."""
    result: dict = {}
    sealed = []
    thread = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal, tolerate_errors=True, on_progress=lambda: sealed.append(1)))))
    thread.start()
    while len(sealed) < 20 and thread.is_alive():
        time.sleep(0.05)
    result["sealed_before_disruption"] = len(sealed)
    assert thread.is_alive(), "the load ended before the disruption: it would test nothing"
    disrupt()
    thread.join(timeout=240)
    assert not thread.is_alive(), "load did not finish"
    return result


@pytest.mark.parametrize("victim", ["signing", "ledger", "counter"])
def test_service_killed_mid_seal_leaves_no_gap_and_no_duplicate(fragile_mesh, victim):
    mesh = fragile_mesh
    merchant = provision(mesh, outlets=2, terminals=3)
    per_terminal = 25

    def kill_and_restart():
        process = mesh.processes[victim][0]
        process.kill()  # SIGKILL: no graceful anything
        time.sleep(0.5)
        mesh.restart(process)

    result = _load_while(mesh, merchant, per_terminal, kill_and_restart)
    assert len(result["ok"]) == 2 * 3 * per_terminal
    # The kill landed mid-load: sales were sealed before it and after it.
    assert 0 < result["sealed_before_disruption"] < 2 * 3 * per_terminal
    # Only "retry" answers (busy, unavailable) or a dropped connection; never a 500 or a 4xx refusal.
    assert all(status in (409, 502, 503, 504) or isinstance(status, str)
               for status, _ in result["errors"]), result["errors"][:5]
    _assert_exactly_once_and_gapless(mesh, merchant, 3 * per_terminal)


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


@pytest.mark.parametrize("service", ["counter", "signing", "ledger"])
def test_sigterm_drains_and_exits_cleanly(fragile_mesh, service):
    process = fragile_mesh.processes[service][0]
    assert process.stop() == 0  # SIGTERM: health NOT_SERVING, drain, close, exit 0
    assert '"event": "stopped"' in process.log_path.read_text()
    fragile_mesh.restart(process)
