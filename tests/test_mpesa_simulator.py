"""The M-Pesa adapter against the Daraja simulator as a process (python -m simulators.mpesa) on 127.0.0.1:
initiate -> the STK callback reaches a loopback receiver, each behaviour knob, the status query, and C2B
(registerurl, validation then confirmation). No database, no mesh."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from services.payments.providers.base import (
    CallbackResult,
    Collection,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.mpesa import MpesaAdapter
from stack.processes import free_port
from tests.webhook_receiver import Answer, WebhookReceiver

REPO = Path(__file__).resolve().parent.parent
SIM_CREDENTIALS = {"consumer_key": "sim-mpesa-key", "consumer_secret": "sim-mpesa-secret", "passkey": "sim-passkey"}
SHORT_CODE = "174379"
WAIT_SECONDS = 15.0  # a hang guard for callbacks that should come; not a timing assertion


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("mpesa-sim") / "simulator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "simulators.mpesa", "--port", str(port)],
                                   cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/__sim/requests", timeout=1, trust_env=False).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"simulator did not start: {log_path.read_text()}") from None
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a "slow" handler still sleeping
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        yield client


@pytest.fixture
def adapter() -> MpesaAdapter:
    return MpesaAdapter()


def credentials(simulator: str, **secrets: str) -> ProviderCredentials:
    return ProviderCredentials(api_base_url=simulator, secrets={**SIM_CREDENTIALS, **secrets},
                               settings={"short_code": SHORT_CODE})


def new_phone() -> str:
    return f"2547{uuid.uuid4().int % 10**8:08d}"


def collection(receiver: WebhookReceiver, phone: str, amount: str = "150") -> tuple[Collection, str]:
    path = receiver.path()
    return Collection(payment_id=f"pay_{uuid.uuid4().hex[:8]}", amount=Decimal(amount), currency="KES", phone=phone,
                      account_reference="INV-000123", description="Sale",
                      callback_url=receiver.url(path)), path


def behave(simulator: str, phone: str, **behaviour) -> None:
    httpx.post(f"{simulator}/__sim/behaviour", json={"phone": phone, **behaviour}, timeout=5,
               trust_env=False).raise_for_status()


def sent_to(simulator: str, url: str) -> list[dict]:
    log = httpx.get(f"{simulator}/__sim/requests", timeout=5, trust_env=False).json()
    return [entry for entry in log["sent"] if entry["url"] == url]


async def settled(adapter, http, creds, checkout_id, payment) -> CallbackResult:
    """Query until the simulator has decided (bounded)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        result = await adapter.query_status(http, creds, checkout_id, payment)
        if result.status is not PaymentStatus.PENDING or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_confirmed_payment_calls_back_and_the_query_agrees(simulator, receiver, http, adapter):
    phone = new_phone()
    payment, path = collection(receiver, phone)
    creds = credentials(simulator)
    initiated = await adapter.initiate(http, creds, payment)
    assert initiated.provider_request_id.startswith("ws_CO_")
    [callback] = receiver.wait_for(1, path, timeout=WAIT_SECONDS)
    result = adapter.parse_callback("stk", callback.body, callback.headers)
    assert result.status is PaymentStatus.CONFIRMED
    assert result.provider_request_id == initiated.provider_request_id
    assert result.amount == Decimal("150") and result.phone == phone and result.provider_transaction_id
    assert result.extra["merchant_request_id"] == initiated.merchant_request_id
    queried = await settled(adapter, http, creds, initiated.provider_request_id, payment)
    assert queried.status is PaymentStatus.CONFIRMED and queried.result_code == "0"


@pytest.mark.parametrize(("outcome", "status", "code"), [
    ("cancel", PaymentStatus.CANCELLED, "1032"),
    ("timeout", PaymentStatus.EXPIRED, "1037"),
    ("fail", PaymentStatus.FAILED, "1"),
])
async def test_unsuccessful_outcomes(simulator, receiver, http, adapter, outcome, status, code):
    phone = new_phone()
    behave(simulator, phone, outcome=outcome, delay_seconds=0.1)
    payment, path = collection(receiver, phone)
    creds = credentials(simulator)
    initiated = await adapter.initiate(http, creds, payment)
    [callback] = receiver.wait_for(1, path, timeout=WAIT_SECONDS)
    result = adapter.parse_callback("stk", callback.body, callback.headers)
    assert (result.status, result.result_code, result.amount) == (status, code, None)
    assert "CallbackMetadata" not in json.loads(callback.body)["Body"]["stkCallback"]
    queried = await settled(adapter, http, creds, initiated.provider_request_id, payment)
    assert (queried.status, queried.result_code) == (status, code)


