"""The webhooks service's pure rules: the event catalogue and envelope bytes, endpoint input
validation, and endpoint secrets at rest (services/webhooks/{event_types,endpoint_rules,secret_box}.py)."""

from __future__ import annotations

import base64
import json
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.runtime.faults import InvalidArgument
from services.runtime.secret_box import SecretBox, SecretBoxError
from services.webhooks.endpoint_rules import (
    parse_id,
    validate_description,
    validate_event_type_filter,
    validate_event_types,
    validate_outlet_ids,
    validate_overlap_seconds,
    validate_page_size,
    validate_status_filter,
)
from services.webhooks.event_types import (
    EVENT_TYPES,
    MAX_ENVELOPE_BYTES,
    TEST_EVENT,
    bounded_envelope_bytes,
    envelope_bytes,
)

EVENT_ID = "0193a0b4-7c1e-7a3b-9f00-000000000001"
MERCHANT = "11111111-1111-4111-8111-111111111111"
OUTLET = "22222222-2222-4222-8222-222222222222"
OTHER_OUTLET = "33333333-3333-4333-8333-333333333333"
AT = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)


# --- event types and the envelope -------------------------------------------------------------------


def test_the_catalogue_holds_the_issue_types_and_not_the_test_event():
    assert set(EVENT_TYPES) == {"invoice.sealed", "invoice.sync.success", "invoice.sync.failed", "report.generated",
                                "outlet.offline_alert", "payment.confirmed", "payment.failed"}
    assert TEST_EVENT == "webhook.test" and TEST_EVENT not in EVENT_TYPES
    assert all(description for description in EVENT_TYPES.values())


def test_the_envelope_is_compact_sorted_and_deterministic():
    data = {"z": 1, "a": {"y": "Café ☕", "b": [3, 1]}, "m": None}
    body = envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, data)
    assert body == envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, dict(reversed(data.items())))
    text = body.decode("utf-8")
    assert text == ('{"data":{"a":{"b":[3,1],"y":"Café ☕"},"m":null,"z":1},"id":"' + EVENT_ID + '",'
                    '"merchant_id":"' + MERCHANT + '","outlet_id":"' + OUTLET + '",'
                    '"timestamp":"2026-11-25T10:00:00.123Z","type":"invoice.sealed"}')
    assert json.loads(body)["data"]["a"]["y"] == "Café ☕"  # UTF-8, not \u escapes


def test_the_envelope_timestamp_is_utc_with_milliseconds():
    east = AT.astimezone(timezone(timedelta(hours=3)))
    assert json.loads(envelope_bytes(EVENT_ID, "report.generated", east, MERCHANT, OUTLET, {}))["timestamp"] == \
        "2026-11-25T10:00:00.123Z"
    naive = datetime(2026, 11, 25, 10, 0, 0)  # protobuf's ToDatetime gives naive UTC
    assert json.loads(envelope_bytes(EVENT_ID, "report.generated", naive, MERCHANT, OUTLET, {}))["timestamp"] == \
        "2026-11-25T10:00:00.000Z"


def test_an_event_about_no_outlet_has_a_null_outlet():
    for none in (None, ""):
        assert json.loads(envelope_bytes(EVENT_ID, "payment.failed", AT, MERCHANT, none, {}))["outlet_id"] is None


def test_data_json_cannot_carry_is_refused():
    with pytest.raises(ValueError):
        envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, {"total": float("nan")})
    with pytest.raises(ValueError):
        envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, {"when": AT})


def test_an_oversized_envelope_keeps_its_event_with_truncated_data():
    small, truncated = bounded_envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, {"n": 1})
    assert not truncated and small == envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET, {"n": 1})
    body, truncated = bounded_envelope_bytes(EVENT_ID, "invoice.sealed", AT, MERCHANT, OUTLET,
                                             {"lines": "x" * MAX_ENVELOPE_BYTES})
    envelope = json.loads(body)
    assert truncated and len(body) <= MAX_ENVELOPE_BYTES
    assert envelope["id"] == EVENT_ID and envelope["data"] == {"truncated": True, "reason": "payload over 256 KB"}


# --- endpoint rules ----------------------------------------------------------------------------------


@contextmanager
def refused(field: str):
    """pytest.raises for an InvalidArgument naming `field`."""
    with pytest.raises(InvalidArgument) as info:
        yield info
    assert info.value.field == field, info.value.message


def test_event_types_are_known_and_deduplicated():
    assert validate_event_types(["invoice.sealed", "payment.failed", "invoice.sealed"]) == [
        "invoice.sealed", "payment.failed"]


@pytest.mark.parametrize("event_types", [[], ["invoice.voided"], ["INVOICE.SEALED"], [TEST_EVENT],
                                         ["invoice.sealed", TEST_EVENT], [7], ["invoice.sealed"] * 33])
def test_bad_event_types_are_refused(event_types):
    with refused("event_types"):
        validate_event_types(event_types)


def test_the_test_event_is_refused_as_not_subscribable():
    with pytest.raises(InvalidArgument, match="cannot be subscribed"):
        validate_event_types([TEST_EVENT])


