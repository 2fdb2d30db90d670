"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`.

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is the decoded bytes. During a rotation
overlap an attempt carries one signature per secret, space-separated, so a receiver holding either
secret verifies it. Receivers use the `standardwebhooks` package (or any Standard Webhooks library)
unchanged; `verify` here is the same check, for tests and the docs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MIN_SECRET_BYTES = 24  # the floor; ours are 32
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """A webhook whose headers or signature do not check out."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret (the base64-decoded part). ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret holds at least {MIN_SECRET_BYTES} bytes")
    return key


def _signature(key: bytes, event_id: str, timestamp: int, body: bytes) -> bytes:
    # The body is signed as sent (bytes): no decode/re-encode that could change it.
    return hmac.new(key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secrets: Sequence[str], event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value: `v1,<base64>` per secret, space-separated, in order."""
    if not secrets:
        raise ValueError("at least one secret signs a webhook")
    return " ".join(
        f"{SIGNATURE_VERSION},{base64.b64encode(_signature(secret_key(s), event_id, timestamp, body)).decode('ascii')}"
        for s in secrets)


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: int = DEFAULT_TOLERANCE_SECONDS,
           now: float | None = None) -> None:
    """Raises SignatureError unless one `v1` signature of `headers` is `secret`'s over this body and the
    timestamp is within `tolerance` seconds of `now` (either way)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    event_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    header = lowered.get("webhook-signature")
    if not (event_id and raw_timestamp and header):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    expected = _signature(secret_key(secret), event_id, timestamp, body)
    for candidate in header.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != SIGNATURE_VERSION:
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return
    raise SignatureError("no matching signature")
