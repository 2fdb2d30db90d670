"""The Airtel Money and Orange Money adapters against their simulators, each a real process on a free
loopback port: initiate -> the provider's callback (to a tiny loopback server here) -> query_status, and
every knob of the control API."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from services.payments.providers.airtel import AirtelMoneyAdapter, airtel_transaction_id
from services.payments.providers.base import (
    Collection,
    ForgedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.orange import NOTIF_TOKEN_LOOKUP_KEY, OrangeMoneyAdapter, notif_token_lookup

ROOT = Path(__file__).resolve().parents[1]
HASH_SECRET = "sim-airtel-hash-key"
WAIT_SECONDS = 15.0  # how long to wait for something that should happen (a hang guard, not a timing claim)
QUIET_SECONDS = 0.5  # how long nothing must arrive when a callback is switched off


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", f"simulators.{name}", "--port", str(port), *extra],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"simulator {name} exited: {process.stdout.read() if process.stdout else ''}")
        try:
            httpx.get(url + "/__sim/requests", timeout=1.0, trust_env=False)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"simulator {name} did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def airtel_simulator() -> Iterator[str]:
    process, url = start_simulator("airtel", "--hash-secret", HASH_SECRET)
    yield url
    stop(process)


@pytest.fixture(scope="module")
def orange_simulator() -> Iterator[str]:
    process, url = start_simulator("orange")
    yield url
    stop(process)


class Receiver:
    """Our side of the callbacks: records every POST and answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.read()))
        return web.json_response({"status": "accepted"})

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]

    async def wait_for(self, count: int, predicate=lambda body: True) -> list[dict]:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            matching = [body for body in self.bodies() if predicate(body)]
            if len(matching) >= count:
                return matching
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} callbacks, got {self.bodies()}")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target.url = f"http://127.0.0.1:{port}"
    yield target
    await runner.cleanup()


async def sim(url: str, path: str, body: dict | None = None) -> dict:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as control:
        answer = await (control.post(url + path, json=body or {}) if path != "/__sim/requests"
                        else control.get(url + path))
    answer.raise_for_status()
    return answer.json()


def http_client(timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=timeout)


async def settled(adapter, credentials, request_id: str, collection: Collection):
    deadline = time.monotonic() + WAIT_SECONDS
    async with http_client() as http:
        while time.monotonic() < deadline:
            result = await adapter.query_status(http, credentials, request_id, collection)
            if result.status is not PaymentStatus.PENDING:
                return result
            await asyncio.sleep(0.02)
    raise AssertionError("the simulator never settled the transaction")


# -- Airtel Money ------------------------------------------------------------------------------------

def airtel_credentials(url: str, **secrets: str) -> ProviderCredentials:
    return ProviderCredentials(api_base_url=url, settings={"country": "UG"},
                               secrets={"client_id": "sim-airtel-id", "client_secret": "sim-airtel-secret",
                                        "callback_hash_secret": HASH_SECRET, **secrets})


def airtel_collection(receiver: Receiver, payment_id: str, phone: str = "256701000001",
                      amount: str = "1500") -> Collection:
    return Collection(payment_id=payment_id, amount=Decimal(amount), currency="UGX", phone=phone,
                      account_reference="INV-1", description="Sale",
                      callback_url=f"{receiver.url}/v1/callbacks/airtel/route-token")


async def test_airtel_initiate_callback_with_hash_then_query(airtel_simulator, receiver):
    await sim(airtel_simulator, "/__sim/reset")
    adapter, credentials = AirtelMoneyAdapter(), airtel_credentials(airtel_simulator)
    collection = airtel_collection(receiver, "airtel-pay-1")
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
    assert initiated.provider_request_id == airtel_transaction_id("airtel-pay-1")
    await receiver.wait_for(1)
    [(path, body)] = receiver.received
    assert path == "/v1/callbacks/airtel/route-token"
    adapter.authenticate_callback("notification", body, {}, credentials, "")
    claim = adapter.parse_callback("notification", body, {})
    assert claim.status is PaymentStatus.CONFIRMED and claim.provider_request_id == initiated.provider_request_id
    assert claim.provider_transaction_id.startswith("MP")
    with pytest.raises(ForgedCallback):
        adapter.authenticate_callback("notification", body, {},
                                      airtel_credentials(airtel_simulator, callback_hash_secret="wrong"), "")
    status = await settled(adapter, credentials, initiated.provider_request_id, collection)
    assert status.status is PaymentStatus.CONFIRMED
    assert status.provider_transaction_id == claim.provider_transaction_id
    log = await sim(airtel_simulator, "/__sim/requests")
    collect = next(r for r in log["received"] if r["path"] == "/merchant/v1/payments/")
    assert collect["headers"]["Authorization"] == "<redacted>"
    assert json.loads(collect["body"])["subscriber"]["msisdn"] == "701000001"
    assert log["sent"][0]["status"] == 200


