"""Who is calling a public service other than the ledger (webhooks, payments): the caller's API key,
checked by the ledger (API keys live there).

The gateway forwards the caller's `Authorization` header; we ask the ledger's AuthenticateApiKey and
cache the answer for at most 5 s (MAX_CACHE_SECONDS, also the ceiling of every service's setting): a
revoked key stops working within 5 s. Refusals are not cached. The cache is keyed by a SHA-256 of the
header, so no key sits in memory longer than the call that carried it.

Scopes: merchant:admin (everything of one merchant), merchant:read (looks), outlet:pos (one outlet). What
each scope may do is the service's rule: `require_scope` checks it with the service's own wording.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from fiscal.v1 import ledger_pb2, ledger_pb2_grpc

from services.runtime.faults import PermissionDenied, Unauthenticated
from services.runtime.grpc_errors import fault_from_rpc_error

ADMIN = "merchant:admin"
READ = "merchant:read"
POS = "outlet:pos"
MAX_CACHE_SECONDS = 5.0
MAX_CACHE_ENTRIES = 10_000
MAX_AUTHORIZATION_LENGTH = 1024  # far above "Bearer fk_admin_" + 43 characters


@dataclass(frozen=True)
class Principal:
    key_id: str
    merchant_id: str
    scope: str
    merchant_outlet_ids: frozenset[str]
    outlet_id: str = ""  # outlet:pos keys only

    def require_scope(self, allowed: Iterable[str], what: str) -> None:
        """PermissionDenied unless the key's scope is one of `allowed`; `what` names the action for the
        message ("creating a payment"). A merchant:read key refused a change is told it is
        read-only."""
        allowed = tuple(allowed)
        if self.scope in allowed:
            return
        if self.scope == READ:
            raise PermissionDenied("this API key is read-only (merchant:read)")
        raise PermissionDenied(f"{what}: needs a {' or '.join(allowed)} API key, not {self.scope}")

    def owns_outlet(self, outlet_id: str) -> bool:
        """Whether `outlet_id` is one of this key's merchant's outlets (and, for outlet:pos, its own)."""
        if self.scope == POS:
            return outlet_id == self.outlet_id
        return outlet_id in self.merchant_outlet_ids

    # The webhooks service's two levels (kept here so its wording does not change).
    def require_look(self) -> None:
        """List and get endpoints, deliveries, event types."""
        if self.scope not in (ADMIN, READ):
            raise PermissionDenied(f"webhooks need a merchant:admin or merchant:read API key, not {self.scope}")

    def require_change(self) -> None:
        """Create, update, delete, rotate, test, resend."""
        if self.scope == READ:
            raise PermissionDenied("this API key is read-only (merchant:read)")
        if self.scope != ADMIN:
            raise PermissionDenied(f"webhooks need a merchant:admin API key, not {self.scope}")


class ApiKeyAuthenticator:
    def __init__(self, channel: grpc.aio.Channel, timeout: float, cache_seconds: float = MAX_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.stub = ledger_pb2_grpc.LedgerInternalServiceStub(channel)
        self.timeout = timeout
        self.cache_seconds = min(max(cache_seconds, 0.0), MAX_CACHE_SECONDS)
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        if len(authorization) > MAX_AUTHORIZATION_LENGTH:
            raise Unauthenticated("malformed Authorization header: expected 'Bearer <key>'")
        cache_key = hashlib.sha256(authorization.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await self.stub.AuthenticateApiKey(
                ledger_pb2.AuthenticateApiKeyRequest(authorization=authorization), timeout=self.timeout)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._cache.pop(cache_key, None)
                raise Unauthenticated(error.details() or "unknown or revoked API key") from None
            raise fault_from_rpc_error(error, "ledger (asked who the API key is)",
                                       unavailable_reason="LEDGER_UNAVAILABLE") from error
        principal = Principal(answer.key_id, answer.merchant_id, answer.scope, frozenset(answer.merchant_outlet_ids),
                              answer.outlet_id)
        if self.cache_seconds > 0:
            self._cache[cache_key] = (now + self.cache_seconds, principal)
            self._cache.move_to_end(cache_key)
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return principal


def authorization_header(context: grpc.aio.ServicerContext) -> str | None:
    """The `authorization` metadata the gateway forwarded, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None
