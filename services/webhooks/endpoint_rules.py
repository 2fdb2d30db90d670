"""Validation of endpoint and delivery-listing input. Each rule raises InvalidArgument naming the field,
so bad input is a 4xx that changes nothing. URLs are checked by address_guard."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence

from services.runtime.faults import InvalidArgument
from services.webhooks.event_types import EVENT_TYPES, TEST_EVENT, is_known

MAX_EVENT_TYPES = 32
MAX_DESCRIPTION_LENGTH = 500
MAX_OUTLET_IDS = 1000
MAX_OVERLAP_SECONDS = 604_800  # a week
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
_ECHO_LIMIT = 80  # how much of a bad value a message repeats


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO_LIMIT else text[:_ECHO_LIMIT] + "..."


def validate_event_types(event_types: Sequence[object]) -> list[str]:
    """1..32 subscribable types, duplicates dropped (first occurrence kept)."""
    if not event_types:
        raise InvalidArgument("event_types needs at least one event type", field="event_types")
    if len(event_types) > MAX_EVENT_TYPES:
        raise InvalidArgument(f"event_types has more than {MAX_EVENT_TYPES} entries", field="event_types")
    chosen: list[str] = []
    for event_type in event_types:
        if not isinstance(event_type, str):
            raise InvalidArgument(f"event_types holds strings, got {_echo(event_type)}", field="event_types")
        if event_type == TEST_EVENT:
            raise InvalidArgument(f"{TEST_EVENT} cannot be subscribed to: it is sent by the test action only",
                                  field="event_types")
        if event_type not in EVENT_TYPES:
            raise InvalidArgument(f"unknown event type {_echo(event_type)} (see ListWebhookEventTypes)",
                                  field="event_types")
        if event_type not in chosen:
            chosen.append(event_type)
    return chosen


def validate_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidArgument(f"description is longer than {MAX_DESCRIPTION_LENGTH} characters", field="description")
    if "\x00" in description:
        raise InvalidArgument("description contains a NUL character", field="description")
    return description


def validate_outlet_ids(outlet_ids: Sequence[object], merchant_outlet_ids: Collection[str]) -> list[str]:
    """At most 1,000 outlets of the key's merchant, as canonical UUIDs, duplicates dropped. A malformed id
    and another merchant's id get the same answer ("unknown outlet"): no existence oracle."""
    if len(outlet_ids) > MAX_OUTLET_IDS:
        raise InvalidArgument(f"outlet_ids has more than {MAX_OUTLET_IDS} entries", field="outlet_ids")
    own = {_canonical_uuid(str(outlet)) for outlet in merchant_outlet_ids} - {None}
    chosen: list[str] = []
    for outlet in outlet_ids:
        canonical = _canonical_uuid(outlet) if isinstance(outlet, str) else None
        if canonical is None or canonical not in own:
            raise InvalidArgument(f"unknown outlet {_echo(outlet)}", field="outlet_ids")
        if canonical not in chosen:
            chosen.append(canonical)
    return chosen


def validate_overlap_seconds(seconds: int, default: int | None = None) -> int:
    """0..604800. 0 means "the configured default": returned as `default` when one is given, else 0."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_OVERLAP_SECONDS:
        raise InvalidArgument(f"overlap_seconds is 0 to {MAX_OVERLAP_SECONDS}", field="overlap_seconds")
    if seconds == 0 and default is not None:
        return default
    return seconds


def validate_page_size(page_size: int, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 (unset) is `default`; otherwise 1..`maximum`."""
    if page_size == 0:
        return default
    if not 1 <= page_size <= maximum:
        raise InvalidArgument(f"page_size must be between 1 and {maximum}", field="page_size")
    return page_size


def validate_status_filter(status: str) -> str | None:
    """A delivery status to filter on, or None (empty: all)."""
    if not status:
        return None
    if status not in DELIVERY_STATUSES:
        raise InvalidArgument(f"status is one of {', '.join(DELIVERY_STATUSES)} (or empty), got {_echo(status)}",
                              field="status")
    return status


def validate_event_type_filter(event_type: str) -> str | None:
    """An event type to filter deliveries on (the test event included), or None (empty: all)."""
    if not event_type:
        return None
    if not is_known(event_type):
        raise InvalidArgument(f"unknown event type {_echo(event_type)}", field="event_type")
    return event_type


def parse_id(value: str, field: str = "id") -> str:
    """An endpoint or delivery id: a UUID, canonical form. Malformed: InvalidArgument."""
    canonical = _canonical_uuid(value)
    if canonical is None:
        raise InvalidArgument(f"{field} is not an id (a UUID)", field=field)
    return canonical


def _canonical_uuid(value: str) -> str | None:
    if not value or len(value) > 64:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
