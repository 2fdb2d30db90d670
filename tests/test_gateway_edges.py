"""The gateway's edges: client-sent x-envoy-* / x-forwarded-for headers change nothing, page tokens are
opaque and bound to their listing, and /healthz is healthy while each service has a healthy replica."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from tests.harness import auth, provision, sale, seal_many

# Sent without x-forwarded-for: a client's x-forwarded-for alone makes Envoy treat a request as
# external, and the point is that a plain loopback client is external too.
FORGED_ENVOY_HEADERS = {
    "x-envoy-upstream-rq-timeout-ms": "1",        # honoured, it turns the seal into a 504
    "x-envoy-upstream-rq-per-try-timeout-ms": "1",
    "x-envoy-retry-on": "5xx,reset,connect-failure,retriable-status-codes",
    "x-envoy-retry-grpc-on": "cancelled,deadline-exceeded,internal,unavailable",
    "x-envoy-max-retries": "25",
    "x-envoy-original-path": "/forged/path",
}


def _wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def shop(mesh):
    return provision(mesh, outlets=1, terminals=1)


def test_client_envoy_headers_do_not_change_behaviour(mesh, shop):
    outlet = shop["outlets"][0]
    body = sale(outlet, shop["terminals"][outlet["id"]][0], shop["cashiers"][outlet["id"]][0])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        sealed = client.post("/v1/invoices", json=body, headers={**auth(shop["pos_keys"][outlet["id"]]),
                                                                 **FORGED_ENVOY_HEADERS})
        assert sealed.status_code == 200, sealed.text  # a 1 ms upstream timeout from the client is ignored
        assert not [h for h in sealed.headers if h.lower().startswith("x-envoy-")]
        # The 404 message names the path Envoy saw, not the client's x-envoy-original-path.
        missing = client.get("/no/such/thing", headers=FORGED_ENVOY_HEADERS)
        assert missing.status_code == 404
        assert "/no/such/thing" in missing.json()["message"] and "forged" not in missing.text
        marker = str(uuid.uuid4())
        client.get(f"/v1/invoices/{marker}", headers={**auth(shop["read_key"]), "x-forwarded-for": "203.0.113.7"})

    def logged_line():
        for line in mesh.envoy.log_path.read_text(errors="replace").splitlines():
            if marker in line and line.startswith("{"):
                return json.loads(line)
        return None

    # The access log shows the request headers as Envoy passed them upstream.
    entry = _wait_for(logged_line, "the access log line of the marked request")
    assert entry["forwarded_for"] == "127.0.0.1" and "203.0.113.7" not in json.dumps(entry)
    assert entry["path"] == f"/v1/invoices/{marker}"


def test_page_tokens_are_opaque_and_bound_to_merchant_and_filter(mesh):
    merchant = provision(mesh, outlets=1, terminals=1)
    other = provision(mesh, outlets=1, terminals=1)
    asyncio.run(seal_many(mesh.gateway_url, merchant, per_terminal=3))
    asyncio.run(seal_many(mesh.gateway_url, other, per_terminal=3))
    outlet = merchant["outlets"][0]
    read = auth(merchant["read_key"])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        def page(headers, **params):
            return client.get("/v1/invoices", params={"page_size": 1, **params}, headers=headers)

        first = page(read, kind="invoice")
        assert first.status_code == 200, first.text
        token = first.json()["next_page_token"]
        assert token
        second = page(read, kind="invoice", page_token=token)
        assert second.status_code == 200, second.text
        assert second.json()["invoices"][0]["id"] != first.json()["invoices"][0]["id"]

        altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
        refusals = {
            "altered by one character": page(read, kind="invoice", page_token=altered),
            "another filter": page(read, kind="invoice", outlet_id=outlet["id"], page_token=token),
            "another merchant": page(auth(other["read_key"]), kind="invoice", page_token=token),
            "old format s<seq>": page(read, kind="invoice", page_token="czEwMDA"),
        }
        for case, answer in refusals.items():
            assert answer.status_code == 400, (case, answer.status_code, answer.text)
            assert "page_token" in answer.json()["message"], case


def _admin_health(mesh, cluster: str) -> dict[str, str]:
    """host:port -> health flags of one cluster, from Envoy's admin /clusters."""
    text = httpx.get(f"http://127.0.0.1:{mesh.admin_port}/clusters", timeout=5).text
    flags = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[0] == cluster and parts[2] == "health_flags":
            flags[parts[1]] = parts[3]
    return flags


def test_healthz_is_healthy_with_one_replica_of_each_service(start_mesh):
    mesh = start_mesh(replicas=2)
    assert httpx.get(f"{mesh.gateway_url}/healthz", timeout=5).status_code == 200
    dead_ledger = mesh.processes["ledger"][1]
    dead_ledger.kill()
    dead_address = f"127.0.0.1:{dead_ledger.port}"
    _wait_for(lambda: "failed_active_hc" in _admin_health(mesh, "ledger").get(dead_address, ""),
              "Envoy's health check to mark the killed ledger replica unhealthy")
    live = _admin_health(mesh, "ledger")
    assert live[f"127.0.0.1:{mesh.processes['ledger'][0].port}"] == "healthy"
    health = httpx.get(f"{mesh.gateway_url}/healthz", timeout=5)
    assert health.status_code == 200, health.text

    for process in mesh.processes["counter"]:
        process.kill()
    _wait_for(lambda: all("failed_active_hc" in flags for flags in _admin_health(mesh, "counter").values()),
              "Envoy's health check to mark both counter replicas unhealthy")
    health = httpx.get(f"{mesh.gateway_url}/healthz", timeout=5)
    assert health.status_code == 503, health.text
    assert health.json()["code"] == 14
