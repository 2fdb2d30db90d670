"""API keys and what each scope may do. Keys are random (256 bits) and stored as SHA-256 hashes:
a leaked table gives no usable key, and a high-entropy key needs no slow password hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from services.runtime.faults import PermissionDenied, Unauthenticated

ADMIN = "merchant:admin"
POS = "outlet:pos"
READ = "merchant:read"
SCOPES = (ADMIN, POS, READ)
_PREFIX = {ADMIN: "fk_admin_", POS: "fk_pos_", READ: "fk_read_"}


def new_api_key(scope: str) -> str:
    return _PREFIX[scope] + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed Authorization header: expected 'Bearer <key>'")
    return token.strip()


@dataclass(frozen=True)
class Principal:
    key_id: str
    merchant_id: str
    scope: str
    outlet_id: str | None  # set for outlet:pos keys

    def require_write(self, outlet_id: str) -> None:
        """Seal, credit note, heartbeat: an admin key, or the POS key of that outlet."""
        if self.scope == READ:
            raise PermissionDenied("this API key is read-only (merchant:read)")
        self.require_outlet(outlet_id)

    def require_outlet(self, outlet_id: str) -> None:
        if self.scope == POS and self.outlet_id != outlet_id:
            raise PermissionDenied("this API key is for another outlet")

    def visible_outlet(self, requested: str | None) -> str | None:
        """The outlet a read is restricted to: a POS key only ever sees its own outlet."""
        if self.scope == POS:
            if requested and requested != self.outlet_id:
                raise PermissionDenied("this API key is for another outlet")
            return self.outlet_id
        return requested or None
