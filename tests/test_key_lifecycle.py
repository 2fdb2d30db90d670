"""Signing keys' lifecycle through real processes: a retired key verifies only receipts sealed before its
retirement, a compromised key verifies nothing (in /v1/verify and in `fiscal verify`), only low-S and
strict base64url signatures verify, unknown key ids do not reach the signing service, and both signing
backends produce low-S signatures only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import grpc
import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.ledger import receipt
from services.runtime import es256
from services.signing.backends import Pkcs11Backend
from services.signing.keys import KeyRecord
from services.signing.softhsm import init_softhsm_token
from tests.harness import auth, provision, require_softhsm, sale, verify_chains

FISCAL = str(Path(sys.executable).parent / "fiscal")
LIFECYCLE_ENV = {
    "FISCAL_MIN_ROTATION_INTERVAL_SECONDS": "0",  # these tests rotate on purpose
    "FISCAL_KEY_RETIREMENT_GRACE_SECONDS": "2",
}


@pytest.fixture(scope="module")
def key_mesh(start_mesh):
    """A mesh of its own: these tests retire and compromise keys, which would spoil other tests' receipts."""
    return start_mesh(env=LIFECYCLE_ENV)


@pytest.fixture(scope="module")
def merchant(key_mesh) -> dict:
    return provision(key_mesh, outlets=1, terminals=1)


def seal(mesh, merchant: dict) -> dict:
    outlet = merchant["outlets"][0]
    body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0])
    answer = httpx.post(f"{mesh.gateway_url}/v1/invoices", json=body,
                        headers=auth(merchant["pos_keys"][outlet["id"]]), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def qr_params(invoice: dict) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(invoice["fiscal"]["qr_code"]).query).items()}


