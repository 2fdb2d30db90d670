"""When a failed delivery is tried again: a configurable schedule of at most 5 retries, with jitter.

`schedule[i]` is the pause after attempt i+1 failed, so a delivery gets at most len(schedule) + 1
attempts. Each pause is multiplied by uniform(1 - jitter, 1 + jitter) so that endpoints failing
together do not retry in lockstep. A receiver's `Retry-After` (on 429/503) can move the next attempt
later, never earlier, and never past the schedule's largest step (a receiver cannot park a delivery
for a week).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from services.runtime.config import env_float, env_list

MAX_RETRIES = 5  # the issue: at most 5 retries after the first attempt
DEFAULT_SCHEDULE: tuple[float, ...] = (300.0, 1800.0, 7200.0, 21600.0, 57600.0)  # 5 min .. 16 h: about a day
DEFAULT_JITTER = 0.2
RETRY_AFTER_STATUSES = frozenset({429, 503})  # the answers whose Retry-After is honoured


class Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not 1 <= len(self.schedule) <= MAX_RETRIES:
            raise ValueError(f"a retry schedule has 1 to {MAX_RETRIES} steps, got {len(self.schedule)}")
        if any(not math.isfinite(step) or step < 0 for step in self.schedule):
            raise ValueError("retry steps are finite, non-negative seconds")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    @classmethod
    def from_env(cls) -> RetryPolicy:
        raw = env_list("FISCAL_WEBHOOK_RETRY_SCHEDULE")
        try:
            schedule = tuple(float(step) for step in raw) if raw else DEFAULT_SCHEDULE
            return cls(schedule, jitter=env_float("FISCAL_WEBHOOK_RETRY_JITTER", DEFAULT_JITTER))
        except ValueError as exc:
            raise SystemExit(f"FISCAL_WEBHOOK_RETRY_SCHEDULE: comma-separated seconds, 1 to {MAX_RETRIES} of "
                             f"them ({exc})") from None

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    @property
    def largest_step(self) -> float:
        return max(self.schedule)

    def next_delay(self, attempts_made: int, retry_after: float | None = None,
                   rng: Uniform = random) -> float | None:
        """Seconds until the next attempt after `attempts_made` attempts (the last one failed), or None:
        no attempt is left and the delivery is `failed`."""
        if attempts_made < 1:
            raise ValueError("attempts_made counts the attempts made, the failed one included (>= 1)")
        if attempts_made >= self.max_attempts:
            return None
        delay = self.schedule[attempts_made - 1] * rng.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None:  # later, never earlier, and never past the largest step
            delay = max(delay, min(retry_after, self.largest_step))
        return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header as seconds from `now`: delay-seconds or an HTTP date. None when absent or
    unreadable (then the schedule alone decides); a date in the past is 0."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT; parsedate gives naive for "-0000"
        moment = moment.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    if current.tzinfo is None:
        current = current.replace(tzinfo=UTC)
    return max(0.0, (moment - current).total_seconds())
