"""The signing service as real processes on a real PostgreSQL, with the software keystore and with a
real SoftHSM2 token through PKCS#11."""

from __future__ import annotations

import base64
import hashlib
import shutil
import time
import uuid
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from fiscal.v1 import signing_pb2, signing_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from services.signing.softhsm import init_softhsm_token
from stack.processes import ManagedProcess, free_port, health_channel, service_process, wait_serving
from tests.harness import require_softhsm

PASSPHRASE = "test keystore passphrase"


# --- helpers ------------------------------------------------------------------------------------------

def b64url_int(text: str) -> int:
    import base64

    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def verifies(jwk: signing_pb2.PublicKey, digest: bytes, signature: bytes) -> bool:
    """Verify a raw r||s ES256 signature with nothing but the JWK's fields."""
    assert (jwk.kty, jwk.crv, jwk.alg) == ("EC", "P-256", "ES256")
    public_key = ec.EllipticCurvePublicNumbers(b64url_int(jwk.x), b64url_int(jwk.y), ec.SECP256R1()).public_key()
    der = utils.encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


def statement(label: str, authority: str = "FC-DEV-0001", sealed_at: datetime | None = None) -> str:
    """A receipt statement as the ledger builds it (the only thing the signing service signs)."""
    moment = (sealed_at or datetime.now(UTC)).astimezone(UTC)
    sealed_text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    body = base64.urlsafe_b64encode(hashlib.sha256(label.encode()).digest()).rstrip(b"=").decode()
    return "\n".join(["FC1", "SHOP001-INV-0000000001", authority, sealed_text, "1110.00", "KES", body])


def sign(signing, text: str) -> tuple[signing_pb2.SignResponse, bytes]:
    """Sign a statement; the answer and the digest its signature covers (SHA-256 of the statement)."""
    return signing.Sign(signing_pb2.SignRequest(statement=text)), hashlib.sha256(text.encode()).digest()


def health_status(process: ManagedProcess) -> int:
    with health_channel(process) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(message)


@pytest.fixture
def fresh_db(database_url) -> str:
    """An empty database on the session's PostgreSQL: the service migrates it itself at start."""
    name = f"signing_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def launch(tmp_path, mesh_certificates):
    """Start signing processes (any number at once); every one is stopped at the end of the test."""
    started: list[ManagedProcess] = []

    def start(env: dict[str, str], replicas: int = 1) -> list[ManagedProcess]:
        processes = []
        for _ in range(replicas):
            replica = len(started)
            process = service_process("signing", free_port(), {**mesh_certificates.env("signing"), **env},
                                      tmp_path / "logs", replica=replica)
            started.append(process.start())
            processes.append(process)
        return processes

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def stub(mesh_certificates):
    """(channel, stub) to a signing process as `identity`: the ledger signs, the operator rotates."""
    def open_stub(process: ManagedProcess, identity: str = "ledger"):
        channel = mesh_certificates.channel(f"127.0.0.1:{process.port}", identity, "signing")
        return channel, signing_pb2_grpc.SigningServiceStub(channel)
    return open_stub


def software_env(db: str) -> dict[str, str]:
    return {"DATABASE_URL": db, "FISCAL_SIGNING_BACKEND": "software",
            "FISCAL_SOFT_KEYSTORE_PASSPHRASE": PASSPHRASE, "FISCAL_HSM_PROBE_SECONDS": "0.5",
            "FISCAL_MIN_ROTATION_INTERVAL_SECONDS": "0"}


# --- tests --------------------------------------------------------------------------------------------

