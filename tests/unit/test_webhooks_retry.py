"""The retry schedule (services/webhooks/retry_policy.py): at most 6 attempts, jitter within bounds,
Retry-After honoured later-only and capped at the schedule's largest step."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from services.webhooks.retry_policy import DEFAULT_SCHEDULE, RetryPolicy, parse_retry_after

SCHEDULE = (0.3, 0.6, 1.2, 2.4, 4.8)


class Fixed:
    """An rng whose uniform(a, b) answers a chosen point of [a, b]: 0 the low end, 1 the high end."""

    def __init__(self, where: float):
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.where


def test_six_attempts_at_most_then_none():
    policy = RetryPolicy(SCHEDULE)
    assert policy.max_attempts == 6
    delays = [policy.next_delay(made, rng=Fixed(0.5)) for made in range(1, 7)]
    assert delays[:5] == pytest.approx(list(SCHEDULE))
    assert delays[5] is None
    assert policy.next_delay(7) is None


def test_jitter_stays_within_twenty_percent():
    policy = RetryPolicy(SCHEDULE)
    assert policy.next_delay(1, rng=Fixed(0.0)) == pytest.approx(0.3 * 0.8)
    assert policy.next_delay(1, rng=Fixed(1.0)) == pytest.approx(0.3 * 1.2)
    seeded = random.Random(8)
    for made in range(1, 6):
        for _ in range(200):
            delay = policy.next_delay(made, rng=seeded)
            assert delay is not None and SCHEDULE[made - 1] * 0.8 <= delay <= SCHEDULE[made - 1] * 1.2


def test_retry_after_moves_later_up_to_the_largest_step():
    policy = RetryPolicy(SCHEDULE)
    assert policy.next_delay(1, retry_after=2.0, rng=Fixed(0.5)) == pytest.approx(2.0)
    assert policy.next_delay(1, retry_after=3600.0, rng=Fixed(0.5)) == pytest.approx(4.8)  # capped
    assert policy.next_delay(3, retry_after=0.1, rng=Fixed(0.5)) == pytest.approx(1.2)  # never earlier
    assert policy.next_delay(6, retry_after=1.0) is None  # no attempt left whatever the receiver says


def test_default_schedule_spans_about_a_day():
    policy = RetryPolicy()
    assert policy.schedule == DEFAULT_SCHEDULE and policy.max_attempts == 6
    assert 20 * 3600 <= sum(DEFAULT_SCHEDULE) <= 30 * 3600


@pytest.mark.parametrize("schedule", [(), (1.0,) * 6, (1.0, -1.0), (float("nan"),)])
def test_a_bad_schedule_is_refused(schedule):
    with pytest.raises(ValueError):
        RetryPolicy(schedule)


def test_from_env(monkeypatch):
    monkeypatch.setenv("FISCAL_WEBHOOK_RETRY_SCHEDULE", "0.3, 0.6,1.2")
    assert RetryPolicy.from_env().schedule == (0.3, 0.6, 1.2)
    monkeypatch.delenv("FISCAL_WEBHOOK_RETRY_SCHEDULE")
    assert RetryPolicy.from_env().schedule == DEFAULT_SCHEDULE
    for bad in ("1,2,3,4,5,6", "1,soon", "-1"):
        monkeypatch.setenv("FISCAL_WEBHOOK_RETRY_SCHEDULE", bad)
        with pytest.raises(SystemExit):
            RetryPolicy.from_env()


def test_parse_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after("Wed, 25 Nov 2026 10:01:00 GMT", now) == 60.0
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5e3x"):
        assert parse_retry_after(unreadable, now) is None