@pytest.mark.parametrize("outcome", ["fail", "cancel", "timeout"])
async def test_airtel_unsuccessful_outcomes_are_tf(airtel_simulator, receiver, outcome):
    await sim(airtel_simulator, "/__sim/reset")
    phone = "256701000002"
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": phone, "outcome": outcome, "delay_seconds": 0.05})
    adapter, credentials = AirtelMoneyAdapter(), airtel_credentials(airtel_simulator)
    collection = airtel_collection(receiver, f"airtel-{outcome}", phone)
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
    [body] = await receiver.wait_for(1)
    claim = adapter.parse_callback("notification", json.dumps(body).encode(), {})
    assert claim.status is PaymentStatus.FAILED and claim.result_code == "TF"
    assert (await settled(adapter, credentials, initiated.provider_request_id, collection)).status \
        is PaymentStatus.FAILED


@pytest.mark.parametrize("mode, count", [("twice", 2), ("out_of_order", 2), ("send", 1)])
async def test_airtel_callback_modes(airtel_simulator, receiver, mode, count):
    await sim(airtel_simulator, "/__sim/reset")
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": "*", "callback": mode, "delay_seconds": 0.05})
    async with http_client() as http:
        initiated = await AirtelMoneyAdapter().initiate(http, airtel_credentials(airtel_simulator),
                                                        airtel_collection(receiver, f"airtel-{mode}"))
    bodies = await receiver.wait_for(count)
    assert {body["transaction"]["id"] for body in bodies} == {initiated.provider_request_id}
    assert len({body["transaction"]["airtel_money_id"] for body in bodies}) == 1  # one receipt: dedupable
    await asyncio.sleep(QUIET_SECONDS)
    assert len(receiver.received) == count


async def test_airtel_callback_never_is_settled_by_the_enquiry(airtel_simulator, receiver):
    await sim(airtel_simulator, "/__sim/reset")
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": "*", "callback": "never", "delay_seconds": 0.05})
    adapter, credentials = AirtelMoneyAdapter(), airtel_credentials(airtel_simulator)
    collection = airtel_collection(receiver, "airtel-never")
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
        first = await adapter.query_status(http, credentials, initiated.provider_request_id, collection)
    assert first.status in (PaymentStatus.PENDING, PaymentStatus.CONFIRMED)
    assert (await settled(adapter, credentials, initiated.provider_request_id, collection)).status \
        is PaymentStatus.CONFIRMED
    await asyncio.sleep(QUIET_SECONDS)
    assert receiver.received == []


async def test_airtel_amount_override_shows_in_the_message(airtel_simulator, receiver):
    await sim(airtel_simulator, "/__sim/reset")
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": "*", "amount": "999", "delay_seconds": 0.05})
    async with http_client() as http:
        await AirtelMoneyAdapter().initiate(http, airtel_credentials(airtel_simulator),
                                            airtel_collection(receiver, "airtel-amount"))
    [body] = await receiver.wait_for(1)
    assert "UGX 999" in body["transaction"]["message"]


async def test_airtel_initiate_error_slow_and_bad_credentials(airtel_simulator, receiver):
    await sim(airtel_simulator, "/__sim/reset")
    adapter = AirtelMoneyAdapter()
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": "*", "initiate": "error", "times": 1})
    async with http_client() as http:
        with pytest.raises(ProviderError) as error:
            await adapter.initiate(http, airtel_credentials(airtel_simulator), airtel_collection(receiver, "a-err"))
    assert error.value.retryable
    await sim(airtel_simulator, "/__sim/behaviour", {"phone": "*", "initiate": "slow", "times": 1})
    async with http_client(timeout=0.5) as http:
        with pytest.raises(ProviderError) as slow:
            await adapter.initiate(http, airtel_credentials(airtel_simulator), airtel_collection(receiver, "a-slow"))
    assert slow.value.retryable and "in time" in slow.value.message
    async with http_client() as http:
        with pytest.raises(ProviderError) as refused:
            await AirtelMoneyAdapter().initiate(http, airtel_credentials(airtel_simulator, client_secret="nope"),
                                                airtel_collection(receiver, "a-cred"))
    assert not refused.value.retryable
    # After "times": 1 the default is back: the next initiation works.
    async with http_client() as http:
        await adapter.initiate(http, airtel_credentials(airtel_simulator), airtel_collection(receiver, "a-ok"))


