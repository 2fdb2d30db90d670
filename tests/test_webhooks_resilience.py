"""Webhooks under failure: the service SIGKILLed in the middle of 1,000 seals loses nothing (at least
once, duplicates with the same webhook-id); two replicas never send one attempt twice; with the loopback
allowance off, loopback endpoints are refused at creation and at send time (the receiver sees nothing)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter, defaultdict

import httpx
import pytest

from tests.conftest import start_webhook_mesh
from tests.harness import assert_only_retryable_errors, auth, provision, sale, seal_many
from tests.webhook_receiver import (
    INVALID_ARGUMENT,
    WebhookReceiver,
    WebhooksApi,
    per_event,
    process_of_connection,
    status,
    verify,
)


def _invoice_id(received) -> str:
    return json.loads(received.body)["data"]["invoice_id"]


def _served(call, timeout: float = 30.0):
    """A call through Envoy right after a restart: 503 (no healthy upstream yet) is retried, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        answer = call()
        if answer.status_code != 503 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def _restart_webhooks(mesh, replica: int = 0, **env: str) -> None:
    process = mesh.processes["webhooks"][replica]
    process.env.update(env)
    mesh.restart(process)


def test_sigkill_mid_burst_of_1000_seals_every_event_arrives_duplicates_share_the_webhook_id(
        webhook_mesh, webhook_receiver):
    mesh = webhook_mesh
    merchant = provision(mesh, outlets=2, terminals=5)
    api = WebhooksApi(mesh.gateway_url, merchant["admin_key"])
    path = webhook_receiver.path()
    endpoint = api.create(webhook_receiver.url(path), ["invoice.sealed"])
    per_terminal = 100  # 2 outlets x 5 terminals x 100 = 1,000 seals

    result: dict = {}
    load = threading.Thread(target=lambda: result.update(asyncio.run(seal_many(
        mesh.gateway_url, merchant, per_terminal, tolerate_errors=True))))
    load.start()
    try:
        webhook_receiver.wait_for(30, path, timeout=120)  # deliveries are flowing
        victim = mesh.processes["webhooks"][0]
        victim.kill()  # SIGKILL: attempts in flight are neither finished nor recorded
        killed_with = len(webhook_receiver.requests(path))
        load_running_at_kill = load.is_alive()
        time.sleep(1.0)  # down for a while: the relay keeps its events, leases run out
        mesh.restart(victim)
    finally:
        load.join(timeout=300)
    assert not load.is_alive(), "the seal load did not finish"
    assert len(result["ok"]) == 1000
    assert_only_retryable_errors(result)
    sealed = {invoice["id"] for invoice in result["ok"]}
    assert killed_with < 1000, "every event had arrived before the kill: it tested nothing"

    deadline = time.monotonic() + 300  # bounded: leases of the killed process's attempts expire in ~12 s
    while {_invoice_id(r) for r in webhook_receiver.requests(path)} != sealed and time.monotonic() < deadline:
        time.sleep(0.5)
    received = webhook_receiver.requests(path)
    assert {_invoice_id(r) for r in received} == sealed  # every event at least once, nothing else

    by_webhook_id: dict[str, list] = defaultdict(list)
    for request in received:
        by_webhook_id[request.webhook_id].append(request)
    assert len(by_webhook_id) == 1000
    for webhook_id, copies in by_webhook_id.items():
        # A duplicate is the same event: same webhook-id, byte-identical body, each copy correctly signed.
        assert {c.body for c in copies} == {copies[0].body}, webhook_id
        assert json.loads(copies[0].body)["id"] == webhook_id
        for copy in copies:
            verify(endpoint["secret"], copy)
    duplicates = sum(len(copies) - 1 for copies in by_webhook_id.values())
    deliveries = api.wait_deliveries(endpoint["id"], lambda found: len(found) == 1000 and all(
        d["status"] == "succeeded" for d in found), timeout=60)
    assert {d["event_id"] for d in deliveries} == set(by_webhook_id)
    print(f"killed with {killed_with} events received (seal load running: {load_running_at_kill}); "
          f"{duplicates} duplicates after the restart")
    api.close()


@pytest.fixture(scope="module")
def two_replica_mesh(start_mesh):
    mesh = start_webhook_mesh(start_mesh, service_replicas={"webhooks": 2})
    yield mesh
    mesh.stop()  # two replicas of webhooks cost CPU the later tests need


