"""Bounds on what a client may send: identifiers, ids, free text, times and counts (docs/api.md "Limits").

Every field of every public request is checked here or in money.py before it is used, so bad input is
a clear 400 and never reaches the database, the signer or a log line. Patterns are ASCII-only and
matched in full: Python's \\d takes "١٢" and `$` matches before a final newline ("T1\\n").
"""

from __future__ import annotations

import re
import unicodedata

from services.ledger.money import shown
from services.runtime.faults import InvalidArgument, NotFound

IDENTIFIER_MAX = 64
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,63}", re.ASCII)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
# RFC 3339 (date-time with a zone): checked before datetime.fromisoformat, which accepts much more.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
                        r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})", re.ASCII)
TIMESTAMP_MAX = 40
# Line and paragraph breaks and control characters have no place on a one-line receipt field.
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}

DESCRIPTION_MAX = 200
SKU_MAX = 64
REASON_MAX = 500
PAYMENT_REFERENCE_MAX = 100
MAX_PAYMENTS = 20
BUYER_MAX = {"name": 200, "tax_id": 64, "phone": 32, "email": 254}
SDK_VERSION_MAX = 64
MAX_DRAFT_COUNT = 1_000_000
MAX_DRAFT_AGE_SECONDS = 366 * 24 * 3600
# The receipt QR parameters (docs/receipts.md): generous over what the sealer writes, far under a flood.
VERIFY_PARAM_MAX = {"fn": 64, "fa": 64, "ts": TIMESTAMP_MAX, "tt": 32, "cur": 3, "d": 64, "ac": 32, "kid": 64,
                    "sg": 128}
CHOICE_MAX = 32  # kind, status, state, method: compared with a fixed set


def require_identifier(value: str, field_name: str) -> str:
    if not value:
        raise InvalidArgument(f"{field_name} is required", field=field_name)
    if not _IDENTIFIER.fullmatch(value):
        raise InvalidArgument(f"{field_name} must be 1-{IDENTIFIER_MAX} characters of letters, digits and "
                              ". _ : @ / -", field=field_name)
    return value


def require_uuid(value: str, field_name: str, what: str) -> str:
    """An id in its canonical form; anything else names nothing, so it answers like a missing one."""
    if not value:
        raise InvalidArgument(f"{field_name} is required", field=field_name)
    if not _UUID.fullmatch(value):
        raise NotFound(f"{what} {shown(value)} not found")
    return value.lower()


def check_text(value: str, field_name: str, max_length: int, *, required: bool = False) -> str:
    """Free text (any script, emoji): bounded, and without control characters or line breaks."""
    if required and not value.strip():
        raise InvalidArgument(f"{field_name} must be 1-{max_length} characters", field=field_name)
    if len(value) > max_length:
        raise InvalidArgument(f"{field_name} is longer than {max_length} characters", field=field_name)
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in value):
        raise InvalidArgument(f"{field_name} must not contain control characters or line breaks",
                              field=field_name)
    return value


def check_timestamp_text(value: str, field_name: str) -> str:
    """The shape of an RFC 3339 time with a zone, in ASCII; the caller parses it."""
    if len(value) > TIMESTAMP_MAX or not _TIMESTAMP.fullmatch(value):
        raise InvalidArgument(f"{field_name} must be an RFC 3339 time with a zone, got {shown(value)}",
                              field=field_name)
    return value


def check_choice(value: str, field_name: str, choices) -> str:
    if value not in choices:
        raise InvalidArgument(f"{field_name} must be one of {', '.join(sorted(choices))}", field=field_name)
    return value


def check_count(value: int, field_name: str, maximum: int) -> int:
    if value < 0 or value > maximum:
        raise InvalidArgument(f"{field_name} must be between 0 and {maximum}", field=field_name)
    return value
