"""Webhook delivery end to end: a seal through Envoy becomes an outbox event, the ledger's relay hands it
to the webhooks service, which POSTs it, signed, to a real receiver on 127.0.0.1 that verifies it with
the `standardwebhooks` package. Retries, Retry-After, 410, resends, rotation and the send-time address
check, on a retry schedule of seconds (tests/conftest.py WEBHOOK_SERVICE_ENV)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.conftest import WEBHOOK_RETRY_SCHEDULE
from tests.harness import auth, provision, sale
from tests.webhook_receiver import Answer, WebhookReceiver, WebhooksApi, status, verify

JITTER = 0.2
MAX_ATTEMPTS = len(WEBHOOK_RETRY_SCHEDULE) + 1
# The longest a whole series of attempts can take here (every delay at +20 %), plus polling and slack.
SERIES_SECONDS = sum(WEBHOOK_RETRY_SCHEDULE) * (1 + JITTER) + MAX_ATTEMPTS * 2.5 + 10


class Shop:
    """A merchant of the shared webhook mesh, its admin API and a way to seal."""

    def __init__(self, mesh, outlets: int = 1):
        self.mesh = mesh
        self.merchant = provision(mesh, outlets=outlets, terminals=1)
        self.api = WebhooksApi(mesh.gateway_url, self.merchant["admin_key"])

    def outlet(self, index: int = 0) -> dict:
        return self.merchant["outlets"][index]

    def seal(self, index: int = 0) -> dict:
        outlet = self.outlet(index)
        body = sale(outlet, self.merchant["terminals"][outlet["id"]][0], self.merchant["cashiers"][outlet["id"]][0])
        with httpx.Client(base_url=self.mesh.gateway_url, timeout=30) as client:
            answer = client.post("/v1/invoices", json=body, headers=auth(self.merchant["pos_keys"][outlet["id"]]))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def credit_note(self, invoice: dict) -> dict:
        outlet_id = invoice["outlet_id"]
        body = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": self.merchant["terminals"][outlet_id][0],
                "cashier_id": self.merchant["cashiers"][outlet_id][0], "reason": "returned",
                "lines": [{"description": "Maize flour 2kg", "quantity": "1", "unit_price": "210.00",
                           "tax_group": "A"}]}
        with httpx.Client(base_url=self.mesh.gateway_url, timeout=30) as client:
            answer = client.post(f"/v1/invoices/{invoice['id']}/credit-notes", json=body,
                                 headers=auth(self.merchant["pos_keys"][outlet_id]))
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def shop(webhook_mesh):
    shop = Shop(webhook_mesh, outlets=2)
    yield shop
    shop.api.close()


def _invoice_id(received) -> str:
    return json.loads(received.body)["data"]["invoice_id"]


def _gaps(requests) -> list[float]:
    return [later.arrived_mono - earlier.arrived_mono for earlier, later in zip(requests, requests[1:], strict=False)]


def _one(items):
    assert len(items) == 1, items
    return items[0]


def test_seal_and_credit_note_are_delivered_signed_the_standard_webhooks_way(shop, webhook_receiver):
    path = webhook_receiver.path()
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    invoice = shop.seal()
    note = shop.credit_note(invoice)

    received = webhook_receiver.wait_for(2, path)
    assert len(received) == 2
    by_invoice = {_invoice_id(r): r for r in received}
    assert set(by_invoice) == {invoice["id"], note["id"]}
    for invoice_id, request in by_invoice.items():
        envelope = verify(endpoint["secret"], request)  # the standardwebhooks package, unchanged
        assert request.method == "POST"
        assert request.headers["content-type"].startswith("application/json")
        assert request.headers["user-agent"] == "FiscalCloud-Webhooks/1"
        assert envelope["id"] == request.webhook_id and uuid.UUID(envelope["id"])
        assert envelope["type"] == "invoice.sealed"
        assert envelope["merchant_id"] == shop.merchant["merchant"]["id"]
        assert envelope["outlet_id"] == shop.outlet()["id"]
        assert envelope["timestamp"].endswith("Z")
        assert envelope["data"]["invoice_id"] == invoice_id
        # The exact bytes: compact, sorted keys, UTF-8 (the contract in docs/webhooks.md).
        assert request.body == json.dumps(envelope, separators=(",", ":"), ensure_ascii=False,
                                          sort_keys=True).encode()
        # A single v1 signature: HMAC-SHA256 of "id.timestamp.body" with the secret's decoded bytes.
        key = base64.b64decode(endpoint["secret"].removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, f"{request.webhook_id}.{request.headers['webhook-timestamp']}."
                                             .encode() + request.body, hashlib.sha256).digest()).decode()
        assert request.headers["webhook-signature"] == f"v1,{expected}"
    assert by_invoice[invoice["id"]].webhook_id != by_invoice[note["id"]].webhook_id
    assert json.loads(by_invoice[invoice["id"]].body)["data"]["kind"] == "invoice"
    assert json.loads(by_invoice[note["id"]].body)["data"]["kind"] == "credit_note"

    deliveries = shop.api.wait_deliveries(
        endpoint["id"], lambda found: len(found) == 2 and all(d["status"] == "succeeded" for d in found))
    assert {d["event_id"] for d in deliveries} == {r.webhook_id for r in received}
    for delivery in deliveries:
        assert delivery["event_type"] == "invoice.sealed" and delivery["attempt_count"] == 1
        attempt = _one(delivery["attempts"])
        assert (attempt["number"], attempt["http_status"], attempt["response_excerpt"]) == (1, 200, "ok")
        assert attempt["latency_ms"] >= 0 and attempt["started_at"] and not attempt["error"]
    # Succeeded is final: nothing more arrives for them (the second list shows no new attempt).
    assert len(webhook_receiver.requests(path)) == 2


def test_a_tampered_body_or_a_stale_timestamp_fails_verification(shop, webhook_receiver):
    path = webhook_receiver.path()
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    shop.seal()
    request = webhook_receiver.wait_for(1, path)[0]
    webhook = Webhook(endpoint["secret"])
    webhook.verify(request.body, request.headers)  # the real one verifies

    tampered = request.body.replace(b'"currency":"', b'"currency":"X', 1)
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        webhook.verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(shop.api.create(webhook_receiver.url(path))["secret"]).verify(request.body, request.headers)

    # Correctly signed, but 10 minutes old: a replay, refused by the 5-minute tolerance.
    stale = datetime.now(UTC) - timedelta(minutes=10)
    stale_headers = {**request.headers, "webhook-timestamp": str(int(stale.timestamp())),
                     "webhook-signature": webhook.sign(request.webhook_id, stale, request.body.decode())}
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhook.verify(request.body, stale_headers)
    # ... and the real signature with a moved timestamp does not verify either.
    moved = {**request.headers, "webhook-timestamp": str(int(time.time()) - 1)}
    if moved["webhook-timestamp"] != request.headers["webhook-timestamp"]:
        with pytest.raises(WebhookVerificationError):
            webhook.verify(request.body, moved)


def test_the_test_event_goes_to_an_endpoint_not_subscribed_to_it(shop, webhook_receiver):
    path = webhook_receiver.path()
    endpoint = shop.api.create(webhook_receiver.url(path), ["payment.failed"])
    answer = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", {})
    assert answer.status_code == 200, answer.text
    delivery = answer.json()
    assert delivery["event_type"] == "webhook.test" and delivery["endpoint_id"] == endpoint["id"]
    request = _one(webhook_receiver.wait_for(1, path))
    envelope = verify(endpoint["secret"], request)
    assert envelope["type"] == "webhook.test" and envelope["id"] == delivery["event_id"] == request.webhook_id
    assert envelope["merchant_id"] == shop.merchant["merchant"]["id"]
    shop.api.wait_deliveries(endpoint["id"], lambda found: [d["status"] for d in found] == ["succeeded"])


def test_outlet_filter_and_event_type_filter(shop, webhook_receiver):
    first, second = webhook_receiver.path(), webhook_receiver.path()
    only_outlet = shop.api.create(webhook_receiver.url(first), ["invoice.sealed"], outlet_ids=[shop.outlet(0)["id"]])
    other_type = shop.api.create(webhook_receiver.url(second), ["report.generated"])
    catch_all_path = webhook_receiver.path()
    shop.api.create(webhook_receiver.url(catch_all_path), ["invoice.sealed"])
    kept, filtered = shop.seal(0), shop.seal(1)
    # Both seals reached the endpoint with no filter: the relay and the engine have done their work ...
    assert {_invoice_id(r) for r in webhook_receiver.wait_for(2, catch_all_path)} == {kept["id"], filtered["id"]}
    # ... and the filtered endpoints have no delivery at all for what they did not ask for (deliveries are
    # created with the event, in one transaction, so none can still be on its way).
    assert [d["event_id"] for d in shop.api.deliveries(only_outlet["id"])] == [
        _one(webhook_receiver.wait_for(1, first)).webhook_id]
    assert _invoice_id(webhook_receiver.requests(first)[0]) == kept["id"]
    assert shop.api.deliveries(other_type["id"]) == [] and webhook_receiver.requests(second) == []


def test_a_receiver_down_for_four_attempts_gets_the_event_on_the_fifth(shop, webhook_receiver):
    path = webhook_receiver.path()
    webhook_receiver.script(path, status(500), status(502), status(503), status(504), default=Answer(200, "thanks"))
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    invoice = shop.seal()
    received = webhook_receiver.wait_for(5, path, timeout=SERIES_SECONDS)
    [delivery] = shop.api.wait_deliveries(endpoint["id"], lambda found: found and found[0]["status"] == "succeeded",
                                          timeout=SERIES_SECONDS)
    assert [r.answered for r in received] == [500, 502, 503, 504, 200]
    assert {r.webhook_id for r in received} == {delivery["event_id"]}
    assert {r.body for r in received} == {received[0].body}  # byte-identical every time
    assert _invoice_id(received[0]) == invoice["id"]
    for request in received:
        verify(endpoint["secret"], request)  # each attempt signed with its own timestamp
    stamps = [int(r.headers["webhook-timestamp"]) for r in received]
    assert stamps == sorted(stamps)
    assert delivery["attempt_count"] == 5
    assert [(a["number"], a["http_status"]) for a in sorted(delivery["attempts"], key=lambda a: a["number"])] == [
        (1, 500), (2, 502), (3, 503), (4, 504), (5, 200)]
    assert len(webhook_receiver.requests(path)) == 5


def test_a_receiver_always_down_sees_six_attempts_with_growing_gaps_then_resends_deliver(shop, webhook_receiver):
    path = webhook_receiver.path()
    down_body = "maintenance " * 500  # 6,000 characters: the excerpt keeps the first 1,024
    webhook_receiver.script(path, default=Answer(500, down_body))
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    since = datetime.now(UTC) - timedelta(seconds=5)
    first, second = shop.seal(), shop.seal()

    deliveries = shop.api.wait_deliveries(
        endpoint["id"], lambda found: len(found) == 2 and all(d["status"] == "failed" for d in found),
        timeout=SERIES_SECONDS)
    by_event = {d["event_id"]: d for d in deliveries}
    for event_id, delivery in by_event.items():
        requests = [r for r in webhook_receiver.requests(path) if r.webhook_id == event_id]
        assert len(requests) == MAX_ATTEMPTS == delivery["attempt_count"] == 6
        assert not delivery.get("next_attempt_at")
        gaps = _gaps(requests)
        # Never earlier than the schedule allows (each step at -20 % jitter at most) ...
        for gap, step in zip(gaps, WEBHOOK_RETRY_SCHEDULE, strict=True):
            assert gap >= step * (1 - JITTER) - 0.01, (gaps, WEBHOOK_RETRY_SCHEDULE)
        # ... so they grow with the schedule; and the last is longer than the first (a stall of seconds
        # would be needed to undo that, not jitter or polling).
        assert gaps[0] < gaps[4], gaps
        attempts = sorted(delivery["attempts"], key=lambda a: a["number"])
        assert [a["number"] for a in attempts] == [1, 2, 3, 4, 5, 6]
        for attempt in attempts:
            assert attempt["http_status"] == 500 and attempt["latency_ms"] >= 0 and attempt["started_at"]
            assert attempt["response_excerpt"] == down_body[:1024]
            assert attempt.get("resend", 0) == 0
    assert {_invoice_id(webhook_receiver.requests(path)[i]) for i in range(len(webhook_receiver.requests(path)))} == {
        first["id"], second["id"]}
    assert len(webhook_receiver.requests(path)) == 12  # failed is final: nothing more was sent

    # The receiver is back: a resend by hand delivers one, with the same webhook-id and bytes.
    webhook_receiver.script(path, default=Answer(200, "back"))
    resent_id, other_id = sorted(by_event)
    answer = shop.api.call("POST", f"/v1/webhook-deliveries/{by_event[resent_id]['id']}/resend", {})
    assert answer.status_code == 200, answer.text
    assert answer.json()["event_id"] == resent_id
    arrived = webhook_receiver.wait_for(7, path, match=lambda r: r.webhook_id == resent_id)
    assert {r.body for r in arrived} == {arrived[0].body} and arrived[-1].answered == 200
    arrived = arrived[-1]
    verify(endpoint["secret"], arrived)
    resent = shop.api.wait_deliveries(endpoint["id"], lambda found: any(
        d["event_id"] == resent_id and d["status"] == "succeeded" for d in found))
    resent_delivery = next(d for d in resent if d["event_id"] == resent_id)
    last = max(resent_delivery["attempts"], key=lambda a: (a.get("resend", 0), a["number"]))
    assert (last.get("resend"), last["number"], last["http_status"]) == (1, 1, 200)
    assert next(d for d in resent if d["event_id"] == other_id)["status"] == "failed"

    # resend-failed {since}: the other one (the only failed one left) goes again.
    answer = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/resend-failed",
                           {"since": since.isoformat().replace("+00:00", "Z")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["resent_count"] == 1
    delivered = webhook_receiver.wait_for(7, path, match=lambda r: r.webhook_id == other_id)[-1]
    assert delivered.answered == 200
    shop.api.wait_deliveries(endpoint["id"], lambda found: all(d["status"] == "succeeded" for d in found))
    # A "since" after the failures resends nothing.
    answer = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/resend-failed",
                           {"since": datetime.now(UTC).isoformat().replace("+00:00", "Z")})
    assert answer.status_code == 200 and answer.json()["resent_count"] == 0


def test_refused_connections_and_timeouts_are_failed_attempts(shop, webhook_receiver):
    closed = WebhookReceiver()
    closed_url = closed.url("/gone")
    closed.stop()  # nothing listens there now: connection refused
    refused = shop.api.create(closed_url, ["invoice.sealed"])
    slow_path = webhook_receiver.path()
    webhook_receiver.script(slow_path, Answer(200, "too late", delay=3.5), default=Answer(200, "ok"))
    slow = shop.api.create(webhook_receiver.url(slow_path), ["invoice.sealed"])
    for endpoint in (refused, slow):
        assert shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", {}).status_code == 200

    [delivery] = shop.api.wait_deliveries(refused["id"], lambda found: found and found[0]["attempts"])
    attempt = delivery["attempts"][0]
    assert attempt["http_status"] == 0 and attempt["error"], attempt
    # The slow receiver answered after the 2 s timeout: failed, then the retry succeeded.
    [delivery] = shop.api.wait_deliveries(slow["id"], lambda found: found and found[0]["status"] == "succeeded",
                                          timeout=SERIES_SECONDS)
    attempts = sorted(delivery["attempts"], key=lambda a: a["number"])
    assert attempts[0]["http_status"] == 0 and "timeout" in attempts[0]["error"].lower(), attempts[0]
    assert attempts[-1]["http_status"] == 200
    for endpoint in (refused, slow):  # their pending retries are never sent
        assert shop.api.call("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 200


def test_410_gone_disables_the_endpoint(shop, webhook_receiver):
    gone_path, healthy_path = webhook_receiver.path(), webhook_receiver.path()
    webhook_receiver.script(gone_path, default=status(410, "no such hook"))
    gone = shop.api.create(webhook_receiver.url(gone_path), ["invoice.sealed"])
    healthy = shop.api.create(webhook_receiver.url(healthy_path), ["invoice.sealed"])
    shop.seal()
    [delivery] = shop.api.wait_deliveries(gone["id"], lambda found: found and found[0]["status"] == "failed")
    assert delivery["attempt_count"] == 1 and delivery["attempts"][0]["http_status"] == 410
    endpoint = shop.api.get(gone["id"])
    assert endpoint["disabled"] is True and "410" in endpoint["disabled_reason"]
    webhook_receiver.wait_for(1, healthy_path)

    later = shop.seal()
    webhook_receiver.wait_for(1, healthy_path, match=lambda r: _invoice_id(r) == later["id"])
    # The healthy endpoint got the later event; the disabled one got no delivery for it at all.
    assert len(shop.api.deliveries(gone["id"])) == 1
    assert len(webhook_receiver.requests(gone_path)) == 1
    assert shop.api.get(healthy["id"])["disabled"] is False


def test_retry_after_on_429_and_503_delays_the_next_attempt(shop, webhook_receiver):
    seconds_path, date_path = webhook_receiver.path(), webhook_receiver.path()
    webhook_receiver.script(seconds_path, status(429, "slow down", Retry_After="2"))
    retry_at = time.time() + 3
    webhook_receiver.script(date_path, status(503, "back soon", Retry_After=email.utils.formatdate(retry_at,
                                                                                                    usegmt=True)))
    by_seconds = shop.api.create(webhook_receiver.url(seconds_path), ["invoice.sealed"])
    by_date = shop.api.create(webhook_receiver.url(date_path), ["invoice.sealed"])
    shop.seal()
    first, second = webhook_receiver.wait_for(2, seconds_path, timeout=SERIES_SECONDS)
    # The schedule's first step is 0.3 s: only Retry-After explains a gap of 2 s or more.
    assert second.arrived_mono - first.arrived_mono >= 2.0, second.arrived_mono - first.arrived_mono
    assert second.answered == 200
    first, second = webhook_receiver.wait_for(2, date_path, timeout=SERIES_SECONDS)
    assert second.arrived_at >= int(retry_at) - 0.05, (second.arrived_at, retry_at)
    for endpoint in (by_seconds, by_date):
        [delivery] = shop.api.wait_deliveries(endpoint["id"], lambda found: found and found[0]["status"] == "succeeded")
        assert [a["http_status"] for a in sorted(delivery["attempts"], key=lambda a: a["number"])][0] in (429, 503)


def test_rotation_both_secrets_verify_during_the_overlap_then_only_the_new(shop, webhook_receiver):
    path = webhook_receiver.path()
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    overlap = 4
    answer = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                           {"overlap_seconds": overlap})
    assert answer.status_code == 200, answer.text
    new_secret = answer.json()["secret"]
    expires = datetime.fromisoformat(answer.json()["previous_secret_expires_at"].replace("Z", "+00:00"))

    test = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", {})
    assert test.status_code == 200, test.text
    during = _one(webhook_receiver.wait_for(1, path))
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert datetime.fromtimestamp(int(during.headers["webhook-timestamp"]), UTC) < expires
    verify(endpoint["secret"], during)  # a receiver not yet told about the rotation
    verify(new_secret, during)          # one already on the new secret

    wait = (expires - datetime.now(UTC)).total_seconds() + 1.1
    assert wait <= overlap + 2
    time.sleep(max(0.0, wait))  # the overlap is over (bounded: a few seconds)
    test = shop.api.call("POST", f"/v1/webhook-endpoints/{endpoint['id']}/test", {})
    assert test.status_code == 200, test.text
    after = webhook_receiver.wait_for(1, path, match=lambda r: r.webhook_id == test.json()["event_id"])[0]
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verify(new_secret, after)
    with pytest.raises(WebhookVerificationError):
        verify(endpoint["secret"], after)


def test_pending_deliveries_of_a_deleted_endpoint_are_not_sent(shop, webhook_receiver):
    path = webhook_receiver.path()
    # The first attempt fails and asks for 4 s: time enough to delete the endpoint before the retry.
    webhook_receiver.script(path, status(503, "later", Retry_After="4"), default=Answer(200))
    endpoint = shop.api.create(webhook_receiver.url(path), ["invoice.sealed"])
    shop.seal()
    first = _one(webhook_receiver.wait_for(1, path))
    assert shop.api.call("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 200
    deleted_after = time.monotonic() - first.arrived_mono
    assert deleted_after < 4, "deleted too late to prove anything"
    # Past the latest the retry could have come (Retry-After is capped by the largest step, jittered).
    retry_by = max(WEBHOOK_RETRY_SCHEDULE) * (1 + JITTER) + 1.0
    time.sleep(max(0.0, retry_by - (time.monotonic() - first.arrived_mono)))
    assert len(webhook_receiver.requests(path)) == 1