def verify(mesh, params: dict[str, str]) -> dict:
    answer = httpx.get(f"{mesh.gateway_url}/v1/verify", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def published(mesh) -> dict[str, dict]:
    answer = httpx.get(f"{mesh.gateway_url}/v1/keys", timeout=30)
    assert answer.status_code == 200, answer.text
    return {key["kid"]: key for key in answer.json()["keys"]}


def operator(mesh) -> tuple[grpc.Channel, signing_pb2_grpc.SigningServiceStub]:
    channel = mesh.channel("signing", "operator")
    return channel, signing_pb2_grpc.SigningServiceStub(channel)


def private_key_of(mesh, kid: str):
    """The software keystore's private key (test-only: what a thief of a retired key would hold)."""
    with psycopg.connect(mesh.database_url) as conn:
        (pem,) = conn.execute("SELECT private_pem FROM signing.keys WHERE kid = %s", (kid,)).fetchone()
    passphrase = mesh.service_env("signing")["FISCAL_SOFT_KEYSTORE_PASSPHRASE"].encode()
    return serialization.load_pem_private_key(bytes(pem), password=passphrase)


def forged(params: dict[str, str], private_key, sealed_at: str) -> dict[str, str]:
    """The same receipt claiming another seal time, correctly signed with `private_key`."""
    statement = receipt.Statement(params["fn"], params["fa"], sealed_at, params["tt"], params["cur"], params["d"])
    signature = es256.sign_digest(private_key, statement.digest())
    return dict(params, ts=sealed_at, sg=es256.b64url(signature), ac=receipt.auth_code(signature))


# --- tests ----------------------------------------------------------------------------------------------

def test_a_retired_key_verifies_only_receipts_sealed_before_its_retirement(key_mesh, merchant):
    before = seal(key_mesh, merchant)
    old_kid = before["fiscal"]["key_id"]
    channel, signing = operator(key_mesh)
    with channel:
        new = signing.RotateKey(signing_pb2.RotateKeyRequest(), timeout=30)
    assert new.kid != old_kid
    after = seal(key_mesh, merchant)  # the ledger sees the new kid and re-reads the key set
    assert after["fiscal"]["key_id"] == new.kid

    old = published(key_mesh)[old_kid]
    assert old["status"] == "retired" and old["retired_at"]
    retired_at = receipt.parse_timestamp(old["retired_at"])
    answer = verify(key_mesh, qr_params(before))
    assert (answer["valid"], answer["registered"], answer["key_status"]) == (True, True, "retired")
    assert verify(key_mesh, qr_params(after))["valid"] is True

    # Whoever holds the retired key can sign; a receipt claiming a seal time after retirement is refused...
    private_key = private_key_of(key_mesh, old_kid)
    late = receipt.format_timestamp(retired_at + timedelta(seconds=1))
    answer = verify(key_mesh, forged(qr_params(before), private_key, late))
    assert answer["valid"] is False
    assert answer["reason"] == f"sealed at {late}, after its signing key was retired on " \
                               f"{receipt.format_timestamp(retired_at)}"
    # ...while the same forgery dated inside the key's window verifies (so the refusal above is the rule's).
    early = receipt.format_timestamp(retired_at - timedelta(seconds=1))
    answer = verify(key_mesh, forged(qr_params(before), private_key, early))
    assert (answer["valid"], answer["registered"]) == (True, False)
    assert all(check.ok for check in verify_chains(key_mesh, merchant["outlets"][0]["id"]))


def test_a_compromised_key_verifies_nothing_and_stays_published(key_mesh, merchant):
    victim = seal(key_mesh, merchant)
    kid = victim["fiscal"]["key_id"]
    assert verify(key_mesh, qr_params(victim))["valid"] is True
    channel, signing = operator(key_mesh)
    with channel:
        for bad, code in ((signing_pb2.CompromiseKeyRequest(kid="no-such-key", reason="x"), grpc.StatusCode.NOT_FOUND),
                          (signing_pb2.CompromiseKeyRequest(kid=kid, reason="  "), grpc.StatusCode.INVALID_ARGUMENT),
                          (signing_pb2.CompromiseKeyRequest(kid=kid, reason="x" * 501),
                           grpc.StatusCode.INVALID_ARGUMENT)):
            with pytest.raises(grpc.RpcError) as refused:
                signing.CompromiseKey(bad, timeout=30)
            assert refused.value.code() == code
        key = signing.CompromiseKey(signing_pb2.CompromiseKeyRequest(kid=kid, reason="HSM backup tape lost"),
                                    timeout=30)
        assert (key.status, key.compromise_reason) == ("compromised", "HSM backup tape lost")
        assert key.HasField("compromised_at") and key.HasField("retired_at")
        again = signing.CompromiseKey(signing_pb2.CompromiseKeyRequest(kid=kid, reason="another reason"), timeout=30)
        assert again.compromise_reason == "HSM backup tape lost"  # idempotent: the first report stands
        keys = {k.kid: k for k in signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=30).keys}
    # Compromising the active key rotated to a new one: sealing goes on, under the new key.
    (active,) = [k for k in keys.values() if k.status == "active"]
    assert active.kid != kid
    fresh = seal(key_mesh, merchant)
    assert fresh["fiscal"]["key_id"] == active.kid
    assert verify(key_mesh, qr_params(fresh))["valid"] is True

    answer = verify(key_mesh, qr_params(victim))
    assert answer["valid"] is False and answer["key_status"] == "compromised"
    assert answer["reason"].startswith("signing key compromised on ")
    assert answer["reason"].endswith(": HSM backup tape lost")
    listed = published(key_mesh)[kid]
    assert (listed["status"], listed["compromise_reason"]) == ("compromised", "HSM backup tape lost")
    assert listed["compromised_at"]

    # `fiscal verify` applies the same rule: the victim's entry is named, the fresh one is not.
    problems = [p for check in verify_chains(key_mesh, merchant["outlets"][0]["id"]) for p in check.problems]
    victim_number, fresh_number = victim["fiscal"]["fiscal_number"], fresh["fiscal"]["fiscal_number"]
    assert any(p.startswith(f"{victim_number}: signing key compromised on ") for p in problems), problems
    assert not any(p.startswith(fresh_number) for p in problems), problems