def test_software_signature_verifies_from_the_jwk_alone(fresh_db, launch, stub):
    (process,) = launch(software_env(fresh_db))
    wait_serving(process, timeout=30)
    channel, signing = stub(process)
    operator_channel, operator = stub(process, "operator")
    with channel, operator_channel:
        answer, digest = sign(signing, statement("invoice 1"))
        assert answer.algorithm == "ES256" and len(answer.signature) == 64

        (key,) = signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest()).keys
        assert (key.kid, key.status, key.backend, key.use) == (answer.key_id, "active", "software", "sig")
        assert key.HasField("created_at") and not key.HasField("retired_at")
        assert verifies(key, digest, answer.signature)
        assert not verifies(key, hashlib.sha256(statement("invoice 2").encode()).digest(), answer.signature)

        status = operator.GetHsmStatus(signing_pb2.GetHsmStatusRequest())
        assert (status.backend, status.active_key_id) == ("software", key.kid)
        assert status.module_loaded and status.token_present and status.logged_in and status.test_signature_ok

    # The private key is stored encrypted, never in clear.
    with psycopg.connect(fresh_db) as conn:
        (pem,) = conn.execute("SELECT private_pem FROM signing.keys").fetchone()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def test_two_replicas_create_one_key_and_follow_a_rotation(fresh_db, launch, stub):
    env = {**software_env(fresh_db), "FISCAL_SIGNING_KEY_REFRESH_SECONDS": "0.5"}
    first, second = launch(env, replicas=2)  # started together on an empty database
    wait_serving(first, timeout=30)
    wait_serving(second, timeout=30)
    channel_a, a = stub(first)
    channel_b, b = stub(second)
    operator_channel, operator_a = stub(first, "operator")
    with channel_a, channel_b, operator_channel:
        keys = a.ListPublicKeys(signing_pb2.ListPublicKeysRequest()).keys
        assert [k.status for k in keys] == ["active"]
        old_kid = keys[0].kid
        old_text = statement("before rotation")
        before, old_digest = sign(b, old_text)
        assert before.key_id == old_kid == sign(a, old_text)[0].key_id

        new_key = operator_a.RotateKey(signing_pb2.RotateKeyRequest())
        assert new_key.kid != old_kid and new_key.status == "active"
        assert sign(a, statement("x"))[0].key_id == new_key.kid  # at once where rotated

        # The other replica picks the new key up at its next refresh (0.5 s here): a wait on that event,
        # bounded generously, not a stopwatch.
        wait_until(lambda: sign(b, statement("y"))[0].key_id == new_key.kid, 10,
                   "replica b still signs with the retired key")

        after, digest = sign(b, statement("after rotation"))
        by_kid = {k.kid: k for k in b.ListPublicKeys(signing_pb2.ListPublicKeysRequest()).keys}
        assert by_kid[old_kid].status == "retired" and by_kid[old_kid].HasField("retired_at")
        assert by_kid[new_key.kid].status == "active"
        assert verifies(by_kid[old_kid], old_digest, before.signature)  # old receipts still verify
        assert verifies(by_kid[new_key.kid], digest, after.signature)
        assert not verifies(by_kid[old_kid], digest, after.signature)

    with psycopg.connect(fresh_db) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM signing.keys GROUP BY status").fetchall())
    assert counts == {"active": 1, "retired": 1}


def test_pkcs11_through_softhsm(fresh_db, launch, stub, tmp_path):
    require_softhsm()  # a missing SoftHSM2 fails here, never skips
    hsm_env = init_softhsm_token(tmp_path / "hsm", label="fiscal", pin="1234", so_pin="5678")
    (process,) = launch({"DATABASE_URL": fresh_db, **hsm_env, "FISCAL_HSM_PROBE_SECONDS": "0.5",
                         "FISCAL_MIN_ROTATION_INTERVAL_SECONDS": "0"})
    wait_serving(process, timeout=30)
    channel, signing = stub(process)
    operator_channel, operator = stub(process, "operator")
    with channel, operator_channel:
        status = operator.GetHsmStatus(signing_pb2.GetHsmStatusRequest())
        assert status.backend == "pkcs11"
        assert status.module_loaded and status.token_present and status.logged_in and status.test_signature_ok

        answer, digest = sign(signing, statement("hsm invoice"))
        (key,) = signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest()).keys
        assert (key.kid, key.backend, key.status) == (answer.key_id, "pkcs11", "active")
        assert verifies(key, digest, answer.signature)

        rotated = operator.RotateKey(signing_pb2.RotateKeyRequest())
        after, digest = sign(signing, statement("hsm invoice 2"))
        assert after.key_id == rotated.kid != key.kid and verifies(rotated, digest, after.signature)

        # Only a reference is stored: the private key stays in the token.
        with psycopg.connect(fresh_db) as conn:
            rows = conn.execute("SELECT private_pem, hsm_label FROM signing.keys").fetchall()
        assert all(pem is None and label.startswith("fiscal-es256-") for pem, label in rows)

        # The token disappears: health goes NOT_SERVING and the status says why.
        shutil.rmtree(tmp_path / "hsm" / "tokens")
        wait_until(lambda: health_status(process) == health_pb2.HealthCheckResponse.NOT_SERVING, 10,
                   "health still SERVING after the token was removed")
        status = operator.GetHsmStatus(signing_pb2.GetHsmStatusRequest())
        assert not (status.token_present and status.test_signature_ok) and status.detail
        with pytest.raises(grpc.RpcError) as error:
            sign(signing, statement("hsm invoice 3"))
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_refuses_to_start_with_a_clear_message(database_url, launch, tmp_path):
    require_softhsm()
    hsm_env = init_softhsm_token(tmp_path / "hsm", label="fiscal", pin="right-pin-s3cret", so_pin="so-pin-s3cret")
    cases = {
        "PIN incorrect": {**hsm_env, "FISCAL_PKCS11_PIN": "wrong-pin-s3cret"},
        "token 'nope' not found": {**hsm_env, "FISCAL_PKCS11_TOKEN_LABEL": "nope"},
        "FISCAL_PKCS11_PIN is required": {**hsm_env, "FISCAL_PKCS11_PIN": ""},
        "FISCAL_SOFT_KEYSTORE_PASSPHRASE is required": {"FISCAL_SIGNING_BACKEND": "software",
                                                        "FISCAL_SOFT_KEYSTORE_PASSPHRASE": ""},
    }
    processes = {expected: launch({"DATABASE_URL": database_url, **env})[0] for expected, env in cases.items()}
    for expected, process in processes.items():
        process.popen.wait(30)
        assert process.popen.returncode != 0
        log = process.log_path.read_text()
        assert expected in log, log
        assert "pin-s3cret" not in log  # never a PIN