def test_description_at_most_500_characters():
    assert validate_description("é" * 500) == "é" * 500
    with refused("description"):
        validate_description("x" * 501)
    with refused("description"):
        validate_description("nul\x00")


def test_outlet_ids_must_be_the_merchants():
    mine = [OUTLET, OTHER_OUTLET]
    assert validate_outlet_ids([], mine) == []
    assert validate_outlet_ids([OUTLET.upper(), OUTLET, OTHER_OUTLET], mine) == [OUTLET, OTHER_OUTLET]
    stranger = str(uuid.uuid4())
    answers = []
    for bad in ([stranger], ["not-a-uuid"], [OUTLET, ""], [42]):
        with refused("outlet_ids") as info:
            validate_outlet_ids(bad, mine)
        answers.append(info.value.message.split(" ")[:2])
    assert all(answer == ["unknown", "outlet"] for answer in answers)  # malformed or another merchant's: alike


def test_at_most_1000_outlet_ids():
    many = [str(uuid.uuid4()) for _ in range(1001)]
    assert len(validate_outlet_ids(many[:1000], many)) == 1000
    with refused("outlet_ids"):
        validate_outlet_ids(many, many)


def test_overlap_seconds():
    assert validate_overlap_seconds(3600) == 3600
    assert validate_overlap_seconds(0) == 0
    assert validate_overlap_seconds(0, default=86400) == 86400
    assert validate_overlap_seconds(604800) == 604800
    for bad in (-1, 604801):
        with refused("overlap_seconds"):
            validate_overlap_seconds(bad)


def test_page_size_status_and_event_type_filters():
    assert validate_page_size(0) == 50 and validate_page_size(100) == 100
    for bad in (-1, 101):
        with refused("page_size"):
            validate_page_size(bad)
    assert validate_status_filter("") is None and validate_status_filter("failed") == "failed"
    with refused("status"):
        validate_status_filter("FAILED")
    assert validate_event_type_filter("") is None and validate_event_type_filter(TEST_EVENT) == TEST_EVENT
    with refused("event_type"):
        validate_event_type_filter("invoice.voided")


def test_ids_are_uuids():
    assert parse_id(OUTLET.upper()) == OUTLET
    for bad in ("", "42", "x" * 100, OUTLET + "0"):
        with refused("endpoint_id"):
            parse_id(bad, "endpoint_id")


# --- secrets at rest ---------------------------------------------------------------------------------


KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()
ENDPOINT = b"44444444-4444-4444-8444-444444444444"


def test_a_secret_round_trips_and_is_not_stored_in_clear():
    box = SecretBox(KEY)
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    blob = box.seal(secret, ENDPOINT)
    assert secret.encode() not in blob and box.seal(secret, ENDPOINT) != blob  # a fresh nonce each time
    assert box.open(blob, ENDPOINT) == secret
    assert box.open(memoryview(blob), ENDPOINT) == secret
    assert KEY not in repr(box)


def test_a_blob_opens_only_for_its_endpoint_and_key():
    box = SecretBox(KEY)
    blob = box.seal("whsec_abc", ENDPOINT)
    with pytest.raises(SecretBoxError):
        box.open(blob, b"55555555-5555-4555-8555-555555555555")
    with pytest.raises(SecretBoxError):
        SecretBox("another key material of at least 32 characters").open(blob, ENDPOINT)
    damaged = bytearray(blob)
    damaged[-1] ^= 1
    with pytest.raises(SecretBoxError):
        box.open(bytes(damaged), ENDPOINT)
    with pytest.raises(SecretBoxError):
        box.open(blob[:10], ENDPOINT)


def test_key_from_env(monkeypatch):
    monkeypatch.setenv("FISCAL_WEBHOOK_SECRET_KEY", KEY)
    blob = SecretBox(KEY).seal("whsec_abc", ENDPOINT)
    assert SecretBox.from_env("FISCAL_WEBHOOK_SECRET_KEY", "webhook endpoint secrets").open(blob, ENDPOINT) == "whsec_abc"
    passphrase = "a long passphrase that is hashed into a key"
    monkeypatch.setenv("FISCAL_WEBHOOK_SECRET_KEY", passphrase)
    assert SecretBox.from_env("FISCAL_WEBHOOK_SECRET_KEY", "webhook endpoint secrets").open(SecretBox(passphrase).seal("whsec_x", ENDPOINT), ENDPOINT) == "whsec_x"
    for short in ("", "too short"):
        monkeypatch.setenv("FISCAL_WEBHOOK_SECRET_KEY", short)
        with pytest.raises(SystemExit, match="FISCAL_WEBHOOK_SECRET_KEY"):
            SecretBox.from_env("FISCAL_WEBHOOK_SECRET_KEY", "webhook endpoint secrets")
    monkeypatch.delenv("FISCAL_WEBHOOK_SECRET_KEY")
    with pytest.raises(SystemExit, match="FISCAL_WEBHOOK_SECRET_KEY"):
        SecretBox.from_env("FISCAL_WEBHOOK_SECRET_KEY", "webhook endpoint secrets")
