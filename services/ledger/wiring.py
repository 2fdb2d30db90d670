"""Assemble the ledger process: database, counter and signing clients, caches, servicers."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC

import grpc
import sqlalchemy as sa
from fiscal.v1 import counter_pb2, counter_pb2_grpc, ledger_pb2, ledger_pb2_grpc, signing_pb2, signing_pb2_grpc

from services.ledger.access import Principal, bearer_token, hash_api_key
from services.ledger.sealing import Lease, Sealer
from services.ledger.servicer import InvoiceServicer, LedgerInternalServicer, TerminalServicer
from services.ledger.store import LedgerStore
from services.runtime.channels import open_channel
from services.runtime.config import env_float, env_str
from services.runtime.database import create_engine
from services.runtime.faults import Aborted, Fault, InvalidArgument, Unauthenticated, Unavailable
from services.runtime.server import Mounted, rpc_timeout, run_service

DEFAULT_PORT = 7103


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


def _rpc_fault(error: grpc.RpcError, what: str) -> Fault:
    code = error.code() if hasattr(error, "code") else None
    if code == grpc.StatusCode.ABORTED:
        return Aborted(f"{what}: busy, retry")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"{what}: {error.details()}")
    return Unavailable(f"{what} unavailable; retry")


class CounterAllocator:
    """sealing.NumberAllocator over the counter service."""

    def __init__(self, channel: grpc.aio.Channel, allocate_timeout: float):
        self.stub = counter_pb2_grpc.CounterServiceStub(channel)
        self.allocate_timeout = allocate_timeout

    async def allocate(self, outlet_id: str, series: str, holder: str) -> Lease:
        try:
            lease = await self.stub.Allocate(counter_pb2.AllocateRequest(outlet_id=outlet_id, series=series,
                                                                         holder=holder),
                                             timeout=self.allocate_timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise _rpc_fault(error, "fiscal counter") from error
        return Lease(lease.lease_id, lease.number, lease.expires_at.ToDatetime(tzinfo=UTC))

    async def commit(self, lease: Lease) -> None:
        await self.stub.Commit(counter_pb2.CommitRequest(lease_id=lease.lease_id), timeout=rpc_timeout(),
                               wait_for_ready=True)

    async def release(self, lease: Lease, reason: str) -> None:
        await self.stub.Release(counter_pb2.ReleaseRequest(lease_id=lease.lease_id, reason=reason[:200]),
                                timeout=rpc_timeout(), wait_for_ready=True)


class SigningClient:
    """sealing.Signer over the signing service, and a cache of its public keys."""

    KEYS_TTL_SECONDS = 60.0

    def __init__(self, channel: grpc.aio.Channel):
        self.stub = signing_pb2_grpc.SigningServiceStub(channel)
        self._keys: list[signing_pb2.PublicKey] = []
        self._keys_fetched = 0.0

    async def sign(self, digest: bytes) -> tuple[bytes, str]:
        try:
            # wait_for_ready: a signing replica that is restarting is waited for (within the deadline)
            # instead of failing at once while the channel is in reconnect backoff.
            answer = await self.stub.Sign(signing_pb2.SignRequest(digest=digest), timeout=rpc_timeout(),
                                          wait_for_ready=True)
        except grpc.RpcError as error:
            raise _rpc_fault(error, "signing") from error
        if self._keys and not any(k.kid == answer.key_id for k in self._keys):
            self._keys_fetched = 0.0  # a rotation happened: publish the new key set at the next read
        return answer.signature, answer.key_id

    async def public_keys(self, refresh: bool = False) -> list[signing_pb2.PublicKey]:
        if refresh or not self._keys or time.monotonic() - self._keys_fetched > self.KEYS_TTL_SECONDS:
            try:
                answer = await self.stub.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=rpc_timeout())
            except grpc.RpcError as error:
                raise _rpc_fault(error, "signing") from error
            self._keys, self._keys_fetched = list(answer.keys), time.monotonic()
        return self._keys


class Ledger:
    """Everything the servicers need, built once per process (no module-level globals)."""

    def __init__(self, store: LedgerStore, counter: CounterAllocator, signing: SigningClient):
        self.store = store
        self.signing = signing
        self.authority_id = env_str("FISCAL_AUTHORITY_ID", "FC-DEV-0001")
        self.public_url = env_str("FISCAL_PUBLIC_URL", "http://127.0.0.1:8080")
        self._keys_cache = TtlCache(ttl=env_float("FISCAL_AUTH_CACHE_SECONDS", 30.0))
        self._outlet_cache = TtlCache(ttl=env_float("FISCAL_OUTLET_CACHE_SECONDS", 30.0))
        self.sealer = Sealer(store, counter, signing, authority_id=self.authority_id, public_url=self.public_url,
                             outlets=self.outlet)

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

    async def public_keys(self, refresh: bool = False) -> list:
        return await self.signing.public_keys(refresh)

    async def jwks(self, refresh: bool = False) -> dict[str, dict]:
        return {k.kid: {"kty": k.kty, "crv": k.crv, "x": k.x, "y": k.y} for k in await self.public_keys(refresh)}


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server):
    engine = create_engine(default_pool_size=15)
    counter_channel = open_channel(env_str("FISCAL_COUNTER_ADDR", "127.0.0.1:7101"))
    signing_channel = open_channel(env_str("FISCAL_SIGNING_ADDR", "127.0.0.1:7102"))
    # Allocate may wait for another terminal's seal on the same outlet: give it a longer deadline.
    counter = CounterAllocator(counter_channel, allocate_timeout=env_float("FISCAL_ALLOCATE_TIMEOUT_SECONDS", 10.0))
    ledger = Ledger(LedgerStore(engine), counter, SigningClient(signing_channel))
    ledger_pb2_grpc.add_InvoiceServiceServicer_to_server(InvoiceServicer(ledger), server)
    ledger_pb2_grpc.add_TerminalServiceServicer_to_server(TerminalServicer(ledger), server)
    ledger_pb2_grpc.add_LedgerInternalServiceServicer_to_server(LedgerInternalServicer(ledger), server)

    async def database_ready() -> str | None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        return None

    try:
        yield Mounted(
            service_names=[ledger_pb2.DESCRIPTOR.services_by_name[name].full_name
                           for name in ("InvoiceService", "TerminalService", "LedgerInternalService")],
            readiness_probe=database_ready,
        )
    finally:
        await counter_channel.close()
        await signing_channel.close()
        await engine.dispose()


def main() -> None:
    run_service("ledger", DEFAULT_PORT, mount)
