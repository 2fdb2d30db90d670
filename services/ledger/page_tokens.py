"""Page tokens for listing invoices: opaque and tamper-proof.

A token is AES-256-GCM over the position (the last invoice's internal sequence number, which must not
leak: it counts every merchant's invoices), with the merchant and the listing's filter as associated
data. So a token reveals nothing, and one altered by a single character, made for another merchant or
for another filter does not open. The key is per deployment (FISCAL_PAGE_TOKEN_KEY, the same in every
ledger replica, so a page can come from another replica than the one before)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.ledger.model import InvoiceFilter
from services.runtime.config import env_str
from services.runtime.faults import InvalidArgument

_VERSION = b"\x01"
_NONCE_BYTES = 12
_TOKEN_BYTES = 1 + _NONCE_BYTES + 8 + 16   # version, nonce, encrypted position, GCM tag
MAX_TOKEN_LENGTH = 64                      # base64url of _TOKEN_BYTES is 50 characters
MIN_SECRET_LENGTH = 16


def _filter_fingerprint(where: InvoiceFilter) -> bytes:
    fields = {name: (value.isoformat() if hasattr(value, "isoformat") else value)
              for name, value in dataclasses.asdict(where).items()}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


class PageTokens:
    def __init__(self, secret: str):
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the page token secret must be at least {MIN_SECRET_LENGTH} characters")
        # Any high-entropy text is accepted as the secret; the AES key is derived from it.
        self._aead = AESGCM(hashlib.sha256(b"fiscal-page-token-v1\0" + secret.encode()).digest())

    @classmethod
    def from_env(cls) -> PageTokens:
        secret = env_str("FISCAL_PAGE_TOKEN_KEY")
        if len(secret) < MIN_SECRET_LENGTH:
            raise SystemExit(f"FISCAL_PAGE_TOKEN_KEY must be at least {MIN_SECRET_LENGTH} characters")
        return cls(secret)

    def issue(self, where: InvoiceFilter, position: int) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, struct.pack(">q", position), _VERSION + _filter_fingerprint(where))
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode().rstrip("=")

    def read(self, where: InvoiceFilter, token: str) -> int:
        """The position a token this API issued for this filter stands for; INVALID_ARGUMENT otherwise."""
        try:
            if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or "=" in token:
                raise ValueError
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            # Exactly the canonical encoding: no second spelling of one token.
            if len(raw) != _TOKEN_BYTES or raw[:1] != _VERSION or \
                    base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
                raise ValueError
            nonce, sealed = raw[1:1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES:]
            (position,) = struct.unpack(">q", self._aead.decrypt(nonce, sealed, _VERSION + _filter_fingerprint(where)))
        except (ValueError, binascii.Error, InvalidTag):
            raise InvalidArgument("page_token is not one this API returned for this listing",
                                  field="page_token") from None
        return position
