"""Overload is refused fast, not queued: past the ledger's in-flight bound a seal is answered 503 with
Retry-After and a JSON body, before any number is taken or anything written; the same sale sent again
later is sealed once.

A real mesh whose ledger admits only 2 seals at once and lets none wait (FISCAL_MAX_INFLIGHT_SEALS=2,
FISCAL_MAX_QUEUED_SEALS=0), hit by many tills at once. Answers are counted; nothing is timed."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import httpx
import pytest
import sqlalchemy as sa

from tests.harness import _with_store, auth, ledger_rows, numbers_by_outlet, provision, run, sale, verify_chains

UNAVAILABLE = 14
BURST_ROUNDS = 6  # bounded: a burst is 48 sales at once; stop at the first round that saw a refusal


@pytest.fixture(scope="module")
def tight_mesh(start_mesh):
    mesh = start_mesh(service_env={"ledger": {"FISCAL_MAX_INFLIGHT_SEALS": "2", "FISCAL_MAX_QUEUED_SEALS": "0",
                                              "FISCAL_RETRY_AFTER_SECONDS": "2"}})
    yield mesh
    mesh.stop()


async def _burst(gateway_url: str, merchant: dict) -> list[tuple[dict, str, int, dict, dict]]:
    """Every terminal of every outlet sends one sale at the same moment: (sale, key, status, headers, body)."""
    sales = [(sale(outlet, terminal, merchant["cashiers"][outlet["id"]][0]), merchant["pos_keys"][outlet["id"]])
             for outlet in merchant["outlets"] for terminal in merchant["terminals"][outlet["id"]]]
    start = asyncio.Event()
    async with aiohttp.ClientSession(base_url=gateway_url, connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def send(body: dict, key: str):
            await start.wait()
            async with session.post("/v1/invoices", json=body, headers=auth(key)) as answer:
                return body, key, answer.status, dict(answer.headers), json.loads(await answer.text())

        tasks = [asyncio.create_task(send(body, key)) for body, key in sales]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))


def _sealed_client_ids(mesh, merchant_id: str) -> list[str]:
    async def fetch(_, engine):
        async with engine.connect() as conn:
            return [row[0] for row in (await conn.execute(sa.text(
                "SELECT client_invoice_id FROM ledger.invoices WHERE merchant_id = :m"), {"m": merchant_id})).all()]
    return run(_with_store(mesh.database_url, fetch))


def test_a_burst_past_the_bound_is_answered_503_with_retry_after_and_nothing_half_done(tight_mesh):
    mesh = tight_mesh
    merchant = provision(mesh, outlets=12, terminals=4)
    merchant_id = merchant["merchant"]["id"]
    answers: list = []
    for _ in range(BURST_ROUNDS):
        answers += run(_burst(mesh.gateway_url, merchant))
        if any(status == 503 for _, _, status, _, _ in answers):
            break
    statuses = [status for _, _, status, _, _ in answers]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    refused = [(body, key, headers, answer) for body, key, status, headers, answer in answers if status == 503]
    sealed = [answer for _, _, status, _, answer in answers if status == 200]
    assert refused, f"no refusal in {len(answers)} answers: the bound of 2 seals at once was never reached"
    assert sealed, "no sale sealed during the burst"

    for _, _, headers, answer in refused:
        # The HTTP answer a POS SDK retries: 503, Retry-After in seconds, and the usual JSON error body.
        retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after")
        assert retry_after == "2", headers
        assert answer["code"] == UNAVAILABLE and "overloaded" in answer["message"], answer
        kinds = {detail.get("@type", "").rsplit("/", 1)[-1]: detail for detail in answer.get("details", [])}
        assert kinds["google.rpc.RetryInfo"]["retry_delay"] == "2s", answer
        assert kinds["google.rpc.ErrorInfo"]["reason"] == "OVERLOADED", answer

    # Nothing half-done: a refused sale took no number and wrote nothing; every 200 is one invoice.
    in_ledger = _sealed_client_ids(mesh, merchant_id)
    assert sorted(in_ledger) == sorted(a["client_invoice_id"] for a in sealed)
    assert not {body["client_invoice_id"] for body, _, _, _ in refused} & set(in_ledger)
    assert ledger_rows(mesh, merchant_id) == {"invoices": len(sealed), "outbox": len(sealed)}
    for outlet_id, numbers in numbers_by_outlet(mesh, merchant_id).items():
        assert numbers == list(range(1, len(numbers) + 1)), (outlet_id, numbers)

    # Sent again (same body, one at a time, as the SDK would after Retry-After), each refused sale seals.
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        for body, key, _, _ in refused:
            answer = client.post("/v1/invoices", json=body, headers=auth(key))
            assert answer.status_code == 200, answer.text
            assert answer.json()["client_invoice_id"] == body["client_invoice_id"]
    in_ledger = _sealed_client_ids(mesh, merchant_id)
    assert len(in_ledger) == len(set(in_ledger)) == len(answers)
    assert ledger_rows(mesh, merchant_id) == {"invoices": len(answers), "outbox": len(answers)}
    for outlet in merchant["outlets"]:
        checks = verify_chains(mesh, outlet["id"])
        assert checks and all(c.ok for c in checks), [c.problems[:5] for c in checks]


def test_envoy_own_503_carries_retry_after_too(tight_mesh):
    """No ledger to send to (stopped): Envoy answers 503 itself, with Retry-After and a JSON body."""
    mesh = tight_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    ledger = mesh.processes["ledger"][0]
    ledger.stop()
    try:
        answer = httpx.post(f"{mesh.gateway_url}/v1/invoices", timeout=30, headers=auth(merchant["pos_keys"][outlet["id"]]),
                            json=sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]))
    finally:
        mesh.restart(ledger)
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("retry-after") == "1", dict(answer.headers)
    assert answer.json()["code"] == UNAVAILABLE, answer.text
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 0, "outbox": 0}


# --- the gate itself (no mesh) ----------------------------------------------------------------------

def test_the_gate_admits_up_to_its_limit_then_queues_in_order_then_refuses():
    from services.runtime.admission import Gate, Overloaded

    async def scenario():
        gate = Gate(limit=1, max_queued=1, queue_seconds=60)
        await gate.acquire()                       # the one slot
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)                     # it waits in the queue
        with pytest.raises(Overloaded):
            await gate.acquire()                   # the queue is full: refused at once
        gate.release()                             # the slot passes to the waiter
        await second
        assert (gate.inflight, len(gate.waiters), gate.admitted, gate.refused) == (1, 0, 2, 1)
        gate.release()
        assert gate.inflight == 0

    run(scenario())


def test_a_waiter_past_its_queue_budget_is_refused_and_holds_no_slot():
    from services.runtime.admission import Gate, Overloaded

    async def scenario():
        gate = Gate(limit=1, max_queued=5, queue_seconds=0.01)
        await gate.acquire()
        with pytest.raises(Overloaded):
            await gate.acquire()                   # nobody releases: the budget runs out
        assert (gate.inflight, gate.waiters) == (1, [])
        gate.release()
        await gate.acquire()                       # free again
        assert gate.inflight == 1

    run(scenario())


# --- a seal that hangs: Envoy's seal deadline answers for it ---------------------------------------

@pytest.fixture(scope="module")
def hanging_mesh(start_mesh, tmp_path_factory):
    """Each new seal, once inserted, waits for ever (the test hook): only Envoy's deadline answers."""
    marker = tmp_path_factory.mktemp("hang") / "paused"
    mesh = start_mesh(service_env={"ledger": {"FISCAL_TEST_PAUSE_AFTER_INSERT": str(marker)}})
    yield mesh, marker
    mesh.stop()


