"""The Orange Money Web Payment adapter against Orange's documented payloads (httpx.MockTransport)."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qs

import httpx
import pytest

from services.payments.providers.base import (
    Collection,
    ForgedCallback,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.orange import (
    NOTIF_TOKEN_LOOKUP_KEY,
    ORDER_ID_MAX_LENGTH,
    OrangeMoneyAdapter,
    notif_token_lookup,
    orange_order_id,
)

BASE = "https://api.orange.com"
CREDENTIALS = ProviderCredentials(api_base_url=BASE,
                                  secrets={"authorization_header": "Basic Y2xpZW50OnNlY3JldA==",
                                           "merchant_key": "mk-123"},
                                  settings={})
COLLECTION = Collection(payment_id="0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6a", amount=Decimal("2500"),
                        currency="OUV", phone="22507000000", account_reference="INV-1",
                        description="Shop sale", callback_url="http://127.0.0.1:8080/v1/callbacks/orange/tok")
# The documented answers and notification (Orange Money Web Payment / "dev" API).
DOC_WEBPAYMENT_ANSWER = {"status": 201, "message": "OK", "pay_token": "87e5f3a4b1c2d3e4f5a6b7c8d9e0f1a2",
                         "payment_url": "https://webpayment-qualif.orange-money.com/payment/pay_token/87e5f3a4",
                         "notif_token": "dd497bda3b250e536186fc0663f32f40"}
DOC_NOTIFICATION = {"status": "SUCCESS", "notif_token": "dd497bda3b250e536186fc0663f32f40",
                    "txnid": "MP150709.1341.A00073"}


def handler_with(status_answer: dict | None = None):
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if request.url.path == "/oauth/v3/token":
            return httpx.Response(200, json={"token_type": "Bearer", "access_token": "om-token",
                                             "expires_in": "7776000"})
        if request.url.path.endswith("/webpayment"):
            return httpx.Response(201, json=DOC_WEBPAYMENT_ANSWER)
        return httpx.Response(201, json=status_answer or {})

    return handle, requests


async def test_initiate_gets_a_token_then_opens_a_web_payment():
    handle, requests = handler_with()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        initiated = await OrangeMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    token_request, payment_request = requests
    assert token_request.url == f"{BASE}/oauth/v3/token"
    assert token_request.headers["Authorization"] == "Basic Y2xpZW50OnNlY3JldA=="
    assert parse_qs(token_request.content.decode()) == {"grant_type": ["client_credentials"]}
    assert payment_request.url == f"{BASE}/orange-money-webpay/dev/v1/webpayment"
    assert payment_request.headers["Authorization"] == "Bearer om-token"
    body = json.loads(payment_request.content)
    assert body == {"merchant_key": "mk-123", "currency": "OUV", "order_id": orange_order_id(COLLECTION.payment_id),
                    "amount": 2500, "return_url": "http://127.0.0.1:8080/", "cancel_url": "http://127.0.0.1:8080/",
                    "notif_url": COLLECTION.callback_url, "lang": "fr", "reference": "Shop sale"}
    assert initiated.provider_request_id == DOC_WEBPAYMENT_ANSWER["pay_token"]
    assert initiated.payment_url == DOC_WEBPAYMENT_ANSWER["payment_url"]
    assert initiated.callback_secret == DOC_WEBPAYMENT_ANSWER["notif_token"]


def test_order_id_fits_orange_limit_and_is_stable():
    order_id = orange_order_id(COLLECTION.payment_id)
    assert len(order_id) <= ORDER_ID_MAX_LENGTH and order_id.isalnum()
    assert order_id == orange_order_id(COLLECTION.payment_id)
    assert order_id != orange_order_id("0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6b")
    assert orange_order_id("pay-42") == "pay42"


async def test_decimal_amounts_are_refused_before_any_call():
    handle, requests = handler_with()
    odd = Collection(**{**COLLECTION.__dict__, "amount": Decimal("10.50")})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ProviderError) as error:
            await OrangeMoneyAdapter().initiate(http, CREDENTIALS, odd)
    assert not error.value.retryable and requests == []


@pytest.mark.parametrize("status, retryable", [(500, True), (400, False)])
async def test_payment_errors_become_provider_errors(status, retryable):
    def handle(request):
        if request.url.path == "/oauth/v3/token":
            return httpx.Response(200, json={"access_token": "om-token", "expires_in": "7776000"})
        return httpx.Response(status, json={"message": "Invalid body field"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ProviderError) as error:
            await OrangeMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert error.value.retryable is retryable and "mk-123" not in error.value.message


async def test_refused_authorization_header_is_not_retryable():
    async with httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(401, json={"error": "invalid_client"}))) as http:
        with pytest.raises(ProviderError) as error:
            await OrangeMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert not error.value.retryable


def test_parse_documented_notification_gives_the_claim_and_its_lookup_key():
    result = OrangeMoneyAdapter().parse_callback("notification", json.dumps(DOC_NOTIFICATION).encode(), {})
    assert result.status is PaymentStatus.CONFIRMED and result.result_code == "SUCCESS"
    assert result.provider_transaction_id == "MP150709.1341.A00073"
    assert result.provider_request_id == ""  # a notification carries no pay_token
    assert result.extra[NOTIF_TOKEN_LOOKUP_KEY] == notif_token_lookup(DOC_NOTIFICATION["notif_token"])
    assert DOC_NOTIFICATION["notif_token"] not in json.dumps(dict(result.extra))


@pytest.mark.parametrize("body", [
    b"nope", b"[]", json.dumps({"status": "SUCCESS"}).encode(),
    json.dumps({"status": "WHATEVER", "notif_token": "x"}).encode(),
    json.dumps({"status": "SUCCESS", "notif_token": "x", "txnid": 7}).encode(),
])
def test_malformed_notifications_are_refused(body):
    with pytest.raises(MalformedCallback):
        OrangeMoneyAdapter().parse_callback("notification", body, {})


def test_notif_token_is_checked_against_the_stored_one():
    adapter = OrangeMoneyAdapter()
    body = json.dumps(DOC_NOTIFICATION).encode()
    adapter.authenticate_callback("notification", body, {}, CREDENTIALS, DOC_NOTIFICATION["notif_token"])
    for stored in ("dd497bda3b250e536186fc0663f32f41", ""):
        with pytest.raises(ForgedCallback):
            adapter.authenticate_callback("notification", body, {}, CREDENTIALS, stored)


@pytest.mark.parametrize("name, status, receipt", [
    ("SUCCESS", PaymentStatus.CONFIRMED, "MP150709.1341.A00073"), ("FAILED", PaymentStatus.FAILED, ""),
    ("EXPIRED", PaymentStatus.EXPIRED, ""), ("PENDING", PaymentStatus.PENDING, ""),
    ("INITIATED", PaymentStatus.PENDING, ""),
])
async def test_query_status_asks_transactionstatus(name, status, receipt):
    handle, requests = handler_with({"status": name, "order_id": orange_order_id(COLLECTION.payment_id),
                                     "txnid": "MP150709.1341.A00073"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        result = await OrangeMoneyAdapter().query_status(http, CREDENTIALS, "pay-token-1", COLLECTION)
    status_request = requests[-1]
    assert status_request.url == f"{BASE}/orange-money-webpay/dev/v1/transactionstatus"
    assert json.loads(status_request.content) == {"order_id": orange_order_id(COLLECTION.payment_id),
                                                  "amount": 2500, "pay_token": "pay-token-1"}
    assert result.status is status and result.provider_transaction_id == receipt
    assert result.provider_request_id == "pay-token-1" and result.result_code == name


async def test_unknown_status_is_a_retryable_error():
    handle, _ = handler_with({"status": "???"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        with pytest.raises(ProviderError) as error:
            await OrangeMoneyAdapter().query_status(http, CREDENTIALS, "pay-token-1", COLLECTION)
    assert error.value.retryable


def test_callback_answers():
    adapter = OrangeMoneyAdapter()
    assert adapter.callback_answer("notification", True).status == 200
    assert adapter.callback_answer("notification", False, "malformed").status == 400
    assert adapter.callback_answer("notification", False, "forged_notif_token").status == 403


async def test_a_refused_token_is_renewed_once_then_given_up():
    issued: list[str] = []
    accepted = {"token": "om-2"}

    def handle(request):
        if request.url.path == "/oauth/v3/token":
            issued.append(f"om-{len(issued) + 1}")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": "7776000"})
        if request.headers["Authorization"] != f"Bearer {accepted['token']}":
            return httpx.Response(401, json={"code": 42, "message": "Expired credentials"})
        return httpx.Response(201, json=DOC_WEBPAYMENT_ANSWER)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        await OrangeMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
        assert issued == ["om-1", "om-2"]
        accepted["token"] = "never"
        with pytest.raises(ProviderError) as error:
            await OrangeMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert not error.value.retryable and issued == ["om-1", "om-2", "om-3", "om-4"]
