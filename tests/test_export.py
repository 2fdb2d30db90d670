"""`fiscal export` and `fiscal verify-export` (issue #10, manual fallback; docs/export.md).

Real mesh: invoices and a credit note sealed through the gateway, the package written by the CLI (rows
as the ledger's database role, keys and the manifest's signature from the signing service as the
operator), then checked offline and tampered with byte by byte. The export statement's own rules are
unit-tested at the top (services/signing/statement.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa
from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.ledger.export_package import check_package
from services.runtime.es256 import b64url
from services.runtime.faults import InvalidArgument
from services.signing.statement import (
    StatementRules,
    checked_export_statement_digest,
    checked_statement_digest,
    is_export_statement,
)
from tests.harness import _with_store, auth, provision, run, seal_many

REPO = Path(__file__).resolve().parent.parent
RULES = StatementRules(authority_id="FC-DEV-0001", max_skew=timedelta(minutes=5))
BIG_EXPORT = int(os.environ.get("FISCAL_TEST_EXPORT_INVOICES", "2000"))


# --- the export statement (unit) ----------------------------------------------------------------------

def _export_statement(now: datetime, **lines: str) -> str:
    fields = {"version": "FCX1", "authority": "FC-DEV-0001", "outlet": "DEMO001", "from": "2026-11-01",
              "to": "2026-11-30", "created_at": now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
              "digest": b64url(hashlib.sha256(b"manifest").digest())} | lines
    return "\n".join(fields.values())


def test_export_statement_rules():
    now = datetime.now(UTC)
    good = _export_statement(now)
    assert is_export_statement(good)
    assert checked_export_statement_digest(good, RULES, now) == hashlib.sha256(good.encode()).digest()
    for bad, why in [(_export_statement(now, version="FC1"), "version"),
                     (_export_statement(now, authority="FC-OTHER"), "authority"),
                     (_export_statement(now, outlet="DEMO 001"), "outlet code"),
                     (_export_statement(now, **{"from": "2026-11-31"}), "dates"),
                     (_export_statement(now, **{"from": "2026-12-01"}), "starts after"),
                     (_export_statement(now, created_at="2020-01-01T00:00:00.000Z"), "signing clock"),
                     (_export_statement(now, digest="abc"), "manifest digest"),
                     (good + "\nextra", "7 lines")]:
        with pytest.raises(InvalidArgument) as refused:
            checked_export_statement_digest(bad, RULES, now)
        assert why in refused.value.message, (why, refused.value.message)


def test_the_two_statement_kinds_never_pass_for_each_other():
    now = datetime.now(UTC)
    receipt = "\n".join(["FC1", "DEMO001-INV-0000000001", "FC-DEV-0001", now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                         "10.00", "KES", b64url(hashlib.sha256(b"body").digest())])
    checked_statement_digest(receipt, RULES, now)
    assert not is_export_statement(receipt)
    with pytest.raises(InvalidArgument):
        checked_export_statement_digest(receipt, RULES, now)
    with pytest.raises(InvalidArgument):
        checked_statement_digest(_export_statement(now), RULES, now)


# --- the mesh ---------------------------------------------------------------------------------------

def fiscal(mesh, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, pointed at the test mesh: the ledger's database role and the operator
    certificate of the mesh's data directory."""
    return subprocess.run([sys.executable, "-m", "cli.main", "--data-dir", str(mesh.data_dir), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200"})


def export(mesh, outlet_id: str, target: Path, *extra: str, days: tuple[date, date] | None = None):
    today = datetime.now(UTC).date()
    first, last = days or (today - timedelta(days=1), today + timedelta(days=1))
    return fiscal(mesh, "export", "--outlet", outlet_id, "--from", first.isoformat(), "--to", last.isoformat(),
                  "--signing-addr", mesh.address("signing"), "--database-url", mesh.service_database_url("ledger"),
                  "--quiet", *extra, str(target))


def verify(mesh, package: Path) -> subprocess.CompletedProcess:
    return fiscal(mesh, "verify-export", "--quiet", str(package))


def rewrite(source: Path, target: Path, changes: dict[str, bytes | None]) -> Path:
    """A copy of a package with some members replaced (bytes) or removed (None)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            if info.filename in changes:
                if changes[info.filename] is not None:
                    new.writestr(info.filename, changes[info.filename])
            else:
                new.writestr(info, old.read(info))
    return target


def member(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


def one_byte_altered(body: bytes) -> bytes:
    """The body with one byte changed: the total's first digit (1 -> 0, 2 -> 3, ...)."""
    at = body.index(b'"total":"') + len(b'"total":"')
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:]


def db_fiscal_numbers(mesh, outlet_id: str) -> list[str]:
    async def fetch(_, engine):
        async with engine.connect() as conn:
            return [r[0] for r in (await conn.execute(sa.text(
                "SELECT fiscal_number FROM ledger.invoices WHERE outlet_id = :o ORDER BY series, number"),
                {"o": outlet_id})).all()]
    return run(_with_store(mesh.database_url, fetch))


def credit_note(mesh, merchant: dict, outlet: dict, invoice: dict) -> dict:
    body = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": merchant["terminals"][outlet["id"]][0],
            "cashier_id": merchant["cashiers"][outlet["id"]][0], "reason": "returned",
            "lines": [{"description": "Maize flour 2kg", "quantity": "1", "unit_price": "210.00", "tax_group": "A"}]}
    answer = httpx.post(f"{mesh.gateway_url}/v1/invoices/{invoice['id']}/credit-notes", json=body,
                        headers=auth(merchant["pos_keys"][outlet["id"]]), timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def shop(mesh, tmp_path_factory):
    """One outlet with 40 invoices from 2 terminals and 2 credit notes, exported once."""
    merchant = provision(mesh, outlets=1, terminals=2)
    outlet = merchant["outlets"][0]
    sealed = run(seal_many(mesh.gateway_url, merchant, per_terminal=20))["ok"]
    notes = [credit_note(mesh, merchant, outlet, sealed[3]), credit_note(mesh, merchant, outlet, sealed[7])]
    package = tmp_path_factory.mktemp("export") / "audit.zip"
    written = export(mesh, outlet["id"], package)
    assert written.returncode == 0, written.stdout + written.stderr
    return {"merchant": merchant, "outlet": outlet, "invoices": sealed, "notes": notes, "package": package,
            "written": written}


def test_export_verifies_offline_with_every_document(mesh, shop):
    package = shop["package"]
    assert "40 invoices, 2 credit notes" in shop["written"].stdout and "signed" in shop["written"].stdout
    manifest = json.loads(member(package, "manifest.json"))
    code = shop["outlet"]["code"]
    assert manifest["counts"] == {"invoices": 40, "credit_notes": 2, "reports": 0}
    assert manifest["series"]["INV"] == {"kind": "invoice", "count": 40, "first": f"{code}-INV-0000000001",
                                              "last": f"{code}-INV-0000000040"}
    assert manifest["series"]["CN"]["first"] == f"{code}-CN-0000000001"
    assert manifest["outlet"]["id"] == shop["outlet"]["id"]
    with zipfile.ZipFile(package) as archive:
        bodies = sorted(n.rsplit("/", 1)[1][:-5] for n in archive.namelist()
                        if n.startswith("documents/") and not n.endswith(".receipt.json"))
        listed = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert all(hashlib.sha256(archive.read(p)).hexdigest() == h for p, h in listed.items())
        assert "reports/" in archive.namelist()
    assert bodies == sorted(db_fiscal_numbers(mesh, shop["outlet"]["id"]))
    # Each body file is exactly what was signed: its SHA-256 is the digest in the sealed invoice's QR.
    first = shop["invoices"][0]
    body = member(package, f"documents/INV/{first['fiscal']['fiscal_number']}.json")
    assert f"d={b64url(hashlib.sha256(body).digest())}" in first["fiscal"]["qr_code"]

    checked = verify(mesh, package)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "42 documents" in checked.stdout and "verify" in checked.stdout
    # The same check in-process, on an in-memory copy, with the mesh's published keys pinned.
    keys = httpx.get(f"{mesh.gateway_url}/v1/keys", timeout=10).json()["keys"]
    assert check_package(io.BytesIO(package.read_bytes()), trusted_keys=keys).ok


def test_one_altered_byte_names_that_document(shop, tmp_path, mesh):
    package = shop["package"]
    victim = f"{shop['outlet']['code']}-INV-0000000017"
    path = f"documents/INV/{victim}.json"
    altered = one_byte_altered(member(package, path))
    result = verify(mesh, rewrite(package, tmp_path / "altered.zip", {path: altered}))
    assert result.returncode == 1
    assert f"first altered document: {victim} ({path})" in result.stdout, result.stdout

    # Also with the manifest's hash of that file brought up to date: the manifest is refused, and the
    # document is still named (its body no longer matches what was signed).
    manifest = json.loads(member(package, "manifest.json"))
    for entry in manifest["files"]:
        if entry["path"] == path:
            entry["sha256"] = hashlib.sha256(altered).hexdigest()
    forged = rewrite(package, tmp_path / "forged.zip", {path: altered, "manifest.json": json.dumps(manifest).encode()})
    result = verify(mesh, forged)
    assert result.returncode == 1
    assert "manifest refused" in result.stdout, result.stdout
    assert f"first altered document: {victim} ({path}): the body's SHA-256 is not the signed body digest" \
        in result.stdout, result.stdout


def test_an_altered_signature_or_receipt_is_named(shop, tmp_path, mesh):
    package = shop["package"]
    victim = f"{shop['outlet']['code']}-CN-0000000002"
    path = f"documents/CN/{victim}.receipt.json"
    receipt = json.loads(member(package, path))
    receipt["total"] = "1.00"
    result = verify(mesh, rewrite(package, tmp_path / "receipt.zip", {path: json.dumps(receipt).encode()}))
    assert result.returncode == 1 and f"first altered document: {victim} ({path})" in result.stdout, result.stdout


def test_a_removed_document_is_a_gap(shop, tmp_path, mesh):
    package = shop["package"]
    code = shop["outlet"]["code"]
    victim = f"{code}-INV-0000000023"
    removed = {f"documents/INV/{victim}.json": None, f"documents/INV/{victim}.receipt.json": None}
    result = verify(mesh, rewrite(package, tmp_path / "gap.zip", removed))
    assert result.returncode == 1
    assert f"first altered document: {victim}: gap: {victim} missing from the package" in result.stdout, result.stdout

    # The tail's removal with the manifest and chain.json edited to match: the signature refuses it.
    last = f"{code}-INV-0000000040"
    manifest = json.loads(member(package, "manifest.json"))
    manifest["files"] = [f for f in manifest["files"] if last not in f["path"]]
    manifest["series"]["INV"].update(count=39, last=f"{code}-INV-0000000039")
    manifest["counts"]["invoices"] = 39
    result = verify(mesh, rewrite(package, tmp_path / "tail.zip", {
        f"documents/INV/{last}.json": None, f"documents/INV/{last}.receipt.json": None,
        "manifest.json": json.dumps(manifest).encode()}))
    assert result.returncode == 1 and "manifest refused" in result.stdout, result.stdout


def test_a_tampered_manifest_is_refused(shop, tmp_path, mesh):
    package = shop["package"]
    manifest = member(package, "manifest.json")
    tampered = manifest.replace(b'"to": "', b'"to": "1', 1)  # the period's end
    assert tampered != manifest
    result = verify(mesh, rewrite(package, tmp_path / "manifest.zip", {"manifest.json": tampered}))
    assert result.returncode == 1 and "manifest refused" in result.stdout, result.stdout
    signature = json.loads(member(package, "manifest.sig.json"))
    signature["signature"] = signature["signature"][::-1]
    result = verify(mesh, rewrite(package, tmp_path / "sig.zip",
                                  {"manifest.sig.json": json.dumps(signature).encode()}))
    assert result.returncode == 1 and "manifest refused" in result.stdout, result.stdout
    extra = rewrite(package, tmp_path / "extra.zip", {})
    with zipfile.ZipFile(extra, "a") as archive:
        archive.writestr("documents/INV/notes.txt", b"hello")
    result = verify(mesh, extra)
    assert result.returncode == 1 and "documents/INV/notes.txt" in result.stdout, result.stdout


def test_bad_input_is_one_line_and_exit_2(mesh, shop, tmp_path):
    outlet_id = shop["outlet"]["id"]
    for args, words in [((str(uuid.uuid4()),), "not found"), (("not-a-uuid",), "outlet")]:
        result = export(mesh, *args, tmp_path / "x.zip")
        assert result.returncode == 2 and words in result.stderr, result.stderr
    result = export(mesh, outlet_id, tmp_path / "x.zip", days=(date(2026, 2, 1), date(2026, 1, 1)))
    assert result.returncode == 2 and "before it starts" in result.stderr, result.stderr
    result = export(mesh, outlet_id, shop["package"])  # exists
    assert result.returncode == 2 and "--force" in result.stderr, result.stderr
    assert not (tmp_path / "x.zip").exists()
    result = verify(mesh, tmp_path / "missing.zip")
    assert result.returncode == 2
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    result = verify(mesh, tmp_path / "junk.zip")
    assert result.returncode == 1 and "not a readable zip" in result.stdout, result.stdout


def test_an_empty_period_is_a_signed_empty_package(mesh, shop, tmp_path):
    target = tmp_path / "empty.zip"
    result = export(mesh, shop["outlet"]["id"], target, days=(date(2020, 1, 1), date(2020, 1, 31)))
    assert result.returncode == 0, result.stderr
    assert json.loads(member(target, "manifest.json"))["counts"]["invoices"] == 0
    assert verify(mesh, target).returncode == 0


def test_only_the_operator_signs_export_statements_and_never_a_receipt(mesh):
    now = datetime.now(UTC)
    export_text = _export_statement(now)
    receipt = "\n".join(["FC1", "DEMO001-INV-0000000001", "FC-DEV-0001", now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                         "10.00", "KES", b64url(hashlib.sha256(b"body").digest())])
    with mesh.channel("signing", "operator") as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        assert len(stub.Sign(signing_pb2.SignRequest(statement=export_text), timeout=10).signature) == 64
        with pytest.raises(grpc.RpcError) as refused:
            stub.Sign(signing_pb2.SignRequest(statement=receipt), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            stub.SignBatch(signing_pb2.SignBatchRequest(statements=[receipt]), timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with mesh.channel("signing", "ledger") as channel:
        with pytest.raises(grpc.RpcError) as refused:
            signing_pb2_grpc.SigningServiceStub(channel).Sign(signing_pb2.SignRequest(statement=export_text),
                                                              timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_large_export_verifies_and_names_one_altered_byte(mesh, tmp_path):
    """The issue's 10,000-invoice case, at BIG_EXPORT invoices (FISCAL_TEST_EXPORT_INVOICES; docs/export.md
    has the figures measured at 10,000): 20 terminals seal concurrently."""
    merchant = provision(mesh, outlets=1, terminals=20)
    outlet = merchant["outlets"][0]
    started = time.monotonic()
    result = run(seal_many(mesh.gateway_url, merchant, per_terminal=BIG_EXPORT // 20, tolerate_errors=True))
    sealed_seconds = time.monotonic() - started
    assert len(result["ok"]) == BIG_EXPORT
    package = tmp_path / "big.zip"
    started = time.monotonic()
    written = export(mesh, outlet["id"], package)
    export_seconds = time.monotonic() - started
    assert written.returncode == 0, written.stderr
    started = time.monotonic()
    checked = verify(mesh, package)
    verify_seconds = time.monotonic() - started
    assert checked.returncode == 0 and f"{BIG_EXPORT} documents" in checked.stdout, checked.stdout
    victim = f"{outlet['code']}-INV-{BIG_EXPORT * 3 // 4:010d}"
    path = f"documents/INV/{victim}.json"
    altered = one_byte_altered(member(package, path))
    result = verify(mesh, rewrite(package, tmp_path / "big-altered.zip", {path: altered}))
    assert result.returncode == 1 and f"first altered document: {victim} ({path})" in result.stdout, result.stdout
    print(f"\n{BIG_EXPORT} invoices: sealed in {sealed_seconds:.1f} s, exported in {export_seconds:.1f} s "
          f"({package.stat().st_size:,} bytes), verified in {verify_seconds:.1f} s")


def test_a_package_that_starts_mid_chain_links_to_the_entry_before(mesh, shop, tmp_path):
    """A period after the first: the first document's prev_hash is the hash of the entry before the
    period, whose signed statement travels in chain.json. A wrong or missing link is named."""
    from types import SimpleNamespace

    from sqlalchemy.ext.asyncio import create_async_engine

    from cli.export import OperatorSigner
    from cli.state import async_url
    from services.ledger.export import ExportReader, period_of
    from services.ledger.export_package import OutletInfo, PackageWriter, utc_text

    outlet_id = shop["outlet"]["id"]
    signer = OperatorSigner(SimpleNamespace(signing_addr=mesh.address("signing"), data_dir=mesh.data_dir))

    async def package(name: str, before_number: int | None) -> Path:
        engine = create_async_engine(async_url(mesh.service_database_url("ledger")))
        try:
            reader = ExportReader(engine)
            outlet = await reader.outlet(outlet_id)
            today = datetime.now(UTC).date()
            writer = PackageWriter(str(tmp_path / name), OutletInfo(
                outlet.id, outlet.code, outlet.name, outlet.taxpayer_id, outlet.currency, outlet.time_zone),
                period_of(today, today, outlet.time_zone), "FC-DEV-0001")
            writer.set_link_before("INV", None if before_number is None
                                   else await reader.entry(outlet_id, "INV", before_number))
            async for entry in reader.entries(outlet_id, "INV", 11, 40, page=7):  # several pages
                writer.add(entry)
            writer.manifest_bytes(signer.public_keys(), utc_text(datetime.now(UTC)))
            writer.add_signature(*signer.sign(writer.statement()))
            return tmp_path / name
        finally:
            await engine.dispose()

    code = shop["outlet"]["code"]
    linked = run(package("linked.zip", 10))
    checked = check_package(linked)
    assert checked.ok and checked.documents == 30, [str(p) for p in checked.problems]
    assert json.loads(member(linked, "chain.json"))["series"]["INV"]["before"]["fiscal_number"] == \
        f"{code}-INV-0000000010"
    wrong = check_package(run(package("wrong.zip", 9)))
    assert wrong.first_document_problem.fiscal_number == f"{code}-INV-0000000011", wrong.problems
    assert "not number 10" in wrong.first_document_problem.what
    assert any("broken link" in p.what and p.fiscal_number == f"{code}-INV-0000000011" for p in wrong.problems)
    unlinked = check_package(run(package("unlinked.zip", None)))
    assert "numbers 1..10 are missing" in unlinked.first_document_problem.what, unlinked.problems
