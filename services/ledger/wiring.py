"""Assemble the ledger process: database, counter and signing clients, caches, servicers, and the
outbox relay that publishes the ledger's events to the webhooks service.

Environment of the relay (services/runtime/outbox_relay.py): FISCAL_WEBHOOKS_ADDR (127.0.0.1:7104),
FISCAL_OUTBOX_POLL_SECONDS (0.2), FISCAL_OUTBOX_BATCH (200), FISCAL_OUTBOX_PUBLISH_TIMEOUT_SECONDS (5),
FISCAL_OUTBOX_MIN_GAP_SECONDS (0.05).

The DGI upload sync (services/ledger/dgi_sync.py, issue #10) runs as a background job of every replica
when FISCAL_DGI_URL is set; its settings are in that module's docstring.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import sqlalchemy as sa
from fiscal.v1 import counter_pb2, counter_pb2_grpc, ledger_pb2, ledger_pb2_grpc, signing_pb2, signing_pb2_grpc

from services.ledger.access import Principal, bearer_token, hash_api_key
from services.ledger.dgi_client import DgiClient
from services.ledger.dgi_sync import DgiSyncWorker, SyncSettings
from services.ledger.invoice_payments import InvoicePayments
from services.ledger.page_tokens import PageTokens
from services.ledger.public_keys import PublicKeyDirectory
from services.ledger.sealing import Lease, Sealer, utcnow
from services.ledger.servicer import InvoiceServicer, LedgerInternalServicer, TerminalServicer
from services.ledger.store import LedgerStore
from services.runtime.channels import open_channel
from services.runtime.config import env_float, env_str
from services.runtime.database import create_engine
from services.runtime.faults import Unauthenticated
from services.runtime.grpc_errors import fault_from_rpc_error
from services.runtime.outbox_relay import OutboxRelay, PostgresOutbox, RelaySettings, webhooks_publisher
from services.runtime.server import Mounted, rpc_timeout, run_service

DEFAULT_PORT = 7103

# Which mesh identities may call which method (services/runtime/mesh_tls.py): the public API only
# through the gateway (Envoy), the chain head only to the counter, API key look-ups only to the other
# public services (which get the caller's Authorization header from the gateway), payments on invoices
# only to the payments service.
ALLOWED_CALLERS: dict[str, set[str]] = {
    "/fiscal.v1.LedgerInternalService/GetChainHead": {"counter"},
    "/fiscal.v1.LedgerInternalService/AuthenticateApiKey": {"webhooks", "payments"},
    **{f"/fiscal.v1.LedgerInternalService/{name}": {"payments"}
       for name in ("RecordPayment", "SealSaleForPayment", "FindInvoice", "CheckSale")},
    **{f"/{method.containing_service.full_name}/{method.name}": {"gateway"}
       for name in ("InvoiceService", "TerminalService")
       for method in ledger_pb2.DESCRIPTOR.services_by_name[name].methods},
}


class TtlCache:
    """A small time-bounded cache. Keys and outlets change rarely; a bounded staleness (seconds) buys one
    query less per seal. Revoking a key takes effect within the TTL."""

    def __init__(self, ttl: float, max_items: int = 10_000):
        self.ttl, self.max_items, self._items = ttl, max_items, {}

    def get(self, key):
        hit = self._items.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def put(self, key, value) -> None:
        if len(self._items) >= self.max_items:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl, value)


class CounterAllocator:
    """sealing.NumberAllocator over the counter service."""

    def __init__(self, channel: grpc.aio.Channel, allocate_timeout: float):
        self.stub = counter_pb2_grpc.CounterServiceStub(channel)
        self.allocate_timeout = allocate_timeout

    async def allocate(self, outlet_id: str, series: str, holder: str, count: int = 1,
                       commit_first: Lease | None = None) -> Lease:
        # The lease's ttl runs from when the counter issued it, which is after this moment: counting
        # from here on our own monotonic clock is conservative and needs no clock agreement.
        sent_at = time.monotonic()
        try:
            lease = await self.stub.Allocate(counter_pb2.AllocateRequest(outlet_id=outlet_id, series=series,
                                                                         holder=holder, count=count,
                                                                         commit_lease_id=commit_first.lease_id
                                                                         if commit_first else ""),
                                             timeout=self.allocate_timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise fault_from_rpc_error(error, "fiscal counter") from error
        # No ttl (a counter older than this field) gives no time: every seal then retries, never races.
        ttl = lease.ttl.ToTimedelta().total_seconds() if lease.HasField("ttl") else 0.0
        return Lease(lease.lease_id, lease.number, lease.expires_at.ToDatetime(tzinfo=UTC), deadline=sent_at + ttl,
                     last=lease.last)

    async def commit(self, lease: Lease) -> None:
        await self.stub.Commit(counter_pb2.CommitRequest(lease_id=lease.lease_id), timeout=rpc_timeout(),
                               wait_for_ready=True)

    async def release(self, lease: Lease, reason: str) -> None:
        await self.stub.Release(counter_pb2.ReleaseRequest(lease_id=lease.lease_id, reason=reason[:200]),
                                timeout=rpc_timeout(), wait_for_ready=True)

    async def resync(self, lease: Lease, reason: str) -> None:
        await self.stub.Release(counter_pb2.ReleaseRequest(lease_id=lease.lease_id, reason=reason[:200],
                                                           resync_from_ledger=True),
                                timeout=rpc_timeout(), wait_for_ready=True)


def wall_clock():
    """Test-only: FISCAL_TEST_CLOCK_OFFSET_SECONDS shifts this ledger's wall clock (a ledger whose clock
    is wrong). Unset, as always outside tests: the real clock."""
    offset = timedelta(seconds=env_float("FISCAL_TEST_CLOCK_OFFSET_SECONDS", 0.0))
    return (lambda: utcnow() + offset) if offset else utcnow


def pause_after_insert_hook():
    """Test-only fault hook: FISCAL_TEST_PAUSE_AFTER_INSERT=<path> makes each seal (each batch: its first
    seal), once its insert has committed and before counter.Commit, write its client_invoice_id to <path>
    and wait for ever, so a test can SIGKILL the ledger in exactly that window. Unset, as always outside
    tests: no hook."""
    path = os.environ.get("FISCAL_TEST_PAUSE_AFTER_INSERT")
    if not path:
        return None

    async def pause(record) -> None:
        Path(path).write_text(record.client_invoice_id)
        await asyncio.Event().wait()

    return pause


def hold_before_insert_hook():
    """Test-only fault hook: FISCAL_TEST_HOLD_BEFORE_INSERT=<path> holds the first batch of at least
    FISCAL_TEST_HOLD_MIN_BATCH seals (default 1) that passes its lease check: it writes the batch's
    client_invoice_ids to <path> (one a line) and waits until <path> is removed, then goes on to its
    insert. A test can SIGKILL the ledger meanwhile (a crash in the middle of a group commit), or let
    the lease expire and another replica seal before it resumes (a zombie lease, which the chain head's
    compare-and-set must refuse). Unset, as always outside tests: no hook."""
    path = os.environ.get("FISCAL_TEST_HOLD_BEFORE_INSERT")
    if not path:
        return None
    min_batch = int(os.environ.get("FISCAL_TEST_HOLD_MIN_BATCH", "1"))
    held = []

    async def hold(records) -> None:
        if held or len(records) < min_batch:
            return
        held.append(True)
        marker = Path(path)
        marker.write_text("\n".join(r.client_invoice_id for r in records))
        while marker.exists():
            await asyncio.sleep(0.05)

    return hold


class SigningClient:
    """sealing.Signer over the signing service, and a cache of its public keys (`keys`)."""

    def __init__(self, channel: grpc.aio.Channel):
        self.stub = signing_pb2_grpc.SigningServiceStub(channel)
        self.keys = PublicKeyDirectory(
            self.list_public_keys, ttl=env_float("FISCAL_PUBLIC_KEYS_TTL_SECONDS", 60.0),
            min_refresh_interval=env_float("FISCAL_PUBLIC_KEYS_MIN_REFRESH_SECONDS", 5.0),
            unknown_ttl=env_float("FISCAL_UNKNOWN_KID_CACHE_SECONDS", 60.0))

    async def sign_batch(self, statement_texts: list[str]) -> list[tuple[bytes, str]]:
        """One call whatever the batch's size: Sign for one statement, SignBatch for more."""
        try:
            # wait_for_ready: a signing replica that is restarting is waited for (within the deadline)
            # instead of failing at once while the channel is in reconnect backoff.
            if len(statement_texts) == 1:
                answers = [await self.stub.Sign(signing_pb2.SignRequest(statement=statement_texts[0]),
                                                timeout=rpc_timeout(), wait_for_ready=True)]
            else:
                answers = list((await self.stub.SignBatch(signing_pb2.SignBatchRequest(statements=statement_texts),
                                                          timeout=rpc_timeout(), wait_for_ready=True)).signatures)
        except grpc.RpcError as error:
            raise fault_from_rpc_error(error, "signing") from error
        for key_id in {answer.key_id for answer in answers}:
            self.keys.note_key_id(key_id)  # after a rotation: publish the new key set at the next read
        return [(answer.signature, answer.key_id) for answer in answers]

    async def list_public_keys(self) -> list[signing_pb2.PublicKey]:
        try:
            answer = await self.stub.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=rpc_timeout())
        except grpc.RpcError as error:
            raise fault_from_rpc_error(error, "signing") from error
        return list(answer.keys)


