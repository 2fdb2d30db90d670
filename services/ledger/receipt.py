"""The receipt's cryptography: canonical body, signed statement, hash chain, auth code, QR URL.

What is signed is a short *statement* built only from what the QR code carries (fiscal number,
authority id, seal time, total, currency, body digest), so a receipt verifies offline from its QR
code and the published public key alone. The body digest covers the whole invoice (lines, totals,
terminal, cashier, and the previous entry's hash), so the statement also pins the invoice and its
place in the chain. Entry hash = SHA-256(statement); entry N's body carries entry N-1's hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

STATEMENT_VERSION = "FC1"
GENESIS_HASH = b"\x00" * 32
AUTH_CODE_LENGTH = 12


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical_json(value: dict) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8. Every amount in it is a string."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds: the exact text signed and printed in the QR code."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def truncate_to_millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def parse_timestamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return moment


def fiscal_number(outlet_code: str, series: str, number: int) -> str:
    return f"{outlet_code}-{series}-{number:010d}"


@dataclass(frozen=True)
class Statement:
    fiscal_number: str
    fiscal_authority_id: str
    sealed_at: str  # format_timestamp text
    total: str
    currency: str
    body_digest: str  # base64url

    def text(self) -> str:
        return "\n".join([STATEMENT_VERSION, self.fiscal_number, self.fiscal_authority_id, self.sealed_at,
                          self.total, self.currency, self.body_digest])

    def digest(self) -> bytes:
        """What the HSM signs (ES256 over this SHA-256)."""
        return hashlib.sha256(self.text().encode()).digest()

    def entry_hash(self) -> bytes:
        """The chain link: the next entry's body carries this as prev_hash."""
        return self.digest()


def body_digest(body_text: str) -> bytes:
    return hashlib.sha256(body_text.encode("utf-8")).digest()


def auth_code(signature: bytes) -> str:
    """12 base32 characters (A–Z, 2–7: no 0/1/8/9 to confuse) from the signature, in groups of four."""
    code = base64.b32encode(hashlib.sha256(signature).digest()).decode()[:AUTH_CODE_LENGTH]
    return "-".join(code[i:i + 4] for i in range(0, AUTH_CODE_LENGTH, 4))


def qr_url(public_url: str, statement: Statement, code: str, key_id: str, signature: bytes) -> str:
    query = urlencode({
        "v": 1, "fn": statement.fiscal_number, "fa": statement.fiscal_authority_id, "ts": statement.sealed_at,
        "tt": statement.total, "cur": statement.currency, "d": statement.body_digest, "ac": code,
        "kid": key_id, "sg": b64url(signature),
    })
    return f"{public_url.rstrip('/')}/v1/verify?{query}"


def public_key_from_jwk(jwk: dict) -> ec.EllipticCurvePublicKey:
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 EC key")
    x = int.from_bytes(b64url_decode(jwk["x"]), "big")
    y = int.from_bytes(b64url_decode(jwk["y"]), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def verify_signature(public_key: ec.EllipticCurvePublicKey, digest: bytes, raw_signature: bytes) -> bool:
    """ES256 raw r||s over a SHA-256 digest."""
    if len(raw_signature) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw_signature[:32], "big"), int.from_bytes(raw_signature[32:], "big"))
    try:
        public_key.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


@dataclass(frozen=True)
class QrCheck:
    valid: bool
    reason: str
    statement: Statement | None = None


def check_qr(params: dict[str, str], keys: dict[str, dict]) -> QrCheck:
    """Verify a receipt from its QR parameters alone and a set of public JWKs (by kid)."""
    required = ["fn", "fa", "ts", "tt", "cur", "d", "ac", "kid", "sg"]
    missing = [name for name in required if not params.get(name)]
    if missing:
        return QrCheck(False, f"missing parameters: {', '.join(missing)}")
    statement = Statement(params["fn"], params["fa"], params["ts"], params["tt"], params["cur"], params["d"])
    try:
        signature = b64url_decode(params["sg"])
    except (ValueError, TypeError):
        return QrCheck(False, "signature is not base64url", statement)
    jwk = keys.get(params["kid"])
    if jwk is None:
        return QrCheck(False, "unknown key id", statement)
    if auth_code(signature) != params["ac"]:
        return QrCheck(False, "auth code does not match the signature", statement)
    if not verify_signature(public_key_from_jwk(jwk), statement.digest(), signature):
        return QrCheck(False, "signature does not verify", statement)
    return QrCheck(True, "", statement)
