"""The event types endpoints subscribe to, and the envelope: the exact bytes every attempt POSTs.

The envelope is built once per event and stored, so every attempt (retries and resends included) sends
byte-identical bodies under the same `webhook-id`. Keys are sorted and separators compact, so the bytes
depend only on the event.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

EVENT_TYPES: dict[str, str] = {
    "invoice.sealed": "An invoice or credit note was sealed: its fiscal number, terminal, cashier and total.",
    "invoice.sync.success": "The tax authority (DGI) accepted a sealed invoice or credit note.",
    "invoice.sync.failed": "The tax authority (DGI) refused a sealed invoice or credit note, or retries ran out.",
    "report.generated": "An X report (shift), Z report (day) or supplementary Z report was generated.",
    "outlet.offline_alert": "A terminal is silent, or its oldest offline draft is older than the grace period.",
    "payment.confirmed": "A mobile-money payment was confirmed.",
    "payment.failed": "A mobile-money payment failed.",
}
TEST_EVENT = "webhook.test"  # sent only by SendTestEvent, to the endpoint whatever its event types
TEST_EVENT_DESCRIPTION = "A test event sent on request (SendTestEvent); it cannot be subscribed to."
MAX_ENVELOPE_BYTES = 262_144  # 256 KB
TRUNCATED_DATA: dict[str, Any] = {"truncated": True, "reason": "payload over 256 KB"}


def is_known(event_type: str) -> bool:
    """A type an event can have (the subscribable ones and the test event)."""
    return event_type in EVENT_TYPES or event_type == TEST_EVENT


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-25T10:00:00.123Z. A naive datetime is taken as UTC."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def envelope_bytes(event_id: str, event_type: str, occurred_at: datetime, merchant_id: str, outlet_id: str | None,
                   data: dict[str, Any]) -> bytes:
    """The body of every attempt for this event (UTF-8 JSON). ValueError for data JSON cannot carry
    (NaN, infinity) or that is not JSON-serialisable."""
    envelope = {"id": event_id, "type": event_type, "timestamp": format_timestamp(occurred_at),
                "merchant_id": merchant_id, "outlet_id": outlet_id or None, "data": data}
    try:
        text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except TypeError as exc:
        raise ValueError(f"event data is not JSON: {exc}") from None
    return text.encode("utf-8")


def bounded_envelope_bytes(event_id: str, event_type: str, occurred_at: datetime, merchant_id: str,
                           outlet_id: str | None, data: dict[str, Any]) -> tuple[bytes, bool]:
    """The envelope, or, when it is over MAX_ENVELOPE_BYTES, the same envelope with its data replaced by
    TRUNCATED_DATA (an event is never dropped). The flag says whether it was truncated."""
    body = envelope_bytes(event_id, event_type, occurred_at, merchant_id, outlet_id, data)
    if len(body) <= MAX_ENVELOPE_BYTES:
        return body, False
    return envelope_bytes(event_id, event_type, occurred_at, merchant_id, outlet_id, dict(TRUNCATED_DATA)), True
