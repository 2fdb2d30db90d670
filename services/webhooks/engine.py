"""The delivery engine: claim due deliveries, send each (signed), record the outcome; and the job that
disables endpoints failing for days.

Every replica runs one engine. A claim leases deliveries (store.claim: oldest event first, one in flight
per endpoint and outlet, FOR UPDATE SKIP LOCKED) for the attempt's timeout + 10 s, then the attempt runs
outside any transaction and its outcome is recorded only if the lease is still ours. A replica that
dies after sending and before recording leaves a lease that expires: the attempt is sent again with the
same webhook-id (delivery is at least once; receivers deduplicate on webhook-id).

The engine wakes on NOTIFY webhooks_due (a runtime NotifyListener), when an attempt finishes (a slot is free,
and the next delivery of that endpoint and outlet may be due) and every FISCAL_WEBHOOK_POLL_SECONDS (a
retry coming due, a lost notification). On shutdown it claims nothing more and waits for the attempts
in flight, at most their timeout; one cut off by the end of the process leaves its lease to expire.
"""

from __future__ import annotations

import asyncio
import random
import secrets as random_source
import time
from datetime import UTC, datetime
from typing import Protocol

import structlog

from services.runtime.secret_box import SecretBox, SecretBoxError
from services.webhooks.retry_policy import RETRY_AFTER_STATUSES, RetryPolicy, Uniform, parse_retry_after
from services.webhooks.sender import AttemptResult
from services.webhooks.signatures import sign
from services.webhooks.store import Claimed, Outcome, WebhookStore

log = structlog.get_logger()

LEASE_MARGIN_SECONDS = 10.0
GONE_REASON = "the endpoint answered 410 Gone"


class AttemptSender(Protocol):
    timeout: float

    async def send(self, url: str, headers: dict[str, str], body: bytes) -> AttemptResult: ...


