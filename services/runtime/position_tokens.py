"""Page tokens that carry a listing's last position (a row's `seq`): webhooks and payments. Opaque to
clients (base64url), not secret: every listing filters by the caller's merchant, so a forged token only
moves within the caller's own rows. (The ledger's invoice tokens are encrypted: they also pin the
filter; services/ledger/page_tokens.py.)"""

from __future__ import annotations

import base64
import binascii

from services.runtime.faults import InvalidArgument

MAX_PAGE_TOKEN_LENGTH = 32


def page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode().rstrip("=")


def parse_page_token(token: str) -> int | None:
    """None for an empty token (the first page); INVALID_ARGUMENT for one this API did not hand out."""
    if not token:
        return None
    try:
        if len(token) > MAX_PAGE_TOKEN_LENGTH or not token.isascii():
            raise ValueError
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        if not text.isdigit():
            raise ValueError
        seq = int(text)
        if not 0 < seq < 2**63:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this API returned", field="page_token") from None
    return seq
