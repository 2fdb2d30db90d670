"""ES256 (ECDSA P-256 over SHA-256) as JOSE writes it: base64url text, JWK public keys, raw r||s.

One copy for the signing service (which makes keys and signatures) and the ledger (which verifies them).
Decoding is strict so that one receipt has exactly one valid QR code: base64url without padding or
whitespace, in canonical form (re-encoding gives the same text), of the exact length expected; and a
signature is valid only with a low s (s <= n/2), which the signers always produce.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

ALGORITHM = "ES256"
CURVE = "P-256"
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64
COORDINATE_SIZE = 32
# The order n of the P-256 group (FIPS 186-4, D.1.2.3).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
HALF_ORDER = P256_ORDER // 2

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, size: int | None = None) -> bytes:
    """Strict base64url: only A-Z a-z 0-9 - _, no padding or whitespace, canonical, `size` bytes if given.
    Raises ValueError otherwise."""
    if not isinstance(text, str) or _BASE64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not unpadded base64url") from None
    if b64url(data) != text:  # unused low bits set: a second spelling of the same bytes
        raise ValueError("not canonical base64url")
    if size is not None and len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    return data


# --- keys ---------------------------------------------------------------------------------------------

def coordinates(public_key: ec.EllipticCurvePublicKey) -> tuple[str, str]:
    """The JWK x and y of a P-256 public key (32-byte big-endian, base64url)."""
    numbers = public_key.public_numbers()
    return b64url(numbers.x.to_bytes(COORDINATE_SIZE, "big")), b64url(numbers.y.to_bytes(COORDINATE_SIZE, "big"))


def coordinates_from_point(point: bytes) -> tuple[str, str]:
    """x and y from an uncompressed SEC1 point (0x04 || x || y)."""
    if len(point) != 65 or point[0] != 0x04:
        raise ValueError("expected an uncompressed P-256 point")
    return b64url(point[1:33]), b64url(point[33:])


def public_key_from_jwk(x: str, y: str) -> ec.EllipticCurvePublicKey:
    """Raises ValueError for coordinates that are not 32-byte base64url or not a point on P-256."""
    return ec.EllipticCurvePublicNumbers(
        int.from_bytes(b64url_decode(x, COORDINATE_SIZE), "big"),
        int.from_bytes(b64url_decode(y, COORDINATE_SIZE), "big"), ec.SECP256R1(),
    ).public_key()


def thumbprint(x: str, y: str) -> str:
    """RFC 7638: SHA-256 of the required members in lexicographic order, no whitespace."""
    canonical = json.dumps({"crv": CURVE, "kty": "EC", "x": x, "y": y}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


# --- signatures ---------------------------------------------------------------------------------------

def low_s(raw: bytes) -> bytes:
    """The low-S form of a raw r||s signature: (r, n - s) when s > n/2. Both verify; only this one is valid
    here, so a signature cannot be re-spelt into a second valid QR code."""
    if len(raw) != SIGNATURE_SIZE:
        raise ValueError(f"expected a {SIGNATURE_SIZE}-byte r||s signature, got {len(raw)} bytes")
    s = int.from_bytes(raw[32:], "big")
    if s > HALF_ORDER:
        return raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return raw


def is_low_s(raw: bytes) -> bool:
    return len(raw) == SIGNATURE_SIZE and 0 < int.from_bytes(raw[32:], "big") <= HALF_ORDER


def der_to_raw(der: bytes) -> bytes:
    """DER (what `cryptography` produces) to raw r||s, always low-S."""
    r, s = utils.decode_dss_signature(der)
    return low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def raw_to_der(raw: bytes) -> bytes:
    return utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def sign_digest(private_key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """Raw low-S r||s over a SHA-256 digest."""
    return der_to_raw(private_key.sign(digest, _PREHASHED))


def verify_digest(public_key: ec.EllipticCurvePublicKey, digest: bytes, signature: bytes) -> bool:
    """A raw r||s over a 32-byte digest; a high-S signature does not verify."""
    if len(digest) != DIGEST_SIZE or not is_low_s(signature):
        return False
    try:
        public_key.verify(raw_to_der(signature), digest, _PREHASHED)
        return True
    except InvalidSignature:
        return False


def verify_raw(x: str, y: str, digest: bytes, signature: bytes) -> bool:
    """verify_digest with the key given as JWK coordinates (an unusable key verifies nothing)."""
    try:
        public_key = public_key_from_jwk(x, y)
    except ValueError:
        return False
    return verify_digest(public_key, digest, signature)