def test_two_webhook_replicas_never_send_one_attempt_twice(two_replica_mesh):
    mesh = two_replica_mesh
    assert len(mesh.processes["webhooks"]) == 2
    merchant = provision(mesh, outlets=2, terminals=4)
    api = WebhooksApi(mesh.gateway_url, merchant["admin_key"])
    replicas = {process.name: process.popen.pid for process in mesh.processes["webhooks"]}
    with WebhookReceiver(sender_of=process_of_connection(replicas)) as receiver:
        path = receiver.path()
        # Every event's first attempt fails and its second succeeds: 2 attempts per delivery, both replicas busy.
        receiver.respond(path, per_event(status(500, "first attempt fails")))
        endpoint = api.create(receiver.url(path), ["invoice.sealed"])
        result = asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=25, tolerate_errors=True))
        assert len(result["ok"]) == 200
        receiver.wait_for(200, path, timeout=180, match=lambda r: r.answered == 200)
        deliveries = api.wait_deliveries(endpoint["id"], lambda found: len(found) == 200 and all(
            d["status"] == "succeeded" for d in found), timeout=60)
        received = receiver.requests(path)
    api.close()

    sent = Counter(r.webhook_id for r in received)
    recorded = {d["event_id"]: d for d in deliveries}
    assert set(sent) == set(recorded) and len(sent) == 200
    # What the receiver got, per webhook-id, is exactly what the service recorded: no attempt twice.
    for event_id, delivery in recorded.items():
        assert sent[event_id] == delivery["attempt_count"] == len(delivery["attempts"]) == 2, (event_id, sent[event_id],
                                                                                              delivery)
        assert sorted(a["number"] for a in delivery["attempts"]) == [1, 2]
    # Attempts are told apart by their timestamps too: never the same (webhook-id, timestamp) twice.
    pairs = Counter((r.webhook_id, r.headers["webhook-timestamp"], r.answered) for r in received)
    assert max(pairs.values()) == 1
    assert {_invoice_id(r) for r in received} == {invoice["id"] for invoice in result["ok"]}
    # Both replicas sent attempts (told apart by the process holding each connection): the claims raced.
    senders = Counter(r.sender for r in received)
    assert set(replicas) <= set(senders), senders


def test_loopback_is_refused_at_creation_and_at_send_time_without_the_allowance(webhook_mesh):
    mesh = webhook_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    api = WebhooksApi(mesh.gateway_url, merchant["admin_key"])
    # Its own receiver: every TCP connection it accepts is counted, even a TLS hello it cannot parse.
    with WebhookReceiver() as receiver:
        # Made while the allowance is on (https: the send-time check, not the scheme rule, must stop them).
        by_address = api.create(receiver.url("/by-address", scheme="https"), ["invoice.sealed"])
        by_name = api.create(receiver.url("/by-name", scheme="https", host="localhost"), ["invoice.sealed"])
        try:
            _restart_webhooks(mesh, FISCAL_WEBHOOK_ALLOW_LOOPBACK="0")
            before = {e["id"] for e in api.endpoints()}
            for url in (receiver.url("/new", scheme="https"), receiver.url("/new", scheme="https", host="localhost"),
                        receiver.url("/new"), receiver.url("/new", host="localhost"),
                        f"https://[::1]:{receiver.port}/new"):
                answer = _served(lambda url=url: api.call("POST", "/v1/webhook-endpoints",
                                                          {"url": url, "event_types": ["invoice.sealed"]}))
                assert answer.status_code == 400, (url, answer.text)
                assert answer.json()["code"] == INVALID_ARGUMENT
            assert {e["id"] for e in api.endpoints()} == before

            with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
                body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0])
                sealed = client.post("/v1/invoices", json=body, headers=auth(merchant["pos_keys"][outlet["id"]]))
                assert sealed.status_code == 200, sealed.text
            for endpoint in (by_address, by_name):
                [delivery] = api.wait_deliveries(endpoint["id"], lambda found: found and found[0]["attempts"])
                attempt = delivery["attempts"][0]
                assert attempt["http_status"] == 0, attempt
                assert "not allowed" in attempt["error"], attempt
            assert receiver.requests() == [] and receiver.connections == 0
        finally:
            for endpoint in (by_address, by_name):  # their pending retries are never sent
                _served(lambda endpoint=endpoint: api.call("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}"))
            _restart_webhooks(mesh, FISCAL_WEBHOOK_ALLOW_LOOPBACK="1")
            api.close()
        assert receiver.connections == 0
