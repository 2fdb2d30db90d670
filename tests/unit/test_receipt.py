"""Receipt verification rules, in this process: strict base64url, low-S only, the key lifecycle (retired
window, compromised), the shared ES256 helpers, and the ledger's public-key cache (unknown kids)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.ledger import receipt
from services.ledger.public_keys import PublicKeyDirectory
from services.runtime import es256
from services.signing.backends import SoftwareBackend
from services.signing.keys import KeyRecord

SEALED_AT = datetime(2026, 11, 24, 12, 0, 0, 123000, tzinfo=UTC)


def make_receipt(private_key: ec.EllipticCurvePrivateKey, sealed_at: datetime = SEALED_AT,
                 want_s_high: bool | None = None) -> tuple[dict[str, str], dict]:
    """The QR parameters of a receipt signed with `private_key`, and the key's JWK (active)."""
    x, y = es256.coordinates(private_key.public_key())
    kid = es256.thumbprint(x, y)
    statement = receipt.Statement("OUT1-INV-0000000001", "FC-DEV-0001", receipt.format_timestamp(sealed_at),
                                  "360.00", "KES", es256.b64url(hashlib.sha256(b"body").digest()))
    signature = es256.sign_digest(private_key, statement.digest())
    params = {"fn": statement.fiscal_number, "fa": statement.fiscal_authority_id, "ts": statement.sealed_at,
              "tt": statement.total, "cur": statement.currency, "d": statement.body_digest,
              "ac": receipt.auth_code(signature), "kid": kid, "sg": es256.b64url(signature)}
    jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "status": "active"}
    return params, jwk


def with_signature(params: dict[str, str], signature_text: str, signature: bytes | None = None) -> dict[str, str]:
    """The same receipt with another spelling of its signature (auth code recomputed so only sg differs)."""
    changed = dict(params, sg=signature_text)
    if signature is not None:
        changed["ac"] = receipt.auth_code(signature)
    return changed


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- strict base64url ----------------------------------------------------------------------------------

def test_strict_base64url_accepts_only_the_canonical_unpadded_form():
    data = bytes(range(256))[:64]
    text = es256.b64url(data)
    assert es256.b64url_decode(text, 64) == data
    for bad in (text + "=", text + "==", " " + text, text + "\n", text.replace("-", "+").replace("_", "/"),
                text[:-1] + "*", text[:10] + " " + text[10:]):
        if bad == text:
            continue
        with pytest.raises(ValueError):
            es256.b64url_decode(bad, 64)
    with pytest.raises(ValueError):
        es256.b64url_decode(text[:-4], 64)  # wrong length
    # "AB" and "AA" decode to the same byte with lax decoders: only the canonical spelling is accepted.
    assert es256.b64url_decode("AA") == b"\x00"
    with pytest.raises(ValueError):
        es256.b64url_decode("AB")
    with pytest.raises(ValueError):
        es256.b64url_decode("A")


def test_one_receipt_has_exactly_one_valid_qr(key):
    params, jwk = make_receipt(key)
    keys = {params["kid"]: jwk}
    assert receipt.check_qr(params, keys).valid

    signature = es256.b64url_decode(params["sg"], 64)
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    high = r + (es256.P256_ORDER - s).to_bytes(32, "big")
    # The high-S twin is a mathematically valid ECDSA signature...
    assert es256.verify_digest(key.public_key(), receipt.Statement(
        params["fn"], params["fa"], params["ts"], params["tt"], params["cur"], params["d"]).digest(),
        es256.low_s(high))
    check = receipt.check_qr(with_signature(params, es256.b64url(high), high), keys)
    assert not check.valid and "low-S" in check.reason

    check = receipt.check_qr(with_signature(params, params["sg"] + "="), keys)
    assert not check.valid and "base64url" in check.reason
    check = receipt.check_qr(dict(params, d=params["d"] + "="), keys)
    assert not check.valid and "base64url" in check.reason


def test_a_plus_or_slash_spelling_of_the_signature_is_refused(key):
    # Find a signature whose base64url text has a '-' or '_' (lax decoders also read '+' and '/').
    for _ in range(200):
        params, jwk = make_receipt(key)
        if "-" in params["sg"] or "_" in params["sg"]:
            break
        key = ec.generate_private_key(ec.SECP256R1())
    assert "-" in params["sg"] or "_" in params["sg"]
    keys = {params["kid"]: jwk}
    assert receipt.check_qr(params, keys).valid
    variant = params["sg"].replace("-", "+").replace("_", "/")
    check = receipt.check_qr(with_signature(params, variant), keys)
    assert not check.valid and "base64url" in check.reason


# --- the key lifecycle ---------------------------------------------------------------------------------

def test_a_retired_key_verifies_only_receipts_sealed_before_its_retirement(key):
    params, jwk = make_receipt(key, SEALED_AT)
    keys = {params["kid"]: dict(jwk, status="retired", retired_at=SEALED_AT + timedelta(seconds=1))}
    assert receipt.check_qr(params, keys).valid
    # The published form (/v1/keys JSON) carries the time as RFC 3339 text: the same rule applies.
    keys_json = {params["kid"]: dict(jwk, status="retired", retired_at="2026-11-24T12:00:00.200Z")}
    assert receipt.check_qr(params, keys_json).valid

    later, _ = make_receipt(key, SEALED_AT + timedelta(seconds=2))
    check = receipt.check_qr(later, keys)
    assert not check.valid
    assert check.reason == ("sealed at 2026-11-24T12:00:02.123Z, after its signing key was retired on "
                            "2026-11-24T12:00:01.123Z")
    assert not receipt.check_qr(later, {params["kid"]: dict(jwk, status="retired", retired_at=None)}).valid


