"""Files are private from the start (0600 / 0700), logs carry no secrets (tracebacks included), and
database errors do not quote their parameters."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.harness import auth, provision, sale

REPO_ROOT = Path(__file__).resolve().parent.parent


def _loose_modes(root: Path) -> list[str]:
    """Every directory under `root` (and root) that is not 0700 and every file others can read."""
    loose = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_dir() and mode != 0o700 or not path.is_dir() and mode & 0o077:
            loose.append(f"{path.relative_to(root.parent)} {oct(mode)}")
    return loose


def test_everything_under_a_mesh_data_dir_is_private(mesh):
    shop = provision(mesh, outlets=1, terminals=1)
    outlet = shop["outlets"][0]
    import httpx

    # A seal first, so the services have written their logs.
    answer = httpx.post(f"{mesh.gateway_url}/v1/invoices", headers=auth(shop["pos_keys"][outlet["id"]]),
                        json=sale(outlet, shop["terminals"][outlet["id"]][0], shop["cashiers"][outlet["id"]][0]),
                        timeout=30)
    assert answer.status_code == 200, answer.text
    names = {p.name for p in mesh.data_dir.rglob("*")}
    assert {"secrets.json", "envoy.json", "logs", "ledger.log", "envoy.log"} <= names
    assert _loose_modes(mesh.data_dir) == []


@pytest.fixture
def open_umask():
    """The most permissive umask: whatever stays private here does so by its own creation mode."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_private_files_are_private_whatever_the_umask(tmp_path, open_umask):
    from cli.state import write_state
    from services.runtime.private_files import open_private_append, private_dir, write_private

    data_dir = private_dir(tmp_path / "a" / "b" / ".fiscal")
    write_state(data_dir, {"gateway_url": "http://127.0.0.1:1"})
    write_private(data_dir / "demo.json", "{}")
    write_private(data_dir / "demo.json", '{"again": true}')  # replacing keeps it private
    with open_private_append(data_dir / "some.log") as log:
        log.write(b"line\n")
    assert _loose_modes(tmp_path / "a") == []


def test_softhsm_token_directory_is_private(tmp_path, open_umask):
    from services.signing.softhsm import init_softhsm_token

    env = init_softhsm_token(tmp_path / "hsm", label="fiscal-modes", pin="modes-pin-1", so_pin="modes-so-pin-1")
    assert Path(env["SOFTHSM2_CONF"]).exists()
    assert any((tmp_path / "hsm" / "tokens").iterdir())  # the token softhsm2-util made is there
    assert _loose_modes(tmp_path / "hsm") == []


LOGGING_SCRIPT = textwrap.dedent("""
    import logging, structlog
    from services.runtime.logs import configure_logging

    configure_logging("test")
    log = structlog.get_logger()
    try:
        raise RuntimeError("auth failed for Authorization: Bearer fk_pos_AAAAsecretPOSkey1234567890")
    except RuntimeError:
        log.exception("structlog traceback")
    try:
        raise ValueError("connect postgresql://fiscal_ledger:role-pass-SECRET-42@db:5432/fiscal failed; "
                         "passphrase literal keystore-pass-SECRET-7 ; pin=4321 ; whsec_MfKQ9r8GKYqrTwjUPD8ILPZI")
    except ValueError:
        logging.getLogger("sqlalchemy.pool").exception("stdlib traceback")
    logging.getLogger("grpc").warning("message with fk_admin_BBBBsecretADMINkey and --so-pin 8765")
    raise KeyError("uncaught, with keystore-pass-SECRET-7 and pkcs11-pin-SECRET-9")
""")


def test_tracebacks_are_redacted_like_messages():
    env = {**os.environ, "FISCAL_SOFT_KEYSTORE_PASSPHRASE": "keystore-pass-SECRET-7",
           "FISCAL_PKCS11_PIN": "pkcs11-pin-SECRET-9"}
    run = subprocess.run([sys.executable, "-c", LOGGING_SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode != 0  # the uncaught KeyError
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    events = {line["event"] for line in lines}
    assert {"structlog traceback", "stdlib traceback", "uncaught exception"} <= events, run.stderr
    assert all("Traceback" in line["exception"] for line in lines if "traceback" in line["event"]
               or line["event"] == "uncaught exception"), run.stderr
    assert "Traceback" in run.stderr  # the tracebacks are there, only scrubbed
    for secret in ("fk_pos_AAAA", "fk_admin_BBBB", "role-pass-SECRET", "keystore-pass-SECRET", "pkcs11-pin-SECRET",
                   "4321", "8765", "whsec_MfKQ"):
        assert secret not in run.stderr, secret
    assert "fiscal_ledger:[redacted]@db" in run.stderr and "pin=[redacted]" in run.stderr


def test_database_errors_do_not_quote_parameters(postgres_server):
    from services.runtime.database import create_engine

    async def provoke() -> str:
        engine = create_engine()
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT CAST(:value AS text), 1 / 0"),
                                   {"value": "a-parameter-SECRET-value"})
        except sa.exc.DBAPIError as exc:
            return str(exc)
        finally:
            await engine.dispose()
        return "no error"

    text = asyncio.run(provoke())
    assert "division by zero" in text and "a-parameter-SECRET-value" not in text
    assert "hide_parameters" in text  # SQLAlchemy's own note that it left them out


def test_secrets_audit_names_file_and_kind_never_the_secret(tmp_path):
    from tests.secrets_audit import SecretsAudit

    audit = SecretsAudit(roots={tmp_path})
    audit.add("fk_pos_PLANTEDkey0123456789", "POS API key")
    audit.add("4321", "SoftHSM PIN")
    audit.add("keystore-passphrase-planted", "environment value FISCAL_SOFT_KEYSTORE_PASSPHRASE")
    logs = tmp_path / "mesh" / "logs"
    logs.mkdir(parents=True)
    (logs / "ledger.log").write_text('{"event": "x", "exception": "Bearer fk_pos_PLANTEDkey0123456789"}\n')
    (logs / "signing.log").write_text('{"event": "login", "detail": "pin=4321"}\n')
    (logs / "counter.log").write_text('{"event": "allocated", "number": 4321, "port": 14321}\n')  # not a PIN
    (tmp_path / "notes.txt").write_text("keystore-passphrase-planted")  # not a log
    try:
        findings = audit.findings()
    finally:
        # The planted logs must not be found again by the session's own audit at the end of the run.
        for planted in logs.iterdir():
            planted.unlink()
    assert findings == [f"{logs / 'ledger.log'}: POS API key", f"{logs / 'signing.log'}: SoftHSM PIN"]
    assert not any("PLANTED" in line or "4321" in line.split(":")[-1] for line in findings)


def test_secrets_audit_sees_this_run(mesh):
    from tests.secrets_audit import AUDIT

    shop = provision(mesh, outlets=1, terminals=1)
    assert shop["admin_key"] in AUDIT.secrets and shop["pos_keys"][shop["outlets"][0]["id"]] in AUDIT.secrets
    assert mesh.data_dir in AUDIT.data_dirs
    assert any(path.name == "ledger.log" for path in AUDIT.log_files())