async def test_airtel_registered_callback_url_when_no_header(airtel_simulator, receiver):
    """Airtel calls the URL registered on the app: without our header the simulator uses that one."""
    await sim(airtel_simulator, "/__sim/reset")
    await sim(airtel_simulator, "/__sim/airtel/callback_url",
              {"client_id": "sim-airtel-id", "url": f"{receiver.url}/registered"})
    async with http_client() as http:
        token = (await http.post(f"{airtel_simulator}/auth/oauth2/token",
                                 json={"client_id": "sim-airtel-id", "client_secret": "sim-airtel-secret",
                                       "grant_type": "client_credentials"})).json()["access_token"]
        answer = await http.post(f"{airtel_simulator}/merchant/v1/payments/",
                                 headers={"Authorization": f"Bearer {token}", "X-Country": "UG", "X-Currency": "UGX"},
                                 json={"reference": "r", "subscriber": {"country": "UG", "currency": "UGX",
                                                                        "msisdn": "701000009"},
                                       "transaction": {"amount": 10, "country": "UG", "currency": "UGX",
                                                       "id": "RAW1"}})
    assert answer.json()["status"]["success"] is True
    await receiver.wait_for(1)
    assert receiver.received[0][0] == "/registered"
    async with http_client() as http:
        refused = await http.post(f"{airtel_simulator}/__sim/airtel/callback_url",
                                  json={"client_id": "x", "url": "http://10.0.0.1/callback"})
    assert refused.status_code == 400


# -- Orange Money ------------------------------------------------------------------------------------

def orange_credentials(url: str, **secrets: str) -> ProviderCredentials:
    return ProviderCredentials(api_base_url=url, settings={},
                               secrets={"authorization_header": "Basic c2ltLW9yYW5nZQ==",
                                        "merchant_key": "sim-orange-merchant", **secrets})


def orange_collection(receiver: Receiver, payment_id: str, amount: str = "2500") -> Collection:
    return Collection(payment_id=payment_id, amount=Decimal(amount), currency="OUV", phone="22507000001",
                      account_reference="INV-1", description="Sale",
                      callback_url=f"{receiver.url}/v1/callbacks/orange/route-token")


async def test_orange_initiate_notification_then_confirm_with_status(orange_simulator, receiver):
    await sim(orange_simulator, "/__sim/reset")
    adapter, credentials = OrangeMoneyAdapter(), orange_credentials(orange_simulator)
    collection = orange_collection(receiver, "orange-pay-1")
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
        assert (await http.get(initiated.payment_url)).status_code == 200
    assert initiated.provider_request_id and initiated.callback_secret
    [body] = await receiver.wait_for(1)
    raw = json.dumps(body).encode()
    assert receiver.received[0][0] == "/v1/callbacks/orange/route-token"
    claim = adapter.parse_callback("notification", raw, {})
    assert claim.extra[NOTIF_TOKEN_LOOKUP_KEY] == notif_token_lookup(initiated.callback_secret)
    adapter.authenticate_callback("notification", raw, {}, credentials, initiated.callback_secret)
    with pytest.raises(ForgedCallback):
        adapter.authenticate_callback("notification", raw, {}, credentials, "0" * 32)
    async with http_client() as http:
        confirmed = await adapter.query_status(http, credentials, initiated.provider_request_id, collection)
    assert confirmed.status is PaymentStatus.CONFIRMED and claim.status is PaymentStatus.CONFIRMED
    assert confirmed.provider_transaction_id == claim.provider_transaction_id != ""
    log = await sim(orange_simulator, "/__sim/requests")
    assert all(r["headers"].get("Authorization") in (None, "<redacted>") for r in log["received"])


@pytest.mark.parametrize("outcome, status", [("fail", PaymentStatus.FAILED), ("cancel", PaymentStatus.FAILED),
                                             ("timeout", PaymentStatus.EXPIRED)])
