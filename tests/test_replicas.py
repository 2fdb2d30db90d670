"""Two replicas of every service behind Envoy: still gapless, and a replica can die."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.chain_verifier import assert_outlets_verify
from tests.harness import (
    assert_exactly_once,
    assert_only_retryable_errors,
    ledger_rows,
    numbers_by_outlet,
    provision,
    seal_many,
    verify_chains,
)


def test_two_replicas_of_everything_seal_2000_gapless_while_one_ledger_replica_dies(start_mesh):
    mesh = start_mesh(replicas=2, env={"FISCAL_LEASE_SECONDS": "2"})
    merchant = provision(mesh, outlets=4, terminals=5)
    result, progress = {}, []
    load = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal=100, tolerate_errors=True, on_progress=lambda: progress.append(1)))))
    load.start()
    while len(progress) < 500 and load.is_alive():
        time.sleep(0.05)
    victim = mesh.processes["ledger"][1]
    victim.kill()  # Envoy's health checks and outlier detection move traffic to the other replica
    load.join(timeout=600)
    assert not load.is_alive(), "load did not finish"
    mesh.restart(victim)
    assert len(result["ok"]) == 2000
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        assert numbers[outlet["id"]] == list(range(1, 501))
        assert all(check.ok for check in verify_chains(mesh, outlet["id"]))
    assert_outlets_verify(mesh.database_url, mesh.gateway_url, [o["id"] for o in merchant["outlets"]])
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 2000, "outbox": 2000}
    assert_exactly_once(mesh, merchant, result)
    assert_only_retryable_errors(result)
    # Envoy spread the seals over both ledger replicas (its access log names the upstream of each).
    access_log = mesh.envoy.log_path.read_text()
    for process in mesh.processes["ledger"]:
        assert f'"upstream":"127.0.0.1:{process.port}"' in access_log.replace(" ", "")