def test_fiscal_keys_compromise_marks_the_active_key_and_rotates(key_mesh, merchant):
    victim = seal(key_mesh, merchant)
    kid = victim["fiscal"]["key_id"]
    cli = [FISCAL, "--data-dir", str(key_mesh.data_dir), "keys"]
    addr = ["--signing-addr", key_mesh.address("signing")]
    refused = subprocess.run([*cli, "compromise", kid, *addr], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--reason" in refused.stdout
    done = subprocess.run([*cli, "compromise", kid, "--reason", "laptop with the keystore stolen", *addr],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert kid in done.stdout and "compromised" in done.stdout
    listed = subprocess.run([*cli, "list", *addr], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "laptop with the keystore stolen" in listed.stdout
    assert seal(key_mesh, merchant)["fiscal"]["key_id"] != kid
    answer = verify(key_mesh, qr_params(victim))
    assert answer["valid"] is False and answer["reason"].endswith(": laptop with the keystore stolen")


def test_only_the_low_s_strict_base64url_signature_verifies(key_mesh, merchant):
    # Seal until a signature's text has a '-' or '_' (its '+'/'/' spelling must then be refused too).
    for _ in range(10):
        invoice = seal(key_mesh, merchant)
        params = qr_params(invoice)
        if "-" in params["sg"] or "_" in params["sg"]:
            break
    assert verify(key_mesh, params)["valid"] is True
    signature = es256.b64url_decode(params["sg"], 64)
    high = signature[:32] + (es256.P256_ORDER - int.from_bytes(signature[32:], "big")).to_bytes(32, "big")
    answer = verify(key_mesh, dict(params, sg=es256.b64url(high), ac=receipt.auth_code(high)))
    assert answer["valid"] is False and "low-S" in answer["reason"]
    for spelling in (params["sg"] + "=", params["sg"] + "==", params["sg"].replace("-", "+").replace("_", "/"),
                     params["sg"] + " ", params["sg"][:-2]):
        assert spelling != params["sg"]
        answer = verify(key_mesh, dict(params, sg=spelling))
        assert answer["valid"] is False and "base64url" in answer["reason"], spelling
    answer = verify(key_mesh, dict(params, d=params["d"] + "="))
    assert answer["valid"] is False and "base64url" in answer["reason"]


def test_unknown_key_ids_do_not_reach_the_signing_service(key_mesh, merchant):
    params = qr_params(seal(key_mesh, merchant))
    published(key_mesh)
    log_path = key_mesh.log_dir / "signing.log"

    def listings() -> int:
        return log_path.read_text(errors="replace").count("public keys listed")

    assert listings() >= 1  # the ledger has read the key set: the count below measures something
    baseline = listings()

    async def hammer() -> list[dict]:
        async with httpx.AsyncClient(base_url=key_mesh.gateway_url, timeout=30) as client:
            async def one() -> dict:
                answer = await client.get("/v1/verify", params=dict(params, kid=es256.b64url(os.urandom(32))))
                assert answer.status_code == 200, answer.text
                return answer.json()
            answers = []
            for _ in range(10):  # 200 requests, 20 at a time
                answers += await asyncio.gather(*(one() for _ in range(20)))
            return answers

    answers = asyncio.run(hammer())
    assert len(answers) == 200 and all(a["valid"] is False and a["reason"] == "unknown key id" for a in answers)
    assert listings() - baseline <= 3, listings() - baseline


def test_the_pkcs11_backend_signs_low_s_only(tmp_path, monkeypatch):
    require_softhsm()
    env = init_softhsm_token(tmp_path / "hsm", label=f"t{uuid.uuid4().hex[:8]}", pin="1234")
    monkeypatch.setenv("SOFTHSM2_CONF", env["SOFTHSM2_CONF"])  # read by the module when it is loaded, below
    backend = Pkcs11Backend(env["FISCAL_PKCS11_MODULE"], env["FISCAL_PKCS11_TOKEN_LABEL"], env["FISCAL_PKCS11_PIN"])

    async def sign_many() -> tuple[KeyRecord, list[tuple[bytes, bytes]]]:
        await backend.start()
        try:
            generated = await backend.generate()
            record = KeyRecord(kid=generated.kid, backend="pkcs11", status="active", x=generated.x, y=generated.y,
                               created_at=datetime.now(UTC), hsm_label=generated.hsm_label)
            digests = [hashlib.sha256(os.urandom(16)).digest() for _ in range(1000)]
            signatures = await asyncio.gather(*(backend.sign(record, digest) for digest in digests))
            return record, list(zip(digests, signatures, strict=True))
        finally:
            await backend.close()

    record, signed = asyncio.run(sign_many())
    assert len(signed) == 1000
    assert all(es256.is_low_s(signature) for _, signature in signed)
    assert all(es256.verify_raw(record.x, record.y, digest, signature) for digest, signature in signed)
