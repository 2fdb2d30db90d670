"""Secrets a service keeps at rest in its database (webhook endpoint secrets, mobile-money provider
credentials): AES-256-GCM under a key only that service gets (FISCAL_WEBHOOK_SECRET_KEY,
FISCAL_PAYMENTS_SECRET_KEY).

A sealed blob is the 12-byte random nonce followed by the ciphertext and tag. The additional data is the
owning row's id, so a blob copied onto another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
MIN_KEY_MATERIAL = 32
NONCE_BYTES = 12


class SecretBoxError(ValueError):
    """A blob that does not open: another key, another row's blob, or damaged."""


def _key(key_material: str, key_env: str = "the key") -> bytes:
    """urlsafe base64 of exactly 32 bytes is the key itself; any other string of at least 32 characters
    is hashed (SHA-256) into one."""
    try:
        decoded = base64.b64decode(key_material + "=" * (-len(key_material) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) == KEY_BYTES:
        return decoded
    if len(key_material) < MIN_KEY_MATERIAL:
        raise ValueError(f"{key_env} must be urlsafe base64 of {KEY_BYTES} bytes or at least "
                         f"{MIN_KEY_MATERIAL} characters")
    return hashlib.sha256(key_material.encode("utf-8")).digest()


class SecretBox:
    def __init__(self, key_material: str, key_env: str = "the key"):
        self._aead = AESGCM(_key(key_material, key_env))

    def __repr__(self) -> str:  # never the key
        return "SecretBox(<key>)"

    @classmethod
    def from_env(cls, key_env: str, what: str) -> SecretBox:
        """`what` names what the key protects, for the message of a missing key."""
        material = os.environ.get(key_env, "")
        if not material:
            raise SystemExit(f"missing required environment variable {key_env} (encrypts {what} at rest: "
                             f"urlsafe base64 of {KEY_BYTES} random bytes)")
        try:
            return cls(material, key_env)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None

    def seal(self, plaintext: str, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode("utf-8"), aad)

    def open(self, blob: bytes | memoryview, aad: bytes) -> str:
        blob = bytes(blob)  # a driver may hand bytea back as a memoryview
        if len(blob) < NONCE_BYTES + 16:
            raise SecretBoxError("a sealed secret is too short")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode("utf-8")
        except InvalidTag:
            raise SecretBoxError("a sealed secret does not open with this key and row") from None