@pytest.mark.parametrize("mode", ["twice", "out_of_order"])
async def test_repeated_callbacks_carry_the_same_receipt(simulator, receiver, http, adapter, mode):
    phone = new_phone()
    behave(simulator, phone, callback=mode, delay_seconds=0.05)
    payment, path = collection(receiver, phone)
    await adapter.initiate(http, credentials(simulator), payment)
    callbacks = receiver.wait_for(2, path, timeout=WAIT_SECONDS)
    keys = {adapter.parse_callback("stk", c.body, c.headers).dedupe_key for c in callbacks}
    assert len(keys) == 1


async def test_a_callback_never_sent_is_settled_by_the_query(simulator, receiver, http, adapter):
    phone = new_phone()
    behave(simulator, phone, callback="never", delay_seconds=0.1)
    payment, path = collection(receiver, phone)
    creds = credentials(simulator)
    initiated = await adapter.initiate(http, creds, payment)
    queried = await settled(adapter, http, creds, initiated.provider_request_id, payment)
    assert queried.status is PaymentStatus.CONFIRMED
    assert receiver.requests(path) == [] and sent_to(simulator, payment.callback_url) == []


async def test_the_query_says_pending_until_the_customer_answers(simulator, receiver, http, adapter):
    phone = new_phone()
    behave(simulator, phone, delay_seconds=300)  # far beyond this test
    payment, _ = collection(receiver, phone)
    creds = credentials(simulator)
    initiated = await adapter.initiate(http, creds, payment)
    result = await adapter.query_status(http, creds, initiated.provider_request_id, payment)
    assert result.status is PaymentStatus.PENDING and result.result_code == "500.001.1001"


async def test_a_wrong_amount_reaches_the_callback(simulator, receiver, http, adapter):
    phone = new_phone()
    behave(simulator, phone, amount="149.50", delay_seconds=0.05)
    payment, path = collection(receiver, phone)
    await adapter.initiate(http, credentials(simulator), payment)
    [callback] = receiver.wait_for(1, path, timeout=WAIT_SECONDS)
    result = adapter.parse_callback("stk", callback.body, callback.headers)
    assert result.status is PaymentStatus.CONFIRMED and result.amount == Decimal("149.50")


async def test_behaviour_times_runs_out(simulator, receiver, http, adapter):
    phone = new_phone()
    behave(simulator, phone, outcome="fail", delay_seconds=0.05, times=1)
    first, first_path = collection(receiver, phone)
    second, second_path = collection(receiver, phone)
    await adapter.initiate(http, credentials(simulator), first)
    await adapter.initiate(http, credentials(simulator), second)
    [one] = receiver.wait_for(1, first_path, timeout=WAIT_SECONDS)
    [two] = receiver.wait_for(1, second_path, timeout=WAIT_SECONDS)
    assert adapter.parse_callback("stk", one.body, {}).status is PaymentStatus.FAILED
    assert adapter.parse_callback("stk", two.body, {}).status is PaymentStatus.CONFIRMED


async def test_initiation_error_is_retryable(simulator, receiver, http, adapter):
    phone = new_phone()
    behave(simulator, phone, initiate="error")
    payment, path = collection(receiver, phone)
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, credentials(simulator), payment)
    assert caught.value.retryable and "Internal Server Error" in caught.value.message


async def test_a_slow_provider_times_out_cleanly(simulator, receiver, adapter):
    phone = new_phone()
    behave(simulator, phone, initiate="slow")
    payment, _ = collection(receiver, phone)
    async with httpx.AsyncClient(timeout=1, trust_env=False) as quick:
        with pytest.raises(ProviderError) as caught:
            await adapter.initiate(quick, credentials(simulator), payment)
    assert caught.value.retryable and "in time" in caught.value.message


async def test_wrong_credentials_are_refused(simulator, receiver, http):
    payment, _ = collection(receiver, new_phone())
    with pytest.raises(ProviderError) as bad_secret:
        await MpesaAdapter().initiate(http, credentials(simulator, consumer_secret="not-the-secret"), payment)
    assert not bad_secret.value.retryable and "not-the-secret" not in bad_secret.value.message
    with pytest.raises(ProviderError) as bad_passkey:
        await MpesaAdapter().initiate(http, credentials(simulator, passkey="not-the-passkey"), payment)
    assert not bad_passkey.value.retryable and "Wrong credentials" in bad_passkey.value.message


