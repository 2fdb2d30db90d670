"""What the signing service agrees to sign: a receipt statement it can parse and check, never an opaque
digest (whoever reached the port could otherwise mint receipts for anything).

The statement is the ledger's (services/ledger/receipt.py Statement, docs/receipts.md): seven lines
"FC1", fiscal number, authority id, sealed_at, total, currency, body digest. The signature is ES256
over SHA-256 of its UTF-8 bytes, exactly as before, so receipts sealed earlier keep verifying.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.runtime.faults import InvalidArgument

STATEMENT_VERSION = "FC1"
MAX_STATEMENT_LENGTH = 512
MAX_BATCH = 256
_FISCAL_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}-[A-Za-z0-9_]{1,16}-[0-9]{10}", re.ASCII)
_SEALED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z", re.ASCII)
_TOTAL = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,4})?", re.ASCII)
_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)
_BODY_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


@dataclass(frozen=True)
class StatementRules:
    authority_id: str  # the only authority this service signs for (FISCAL_AUTHORITY_ID)
    max_skew: timedelta  # how far sealed_at may be from this service's clock


def _refuse(why: str) -> InvalidArgument:
    return InvalidArgument(f"not a receipt statement: {why}", field="statement", reason="BAD_STATEMENT")


def checked_statement_digest(statement: str, rules: StatementRules, now: datetime | None = None) -> bytes:
    """SHA-256 of `statement` once every line checks out; InvalidArgument naming the first that does not."""
    if not statement or len(statement) > MAX_STATEMENT_LENGTH:
        raise _refuse(f"expected 1 to {MAX_STATEMENT_LENGTH} characters, got {len(statement)}")
    lines = statement.split("\n")
    if len(lines) != 7:
        raise _refuse(f"expected 7 lines, got {len(lines)}")
    version, fiscal_number, authority_id, sealed_at, total, currency, body_digest = lines
    if version != STATEMENT_VERSION:
        raise _refuse(f"version must be {STATEMENT_VERSION}")
    if not _FISCAL_NUMBER.fullmatch(fiscal_number) or fiscal_number.endswith("-0000000000"):
        raise _refuse("fiscal number must look like CODE-SERIES-0000000001")
    if authority_id != rules.authority_id:
        raise _refuse("fiscal authority id is not the one this service signs for")
    if not _SEALED_AT.fullmatch(sealed_at):
        raise _refuse("sealed_at must be RFC 3339 UTC with milliseconds (2026-01-31T12:00:00.000Z)")
    try:
        moment = datetime.fromisoformat(sealed_at.replace("Z", "+00:00"))
    except ValueError:
        raise _refuse("sealed_at is not a real date and time") from None
    now = now or datetime.now(UTC)
    if abs(moment - now) > rules.max_skew:
        raise _refuse(f"sealed_at is more than {rules.max_skew.total_seconds():g} s from the signing clock")
    if not _TOTAL.fullmatch(total):
        raise _refuse("total must be a decimal number")
    if not _CURRENCY.fullmatch(currency):
        raise _refuse("currency must be an ISO 4217 code")
    if not _BODY_DIGEST.fullmatch(body_digest):
        raise _refuse("body digest must be 43 characters of base64url (a SHA-256)")
    return hashlib.sha256(statement.encode("utf-8")).digest()


def checked_statement_digests(statements: list[str], rules: StatementRules,
                              now: datetime | None = None) -> list[bytes]:
    """Every statement's digest, or InvalidArgument for the first that does not check (nothing signed)."""
    if not 1 <= len(statements) <= MAX_BATCH:
        raise InvalidArgument(f"a batch holds 1 to {MAX_BATCH} statements, got {len(statements)}",
                              field="statements", reason="BAD_BATCH_SIZE")
    digests = []
    for index, statement in enumerate(statements):
        try:
            digests.append(checked_statement_digest(statement, rules, now))
        except InvalidArgument as refused:
            raise InvalidArgument(f"statements[{index}]: {refused.message}", field=f"statements[{index}]",
                                  reason="BAD_STATEMENT") from None
    return digests


# --- export statements -------------------------------------------------------------------------------
# An audit package (`fiscal export`, docs/export.md) is vouched for by one signature over a statement of
# its own kind, seven lines joined by "\n":
#   FCX1 / authority id / outlet code / period from (YYYY-MM-DD) / period to / created_at / base64url(SHA-256(manifest))
# Its first line differs from a receipt's, and verifiers rebuild receipt statements starting with "FC1",
# so a signed export statement can never pass for a receipt (nor a receipt for an export). Only the
# operator identity asks for it (services/signing/servicer.py), and only receipts come from the ledger.
EXPORT_STATEMENT_VERSION = "FCX1"
_OUTLET_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _refuse_export(why: str) -> InvalidArgument:
    return InvalidArgument(f"not an export statement: {why}", field="statement", reason="BAD_STATEMENT")


def is_export_statement(statement: str) -> bool:
    return statement.startswith(EXPORT_STATEMENT_VERSION + "\n")


def checked_export_statement_digest(statement: str, rules: StatementRules, now: datetime | None = None) -> bytes:
    """SHA-256 of an export statement once every line checks out; InvalidArgument naming the first that does not."""
    if not statement or len(statement) > MAX_STATEMENT_LENGTH:
        raise _refuse_export(f"expected 1 to {MAX_STATEMENT_LENGTH} characters, got {len(statement)}")
    lines = statement.split("\n")
    if len(lines) != 7:
        raise _refuse_export(f"expected 7 lines, got {len(lines)}")
    version, authority_id, outlet_code, period_from, period_to, created_at, manifest_digest = lines
    if version != EXPORT_STATEMENT_VERSION:
        raise _refuse_export(f"version must be {EXPORT_STATEMENT_VERSION}")
    if authority_id != rules.authority_id:
        raise _refuse_export("fiscal authority id is not the one this service signs for")
    if not _OUTLET_CODE.fullmatch(outlet_code):
        raise _refuse_export("outlet code must be 1-64 letters, digits, '.', '_' or '-'")
    days = []
    for text in (period_from, period_to):
        try:
            if not _DATE.fullmatch(text):
                raise ValueError
            days.append(datetime.strptime(text, "%Y-%m-%d").date())
        except ValueError:
            raise _refuse_export("period bounds must be dates (YYYY-MM-DD)") from None
    if days[0] > days[1]:
        raise _refuse_export("period starts after it ends")
    if not _SEALED_AT.fullmatch(created_at):
        raise _refuse_export("created_at must be RFC 3339 UTC with milliseconds (2026-01-31T12:00:00.000Z)")
    try:
        moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        raise _refuse_export("created_at is not a real date and time") from None
    now = now or datetime.now(UTC)
    if abs(moment - now) > rules.max_skew:
        raise _refuse_export(f"created_at is more than {rules.max_skew.total_seconds():g} s from the signing clock")
    if not _BODY_DIGEST.fullmatch(manifest_digest):
        raise _refuse_export("manifest digest must be 43 characters of base64url (a SHA-256)")
    return hashlib.sha256(statement.encode("utf-8")).digest()
