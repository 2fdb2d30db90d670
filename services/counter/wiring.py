"""Assemble the counter service: settings, database, ledger client, notify listener, servicer.

Environment:
  FISCAL_PORT (7101), DATABASE_URL, FISCAL_TLS_CERT / FISCAL_TLS_KEY / FISCAL_TLS_CA (mesh identity "counter"),
  FISCAL_LEDGER_ADDR (127.0.0.1:7103): the ledger, asked for its chain head when a lease expired
  FISCAL_LEASE_SECONDS (10): how long a number stays leased before it is reconciled
  FISCAL_RPC_TIMEOUT_SECONDS (5): deadline of the GetChainHead call (capped by the caller's deadline)
  FISCAL_COUNTER_POLL_SECONDS (0.05): how often a waiting Allocate re-checks without a notification
  FISCAL_COUNTER_MAX_WAIT_SECONDS (30): longest Allocate wait when the caller set no deadline
  FISCAL_COUNTER_MIGRATE (1): run the counter schema's migrations at start (advisory-locked)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import grpc
from fiscal.v1 import counter_pb2, counter_pb2_grpc, ledger_pb2, ledger_pb2_grpc

from services.counter.domain import Counters
from services.counter.servicer import CounterServicer
from services.counter.store import NOTIFY_CHANNEL, CounterStore, freed_key
from services.runtime.channels import open_channel
from services.runtime.config import env_float, env_str
from services.runtime.database import create_engine, migrate
from services.runtime.grpc_errors import fault_from_rpc_error
from services.runtime.notify_listener import NotifyListener, psycopg_conninfo
from services.runtime.server import Mounted, rpc_timeout, run_service

DEFAULT_PORT = 7101

# Which mesh identities may call which method (services/runtime/mesh_tls.py): only the ledger seals.
ALLOWED_CALLERS = {
    "/fiscal.v1.CounterService/Allocate": {"ledger"},
    "/fiscal.v1.CounterService/Commit": {"ledger"},
    "/fiscal.v1.CounterService/Release": {"ledger"},
    "/fiscal.v1.CounterService/GetCounter": {"ledger", "operator"},
}


class LedgerChainHeads:
    """domain.ChainHeads over the ledger's LedgerInternalService."""

    def __init__(self, channel: grpc.aio.Channel):
        self.stub = ledger_pb2_grpc.LedgerInternalServiceStub(channel)

    async def last_number(self, outlet_id: str, series: str, timeout: float) -> int:
        try:
            head = await self.stub.GetChainHead(
                ledger_pb2.GetChainHeadRequest(outlet_id=outlet_id, series=series), timeout=timeout)
        except grpc.RpcError as error:
            raise fault_from_rpc_error(error, "ledger (asked to reconcile an expired lease; nothing issued)",
                                       unavailable_reason="LEDGER_UNAVAILABLE") from error
        return head.last_number


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server) -> AsyncIterator[Mounted]:
    if os.environ.get("FISCAL_COUNTER_MIGRATE", "1") not in ("0", "false", "no"):
        await asyncio.to_thread(migrate, "counter")
    engine = create_engine(default_pool_size=10)
    ledger_channel = open_channel(env_str("FISCAL_LEDGER_ADDR", "127.0.0.1:7103"), "ledger")
    store = CounterStore(engine)
    counters = Counters(
        store, LedgerChainHeads(ledger_channel),
        lease_seconds=env_float("FISCAL_LEASE_SECONDS", 10.0),
        ledger_timeout=rpc_timeout(),
        # NOTIFY wakes waiters; polling is only the fallback for a lost notification.
        poll_seconds=env_float("FISCAL_COUNTER_POLL_SECONDS", 2.0),
        max_wait_seconds=env_float("FISCAL_COUNTER_MAX_WAIT_SECONDS", 30.0),
    )
    def on_freed(payload: str) -> None:
        key = freed_key(payload)
        if key is not None:
            counters.waiters.wake(key)

    listener = NotifyListener(psycopg_conninfo(engine), NOTIFY_CHANNEL, on_freed, counters.waiters.wake_all,
                              "freed counters")
    counter_pb2_grpc.add_CounterServiceServicer_to_server(CounterServicer(counters), server)

    async def database_ready() -> str | None:
        await store.ping()
        return None

    try:
        yield Mounted(
            service_names=[counter_pb2.DESCRIPTOR.services_by_name["CounterService"].full_name],
            readiness_probe=database_ready,
            background=[listener.run],
        )
    finally:
        await ledger_channel.close()
        await engine.dispose()


def main() -> None:
    run_service("counter", DEFAULT_PORT, mount, ALLOWED_CALLERS)
