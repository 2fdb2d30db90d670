"""Page tokens are opaque and tamper-proof: no sequence number inside, and a token answers only for
the merchant and the filter it was issued for, under the deployment's key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.ledger.model import InvoiceFilter
from services.ledger.page_tokens import PageTokens
from services.runtime.faults import InvalidArgument

SECRET = "page-token-secret-for-unit-tests-0123456789"
MERCHANT = "6f1c2b4e-0000-4000-8000-000000000001"
WHERE = InvoiceFilter(merchant_id=MERCHANT, kind="invoice", sealed_from=datetime(2026, 1, 1, tzinfo=UTC))


def test_round_trip_and_replicas_share_the_key():
    token = PageTokens(SECRET).issue(WHERE, 123456)
    assert PageTokens(SECRET).read(WHERE, token) == 123456  # another replica, same deployment key


def test_token_does_not_carry_the_sequence_in_clear():
    token = PageTokens(SECRET).issue(WHERE, 987654321)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"987654321" not in raw and (987654321).to_bytes(8, "big") not in raw
    assert "987654321" not in token
    assert PageTokens(SECRET).issue(WHERE, 987654321) != token  # a fresh nonce each time


@pytest.mark.parametrize("other", [
    InvoiceFilter(merchant_id="6f1c2b4e-0000-4000-8000-000000000002", kind="invoice",
                  sealed_from=datetime(2026, 1, 1, tzinfo=UTC)),
    InvoiceFilter(merchant_id=MERCHANT, kind="credit_note", sealed_from=datetime(2026, 1, 1, tzinfo=UTC)),
    InvoiceFilter(merchant_id=MERCHANT, kind="invoice", sealed_from=datetime(2026, 1, 2, tzinfo=UTC)),
    InvoiceFilter(merchant_id=MERCHANT, kind="invoice", sealed_from=datetime(2026, 1, 1, tzinfo=UTC),
                  outlet_id="6f1c2b4e-0000-4000-8000-0000000000aa"),
], ids=["other-merchant", "other-kind", "other-from", "other-outlet"])
def test_token_for_another_merchant_or_filter_is_refused(other):
    token = PageTokens(SECRET).issue(WHERE, 42)
    with pytest.raises(InvalidArgument) as refused:
        PageTokens(SECRET).read(other, token)
    assert refused.value.field == "page_token"


def test_every_one_character_change_is_refused():
    tokens = PageTokens(SECRET)
    token = tokens.issue(WHERE, 42)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for index, char in enumerate(token):
        for replacement in (alphabet[(alphabet.index(char) + 1) % 64], alphabet[(alphabet.index(char) + 33) % 64]):
            altered = token[:index] + replacement + token[index + 1:]
            with pytest.raises(InvalidArgument):
                tokens.read(WHERE, altered)


@pytest.mark.parametrize("token", ["garbage!", "czE=", "cz" + "A" * 60, "s123", "x" * 5000, "é" * 10,
                                   "czEyMw"])  # "czEyMw" is the old format, base64("s123")
def test_malformed_and_old_format_tokens_are_refused(token):
    with pytest.raises(InvalidArgument):
        PageTokens(SECRET).read(WHERE, token)


def test_another_deployment_key_is_refused():
    token = PageTokens(SECRET).issue(WHERE, 42)
    with pytest.raises(InvalidArgument):
        PageTokens(SECRET + "-other").read(WHERE, token)


def test_short_secret_is_refused():
    with pytest.raises(ValueError):
        PageTokens("short")