def test_a_seal_past_envoys_deadline_is_answered_503_and_a_retry_returns_the_invoice(hanging_mesh):
    mesh, marker = hanging_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0])
    headers = auth(merchant["pos_keys"][outlet["id"]])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        answer = client.post("/v1/invoices", json=body, headers=headers)
        # Not a hang and not a bare 504: the SDK's retryable answer, with its hint and a JSON body.
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("retry-after") == "1", dict(answer.headers)
        assert answer.json()["code"] == UNAVAILABLE and "same client_invoice_id" in answer.json()["message"]
        assert marker.read_text() == body["client_invoice_id"]  # it was the seal's pause that timed out
        # The sale was written before the deadline: the identical retry gets that invoice, not a second.
        again = client.post("/v1/invoices", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["client_invoice_id"] == body["client_invoice_id"]
    assert ledger_rows(mesh, merchant["merchant"]["id"]) == {"invoices": 1, "outbox": 1}


def test_an_outlet_whose_queue_would_outlast_the_budget_is_refused_and_others_are_not():
    from services.runtime.admission import OutletPace, Overloaded

    now = [100.0]
    pace = OutletPace(max_wait=0.7, clock=lambda: now[0])
    for _ in range(4):
        pace.admit("busy")          # no estimate yet: admitted
    for _ in range(2):              # completions 0.3 s apart while the outlet was busy: its pace
        now[0] += 0.3
        pace.done("busy", sealed=True)
    pace.admit("busy")              # 2 ahead x 0.3 s <= 0.7 s: admitted
    assert pace.state["busy"][0] == 3
    # 3 ahead x 0.3 s > 0.7 s: refused at once; another outlet is admitted.
    with pytest.raises(Overloaded):
        pace.admit("busy")
    pace.admit("quiet")
    pace.done("busy", sealed=False)  # a failure says nothing of the pace
    assert pace.state["busy"][0] == 2
    now[0] += pace.STALE_SECONDS     # an old estimate is not trusted: admitted
    pace.admit("busy")
    for _ in range(3):
        pace.done("busy", sealed=True)
    assert "busy" not in pace.state   # idle outlets are forgotten