def attempt_headers(secrets: list[str], event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the sender adds content-type and user-agent)."""
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secrets, event_id, timestamp, body)}


def decide(result: AttemptResult, attempts_made: int, retry: RetryPolicy, rng: Uniform = random,
           now: datetime | None = None) -> tuple[float | None, str | None]:
    """What follows a failed attempt: (seconds to the next attempt or None for `failed`, reason to disable
    the endpoint or None)."""
    if result.http_status == 410:
        return None, GONE_REASON
    retry_after = (parse_retry_after(result.retry_after, now)
                   if result.http_status in RETRY_AFTER_STATUSES else None)
    return retry.next_delay(attempts_made, retry_after, rng), None


class DeliveryEngine:
    def __init__(self, store: WebhookStore, sender: AttemptSender, secret_box: SecretBox, retry: RetryPolicy, *,
                 concurrency: int, poll_seconds: float, rng: Uniform = random, owner: str | None = None):
        if concurrency < 1:
            raise ValueError("FISCAL_WEBHOOK_CONCURRENCY must be at least 1")
        self.store = store
        self.sender = sender
        self.secret_box = secret_box
        self.retry = retry
        self.concurrency = concurrency
        self.poll_seconds = max(poll_seconds, 0.01)
        self.lease_seconds = sender.timeout + LEASE_MARGIN_SECONDS
        self.rng = rng
        # Random per process: a restarted process never mistakes an old lease for its own.
        self.owner = owner or f"webhooks-{random_source.token_hex(8)}"
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("webhook delivery engine started", concurrency=self.concurrency, owner=self.owner)
        try:
            while not stopping.is_set():
                free = self.concurrency - len(self._in_flight)
                claimed: list[Claimed] = []
                wait = self.poll_seconds
                if free > 0:
                    self._wake.clear()  # before the claim: a NOTIFY during it wakes the next round
                    try:
                        claimed = await self.store.claim(self.owner, free, self.lease_seconds)
                    except Exception as exc:  # noqa: BLE001 - the database is away: try again later
                        log.warning("claiming webhook deliveries failed", error=type(exc).__name__)
                        wait = max(self.poll_seconds, 1.0)
                    for delivery in claimed:
                        task = asyncio.create_task(self._attempt(delivery), name="webhook-attempt")
                        self._in_flight.add(task)
                        task.add_done_callback(self._in_flight.discard)
                    if claimed and len(claimed) == free:
                        continue  # more may be due: claim again once slots are free
                else:
                    # Every slot busy: only a finished attempt (which sets the event again) frees one;
                    # what a NOTIFY announced meanwhile is found by the claim after it.
                    self._wake.clear()
                await self._sleep(stopping, wait)
        except asyncio.CancelledError:
            for task in self._in_flight:  # cut off: their leases expire and they are sent again
                task.cancel()
            raise
        await self._finish_in_flight()

    async def run_once(self) -> int:
        """Claim what is due, send it, record it (tests). The number of attempts made."""
        claimed = await self.store.claim(self.owner, self.concurrency, self.lease_seconds)
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _sleep(self, stopping: asyncio.Event, seconds: float) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _finish_in_flight(self) -> None:
        if not self._in_flight:
            return
        log.info("waiting for webhook attempts in flight", attempts=len(self._in_flight))
        _, pending = await asyncio.wait(set(self._in_flight), timeout=self.sender.timeout + 1.0)
        for task in pending:  # their leases expire; another replica (or the next start) sends them again
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _attempt(self, delivery: Claimed) -> None:
        try:
            outcome = await self._send(delivery)
            if not await self.store.record_outcome(delivery, outcome):
                log.info("webhook attempt not recorded: the lease was no longer ours", delivery_id=delivery.delivery_id)
                return
            if outcome.disable_reason:
                log.warning("webhook endpoint disabled", endpoint_id=delivery.endpoint_id,
                            merchant_id=delivery.merchant_id, reason=outcome.disable_reason)
            elif not outcome.succeeded and outcome.next_delay is None:
                log.info("webhook delivery failed for good", delivery_id=delivery.delivery_id,
                         endpoint_id=delivery.endpoint_id, attempts=delivery.attempts_made + 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the lease expires and the attempt is made again
            log.warning("webhook attempt could not be recorded", delivery_id=delivery.delivery_id,
                        error=type(exc).__name__)
        finally:
            # The slot is free now (not at the done callback, which runs after the loop may have looked),
            # and the next delivery of that endpoint and outlet may be due.
            self._in_flight.discard(asyncio.current_task())
            self._wake.set()

    async def _send(self, delivery: Claimed) -> Outcome:
        started_at = datetime.now(UTC)
        aad = delivery.endpoint_id.encode()
        try:
            secrets = [self.secret_box.open(delivery.secret_sealed, aad)]
            if delivery.previous_secret_sealed is not None:
                secrets.append(self.secret_box.open(delivery.previous_secret_sealed, aad))
        except SecretBoxError:
            # Not the receiver's fault and not fixable by it: say so in the attempt and the log.
            log.error("a webhook endpoint secret does not open (was FISCAL_WEBHOOK_SECRET_KEY changed?)",
                      endpoint_id=delivery.endpoint_id)
            result = AttemptResult(0, 0, "", "internal error: the endpoint's secret is unreadable")
        else:
            headers = attempt_headers(secrets, delivery.event_id, int(time.time()), delivery.envelope)
            result = await self.sender.send(delivery.url, headers, delivery.envelope)
        attempts_made = delivery.attempts_made + 1
        if result.succeeded:
            next_delay, disable_reason = None, None
        else:
            next_delay, disable_reason = decide(result, attempts_made, self.retry, self.rng)
        return Outcome(started_at=started_at, http_status=result.http_status, latency_ms=result.latency_ms,
                       response_excerpt=result.response_excerpt, error=result.error, succeeded=result.succeeded,
                       next_delay=next_delay, disable_reason=disable_reason)


class FailingEndpointDisabler:
    """Disables an endpoint with no success for FISCAL_WEBHOOK_DISABLE_AFTER_SECONDS and at least one
    delivery ended `failed` in that time ("failing since <time>"), with a warning log line: the notice."""

    def __init__(self, store: WebhookStore, after_seconds: float, check_seconds: float | None = None):
        self.store = store
        self.after_seconds = after_seconds
        self.check_seconds = check_seconds or min(60.0, max(0.5, after_seconds / 4))

    async def run_once(self) -> int:
        disabled = await self.store.disable_failing(self.after_seconds)
        for endpoint in disabled:
            log.warning("webhook endpoint disabled: failing for days", endpoint_id=endpoint.id,
                        merchant_id=endpoint.merchant_id, failing_since=endpoint.failing_since.isoformat())
        return len(disabled)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - try again at the next round
                log.warning("disabling failing webhook endpoints failed", error=type(exc).__name__)
            try:
                await asyncio.wait_for(stopping.wait(), self.check_seconds)
            except TimeoutError:
                pass
