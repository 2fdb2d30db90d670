"""Key lifecycle and the ES256/JWK arithmetic. No gRPC, no SQL: the store and the backend are passed in.

- A key's id (kid) is its RFC 7638 JWK thumbprint (base64url SHA-256 of the canonical JWK).
- At most one key is active; rotation retires the previous one, which stays published so that old
  receipts keep verifying.
- Each replica caches the active key and refreshes it from the database every few seconds, so a
  signature never waits on a database query.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from services.runtime.faults import FailedPrecondition, InvalidArgument, Unavailable

log = structlog.get_logger()

ALGORITHM = "ES256"
CURVE = "P-256"
DIGEST_SIZE = 32
ACTIVE = "active"
RETIRED = "retired"


# --- encoding helpers -------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def coordinates(public_key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    """The JWK x and y of a P-256 public key (32-byte big-endian, base64url)."""
    numbers = public_key.public_numbers()
    return b64url(numbers.x.to_bytes(32, "big")), b64url(numbers.y.to_bytes(32, "big"))


def coordinates_from_point(point: bytes) -> tuple[str, str]:
    """x and y from an uncompressed SEC1 point (0x04 || x || y)."""
    if len(point) != 65 or point[0] != 0x04:
        raise ValueError("expected an uncompressed P-256 point")
    return b64url(point[1:33]), b64url(point[33:])


def public_key_from_jwk(x: str, y: str) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(x), "big"), int.from_bytes(b64url_decode(y), "big"), ec.SECP256R1()
    ).public_key()


def thumbprint(x: str, y: str) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace."""
    canonical = json.dumps({"crv": CURVE, "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def der_to_raw(der: bytes) -> bytes:
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_to_der(raw: bytes) -> bytes:
    return utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def verify_raw(x: str, y: str, digest: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        public_key_from_jwk(x, y).verify(raw_to_der(signature), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


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
    retired_at: datetime | None = None
    private_pem: bytes | None = field(default=None, repr=False)
    hsm_label: str | None = None
    hsm_id: str | None = None

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
    async def retire(self, kid: str) -> None: ...
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
    def __init__(self, repository: KeyRepository, backend: KeyBackend, refresh_seconds: float = 1.0):
        self.repository = repository
        self.backend = backend
        self.refresh_seconds = refresh_seconds
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
            generated = await self.backend.generate()
            if current is not None:
                await tx.retire(current.kid)
            record = await tx.insert(self.backend.name, generated)
        if current is not None:
            log.info("key retired", kid=current.kid, backend=current.backend)
        log.info("key created", kid=record.kid, backend=record.backend)
        return record

    async def ensure_active(self) -> KeyRecord:
        """At start: adopt the active key, or create one for this backend (once across replicas)."""
        record = await self._replace_active(always=False)
        self._adopt(record)
        return record

    async def rotate(self) -> KeyRecord:
        record = await self._replace_active(always=True)
        self._adopt(record)
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
