"""An independent chain verifier, written from docs/receipts.md alone.

It imports no service code (only the standard library, `cryptography` and `psycopg`): it reads raw rows
of ledger.invoices and ledger.chain_heads (and, when asked, counter.counters), fetches the published
JWKs with GET /v1/keys, and recomputes everything itself, so a bug shared by the sealer and `fiscal
verify` (both use services/ledger/receipt.py) cannot cancel out here. Each problem is a Finding with a
`kind` a test can assert on:

  gap, repeat          numbers per (outlet, series) are not exactly 1..n
  renumbered, swapped  a row's number differs from the number its signed body carries
  body_altered         SHA-256(body) differs from the stored body digest
  statement_mismatch   the stored statement is not the seven lines rebuilt from the body
  amount_altered       the row's total/currency differs from the signed body
  hash_mismatch        the entry hash is not SHA-256(statement)
  broken_link          prev_hash is not the previous entry's hash (or 32 zero bytes for number 1)
  unknown_key          the key id is not published
  bad_signature        ES256 (raw r||s) does not verify over SHA-256(statement) with the published key
  high_s               the signature's s is above n/2 (only the low-S form is a valid receipt)
  key_compromised      the published key is marked compromised
  after_retirement     sealed after the published key's retired_at
  auth_code_mismatch   the auth code is not base32(SHA-256(signature))[:12] in groups of four
  tail_missing         the anchored head (or the counter) is past the chain's last entry
  head_mismatch        the chain's last entry is not the anchored head
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from psycopg.rows import dict_row

GENESIS = bytes(32)
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str
    detail: str = ""


@dataclass
class SeriesReport:
    outlet_id: str
    series: str
    entries: int = 0
    last_number: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def published_keys(gateway_url: str) -> dict[str, dict]:
    with urllib.request.urlopen(f"{gateway_url.rstrip('/')}/v1/keys", timeout=10) as answer:
        return {k["kid"]: k for k in json.loads(answer.read())["keys"]}


def _public_key(jwk: dict) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicNumbers(int.from_bytes(b64url_decode(jwk["x"]), "big"),
                                         int.from_bytes(b64url_decode(jwk["y"]), "big"),
                                         ec.SECP256R1()).public_key()


def _signature_verifies(jwk: dict, digest: bytes, raw: bytes) -> bool:
    if len(raw) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        _public_key(jwk).verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


def _auth_code(signature: bytes) -> str:
    code = base64.b32encode(hashlib.sha256(signature).digest()).decode()[:12]
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def statement_text(fiscal_number: str, body: dict, body_digest: bytes) -> str:
    return "\n".join(["FC1", fiscal_number, body["fiscal_authority_id"], body["sealed_at"], body["total"],
                      body["currency"], b64url(body_digest)])


def check_series(outlet_id: str, outlet_code: str, series: str, rows: list[dict], keys: dict[str, dict],
                 head: tuple[int, bytes] | None = None, counter_last: int | None = None) -> SeriesReport:
    """Check one (outlet, series) chain from its raw rows (any order) against the published keys and
    the anchors: the ledger's chain head row and, if given, the counter's last committed number."""
    report = SeriesReport(outlet_id, series, entries=len(rows))
    add = report.findings.append
    rows = sorted(rows, key=lambda r: r["number"])
    body_numbers: dict[int, int] = {}  # row number -> number its body carries
    previous_number, previous_hash = 0, GENESIS
    for row in rows:
        number, where = row["number"], row["fiscal_number"]
        if number == previous_number:
            add(Finding("repeat", where, f"number {number} appears twice"))
        elif number != previous_number + 1:
            add(Finding("gap", where, f"numbers {previous_number + 1}..{number - 1} are missing"))
        expected_fn = f"{outlet_code}-{series}-{number:010d}"
        try:
            body = json.loads(row["body"])
        except ValueError:
            add(Finding("body_altered", where, "body is not JSON"))
            previous_number, previous_hash = number, bytes(row["hash"])
            continue
        body_numbers[number] = body.get("number")
        if body.get("number") != number or body.get("fiscal_number") != expected_fn or where != expected_fn \
                or body.get("series") != series or body.get("outlet_id") != outlet_id:
            add(Finding("renumbered", where, f"row number {number}, signed body says {body.get('fiscal_number')}"))
        digest = hashlib.sha256(row["body"].encode("utf-8")).digest()
        if digest != bytes(row["body_digest"]):
            add(Finding("body_altered", where, "SHA-256(body) differs from the stored digest"))
        statement = statement_text(str(body.get("fiscal_number")), body, digest)  # the number that was signed
        if statement != row["statement"]:
            add(Finding("statement_mismatch", where, "stored statement is not the one rebuilt from the body"))
        if Decimal(body["total"]) != Decimal(row["total"]) or body["currency"] != row["currency"].strip():
            add(Finding("amount_altered", where, f"row total {row['total']} {row['currency']}, "
                                                 f"signed {body['total']} {body['currency']}"))
        statement_digest = hashlib.sha256(statement.encode("utf-8")).digest()
        if statement_digest != bytes(row["hash"]):
            add(Finding("hash_mismatch", where, "entry hash is not SHA-256(statement)"))
        if bytes(row["prev_hash"]) != previous_hash or body.get("prev_hash") != b64url(previous_hash):
            add(Finding("broken_link", where, "prev_hash is not the previous entry's hash"))
        jwk = keys.get(row["key_id"])
        signature = bytes(row["signature"])
        if jwk is None:
            add(Finding("unknown_key", where, f"key {row['key_id']} is not published"))
        elif not _signature_verifies(jwk, statement_digest, signature):
            add(Finding("bad_signature", where, "signature does not verify with the published key"))
        else:
            if int.from_bytes(signature[32:], "big") > P256_ORDER // 2:
                add(Finding("high_s", where, "signature is not in low-S form"))
            if jwk.get("status") == "compromised":
                add(Finding("key_compromised", where, f"key {row['key_id']} is compromised"))
            elif jwk.get("status") == "retired" and jwk.get("retired_at") \
                    and _moment(body["sealed_at"]) > _moment(jwk["retired_at"]):
                add(Finding("after_retirement", where, f"sealed {body['sealed_at']}, key retired {jwk['retired_at']}"))
        if _auth_code(signature) != row["auth_code"]:
            add(Finding("auth_code_mismatch", where, "auth code is not derived from the signature"))
        # Link to what is stored: an altered entry is named once (hash_mismatch), not again in the next link.
        previous_number, previous_hash = number, bytes(row["hash"])
    # Two rows whose numbers were exchanged: each carries the other's signed number.
    for number, signed in body_numbers.items():
        if signed != number and body_numbers.get(signed) == number and number < signed:
            add(Finding("swapped", f"{outlet_code}-{series}-{number:010d}", f"numbers {number} and {signed} swapped"))
    report.last_number = previous_number
    if head is not None:
        head_number, head_hash = head
        if head_number > previous_number:
            add(Finding("tail_missing", series, f"anchored head is {head_number}, chain ends at {previous_number}"))
        elif head_number < previous_number or head_hash != previous_hash:
            add(Finding("head_mismatch", series, f"last entry {previous_number} is not the anchored head {head_number}"))
    elif rows:
        add(Finding("head_mismatch", series, "no anchored head for a non-empty chain"))
    if counter_last is not None and counter_last > previous_number:
        add(Finding("tail_missing", series, f"counter committed {counter_last}, chain ends at {previous_number}"))
    return report


_INVOICE_COLUMNS = ("series, number, fiscal_number, body, statement, body_digest, prev_hash, hash, signature, "
                    "key_id, auth_code, total, currency")


def verify_outlet(database_url: str, outlet_id: str, keys: dict[str, dict], with_counter: bool = True
                  ) -> list[SeriesReport]:
    """Every series of one outlet, from raw rows. `database_url` is a libpq URL (postgresql://...)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            code = cur.execute("SELECT code FROM ledger.outlets WHERE id = %s", (outlet_id,)).fetchone()["code"]
            rows = cur.execute(f"SELECT {_INVOICE_COLUMNS} FROM ledger.invoices WHERE outlet_id = %s",
                               (outlet_id,)).fetchall()
            heads = {r["series"]: (r["number"], bytes(r["hash"])) for r in cur.execute(
                "SELECT series, number, hash FROM ledger.chain_heads WHERE outlet_id = %s", (outlet_id,))}
            counters = {}
            if with_counter:
                counters = {r["series"]: r["last_committed"] for r in cur.execute(
                    "SELECT series, last_committed FROM counter.counters WHERE outlet_id = %s", (outlet_id,))}
    by_series: dict[str, list[dict]] = {}
    for row in rows:
        by_series.setdefault(row["series"], []).append(row)
    return [check_series(outlet_id, code, series, by_series.get(series, []), keys, heads.get(series),
                         counters.get(series))
            for series in sorted(by_series.keys() | heads.keys() | counters.keys())]


def assert_outlets_verify(database_url: str, gateway_url: str, outlet_ids, expect_series: int = 1) -> None:
    """For the big tests: every outlet's chains verify independently, with at least `expect_series`."""
    keys = published_keys(gateway_url)
    for outlet_id in outlet_ids:
        reports = verify_outlet(database_url, outlet_id, keys)
        assert len(reports) >= expect_series, f"{outlet_id}: no chain found"
        assert all(r.ok for r in reports), [f.__dict__ for r in reports for f in r.findings[:5]]
