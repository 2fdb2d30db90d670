"""Key lifecycle. No gRPC, no SQL: the store and the backend are passed in.

- A key's id (kid) is its RFC 7638 JWK thumbprint (base64url SHA-256 of the canonical JWK).
- At most one key is active; rotation retires the previous one, which stays published so that old
  receipts keep verifying.
- Each replica caches the active key and refreshes it from the database every few seconds, so a
  signature never waits on a database query.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from services.runtime.es256 import ALGORITHM, CURVE, DIGEST_SIZE, thumbprint
from services.runtime.faults import FailedPrecondition, InvalidArgument, NotFound, Unavailable

log = structlog.get_logger()

ACTIVE = "active"
RETIRED = "retired"
# Retired and, besides, known to an attacker: nothing it signed is valid any more, whatever its date.
COMPROMISED = "compromised"
MAX_REASON_LENGTH = 500


# --- input checks (the ES256/JWK arithmetic lives in services.runtime.es256) -----------------------------

def check_digest(digest: bytes) -> None:
    if len(digest) != DIGEST_SIZE:
        raise InvalidArgument(f"digest must be a SHA-256 digest of {DIGEST_SIZE} bytes, got {len(digest)}",
                              field="digest", reason="BAD_DIGEST_LENGTH")


# --- records ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneratedKey:
    """What a backend returns for a new key: its public half and where the private half lives."""

    x: str
    y: str
    private_pem: bytes | None = None  # software backend only (encrypted)
    hsm_label: str | None = None  # pkcs11 backend only
    hsm_id: str | None = None

    @property
    def kid(self) -> str:
        return thumbprint(self.x, self.y)


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    backend: str
    status: str
    x: str
    y: str
    created_at: datetime
    # The end of the key's signing window: receipts claiming a later seal time do not verify.
    retired_at: datetime | None = None
    private_pem: bytes | None = field(default=None, repr=False)
    hsm_label: str | None = None
    hsm_id: str | None = None
    compromised_at: datetime | None = None
    compromise_reason: str | None = None

    def jwk(self) -> dict[str, str]:
        return {"kty": "EC", "crv": CURVE, "x": self.x, "y": self.y, "kid": self.kid, "alg": ALGORITHM,
                "use": "sig"}


@dataclass
class HsmHealth:
    backend: str
    module_loaded: bool = False
    token_present: bool = False
    logged_in: bool = False
    test_signature_ok: bool = False
    active_key_id: str = ""
    detail: str = ""
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ok(self) -> bool:
        return self.module_loaded and self.token_present and self.logged_in and self.test_signature_ok

    def reason(self) -> str | None:
        return None if self.ok else (self.detail or "HSM check failed")


# --- what the lifecycle needs from the outside --------------------------------------------------------

class KeyBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Open the keystore/HSM; raise ConfigurationError with a clear message if it cannot."""

    async def generate(self) -> GeneratedKey: ...

    async def sign(self, key: KeyRecord, digest: bytes) -> bytes:
        """Raw r||s (64 bytes) over a 32-byte digest."""

    async def check(self, key: KeyRecord | None) -> HsmHealth:
        """Module loaded, token present, logged in, a test signature with `key` that verifies."""

    async def close(self) -> None: ...


class KeyTransaction(Protocol):
    async def active(self) -> KeyRecord | None: ...
    async def get(self, kid: str) -> KeyRecord | None: ...

    async def retire(self, kid: str, grace_seconds: float) -> None:
        """Not active any more; retired_at = the database's now() + grace_seconds."""

    async def compromise(self, kid: str, reason: str) -> KeyRecord:
        """Status compromised, compromised_at = now(), retired_at kept (or now() if it was active)."""

    async def insert(self, backend: str, key: GeneratedKey) -> KeyRecord: ...


class KeyRepository(Protocol):
    def locked(self) -> contextlib.AbstractAsyncContextManager[KeyTransaction]:
        """A transaction holding the cluster-wide key-lifecycle lock (serialises replicas)."""

    async def active(self) -> KeyRecord | None: ...
    async def all(self) -> list[KeyRecord]: ...


class ConfigurationError(Exception):
    """The service cannot start with its settings (message is safe to print; never holds a secret)."""


# --- the lifecycle ------------------------------------------------------------------------------------

