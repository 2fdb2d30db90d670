"""The signing service's public keys as the ledger publishes them (/v1/keys) and verifies with them
(/v1/verify), cached so that anonymous verify requests cannot turn into calls to the signing service.

- The key set is re-read at most every `ttl` seconds, or sooner when a signature names a key the cache
  does not hold (a rotation).
- A kid that is not in the set may be a key created since the last read, so it triggers a refresh, but
  at most one refresh per `min_refresh_interval` per process, and a kid found unknown is remembered as
  unknown for `unknown_ttl` seconds (at most `max_unknown` of them). A kid that is not even the shape of
  a key id (base64url of 32 bytes) never triggers a refresh.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from services.runtime.es256 import DIGEST_SIZE, b64url_decode


def is_key_id(kid: str) -> bool:
    """A kid is an RFC 7638 thumbprint: base64url of a SHA-256."""
    try:
        b64url_decode(kid, DIGEST_SIZE)
    except ValueError:
        return False
    return True


class PublicKeyDirectory:
    def __init__(self, fetch: Callable[[], Awaitable[list[Any]]], *, ttl: float = 60.0,
                 min_refresh_interval: float = 5.0, unknown_ttl: float = 60.0, max_unknown: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        """fetch: one call to the signing service, answering objects with a `kid` attribute."""
        self._fetch = fetch
        self.ttl = ttl
        self.min_refresh_interval = min_refresh_interval
        self.unknown_ttl = unknown_ttl
        self.max_unknown = max_unknown
        self._clock = clock
        self._keys: list[Any] = []
        self._fetched_at: float | None = None
        self._stale = True
        self._unknown: OrderedDict[str, float] = OrderedDict()  # kid -> when it stops being known unknown
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _refresh(self, only_if_older_than: float) -> None:
        async with self._lock:  # one fetch at a time; whoever waited sees its result
            now = self._clock()
            if self._fetched_at is not None and not self._stale and now - self._fetched_at < only_if_older_than:
                return
            self.fetches += 1
            keys = list(await self._fetch())
            self._keys, self._fetched_at, self._stale = keys, self._clock(), False
            for key in keys:
                self._unknown.pop(key.kid, None)

    async def all(self) -> list[Any]:
        await self._refresh(self.ttl)
        return self._keys

    def note_key_id(self, kid: str) -> None:
        """A signature was made with `kid`: if it is new to us (a rotation), read the set again next time."""
        if self._keys and not any(key.kid == kid for key in self._keys):
            self._stale = True
            self._unknown.pop(kid, None)

    async def find(self, kid: str) -> Any | None:
        keys = await self.all()
        for key in keys:
            if key.kid == kid:
                return key
        if not is_key_id(kid) or self._known_unknown(kid):
            return None
        # Possibly created since the last read: refresh, but never more often than min_refresh_interval.
        await self._refresh(self.min_refresh_interval)
        for key in self._keys:
            if key.kid == kid:
                return key
        self._remember_unknown(kid)
        return None

    def _known_unknown(self, kid: str) -> bool:
        until = self._unknown.get(kid)
        if until is None:
            return False
        if until <= self._clock():
            del self._unknown[kid]
            return False
        return True

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock() + self.unknown_ttl
        self._unknown.move_to_end(kid)
        while len(self._unknown) > self.max_unknown:
            self._unknown.popitem(last=False)  # the oldest entry goes first
