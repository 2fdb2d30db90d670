"""The `fiscal` command line as a user runs it, and PKCS#11 signing through SoftHSM2 end to end."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from stack.processes import free_port
from tests.harness import auth, provision, require_softhsm, sale

FISCAL = str(Path(sys.executable).parent / "fiscal")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_qr_offline(qr_url: str, jwks: list[dict]) -> bool:
    """A verifier's own code, written from docs/receipts.md alone: rebuild the statement from the QR,
    check the ES256 signature with the published key, and the auth code."""
    q = {k: v[0] for k, v in parse_qs(urlparse(qr_url).query).items()}
    statement = "\n".join(["FC1", q["fn"], q["fa"], q["ts"], q["tt"], q["cur"], q["d"]]).encode()
    jwk = next(k for k in jwks if k["kid"] == q["kid"])
    key = ec.EllipticCurvePublicNumbers(int.from_bytes(b64d(jwk["x"]), "big"), int.from_bytes(b64d(jwk["y"]), "big"),
                                        ec.SECP256R1()).public_key()
    raw = b64d(q["sg"])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.verify(der, hashlib.sha256(statement).digest(), ec.ECDSA(Prehashed(hashes.SHA256())))  # raises if bad
    code = base64.b32encode(hashlib.sha256(raw).digest()).decode()[:12]
    return q["ac"] == f"{code[:4]}-{code[4:8]}-{code[8:]}"


def test_pkcs11_signing_through_softhsm_and_offline_qr_verification(start_mesh, tmp_path):
    from services.signing.softhsm import init_softhsm_token

    require_softhsm()  # a missing SoftHSM2 fails the suite, never skips it
    mesh = start_mesh(service_env={"signing": init_softhsm_token(tmp_path / "hsm", label="fiscal-test",
                                                                 pin="4321", so_pin="8765")})
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        invoice = client.post("/v1/invoices", headers=auth(merchant["pos_keys"][outlet["id"]]),
                              json=sale(outlet, merchant["terminals"][outlet["id"]][0],
                                        merchant["cashiers"][outlet["id"]][0])).json()
        jwks = client.get("/v1/keys").json()["keys"]
    assert verify_qr_offline(invoice["fiscal"]["qr_code"], jwks)
    # As the operator, with the certificate the mesh made in its data directory.
    listing = subprocess.run([FISCAL, "--data-dir", str(mesh.data_dir), "keys", "list",
                              "--signing-addr", mesh.address("signing")],
                             capture_output=True, text=True, check=True).stdout
    assert "pkcs11" in listing and "active" in listing
    # A tampered QR (another total) fails offline verification.
    forged = invoice["fiscal"]["qr_code"].replace(f"tt={invoice['total']}", "tt=1.00")
    try:
        verify_qr_offline(forged, jwks)
        raise AssertionError("a forged total verified")
    except Exception as exc:  # cryptography's InvalidSignature
        assert type(exc).__name__ == "InvalidSignature"


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def test_fiscal_up_verify_rotate_and_clean_stop(tmp_path):
    data_dir, port = tmp_path / "stack", free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}  # the embedded PostgreSQL, as a user gets
    env["FISCAL_AUTH_CACHE_SECONDS"] = "1"  # so a revoked key stops working within the test
    env["FISCAL_MIN_ROTATION_INTERVAL_SECONDS"] = "0"  # the test rotates a key made seconds ago
    up = subprocess.Popen([FISCAL, "up", "--data-dir", str(data_dir), "--port", str(port)], env=env,
                          stdout=open(tmp_path / "up.log", "w"), stderr=subprocess.STDOUT)
    try:
        gateway = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            if (data_dir / "stack.json").exists():
                break
            time.sleep(0.3)
        assert httpx.get(f"{gateway}/healthz").status_code == 200
        demo = json.loads((data_dir / "demo.json").read_text())
        assert demo["gateway_url"] == gateway and len(demo["outlets"]) == 2
        assert all(len(demo["terminals"][o["id"]]) == 3 for o in demo["outlets"])
        assert {"admin_key", "read_key", "pos_keys", "tax_groups", "cashiers", "merchant"} <= demo.keys()
        outlet = demo["outlets"][0]
        with httpx.Client(base_url=gateway, timeout=30) as client:
            def seal():
                answer = client.post("/v1/invoices", headers=auth(demo["pos_keys"][outlet["id"]]),
                                     json=sale(outlet, demo["terminals"][outlet["id"]][0],
                                               demo["cashiers"][outlet["id"]][0]))
                assert answer.status_code == 200, answer.text
                return answer.json()

            first = seal()
            cli = [FISCAL, "--data-dir", str(data_dir)]
            verified = subprocess.run([*cli, "verify", "--outlet", outlet["id"]], capture_output=True, text=True)
            assert verified.returncode == 0 and "chain and signatures verify" in verified.stdout, verified.stdout
            rotated = subprocess.run([*cli, "keys", "rotate"], capture_output=True, text=True)
            assert rotated.returncode == 0, rotated.stderr
            # Replicas pick up the new active key within about a second: wait for that, not for a clock.
            second, deadline = seal(), time.monotonic() + 15
            while second["fiscal"]["key_id"] == first["fiscal"]["key_id"] and time.monotonic() < deadline:
                time.sleep(0.2)
                second = seal()
            assert second["fiscal"]["key_id"] != first["fiscal"]["key_id"]
            keys = client.get("/v1/keys").json()["keys"]
            assert {k["status"] for k in keys} == {"active", "retired"}
            # The receipt signed before the rotation still verifies, online and offline.
            assert client.get(urlparse(first["fiscal"]["qr_code"]).path + "?" +
                              urlparse(first["fiscal"]["qr_code"]).query).json()["valid"] is True
            assert verify_qr_offline(first["fiscal"]["qr_code"], keys)
            again = subprocess.run([*cli, "verify", "--outlet", outlet["id"]], capture_output=True, text=True)
            assert again.returncode == 0, again.stdout
            # A leaked till key: the operator makes a new one and revokes the old one.
            merchant_id = demo["merchant"]["id"]
            created = subprocess.run([*cli, "api-key", "create", "--merchant-id", merchant_id, "--scope",
                                      "outlet:pos", "--outlet-id", outlet["id"], "--name", "till 1 (new)"],
                                     capture_output=True, text=True)
            assert created.returncode == 0, created.stderr
            new_key = json.loads(created.stdout.splitlines()[0])
            body = sale(outlet, demo["terminals"][outlet["id"]][0], demo["cashiers"][outlet["id"]][0])
            assert client.post("/v1/invoices", headers=auth(new_key["key"]), json=body).status_code == 200
            listing = subprocess.run([*cli, "api-key", "list", "--merchant-id", merchant_id],
                                     capture_output=True, text=True)
            assert new_key["id"] in listing.stdout and new_key["key"] not in listing.stdout
            revoked = subprocess.run([*cli, "api-key", "revoke", "--merchant-id", merchant_id,
                                      "--key-id", new_key["id"]], capture_output=True, text=True)
            assert revoked.returncode == 0, revoked.stdout
            # The ledger's key cache (FISCAL_AUTH_CACHE_SECONDS=1 here) lets it through until it expires.
            refused, deadline = client.post("/v1/invoices", headers=auth(new_key["key"]), json=body), time.monotonic() + 15
            while refused.status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                refused = client.post("/v1/invoices", headers=auth(new_key["key"]), json=body)
            assert refused.status_code == 401 and "revoked" in refused.json()["message"]
            # A service dies: `fiscal up` notices and starts it again, nobody has to.
            ledger_pid = next(pid for pid in _children(up.pid) if "services.ledger" in _cmdline(pid))
            os.kill(ledger_pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                replaced = [pid for pid in _children(up.pid) if "services.ledger" in _cmdline(pid)]
                if replaced and replaced[0] != ledger_pid:
                    try:
                        if client.post("/v1/invoices", headers=auth(demo["pos_keys"][outlet["id"]]),
                                       json=sale(outlet, demo["terminals"][outlet["id"]][0],
                                                 demo["cashiers"][outlet["id"]][0])).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                time.sleep(0.3)
            else:
                raise AssertionError("the killed ledger was not replaced")
            assert "ledger exited" in (tmp_path / "up.log").read_text()
            # Tamper with the stored invoice: verify notices.
            state = json.loads((data_dir / "stack.json").read_text())
            with psycopg.connect(state["database_url"], autocommit=True) as conn:
                conn.execute("UPDATE ledger.invoices SET body = replace(body, '\"quantity\":\"2\"', "
                             "'\"quantity\":\"1\"') WHERE id = %s", (first["id"],))
            tampered = subprocess.run([*cli, "verify", "--outlet", outlet["id"]], capture_output=True, text=True)
            assert tampered.returncode == 1 and "altered" in tampered.stdout, tampered.stdout
            # Cut the chain's tail (its newest entry): the anchored head still names it, so verify notices.
            with psycopg.connect(state["database_url"], autocommit=True) as conn:
                conn.execute("DELETE FROM ledger.invoices WHERE outlet_id = %s AND series = 'INV' AND number = "
                             "(SELECT max(number) FROM ledger.invoices WHERE outlet_id = %s AND series = 'INV')",
                             (outlet["id"], outlet["id"]))
            cut = subprocess.run([*cli, "verify", "--outlet", outlet["id"]], capture_output=True, text=True)
            assert cut.returncode == 1 and "tail deleted" in cut.stdout, cut.stdout
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            code = up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "nothing left running" in (tmp_path / "up.log").read_text()
    assert _processes_mentioning(str(data_dir)) == []
    assert not (data_dir / "stack.json").exists()
