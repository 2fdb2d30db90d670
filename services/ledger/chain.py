"""Re-check a series' hash chain and signatures: numbers 1..n with no gap, each body digest, each
entry's link to the previous one, each signature against the published keys, each auth code."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from services.ledger import receipt
from services.ledger.model import InvoiceRecord


@dataclass
class ChainCheck:
    series: str
    checked: int = 0
    last_number: int = 0
    last_hash: bytes = receipt.GENESIS_HASH
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_entry(check: ChainCheck, entry: InvoiceRecord, keys: dict[str, dict]) -> None:
    """Check one entry, in number order, against the state of the chain so far."""
    where = entry.fiscal_number
    expected = check.last_number + 1
    if entry.number != expected:
        check.problems.append(f"{where}: expected number {expected}, found {entry.number} (gap or repeat)")
    if entry.prev_hash != check.last_hash:
        check.problems.append(f"{where}: previous-hash link broken")
    digest = receipt.body_digest(entry.body)
    if digest != entry.body_digest:
        check.problems.append(f"{where}: body does not match its digest (altered)")
    body = entry.body_fields()
    statement = receipt.Statement(entry.fiscal_number, body["fiscal_authority_id"], body["sealed_at"],
                                  body["total"], body["currency"], receipt.b64url(digest))
    if statement.text() != entry.statement:
        check.problems.append(f"{where}: stored statement differs from the body")
    if body.get("prev_hash") != receipt.b64url(entry.prev_hash) or body.get("number") != entry.number:
        check.problems.append(f"{where}: body's number or prev_hash differs from the row")
    if Decimal(body["total"]) != entry.total or body["currency"] != entry.currency:
        check.problems.append(f"{where}: row's amount differs from the signed body (altered)")
    if statement.entry_hash() != entry.hash:
        check.problems.append(f"{where}: entry hash differs")
    jwk = keys.get(entry.key_id)
    if jwk is None:
        check.problems.append(f"{where}: signed with unknown key {entry.key_id}")
    elif not receipt.verify_signature(receipt.public_key_from_jwk(jwk), statement.digest(), entry.signature):
        check.problems.append(f"{where}: signature does not verify")
    elif problem := receipt.key_problem(jwk, body["sealed_at"]):  # the same lifecycle rule as /v1/verify
        check.problems.append(f"{where}: {problem}")
    if receipt.auth_code(entry.signature) != entry.auth_code:
        check.problems.append(f"{where}: auth code does not match the signature")
    check.checked += 1
    check.last_number = entry.number
    check.last_hash = entry.hash


def check_series(series: str, entries: Iterable[InvoiceRecord], keys: dict[str, dict]) -> ChainCheck:
    check = ChainCheck(series)
    for entry in entries:
        check_entry(check, entry, keys)
    return check