class Ledger:
    """Everything the servicers need, built once per process (no module-level globals)."""

    def __init__(self, store: LedgerStore, counter: CounterAllocator, signing: SigningClient):
        self.store = store
        self.signing = signing
        self.authority_id = env_str("FISCAL_AUTHORITY_ID", "FC-DEV-0001")
        self.public_url = env_str("FISCAL_PUBLIC_URL", "http://127.0.0.1:8080")
        self.page_tokens = PageTokens.from_env()
        self._keys_cache = TtlCache(ttl=env_float("FISCAL_AUTH_CACHE_SECONDS", 30.0))
        self._outlet_cache = TtlCache(ttl=env_float("FISCAL_OUTLET_CACHE_SECONDS", 30.0))
        self.sealer = Sealer(store, counter, signing, authority_id=self.authority_id, public_url=self.public_url,
                             outlets=self.outlet, clock=wall_clock(), after_insert=pause_after_insert_hook(),
                             before_insert=hold_before_insert_hook())
        self.payments = InvoicePayments(store, self.sealer)

    async def authenticate(self, authorization: str | None) -> Principal:
        key_hash = hash_api_key(bearer_token(authorization))
        principal = self._keys_cache.get(key_hash)
        if principal is None:
            principal = await self.store.principal_for_key(key_hash)
            if principal is None:
                raise Unauthenticated("unknown or revoked API key")
            self._keys_cache.put(key_hash, principal)
        return principal

    async def outlet(self, outlet_id: str):
        outlet = self._outlet_cache.get(outlet_id)
        if outlet is None:
            outlet = await self.store.outlet(outlet_id)
            if outlet is not None:
                self._outlet_cache.put(outlet_id, outlet)
        return outlet

    async def public_keys(self) -> list[signing_pb2.PublicKey]:
        return await self.signing.keys.all()

    async def jwk(self, kid: str) -> dict | None:
        """The published key `kid` with its lifecycle (receipt.check_qr's form), or None if unknown."""
        key = await self.signing.keys.find(kid)
        if key is None:
            return None
        return {"kty": key.kty, "crv": key.crv, "x": key.x, "y": key.y, "status": key.status,
                "retired_at": key.retired_at.ToDatetime(tzinfo=UTC) if key.HasField("retired_at") else None,
                "compromised_at": key.compromised_at.ToDatetime(tzinfo=UTC) if key.HasField("compromised_at")
                else None, "compromise_reason": key.compromise_reason}


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server):
    engine = create_engine(default_pool_size=15)
    counter_channel = open_channel(env_str("FISCAL_COUNTER_ADDR", "127.0.0.1:7101"), "counter")
    signing_channel = open_channel(env_str("FISCAL_SIGNING_ADDR", "127.0.0.1:7102"), "signing")
    # Allocate may wait for another terminal's seal on the same outlet: give it a longer deadline.
    counter = CounterAllocator(counter_channel, allocate_timeout=env_float("FISCAL_ALLOCATE_TIMEOUT_SECONDS", 10.0))
    ledger = Ledger(LedgerStore(engine), counter, SigningClient(signing_channel))
    ledger_pb2_grpc.add_InvoiceServiceServicer_to_server(InvoiceServicer(ledger), server)
    ledger_pb2_grpc.add_TerminalServiceServicer_to_server(TerminalServicer(ledger), server)
    ledger_pb2_grpc.add_LedgerInternalServiceServicer_to_server(LedgerInternalServicer(ledger), server)
    # The outbox relay: every replica runs one; SKIP LOCKED shares the rows between them.
    webhooks_channel = open_channel(env_str("FISCAL_WEBHOOKS_ADDR", "127.0.0.1:7104"), "webhooks")
    relay_settings = RelaySettings.from_env()
    relay = OutboxRelay(PostgresOutbox(engine, "ledger"),
                        webhooks_publisher(webhooks_channel, relay_settings.publish_timeout), relay_settings)
    ledger.store.on_outbox_written = relay.wake
    background: list[Callable[[asyncio.Event], Awaitable[None]]] = [relay.run]
    # The DGI upload sync: off the seal path, on every replica (the lease and SKIP LOCKED share the work).
    sync_settings = SyncSettings.from_env()
    dgi_client = DgiClient(sync_settings) if sync_settings.enabled else None
    if dgi_client is not None:
        holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        worker = DgiSyncWorker(ledger.store, dgi_client, sync_settings, holder, clock=utcnow,
                               monotonic=time.monotonic, new_event_id=lambda: str(uuid.uuid4()))
        background.append(worker.run)

    async def database_ready() -> str | None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return None

    try:
        yield Mounted(
            service_names=[ledger_pb2.DESCRIPTOR.services_by_name[name].full_name
                           for name in ("InvoiceService", "TerminalService", "LedgerInternalService")],
            readiness_probe=database_ready,
            background=background,
        )
    finally:
        if dgi_client is not None:
            await dgi_client.close()
        await counter_channel.close()
        await signing_channel.close()
        await webhooks_channel.close()
        await engine.dispose()


def main() -> None:
    run_service("ledger", DEFAULT_PORT, mount, ALLOWED_CALLERS)
