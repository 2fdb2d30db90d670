"""The Airtel Money adapter against Airtel's documented payloads (through httpx.MockTransport: no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal

import httpx
import pytest

from services.payments.providers.airtel import (
    CALLBACK_URL_HEADER,
    TRANSACTION_ID_MAX_LENGTH,
    AirtelMoneyAdapter,
    airtel_transaction_id,
    callback_hash,
    national_msisdn,
)
from services.payments.providers.base import (
    Collection,
    ForgedCallback,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)

BASE = "https://openapiuat.airtel.africa"
CREDENTIALS = ProviderCredentials(api_base_url=BASE,
                                  secrets={"client_id": "cid", "client_secret": "csecret"},
                                  settings={"country": "UG"})
HASHED = ProviderCredentials(api_base_url=BASE,
                             secrets={"client_id": "cid", "client_secret": "csecret",
                                      "callback_hash_secret": "private-key"},
                             settings={"country": "UG"})
COLLECTION = Collection(payment_id="0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6a", amount=Decimal("1000"),
                        currency="UGX", phone="256712345678", account_reference="INV-1",
                        description="Shop sale", callback_url="http://127.0.0.1:8080/v1/callbacks/airtel/tok")

# The documented callback (Collection APIs, "Callback"): transaction id/message/status_code/airtel_money_id.
DOC_CALLBACK_SUCCESS = {"transaction": {"id": "BBZMiscxy", "message": "Paid UGX 5,000 to TECHNOLOGIES LIMITED "
                                        "Charge UGX 140, Trans ID MP210603.1234.L06941.",
                                        "status_code": "TS", "airtel_money_id": "MP210603.1234.L06941"}}
DOC_CALLBACK_FAILED = {"transaction": {"id": "BBZMiscxy", "message": "Transaction failed", "status_code": "TF",
                                       "airtel_money_id": ""}}


def token_answer() -> httpx.Response:
    return httpx.Response(200, json={"access_token": "tok-1", "expires_in": "180", "token_type": "bearer"})


class Recorder:
    def __init__(self, handler):
        self.requests: list[httpx.Request] = []
        self.handler = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def client(handler) -> tuple[httpx.AsyncClient, Recorder]:
    recorder = Recorder(handler)
    return httpx.AsyncClient(transport=httpx.MockTransport(recorder), timeout=5), recorder


def collection_ok(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/auth/oauth2/token":
        return token_answer()
    body = json.loads(request.content)
    return httpx.Response(200, json={
        "data": {"transaction": {"id": body["transaction"]["id"], "status": "Success."}},
        "status": {"code": "200", "message": "SUCCESS", "result_code": "ESB000010",
                   "response_code": "DP00800001006", "success": True}})


async def test_initiate_sends_the_documented_collection_request():
    adapter = AirtelMoneyAdapter()
    http, recorder = client(collection_ok)
    async with http:
        initiated = await adapter.initiate(http, CREDENTIALS, COLLECTION)
    token_request, collect_request = recorder.requests
    assert token_request.url == f"{BASE}/auth/oauth2/token"
    assert json.loads(token_request.content) == {"client_id": "cid", "client_secret": "csecret",
                                                 "grant_type": "client_credentials"}
    assert collect_request.method == "POST" and collect_request.url == f"{BASE}/merchant/v1/payments/"
    assert collect_request.headers["Authorization"] == "Bearer tok-1"
    assert collect_request.headers["X-Country"] == "UG" and collect_request.headers["X-Currency"] == "UGX"
    assert collect_request.headers[CALLBACK_URL_HEADER] == COLLECTION.callback_url
    body = json.loads(collect_request.content)
    assert body["subscriber"] == {"country": "UG", "currency": "UGX", "msisdn": "712345678"}
    assert body["transaction"] == {"amount": 1000, "country": "UG", "currency": "UGX",
                                   "id": airtel_transaction_id(COLLECTION.payment_id)}
    assert body["reference"] == "Shop sale"
    assert initiated.provider_request_id == body["transaction"]["id"]


async def test_the_token_is_reused_until_it_expires():
    adapter = AirtelMoneyAdapter()
    http, recorder = client(collection_ok)
    async with http:
        await adapter.initiate(http, CREDENTIALS, COLLECTION)
        await adapter.initiate(http, CREDENTIALS, COLLECTION)
    assert [r.url.path for r in recorder.requests].count("/auth/oauth2/token") == 1


def test_transaction_id_is_derived_from_the_payment_id_and_short():
    long_id = airtel_transaction_id("0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6a")
    assert len(long_id) <= TRANSACTION_ID_MAX_LENGTH and long_id.isalnum()
    assert long_id == airtel_transaction_id("0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6a")
    assert long_id != airtel_transaction_id("0193a7c2-6b1e-7c4d-9a55-1f2e3d4c5b6b")
    assert airtel_transaction_id("pay-123") == "pay123"


def test_msisdn_drops_the_country_code_and_refuses_other_countries():
    assert national_msisdn("254712345678", "KE") == "712345678"
    with pytest.raises(ProviderError) as refused:
        national_msisdn("254712345678", "UG")
    assert not refused.value.retryable
    with pytest.raises(ProviderError):
        national_msisdn("256712345678", "XX")


@pytest.mark.parametrize("status, retryable", [(500, True), (503, True), (400, False)])
async def test_http_errors_become_provider_errors(status, retryable):
    def handler(request):
        if request.url.path == "/auth/oauth2/token":
            return token_answer()
        return httpx.Response(status, json={"status": {"code": str(status), "message": "Bad things",
                                                       "result_code": "ESB000001", "success": False}})

    http, _ = client(handler)
    async with http:
        with pytest.raises(ProviderError) as error:
            await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert error.value.retryable is retryable
    assert "csecret" not in error.value.message and "tok-1" not in error.value.message


async def test_refused_collection_body_is_a_clear_non_retryable_error():
    def handler(request):
        if request.url.path == "/auth/oauth2/token":
            return token_answer()
        return httpx.Response(200, json={"status": {"code": "200", "message": "Invalid MSISDN",
                                                    "result_code": "ESB000008", "success": False}})

    http, _ = client(handler)
    async with http:
        with pytest.raises(ProviderError) as error:
            await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert not error.value.retryable and "Invalid MSISDN" in error.value.message


async def test_bad_credentials_are_not_retryable():
    http, _ = client(lambda request: httpx.Response(401, json={"error": "invalid_client"}))
    async with http:
        with pytest.raises(ProviderError) as error:
            await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert not error.value.retryable


async def test_timeouts_are_retryable():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    http, _ = client(handler)
    async with http:
        with pytest.raises(ProviderError) as error:
            await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert error.value.retryable


def test_parse_documented_success_callback():
    result = AirtelMoneyAdapter().parse_callback("notification", json.dumps(DOC_CALLBACK_SUCCESS).encode(), {})
    assert result.status is PaymentStatus.CONFIRMED
    assert result.provider_request_id == "BBZMiscxy"
    assert result.provider_transaction_id == "MP210603.1234.L06941"
    assert result.dedupe_key == "MP210603.1234.L06941"
    assert result.result_code == "TS" and "Paid UGX" in result.reason
    assert result.amount is None  # Airtel's callback does not say the amount


def test_parse_documented_failed_callback():
    result = AirtelMoneyAdapter().parse_callback("notification", json.dumps(DOC_CALLBACK_FAILED).encode(), {})
    assert result.status is PaymentStatus.FAILED and result.provider_transaction_id == ""
    assert result.dedupe_key == "BBZMiscxy:TF"


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}", json.dumps({"transaction": {"id": "x"}}).encode(),
    json.dumps({"transaction": {"id": "x", "status_code": "XX"}}).encode(),
    json.dumps({"transaction": {"id": "x", "status_code": "TS"}}).encode(),  # success without receipt
    json.dumps({"transaction": {"id": 5, "status_code": "TF"}}).encode(),
])
def test_malformed_callbacks_are_refused(body):
    with pytest.raises(MalformedCallback):
        AirtelMoneyAdapter().parse_callback("notification", body, {})


def signed(payload: dict, secret: str) -> bytes:
    return json.dumps({**payload, "hash": callback_hash(secret, payload["transaction"])}).encode()


def test_hash_is_base64_hmac_sha256_of_the_transaction():
    transaction = DOC_CALLBACK_SUCCESS["transaction"]
    expected = base64.b64encode(hmac.new(b"private-key", json.dumps(transaction, separators=(",", ":")).encode(),
                                         hashlib.sha256).digest()).decode()
    assert callback_hash("private-key", transaction) == expected


def test_authenticate_accepts_the_right_hash():
    AirtelMoneyAdapter().authenticate_callback("notification", signed(DOC_CALLBACK_SUCCESS, "private-key"), {},
                                               HASHED, "")


@pytest.mark.parametrize("body", [
    signed(DOC_CALLBACK_SUCCESS, "another-key"),
    json.dumps(DOC_CALLBACK_SUCCESS).encode(),  # no hash at all
    # A valid hash of the failed callback pasted onto a success: the transaction changed, the hash did not.
    json.dumps({**DOC_CALLBACK_SUCCESS, "hash": callback_hash("private-key", DOC_CALLBACK_FAILED["transaction"])}
               ).encode(),
])
def test_authenticate_refuses_a_wrong_or_missing_hash(body):
    with pytest.raises(ForgedCallback):
        AirtelMoneyAdapter().authenticate_callback("notification", body, {}, HASHED, "")


def test_no_hash_secret_means_no_hash_check():
    AirtelMoneyAdapter().authenticate_callback("notification", json.dumps(DOC_CALLBACK_SUCCESS).encode(), {},
                                               CREDENTIALS, "")


def test_callback_answers():
    adapter = AirtelMoneyAdapter()
    accepted = adapter.callback_answer("notification", True)
    assert accepted.status == 200 and json.loads(accepted.body) == {"status": "accepted"}
    assert adapter.callback_answer("notification", False, "malformed").status == 400
    assert adapter.callback_answer("notification", False, "forged_hash").status == 403


@pytest.mark.parametrize("code, status, receipt", [
    ("TS", PaymentStatus.CONFIRMED, "CI210603.1234.X1"), ("TF", PaymentStatus.FAILED, ""),
    ("TA", PaymentStatus.PENDING, ""), ("TIP", PaymentStatus.PENDING, ""),
])
async def test_query_status_maps_the_enquiry_statuses(code, status, receipt):
    def handler(request):
        if request.url.path == "/auth/oauth2/token":
            return token_answer()
        assert request.method == "GET"
        assert request.url.path == "/standard/v1/payments/TX123"
        assert request.headers["X-Country"] == "UG" and request.headers["X-Currency"] == "UGX"
        return httpx.Response(200, json={
            "data": {"transaction": {"airtel_money_id": "CI210603.1234.X1", "id": "TX123",
                                     "message": "success", "status": code}},
            "status": {"code": "200", "message": "SUCCESS", "result_code": "ESB000010",
                       "response_code": "DP00800001001", "success": True}})

    http, _ = client(handler)
    async with http:
        result = await AirtelMoneyAdapter().query_status(http, CREDENTIALS, "TX123", COLLECTION)
    assert result.status is status and result.result_code == code
    assert result.provider_request_id == "TX123" and result.provider_transaction_id == receipt


async def test_a_refused_token_is_renewed_once_then_given_up():
    issued: list[str] = []

    def handler(request):
        if request.url.path == "/auth/oauth2/token":
            issued.append(f"tok-{len(issued) + 1}")
            return httpx.Response(200, json={"access_token": issued[-1], "expires_in": "180"})
        if request.headers["Authorization"] != f"Bearer {fresh_token}":
            return httpx.Response(401, json={"status": {"message": "Invalid token", "success": False}})
        return collection_ok(request)

    fresh_token = "tok-2"  # the first token is stale: the adapter must ask for another one and retry
    http, recorder = client(handler)
    async with http:
        await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
        assert issued == ["tok-1", "tok-2"]
        fresh_token = "never"  # now every token is refused: one renewal, then a clear error
        with pytest.raises(ProviderError) as error:
            await AirtelMoneyAdapter().initiate(http, CREDENTIALS, COLLECTION)
    assert not error.value.retryable and issued == ["tok-1", "tok-2", "tok-3", "tok-4"]