def test_a_compromised_key_verifies_nothing_whatever_the_date(key):
    params, jwk = make_receipt(key, SEALED_AT - timedelta(days=365))
    compromised = dict(jwk, status="compromised", retired_at=SEALED_AT, compromised_at=SEALED_AT,
                       compromise_reason="HSM backup tape lost")
    check = receipt.check_qr(params, {params["kid"]: compromised})
    assert not check.valid
    assert check.reason == "signing key compromised on 2026-11-24T12:00:00.123Z: HSM backup tape lost"
    assert receipt.key_problem(compromised, params["ts"]) == check.reason
    assert receipt.key_problem(dict(jwk, status="revoked"), params["ts"]) is not None
    assert receipt.key_problem(jwk, params["ts"]) is None


# --- signers produce low-S only ------------------------------------------------------------------------

def test_the_software_backend_signs_low_s_only(key):
    backend = SoftwareBackend("unit test passphrase")
    generated = asyncio.run(backend.generate())
    record = KeyRecord(kid=generated.kid, backend="software", status="active", x=generated.x, y=generated.y,
                       created_at=SEALED_AT, private_pem=generated.private_pem)

    async def sign_many() -> list[tuple[bytes, bytes]]:
        digests = [os.urandom(32) for _ in range(1000)]
        return [(digest, await backend.sign(record, digest)) for digest in digests]

    signed = asyncio.run(sign_many())
    assert all(es256.is_low_s(signature) for _, signature in signed)
    assert all(es256.verify_raw(record.x, record.y, digest, signature) for digest, signature in signed[:50])


def test_der_to_raw_normalises_a_high_s_signature(key):
    digest = os.urandom(32)
    raw = es256.sign_digest(key, digest)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    from cryptography.hazmat.primitives.asymmetric import utils

    high_der = utils.encode_dss_signature(r, es256.P256_ORDER - s)
    assert es256.der_to_raw(high_der) == raw
    assert es256.low_s(raw) == raw


# --- the ledger's public-key cache ---------------------------------------------------------------------

class FakeSigning:
    """ListPublicKeys, counted."""

    def __init__(self, kids: list[str]):
        self.kids = kids
        self.calls = 0

    async def list_public_keys(self):
        self.calls += 1
        await asyncio.sleep(0)
        return [SimpleNamespace(kid=kid) for kid in self.kids]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def random_kid() -> str:
    return es256.b64url(os.urandom(32))


def test_random_kids_cannot_hammer_the_signing_service():
    known = random_kid()
    signing, clock = FakeSigning([known]), FakeClock()
    directory = PublicKeyDirectory(signing.list_public_keys, ttl=60, min_refresh_interval=5, unknown_ttl=60,
                                   clock=clock)

    async def verify_many() -> list:
        # 200 verifies with random kids, all at once and then one by one, over 3 simulated seconds.
        found = await asyncio.gather(*(directory.find(random_kid()) for _ in range(100)))
        for _ in range(100):
            clock.now += 0.03
            found.append(await directory.find(random_kid()))
        return found

    found = asyncio.run(verify_many())
    assert found == [None] * 200
    assert signing.calls <= 2, signing.calls
    assert asyncio.run(directory.find(known)).kid == known


def test_an_unknown_kid_is_remembered_and_a_new_key_is_found_after_the_refresh_interval():
    known, new = random_kid(), random_kid()
    signing, clock = FakeSigning([known]), FakeClock()
    directory = PublicKeyDirectory(signing.list_public_keys, ttl=60, min_refresh_interval=5, unknown_ttl=30,
                                   max_unknown=3, clock=clock)
    asyncio.run(directory.all())
    assert signing.calls == 1
    assert asyncio.run(directory.find(new)) is None  # refresh allowed? no: fetched just now
    assert signing.calls == 1
    signing.kids = [known, new]  # a rotation the ledger has not seen yet
    assert asyncio.run(directory.find(new)) is None  # remembered as unknown: no call
    clock.now += 31
    assert asyncio.run(directory.find(new)).kid == new  # forgotten and past the refresh interval: one call
    assert signing.calls == 2
    # Malformed kids never cause a call; the unknown-kid memory stays bounded.
    clock.now += 10
    for kid in ("", "x", "not a kid", random_kid() + "=", "A" * 500):
        assert asyncio.run(directory.find(kid)) is None
    assert signing.calls == 2
    for _ in range(10):
        clock.now += 6
        asyncio.run(directory.find(random_kid()))
    assert len(directory._unknown) <= 3


def test_a_signature_with_a_new_kid_makes_the_next_read_refresh():
    known, new = random_kid(), random_kid()
    signing = FakeSigning([known])
    directory = PublicKeyDirectory(signing.list_public_keys, ttl=60, min_refresh_interval=5, clock=FakeClock())
    asyncio.run(directory.all())
    directory.note_key_id(known)
    asyncio.run(directory.all())
    assert signing.calls == 1
    signing.kids = [known, new]
    directory.note_key_id(new)
    assert [k.kid for k in asyncio.run(directory.all())] == [known, new]
    assert signing.calls == 2