async def test_one_token_serves_many_requests(simulator, receiver, http):
    adapter = MpesaAdapter()
    before = httpx.get(f"{simulator}/__sim/requests", timeout=5, trust_env=False).json()["received"]
    for _ in range(3):
        payment, _ = collection(receiver, new_phone())
        await adapter.initiate(http, credentials(simulator), payment)
    after = httpx.get(f"{simulator}/__sim/requests", timeout=5, trust_env=False).json()["received"]
    new = after[len(before):]
    assert [r["path"] for r in new].count("/oauth/v1/generate") == 1
    pushes = [json.loads(r["body"]) for r in new if r["path"] == "/mpesa/stkpush/v1/processrequest"]
    assert len(pushes) >= 3 and all(p["Password"] == "<redacted>" for p in pushes)
    assert all(r["headers"].get("Authorization") == "<redacted>" for r in new)


async def test_a_non_loopback_callback_url_is_refused(simulator, http, adapter):
    payment = Collection(payment_id="pay_x", amount=Decimal("10"), currency="KES", phone=new_phone(),
                         account_reference="INV-1", description="Sale", callback_url="https://example.com/cb")
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, credentials(simulator), payment)
    assert not caught.value.retryable and "CallBackURL" in caught.value.message


async def test_querying_an_unknown_request_is_an_error(simulator, receiver, http, adapter):
    payment, _ = collection(receiver, new_phone())
    with pytest.raises(ProviderError) as caught:
        await adapter.query_status(http, credentials(simulator), "ws_CO_000", payment)
    assert not caught.value.retryable and "CheckoutRequestID" in caught.value.message


# ---- C2B ---------------------------------------------------------------------------------------------

def c2b(simulator: str, **body) -> dict:
    answer = httpx.post(f"{simulator}/__sim/c2b", json=body, timeout=WAIT_SECONDS, trust_env=False)
    answer.raise_for_status()
    return answer.json()


def answer_json(adapter, kind: str, accepted: bool, reason: str = "") -> Answer:
    reply = adapter.callback_answer(kind, accepted, reason)
    return Answer(reply.status, reply.body.decode())  # the receiver labels it text/plain: Daraja reads the body


async def test_c2b_validation_then_confirmation(simulator, receiver, http, adapter):
    short_code = f"6{uuid.uuid4().int % 10**5:05d}"
    validation_path, confirmation_path = receiver.path(), receiver.path()
    creds = ProviderCredentials(api_base_url=simulator, secrets=SIM_CREDENTIALS, settings={"short_code": short_code})
    await adapter.register_c2b_urls(http, creds, validation_url=receiver.url(validation_path),
                                    confirmation_url=receiver.url(confirmation_path))
    receiver.script(validation_path, answer_json(adapter, "c2b_validation", True),
                    answer_json(adapter, "c2b_validation", False, "invalid_account"))
    receiver.script(confirmation_path, default=answer_json(adapter, "c2b_confirmation", True))
    phone = new_phone()

    accepted = c2b(simulator, short_code=short_code, bill_ref_number="FN-00042", amount="250", phone=phone)
    assert accepted["confirmed"] is True and accepted["validation_result_code"] == "0"
    assert accepted["confirmation_status"] == 200
    [validation] = receiver.requests(validation_path)
    [confirmation] = receiver.requests(confirmation_path)
    asked = adapter.parse_callback("c2b_validation", validation.body, validation.headers)
    paid = adapter.parse_callback("c2b_confirmation", confirmation.body, confirmation.headers)
    assert asked.status is PaymentStatus.PENDING and paid.status is PaymentStatus.CONFIRMED
    assert paid.bill_reference == "FN-00042" and paid.short_code == short_code
    assert paid.amount == Decimal("250.00") and paid.provider_transaction_id == accepted["trans_id"]
    assert phone not in confirmation.body.decode()  # the payer's number comes masked

    refused = c2b(simulator, short_code=short_code, bill_ref_number="nope", amount="10", phone=phone)
    assert refused["confirmed"] is False and refused["validation_result_code"] == "C2B00012"
    assert len(receiver.requests(validation_path)) == 2 and len(receiver.requests(confirmation_path)) == 1


def test_c2b_to_an_unregistered_short_code_is_a_404(simulator):
    answer = httpx.post(f"{simulator}/__sim/c2b", json={"short_code": "999999", "amount": "1",
                                                        "phone": new_phone()}, timeout=5, trust_env=False)
    assert answer.status_code == 404
