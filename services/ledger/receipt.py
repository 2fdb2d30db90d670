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

from cryptography.hazmat.primitives.asymmetric import ec

from services.runtime import es256
from services.runtime.es256 import b64url, b64url_decode  # noqa: F401 - the ledger's modules use receipt.b64url

STATEMENT_VERSION = "FC1"
GENESIS_HASH = b"\x00" * 32
AUTH_CODE_LENGTH = 12
KEY_STATUSES = ("active", "retired", "compromised")


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
    """Raises ValueError unless the JWK is a P-256 key with 32-byte base64url coordinates."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ValueError("not a P-256 EC key")
    return es256.public_key_from_jwk(jwk.get("x", ""), jwk.get("y", ""))


def verify_signature(public_key: ec.EllipticCurvePublicKey, digest: bytes, raw_signature: bytes) -> bool:
    """ES256 raw r||s over a SHA-256 digest; only the low-S form verifies."""
    return es256.verify_digest(public_key, digest, raw_signature)


def _moment(value) -> datetime | None:
    """A JWK's lifecycle time: a datetime, or RFC 3339 text as /v1/keys prints it."""
    if value is None or value == "":
        return None
    return value if isinstance(value, datetime) else parse_timestamp(value)


def key_problem(jwk: dict, sealed_at: str) -> str | None:
    """Why a receipt claiming seal time `sealed_at` is not valid under this key's lifecycle, or None.

    A compromised key makes every receipt invalid, whatever its date; a retired key only the receipts
    claiming a seal time after the end of its signing window (retired_at)."""
    status = jwk.get("status") or "active"
    if status not in KEY_STATUSES:
        return f"signing key has an unknown status {status!r}"
    if status == "compromised":
        when = _moment(jwk.get("compromised_at"))
        reason = jwk.get("compromise_reason") or "no reason given"
        return f"signing key compromised on {format_timestamp(when) if when else 'an unknown date'}: {reason}"
    if status == "retired":
        retired_at = _moment(jwk.get("retired_at"))
        try:
            moment = parse_timestamp(sealed_at)
        except ValueError:
            return "seal time (ts) is not an RFC 3339 time"
        if retired_at is None or moment > retired_at:
            return (f"sealed at {sealed_at}, after its signing key was retired on "
                    f"{format_timestamp(retired_at) if retired_at else 'an unknown date'}")
    return None


@dataclass(frozen=True)
class QrCheck:
    valid: bool
    reason: str
    statement: Statement | None = None


def check_qr(params: dict[str, str], keys: dict[str, dict]) -> QrCheck:
    """Verify a receipt from its QR parameters alone and a set of public JWKs (by kid), with their lifecycle.

    Strict, so that one receipt has exactly one valid QR code: sg and d must be unpadded, canonical
    base64url of exactly 64 and 32 bytes, and the signature must be low-S."""
    required = ["fn", "fa", "ts", "tt", "cur", "d", "ac", "kid", "sg"]
    missing = [name for name in required if not params.get(name)]
    if missing:
        return QrCheck(False, f"missing parameters: {', '.join(missing)}")
    statement = Statement(params["fn"], params["fa"], params["ts"], params["tt"], params["cur"], params["d"])
    try:
        signature = b64url_decode(params["sg"], es256.SIGNATURE_SIZE)
    except ValueError:
        return QrCheck(False, "signature (sg) is not 64 bytes of unpadded base64url", statement)
    try:
        b64url_decode(params["d"], es256.DIGEST_SIZE)
    except ValueError:
        return QrCheck(False, "body digest (d) is not 32 bytes of unpadded base64url", statement)
    jwk = keys.get(params["kid"])
    if jwk is None:
        return QrCheck(False, "unknown key id", statement)
    if auth_code(signature) != params["ac"]:
        return QrCheck(False, "auth code does not match the signature", statement)
    if not es256.is_low_s(signature):
        return QrCheck(False, "signature is not in low-S form", statement)
    try:
        public_key = public_key_from_jwk(jwk)
    except ValueError:
        return QrCheck(False, "the published key is not a usable P-256 key", statement)
    if not verify_signature(public_key, statement.digest(), signature):
        return QrCheck(False, "signature does not verify", statement)
    problem = key_problem(jwk, params["ts"])
    if problem:
        return QrCheck(False, problem, statement)
    return QrCheck(True, "", statement)