async def test_orange_unsuccessful_outcomes(orange_simulator, receiver, outcome, status):
    await sim(orange_simulator, "/__sim/reset")
    await sim(orange_simulator, "/__sim/behaviour", {"phone": "*", "outcome": outcome, "delay_seconds": 0.05})
    adapter, credentials = OrangeMoneyAdapter(), orange_credentials(orange_simulator)
    collection = orange_collection(receiver, f"orange-{outcome}")
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
    [body] = await receiver.wait_for(1)
    assert adapter.parse_callback("notification", json.dumps(body).encode(), {}).status is status
    result = await settled(adapter, credentials, initiated.provider_request_id, collection)
    assert result.status is status
    if outcome == "cancel":
        assert "cancel" in result.reason


@pytest.mark.parametrize("mode, count", [("twice", 2), ("out_of_order", 2)])
async def test_orange_notification_modes(orange_simulator, receiver, mode, count):
    await sim(orange_simulator, "/__sim/reset")
    await sim(orange_simulator, "/__sim/behaviour", {"phone": "*", "callback": mode, "delay_seconds": 0.05})
    async with http_client() as http:
        initiated = await OrangeMoneyAdapter().initiate(http, orange_credentials(orange_simulator),
                                                        orange_collection(receiver, f"orange-{mode}"))
    bodies = await receiver.wait_for(count)
    assert {body["notif_token"] for body in bodies} == {initiated.callback_secret}
    assert len({body["txnid"] for body in bodies}) == 1


async def test_orange_never_notified_is_settled_by_transactionstatus(orange_simulator, receiver):
    await sim(orange_simulator, "/__sim/reset")
    await sim(orange_simulator, "/__sim/behaviour", {"phone": "*", "callback": "never", "delay_seconds": 0.05})
    adapter, credentials = OrangeMoneyAdapter(), orange_credentials(orange_simulator)
    collection = orange_collection(receiver, "orange-never")
    async with http_client() as http:
        initiated = await adapter.initiate(http, credentials, collection)
    assert (await settled(adapter, credentials, initiated.provider_request_id, collection)).status \
        is PaymentStatus.CONFIRMED
    await asyncio.sleep(QUIET_SECONDS)
    assert receiver.received == []


async def test_orange_behaviour_by_order_id(orange_simulator, receiver):
    from services.payments.providers.orange import orange_order_id

    await sim(orange_simulator, "/__sim/reset")
    await sim(orange_simulator, "/__sim/behaviour",
              {"phone": orange_order_id("orange-by-order"), "outcome": "fail", "delay_seconds": 0.05})
    async with http_client() as http:
        await OrangeMoneyAdapter().initiate(http, orange_credentials(orange_simulator),
                                            orange_collection(receiver, "orange-by-order"))
    [body] = await receiver.wait_for(1)
    assert body["status"] == "FAILED"


async def test_orange_initiate_error_slow_and_bad_credentials(orange_simulator, receiver):
    await sim(orange_simulator, "/__sim/reset")
    adapter = OrangeMoneyAdapter()
    await sim(orange_simulator, "/__sim/behaviour", {"phone": "*", "initiate": "error", "times": 1})
    async with http_client() as http:
        with pytest.raises(ProviderError) as error:
            await adapter.initiate(http, orange_credentials(orange_simulator), orange_collection(receiver, "o-err"))
    assert error.value.retryable
    await sim(orange_simulator, "/__sim/behaviour", {"phone": "*", "initiate": "slow", "times": 1})
    async with http_client(timeout=0.5) as http:
        with pytest.raises(ProviderError) as slow:
            await adapter.initiate(http, orange_credentials(orange_simulator), orange_collection(receiver, "o-slow"))
    assert slow.value.retryable
    async with http_client() as http:
        with pytest.raises(ProviderError) as wrong_key:
            await adapter.initiate(http, orange_credentials(orange_simulator, merchant_key="nope"),
                                   orange_collection(receiver, "o-key"))
        with pytest.raises(ProviderError) as wrong_header:
            await OrangeMoneyAdapter().initiate(
                http, orange_credentials(orange_simulator, authorization_header="Basic bm9wZQ=="),
                orange_collection(receiver, "o-hdr"))
    assert not wrong_key.value.retryable and not wrong_header.value.retryable
