"""Webhook signatures (services/webhooks/signatures.py), checked by the `standardwebhooks` package a
receiver would use, not only by our own verify."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.webhooks.signatures import SignatureError, new_secret, secret_key, sign, verify

EVENT_ID = "0193a0b4-7c1e-7a3b-9f00-000000000001"
BODY = '{"data":{"total":"12.50","name":"Café"},"id":"0193a0b4","type":"invoice.sealed"}'.encode()


def headers(secrets: list[str], timestamp: int, body: bytes = BODY, event_id: str = EVENT_ID) -> dict[str, str]:
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, event_id, timestamp, body), "content-type": "application/json"}


def test_a_new_secret_is_whsec_and_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert secret_key(first) == base64.b64decode(first.removeprefix("whsec_"))


@pytest.mark.parametrize("bad", ["", "whsec_", "sk_" + "A" * 44, "whsec_not base64!",
                                 "whsec_" + base64.b64encode(b"x" * 16).decode()])
def test_a_malformed_or_short_secret_is_refused(bad):
    with pytest.raises(ValueError):
        secret_key(bad)


def test_standardwebhooks_verifies_one_secret():
    secret = new_secret()
    payload = Webhook(secret).verify(BODY, headers([secret], int(time.time())))
    assert payload["data"]["name"] == "Café"
    verify(secret, headers([secret], int(time.time())), BODY)


def test_both_secrets_of_a_rotation_overlap_verify():
    old, new = new_secret(), new_secret()
    sent = headers([new, old], int(time.time()))
    assert len(sent["webhook-signature"].split(" ")) == 2
    assert all(part.startswith("v1,") for part in sent["webhook-signature"].split(" "))
    for secret in (old, new):
        Webhook(secret).verify(BODY, sent)
        verify(secret, sent, BODY)
    stranger = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(BODY, sent)
    with pytest.raises(SignatureError):
        verify(stranger, sent, BODY)


def test_a_tampered_body_fails():
    secret = new_secret()
    sent = headers([secret], int(time.time()))
    tampered = BODY.replace(b"12.50", b"12.51")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, sent)
    with pytest.raises(SignatureError):
        verify(secret, sent, tampered)


def test_a_changed_id_or_timestamp_fails():
    secret = new_secret()
    now = int(time.time())
    sent = headers([secret], now)
    for name, value in (("webhook-id", EVENT_ID[:-1] + "2"), ("webhook-timestamp", str(now - 1))):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(BODY, {**sent, name: value})
        with pytest.raises(SignatureError):
            verify(secret, {**sent, name: value}, BODY)


def test_a_stale_timestamp_fails():
    secret = new_secret()
    stale = headers([secret], int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, stale)
    with pytest.raises(SignatureError):
        verify(secret, stale, BODY)
    verify(secret, stale, BODY, now=int(stale["webhook-timestamp"]) + 10)  # within tolerance of that clock


def test_missing_headers_fail():
    secret = new_secret()
    sent = headers([secret], int(time.time()))
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        with pytest.raises(SignatureError):
            verify(secret, {k: v for k, v in sent.items() if k != name}, BODY)


def test_sign_needs_a_secret():
    with pytest.raises(ValueError):
        sign([], EVENT_ID, 1, BODY)
