"""The independent chain verifier (tests/chain_verifier.py, no service code) against real sealed chains:
a clean chain verifies, and each kind of tampering is detected and named, by it and by `fiscal verify`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import psycopg
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from psycopg.rows import dict_row

from tests import chain_verifier
from tests.harness import assert_exactly_once, is_retryable, provision, seal_many, verify_chains

SALES = 6
CASES = ["clean", "middle_deleted", "tail_deleted", "numbers_swapped", "link_broken", "resigned_unpublished_key",
         "resigned_claiming_published_key", "body_altered_keeping_signature", "amount_altered",
         "signature_malleated"]


@pytest.fixture(scope="module")
def chains(mesh):
    """One outlet per case, each with a chain of SALES sealed invoices, tampered as the case says."""
    merchant = provision(mesh, outlets=len(CASES), terminals=1)
    result = asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=SALES))
    assert len(result["ok"]) == SALES * len(CASES)
    outlets = dict(zip(CASES, merchant["outlets"], strict=True))
    with psycopg.connect(mesh.database_url, autocommit=True) as conn:
        for case, outlet in outlets.items():
            TAMPER[case](conn, outlet["id"])
    return outlets


def _row(conn, outlet_id: str, number: int) -> dict:
    cur = conn.cursor(row_factory=dict_row)
    return cur.execute("SELECT * FROM ledger.invoices WHERE outlet_id = %s AND series = 'INV' AND number = %s",
                       (outlet_id, number)).fetchone()


def _delete(conn, outlet_id: str, number: int) -> None:
    conn.execute("DELETE FROM ledger.invoices WHERE outlet_id = %s AND series = 'INV' AND number = %s",
                 (outlet_id, number))


def _swap(conn, outlet_id: str) -> None:
    a, b = _row(conn, outlet_id, 2), _row(conn, outlet_id, 3)
    conn.execute("UPDATE ledger.invoices SET number = 1000000, fiscal_number = 'tmp' || id WHERE id = %s", (a["id"],))
    conn.execute("UPDATE ledger.invoices SET number = 2, fiscal_number = %s WHERE id = %s",
                 (a["fiscal_number"], b["id"]))
    conn.execute("UPDATE ledger.invoices SET number = 3, fiscal_number = %s WHERE id = %s",
                 (b["fiscal_number"], a["id"]))


def _resign_last(conn, outlet_id: str, kid: str | None) -> None:
    """An attacker with database access rewrites the last entry (quantity 2 -> 5) and re-signs it with
    their own key, consistently (digest, statement, hash, auth code, even the anchored head)."""
    row = _row(conn, outlet_id, SALES)
    body = json.loads(row["body"])
    body["lines"][1]["quantity"] = "5"
    body_text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(body_text.encode()).digest()
    statement = chain_verifier.statement_text(row["fiscal_number"], body, digest)
    statement_hash = hashlib.sha256(statement.encode()).digest()
    r, s = decode_dss_signature(ec.generate_private_key(ec.SECP256R1()).sign(
        statement_hash, ec.ECDSA(Prehashed(hashes.SHA256()))))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    code = base64.b32encode(hashlib.sha256(signature).digest()).decode()[:12]
    conn.execute("UPDATE ledger.invoices SET body = %s, body_digest = %s, statement = %s, hash = %s, signature = %s,"
                 " key_id = %s, auth_code = %s WHERE id = %s",
                 (body_text, digest, statement, statement_hash, signature, kid or row["key_id"],
                  f"{code[:4]}-{code[4:8]}-{code[8:]}", row["id"]))
    conn.execute("UPDATE ledger.chain_heads SET hash = %s WHERE outlet_id = %s AND series = 'INV'",
                 (statement_hash, outlet_id))


def _malleate(conn, outlet_id: str) -> None:
    """(r, n - s) verifies as well as (r, s): a second valid-looking QR for one receipt, unless only the
    low-S form is accepted. The auth code is recomputed so that only the form is wrong."""
    row = _row(conn, outlet_id, 2)
    signature = bytes(row["signature"])
    high = signature[:32] + (chain_verifier.P256_ORDER - int.from_bytes(signature[32:], "big")).to_bytes(32, "big")
    code = base64.b32encode(hashlib.sha256(high).digest()).decode()[:12]
    conn.execute("UPDATE ledger.invoices SET signature = %s, auth_code = %s WHERE id = %s",
                 (high, f"{code[:4]}-{code[4:8]}-{code[8:]}", row["id"]))


TAMPER = {
    "clean": lambda conn, o: None,
    "middle_deleted": lambda conn, o: _delete(conn, o, 3),
    "tail_deleted": lambda conn, o: _delete(conn, o, SALES),
    "numbers_swapped": _swap,
    "link_broken": lambda conn, o: conn.execute(
        "UPDATE ledger.invoices SET prev_hash = %s WHERE outlet_id = %s AND series = 'INV' AND number = 4",
        (b"\x01" * 32, o)),
    "resigned_unpublished_key": lambda conn, o: _resign_last(conn, o, "attacker-key"),
    "resigned_claiming_published_key": lambda conn, o: _resign_last(conn, o, None),
    # The genuine signature by a published key stays, over the old digest: the body no longer matches it.
    "body_altered_keeping_signature": lambda conn, o: conn.execute(
        "UPDATE ledger.invoices SET body = replace(body, '\"quantity\":\"2\"', '\"quantity\":\"1\"')"
        " WHERE outlet_id = %s AND series = 'INV' AND number = 3", (o,)),
    "signature_malleated": _malleate,
    "amount_altered": lambda conn, o: conn.execute(
        "UPDATE ledger.invoices SET total = total - 100 WHERE outlet_id = %s AND series = 'INV' AND number = 2", (o,)),
}

# What the independent verifier must name for each case (exactly these kinds, nothing more, nothing less).
EXPECTED = {
    "clean": set(),
    "middle_deleted": {"gap", "broken_link"},
    "tail_deleted": {"tail_missing"},
    "numbers_swapped": {"renumbered", "swapped", "broken_link"},
    "link_broken": {"broken_link"},
    "resigned_unpublished_key": {"unknown_key"},
    "resigned_claiming_published_key": {"bad_signature"},
    "body_altered_keeping_signature": {"body_altered", "statement_mismatch", "hash_mismatch", "bad_signature"},
    "amount_altered": {"amount_altered"},
    "signature_malleated": {"high_s"},
}


@pytest.mark.parametrize("case", CASES)
def test_independent_verifier_names_each_tampering(mesh, chains, case):
    outlet = chains[case]
    reports = chain_verifier.verify_outlet(mesh.database_url, outlet["id"],
                                           chain_verifier.published_keys(mesh.gateway_url))
    assert [r.series for r in reports] == ["INV"]
    assert reports[0].kinds == EXPECTED[case], reports[0].findings
    if case == "tail_deleted":  # both anchors see it: the ledger's chain head and the counter
        assert {f.detail.split()[0] for f in reports[0].findings} == {"anchored", "counter"}


@pytest.mark.parametrize("case", CASES)
def test_fiscal_verify_reports_each_tampering(mesh, chains, case):
    checks = verify_chains(mesh, chains[case]["id"])
    problems = [p for c in checks for p in c.problems]
    assert (not problems) == (case == "clean"), problems
    if case == "tail_deleted":
        assert any("tail deleted" in p for p in problems), problems


def test_exactly_once_and_retryable_checks_can_fail(mesh):
    """The chaos tests' own checks catch what they claim: a sale sent but never sealed, a 200 that is not
    its row, and a non-retryable answer."""
    merchant = provision(mesh, outlets=1, terminals=1)
    result = asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=3))
    assert_exactly_once(mesh, merchant, result)
    outlet_id = merchant["outlets"][0]["id"]
    with pytest.raises(AssertionError, match="missing"):
        assert_exactly_once(mesh, merchant, {**result, "sent": {**result["sent"], "never-sealed": outlet_id}})
    forged = [{**result["ok"][0], "fiscal": {**result["ok"][0]["fiscal"], "signature": "AAAA"}}, *result["ok"][1:]]
    with pytest.raises(AssertionError):
        assert_exactly_once(mesh, merchant, {**result, "ok": forged})
    with pytest.raises(AssertionError, match="answered 200 twice"):
        assert_exactly_once(mesh, merchant, {**result, "ok": result["ok"] + result["ok"][:1]})
    assert is_retryable(503, '{"code":14,"message":"signing unavailable; retry"}')
    assert is_retryable(409, '{"code":10,"message":"counter busy"}')
    assert is_retryable("ClientConnectorError", "")
    assert not is_retryable(500, '{"code":13,"message":"internal error"}')
    assert not is_retryable(409, '{"code":6,"message":"client_invoice_id already used"}')
    assert not is_retryable(400, '{"code":3,"message":"bad"}')