class KeyManager:
    """retirement_grace_seconds: a rotated-out key's signing window ends that long after the rotation, so
    that a replica still signing with it until its next refresh (refresh_seconds) makes valid receipts."""

    def __init__(self, repository: KeyRepository, backend: KeyBackend, refresh_seconds: float = 1.0,
                 retirement_grace_seconds: float = 10.0, min_rotation_interval_seconds: float = 3600.0):
        self.repository = repository
        # Rotations are rare and deliberate: a caller rotating in a loop would fill the published key set.
        self.min_rotation_interval_seconds = min_rotation_interval_seconds
        self.backend = backend
        self.refresh_seconds = refresh_seconds
        self.retirement_grace_seconds = max(retirement_grace_seconds, 2 * refresh_seconds)
        self._active: KeyRecord | None = None

    @property
    def active(self) -> KeyRecord | None:
        return self._active

    def _adopt(self, record: KeyRecord | None) -> None:
        if record is not None and (self._active is None or record.kid != self._active.kid):
            log.info("active key", kid=record.kid, backend=record.backend)
        self._active = record

    async def _replace_active(self, always: bool) -> KeyRecord:
        async with self.repository.locked() as tx:
            current = await tx.active()
            if current is not None and current.backend == self.backend.name and not always:
                return current
            if current is not None and always:
                self._check_rotation_interval(current)
            generated = await self.backend.generate()
            if current is not None:
                await tx.retire(current.kid, self.retirement_grace_seconds)
            record = await tx.insert(self.backend.name, generated)
        if current is not None:
            log.info("key retired", kid=current.kid, backend=current.backend)
        log.info("key created", kid=record.kid, backend=record.backend)
        return record

    def _check_rotation_interval(self, current: KeyRecord) -> None:
        age = (datetime.now(UTC) - current.created_at).total_seconds()
        if age < self.min_rotation_interval_seconds:
            raise FailedPrecondition(
                f"the active key {current.kid} is {age:.0f} s old; keys rotate at most once every "
                f"{self.min_rotation_interval_seconds:g} s (FISCAL_MIN_ROTATION_INTERVAL_SECONDS). "
                "A compromised key is replaced at once by CompromiseKey", reason="ROTATION_TOO_SOON")

    async def ensure_active(self) -> KeyRecord:
        """At start: adopt the active key, or create one for this backend (once across replicas)."""
        record = await self._replace_active(always=False)
        self._adopt(record)
        return record

    async def rotate(self) -> KeyRecord:
        record = await self._replace_active(always=True)
        self._adopt(record)
        return record

    async def compromise(self, kid: str, reason: str) -> KeyRecord:
        """Mark a key compromised: every receipt under it stops verifying, whatever its date; the key stays
        published with its status. Compromising the active key first rotates to a new key (no grace: its
        signatures are worthless anyway), and is not subject to any rotation limit."""
        reason = reason.strip()
        if not reason:
            raise InvalidArgument("say why the key is compromised (reason)", field="reason")
        if len(reason) > MAX_REASON_LENGTH or not reason.isprintable():
            raise InvalidArgument(f"reason must be printable text of at most {MAX_REASON_LENGTH} characters",
                                  field="reason")
        if not kid or len(kid) > 100:
            raise InvalidArgument("kid must be a key id as `fiscal keys list` shows it", field="kid")
        replacement = None
        async with self.repository.locked() as tx:
            key = await tx.get(kid)
            if key is None:
                raise NotFound(f"no signing key {kid!r}", field="kid")
            if key.status == COMPROMISED:
                return key  # idempotent: the first reason and time stand
            if key.status == ACTIVE:
                generated = await self.backend.generate()
                await tx.retire(key.kid, 0.0)
                replacement = await tx.insert(self.backend.name, generated)
            record = await tx.compromise(kid, reason)
        log.warning("key compromised", kid=kid, backend=record.backend)
        if replacement is not None:
            log.info("key created", kid=replacement.kid, backend=replacement.backend)
            self._adopt(replacement)
        return record

    async def refresh(self) -> None:
        self._adopt(await self.repository.active())

    async def refresh_loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.refresh_seconds)
            if stopping.is_set():
                return
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep the cached key, try again
                log.warning("active key refresh failed", error=str(exc))

    def signing_key(self) -> KeyRecord:
        key = self._active
        if key is None:
            raise Unavailable("no active signing key")
        if key.backend != self.backend.name:
            raise FailedPrecondition(
                f"the active key {key.kid} belongs to the {key.backend} backend; this replica signs with "
                f"{self.backend.name}", reason="KEY_BACKEND_MISMATCH")
        return key

    async def sign(self, digest: bytes) -> tuple[bytes, KeyRecord]:
        check_digest(digest)
        key = self.signing_key()
        return await self.backend.sign(key, digest), key

    async def health(self) -> HsmHealth:
        key = self._active
        if key is not None and key.backend != self.backend.name:
            health = await self.backend.check(None)
            health.test_signature_ok = False
            health.detail = f"active key {key.kid} belongs to the {key.backend} backend"
        else:
            health = await self.backend.check(key)
        health.active_key_id = key.kid if key else ""
        return health

    async def readiness(self) -> str | None:
        health = await self.health()
        return health.reason()

    async def keys(self) -> list[KeyRecord]:
        return await self.repository.all()



def random_digest() -> bytes:
    return os.urandom(DIGEST_SIZE)
