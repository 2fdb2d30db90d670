"""The M-Pesa Daraja adapter (services/payments/providers/mpesa.py) against Daraja's documented payloads:
the callback and response examples below are Safaricom's documentation samples (developer.safaricom.co.ke:
M-Pesa Express, M-Pesa Express Query, Authorization, C2B Register URL), and Daraja is faked with an
httpx.MockTransport that checks what a real one would."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from services.payments.providers.base import (
    Collection,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.mpesa import MpesaAdapter, daraja_timestamp, stk_password

BASE = "https://daraja.test"
CONSUMER_KEY = "unit-consumer-key-9f3a"
CONSUMER_SECRET = "unit-consumer-secret-71c2"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # Daraja's sandbox passkey
SECRETS = (CONSUMER_KEY, CONSUMER_SECRET, PASSKEY)

# Safaricom's documented samples.
DOC_STK_SUCCESS = {
    "Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 1.00},
            {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
            {"Name": "TransactionDate", "Value": 20191219102115},
            {"Name": "PhoneNumber", "Value": 254708374149},
        ]},
    }},
}
DOC_STK_CANCELLED = {
    "Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 1032,
        "ResultDesc": "Request cancelled by user",
    }},
}
DOC_STK_RESPONSE = {
    "MerchantRequestID": "29115-34620561-1",
    "CheckoutRequestID": "ws_CO_191220191020363925",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
DOC_QUERY_RESPONSE = {
    "ResponseCode": "0",
    "ResponseDescription": "The service request has been accepted successsfully",
    "MerchantRequestID": "22205-34066-1",
    "CheckoutRequestID": "ws_CO_13012021093521236557",
    "ResultCode": "0",
    "ResultDesc": "The service request is processed successfully.",
}
DOC_C2B = {
    "TransactionType": "Pay Bill",
    "TransID": "RKTQDM7W6S",
    "TransTime": "20191122063845",
    "TransAmount": "10",
    "BusinessShortCode": "600638",
    "BillRefNumber": "invoice008",
    "InvoiceNumber": "",
    "OrgAccountBalance": "",
    "ThirdPartyTransID": "",
    "MSISDN": "25470****149",
    "FirstName": "John",
    "MiddleName": "",
    "LastName": "Doe",
}
PROCESSING = {"requestId": "ws_CO_1", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"}


def body_of(payload: dict) -> bytes:
    return json.dumps(payload).encode()


class FakeDaraja:
    """Answers like Daraja: tokens for the right Basic credentials, then scripted answers per path."""

    def __init__(self, token_lifetime: str = "3599"):
        self.token_lifetime = token_lifetime
        self.tokens_issued: list[str] = []
        self.requests: list[httpx.Request] = []
        self.scripts: dict[str, list[httpx.Response]] = {}

    def script(self, path: str, *answers: httpx.Response) -> None:
        self.scripts[path] = list(answers)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth/v1/generate":
            expected = "Basic " + base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
            if request.url.params.get("grant_type") != "client_credentials" \
                    or request.headers.get("authorization") != expected:
                return httpx.Response(400, json={"requestId": "1", "errorCode": "400.008.01",
                                                 "errorMessage": "Invalid Authentication passed"})
            token = f"token-{len(self.tokens_issued) + 1}"
            self.tokens_issued.append(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": self.token_lifetime})
        if request.headers.get("authorization") != f"Bearer {self.tokens_issued[-1] if self.tokens_issued else '-'}":
            return httpx.Response(404, json={"requestId": "2", "errorCode": "404.001.03",
                                             "errorMessage": "Invalid Access Token"})
        answers = self.scripts.get(request.url.path) or [httpx.Response(200, json=DOC_STK_RESPONSE)]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    def calls(self, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == path]


class Clock:
    def __init__(self):
        self.now = datetime(2024, 1, 1, 21, 30, 5, tzinfo=UTC)  # 00:30:05 on 2 January in Nairobi
        self.mono = 1000.0

    def wall(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def credentials(**settings: str) -> ProviderCredentials:
    return ProviderCredentials(api_base_url=BASE,
                               secrets={"consumer_key": CONSUMER_KEY, "consumer_secret": CONSUMER_SECRET,
                                        "passkey": PASSKEY},
                               settings={"short_code": "174379", **settings})


def collection(amount: str = "150.00", phone: str = "254708374149", reference: str = "INV-2024-000123") -> Collection:
    return Collection(payment_id="pay_01", amount=Decimal(amount), currency="KES", phone=phone,
                      account_reference=reference, description="Sale at outlet 7",
                      callback_url="https://fiscal.test/v1/callbacks/mpesa/tok/stk")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def daraja() -> FakeDaraja:
    return FakeDaraja()


@pytest.fixture
def adapter(clock) -> MpesaAdapter:
    return MpesaAdapter(clock=clock.wall, monotonic=clock.monotonic)


@pytest.fixture
async def http(daraja):
    async with httpx.AsyncClient(transport=httpx.MockTransport(daraja.handler)) as client:
        yield client


def assert_secret_free(error: Exception) -> None:
    for secret in SECRETS:
        assert secret not in str(error)


# ---- the password and the STK push -------------------------------------------------------------------

def test_password_is_the_documented_base64_of_short_code_passkey_and_timestamp():
    # Daraja's documentation example for short code 174379, the sandbox passkey, 20160216165627.
    assert stk_password("174379", PASSKEY, "20160216165627") == (
        "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIw"
        "MTYwMjE2MTY1NjI3")


def test_timestamp_is_nairobi_time():
    assert daraja_timestamp(datetime(2024, 1, 1, 21, 30, 5, tzinfo=UTC)) == "20240102003005"


async def test_initiate_sends_the_documented_stk_push(adapter, daraja, http):
    initiated = await adapter.initiate(http, credentials(), collection())
    assert initiated.provider_request_id == "ws_CO_191220191020363925"
    assert initiated.merchant_request_id == "29115-34620561-1"
    assert initiated.customer_message == "Success. Request accepted for processing"
    [push] = daraja.calls("/mpesa/stkpush/v1/processrequest")
    assert push.method == "POST" and push.headers["authorization"] == "Bearer token-1"
    assert json.loads(push.content) == {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", PASSKEY, "20240102003005"),
        "Timestamp": "20240102003005",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 150,
        "PartyA": "254708374149",
        "PartyB": "174379",
        "PhoneNumber": "254708374149",
        "CallBackURL": "https://fiscal.test/v1/callbacks/mpesa/tok/stk",
        "AccountReference": "INV-2024-000",  # at most 12 characters
        "TransactionDesc": "Sale at outle",  # at most 13
    }


async def test_buy_goods_pays_the_till(adapter, daraja, http):
    await adapter.initiate(http, credentials(till_number="5678901"), collection())
    push = json.loads(daraja.calls("/mpesa/stkpush/v1/processrequest")[0].content)
    assert push["TransactionType"] == "CustomerBuyGoodsOnline"
    assert push["BusinessShortCode"] == "174379" and push["PartyB"] == "5678901"


@pytest.mark.parametrize("amount", ["150.50", "0.99", "0", "-5"])
async def test_amounts_that_are_not_whole_positive_units_are_refused_before_any_call(adapter, daraja, http, amount):
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, credentials(), collection(amount=amount))
    assert caught.value.retryable is False
    assert daraja.requests == []
    if amount == "150.50":
        assert "whole" in caught.value.message


async def test_a_phone_that_is_not_safaricom_format_is_refused(adapter, daraja, http):
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, credentials(), collection(phone="0712345678"))
    assert not caught.value.retryable and daraja.requests == []


async def test_missing_settings_are_named_not_shown(adapter, http):
    broken = ProviderCredentials(api_base_url=BASE, secrets={"consumer_key": CONSUMER_KEY}, settings={})
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, broken, collection())
    assert "consumer_secret" in caught.value.message and "short_code" in caught.value.message
    assert not caught.value.retryable
    assert_secret_free(caught.value)


# ---- the token ---------------------------------------------------------------------------------------

async def test_the_token_is_cached_until_shortly_before_it_expires(adapter, daraja, http, clock):
    await adapter.initiate(http, credentials(), collection())
    await adapter.initiate(http, credentials(), collection())
    assert len(daraja.calls("/oauth/v1/generate")) == 1
    clock.mono += 3599 - 61  # still more than the margin left
    await adapter.initiate(http, credentials(), collection())
    assert len(daraja.calls("/oauth/v1/generate")) == 1
    clock.mono += 2  # now within the last minute: a fresh one
    await adapter.initiate(http, credentials(), collection())
    assert len(daraja.calls("/oauth/v1/generate")) == 2
    assert daraja.calls("/mpesa/stkpush/v1/processrequest")[-1].headers["authorization"] == "Bearer token-2"


async def test_tokens_are_per_credentials(adapter, daraja, http):
    await adapter.initiate(http, credentials(), collection())
    other = ProviderCredentials(api_base_url=BASE, secrets={"consumer_key": "other-key", "consumer_secret": "x",
                                                            "passkey": "y"}, settings={"short_code": "600000"})
    with pytest.raises(ProviderError) as caught:  # the fake only knows the first pair
        await adapter.initiate(http, other, collection())
    assert "consumer key and secret" in caught.value.message and not caught.value.retryable
    assert len(daraja.calls("/oauth/v1/generate")) == 2


async def test_an_invalid_token_is_replaced_once_and_the_push_resent(adapter, daraja, http):
    await adapter.initiate(http, credentials(), collection())
    daraja.tokens_issued.append("revoked-elsewhere")  # Daraja no longer accepts token-1
    initiated = await adapter.initiate(http, credentials(), collection())
    assert initiated.provider_request_id == "ws_CO_191220191020363925"
    pushes = daraja.calls("/mpesa/stkpush/v1/processrequest")
    assert [p.headers["authorization"] for p in pushes] == ["Bearer token-1", "Bearer token-1", "Bearer token-3"]


async def test_bad_consumer_credentials_are_a_clear_permanent_error(adapter, http):
    wrong = ProviderCredentials(api_base_url=BASE, secrets={"consumer_key": CONSUMER_KEY,
                                                            "consumer_secret": "not-it-4411", "passkey": PASSKEY},
                                settings={"short_code": "174379"})
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, wrong, collection())
    assert not caught.value.retryable
    assert "Invalid Authentication passed" in caught.value.message
    assert "not-it-4411" not in caught.value.message
    assert_secret_free(caught.value)


# ---- refusals and failures ---------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "retryable", "words"), [
    (httpx.Response(400, json={"requestId": "1", "errorCode": "400.002.02",
                               "errorMessage": "Bad Request - Invalid PhoneNumber"}), False, "Invalid PhoneNumber"),
    (httpx.Response(500, json={"requestId": "1", "errorCode": "500.001.1001",
                               "errorMessage": "Unable to lock subscriber, a transaction is already in process "
                                               "for the current subscriber"}), True, "Unable to lock subscriber"),
    (httpx.Response(500, json={"requestId": "1", "errorCode": "500.001.1001",
                               "errorMessage": "Wrong credentials"}), False, "Wrong credentials"),
    (httpx.Response(503, text="<html>upstream down</html>"), True, "HTTP 503"),
    (httpx.Response(200, json={**DOC_STK_RESPONSE, "ResponseCode": "1",
                               "ResponseDescription": "Rejected"}), False, "Rejected"),
])
async def test_refusals_become_readable_provider_errors(adapter, daraja, http, answer, retryable, words):
    daraja.script("/mpesa/stkpush/v1/processrequest", answer)
    with pytest.raises(ProviderError) as caught:
        await adapter.initiate(http, credentials(), collection())
    assert caught.value.retryable is retryable
    assert words in caught.value.message
    assert_secret_free(caught.value)


async def test_a_timeout_is_retryable(adapter):
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        with pytest.raises(ProviderError) as caught:
            await adapter.initiate(http, credentials(), collection())
    assert caught.value.retryable and "in time" in caught.value.message


async def test_an_unreachable_provider_is_retryable(adapter):
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as http:
        with pytest.raises(ProviderError) as caught:
            await adapter.initiate(http, credentials(), collection())
    assert caught.value.retryable and "could not be reached" in caught.value.message


# ---- the STK callback --------------------------------------------------------------------------------

def test_the_documented_success_callback(adapter):
    result = adapter.parse_callback("stk", body_of(DOC_STK_SUCCESS), {})
    assert result.status is PaymentStatus.CONFIRMED
    assert result.provider_request_id == "ws_CO_191220191020363925"
    assert result.provider_transaction_id == "NLJ7RT61SV" == result.dedupe_key
    assert result.amount == Decimal("1.00")
    assert result.phone == "254708374149"
    assert result.result_code == "0"
    assert result.reason == "The service request is processed successfully."
    assert result.extra["merchant_request_id"] == "29115-34620561-1"
    assert result.extra["transaction_date"] == "20191219102115"


def test_metadata_is_read_by_name_not_position_and_valueless_items_are_skipped(adapter):
    payload = json.loads(json.dumps(DOC_STK_SUCCESS))
    items = payload["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    items.reverse()
    items.insert(1, {"Name": "Balance"})
    result = adapter.parse_callback("stk", body_of(payload), {})
    assert (result.amount, result.provider_transaction_id, result.phone) == (Decimal("1.00"), "NLJ7RT61SV",
                                                                             "254708374149")


def test_amounts_keep_their_exact_decimal_value(adapter):
    payload = json.loads(json.dumps(DOC_STK_SUCCESS))
    raw = body_of(payload).replace(b'"Value": 1.0', b'"Value": 149.10')
    assert adapter.parse_callback("stk", raw, {}).amount == Decimal("149.10")


@pytest.mark.parametrize(("code", "description", "status"), [
    (1032, "Request cancelled by user", PaymentStatus.CANCELLED),
    (1037, "DS timeout user cannot be reached", PaymentStatus.EXPIRED),
    (1019, "Transaction has expired", PaymentStatus.EXPIRED),
    (1, "The balance is insufficient for the transaction", PaymentStatus.FAILED),
    (2001, "The initiator information is invalid.", PaymentStatus.FAILED),
])
def test_unsuccessful_callbacks(adapter, code, description, status):
    payload = json.loads(json.dumps(DOC_STK_CANCELLED))
    payload["Body"]["stkCallback"].update(ResultCode=code, ResultDesc=description)
    result = adapter.parse_callback("stk", body_of(payload), {})
    assert result.status is status
    assert result.reason == description and result.result_code == str(code)
    assert result.amount is None and result.provider_transaction_id == ""
    assert result.dedupe_key == f"ws_CO_191220191020363925:{code}"


def _without(path: list[str], key: str) -> bytes:
    payload = json.loads(json.dumps(DOC_STK_SUCCESS))
    node = payload
    for step in path:
        node = node[step]
    del node[key]
    return body_of(payload)


def _with_items(items) -> bytes:
    payload = json.loads(json.dumps(DOC_STK_SUCCESS))
    payload["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = items
    return body_of(payload)


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"Body": {}}',
    body_of({"Body": {"stkCallback": "x"}}),
    _without(["Body", "stkCallback"], "CheckoutRequestID"),
    _without(["Body", "stkCallback"], "ResultCode"),
    _without(["Body", "stkCallback"], "CallbackMetadata"),
    _with_items([{"Name": "Amount", "Value": 1}]),                                           # no receipt
    _with_items([{"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"}]),                     # no amount
    _with_items([{"Name": "Amount", "Value": "lots"}, {"Name": "MpesaReceiptNumber", "Value": "X"}]),
    _with_items([{"Name": "Amount", "Value": -1}, {"Name": "MpesaReceiptNumber", "Value": "X"}]),
    _with_items([{"Value": 1}]),
    body_of({"Body": {"stkCallback": {**DOC_STK_CANCELLED["Body"]["stkCallback"], "ResultCode": True}}}),
    body_of({"Body": {"stkCallback": {**DOC_STK_CANCELLED["Body"]["stkCallback"], "ResultCode": "abc"}}}),
])
def test_malformed_stk_callbacks_are_refused(adapter, body):
    with pytest.raises(MalformedCallback):
        adapter.parse_callback("stk", body, {})


def test_unknown_kind_is_malformed(adapter):
    with pytest.raises(MalformedCallback):
        adapter.parse_callback("b2c", body_of(DOC_STK_SUCCESS), {})


def test_authentication_is_a_no_op(adapter):
    adapter.authenticate_callback("stk", body_of(DOC_STK_SUCCESS), {}, None, "")


# ---- C2B ---------------------------------------------------------------------------------------------

def test_the_documented_c2b_confirmation(adapter):
    result = adapter.parse_callback("c2b_confirmation", body_of(DOC_C2B), {})
    assert result.status is PaymentStatus.CONFIRMED
    assert result.provider_transaction_id == "RKTQDM7W6S" == result.dedupe_key
    assert result.amount == Decimal("10")
    assert result.bill_reference == "invoice008" and result.short_code == "600638"
    assert result.phone == ""  # Daraja masks the MSISDN
    assert result.extra["msisdn"] == "25470****149" and result.extra["customer_name"] == "John Doe"


def test_a_c2b_validation_is_a_question_with_its_own_dedupe_key(adapter):
    validation = adapter.parse_callback("c2b_validation", body_of(DOC_C2B), {})
    confirmation = adapter.parse_callback("c2b_confirmation", body_of(DOC_C2B), {})
    assert validation.status is PaymentStatus.PENDING and validation.provider_transaction_id == ""
    assert validation.bill_reference == "invoice008" and validation.amount == Decimal("10")
    assert validation.dedupe_key != confirmation.dedupe_key


def test_an_unmasked_msisdn_is_the_phone(adapter):
    result = adapter.parse_callback("c2b_confirmation", body_of({**DOC_C2B, "MSISDN": "254708374149"}), {})
    assert result.phone == "254708374149"


@pytest.mark.parametrize("change", [
    {"TransID": ""}, {"TransAmount": "ten"}, {"TransAmount": None}, {"BusinessShortCode": None},
    {"TransAmount": ["10"]},
])
def test_malformed_c2b_is_refused(adapter, change):
    for kind in ("c2b_validation", "c2b_confirmation"):
        with pytest.raises(MalformedCallback):
            adapter.parse_callback(kind, body_of({**DOC_C2B, **change}), {})


# ---- answers -----------------------------------------------------------------------------------------

def _answer(adapter, *args):
    answer = adapter.callback_answer(*args)
    assert answer.content_type == "application/json"
    return answer.status, json.loads(answer.body)


def test_callback_answers_are_daraja_shapes(adapter):
    assert _answer(adapter, "stk", True) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})
    assert _answer(adapter, "c2b_validation", True) == (200, {"ResultCode": "0", "ResultDesc": "Accepted"})
    assert _answer(adapter, "c2b_confirmation", True) == (200, {"ResultCode": 0, "ResultDesc": "Success"})


def test_c2b_validation_rejections_use_the_documented_codes(adapter):
    assert _answer(adapter, "c2b_validation", False) == (200, {"ResultCode": "C2B00012", "ResultDesc": "Rejected"})
    assert _answer(adapter, "c2b_validation", False, "invalid_amount")[1]["ResultCode"] == "C2B00013"
    assert _answer(adapter, "c2b_validation", False, "C2B00015")[1]["ResultCode"] == "C2B00015"
    assert _answer(adapter, "c2b_validation", False, "forged_token")[0] == 403


def test_refused_callbacks_are_4xx(adapter):
    assert _answer(adapter, "stk", False, "malformed")[0] == 400
    assert _answer(adapter, "stk", False, "forged_token")[0] == 403
    assert _answer(adapter, "stk", False, "unknown_request")[0] == 403
    assert _answer(adapter, "c2b_confirmation", False, "malformed")[0] == 400


# ---- status query ------------------------------------------------------------------------------------

QUERY = "/mpesa/stkpushquery/v1/query"


async def test_query_sends_the_documented_request_and_reads_a_confirmation(adapter, daraja, http):
    daraja.script(QUERY, httpx.Response(200, json=DOC_QUERY_RESPONSE))
    result = await adapter.query_status(http, credentials(), "ws_CO_13012021093521236557", collection())
    assert result.status is PaymentStatus.CONFIRMED and result.result_code == "0"
    assert result.provider_request_id == "ws_CO_13012021093521236557"
    assert result.amount is None and result.provider_transaction_id == ""  # the query names neither
    assert json.loads(daraja.calls(QUERY)[0].content) == {
        "BusinessShortCode": "174379", "Password": stk_password("174379", PASSKEY, "20240102003005"),
        "Timestamp": "20240102003005", "CheckoutRequestID": "ws_CO_13012021093521236557"}


@pytest.mark.parametrize(("answer", "status"), [
    (httpx.Response(500, json=PROCESSING), PaymentStatus.PENDING),
    (httpx.Response(200, json={**DOC_QUERY_RESPONSE, "ResultCode": "4999",
                               "ResultDesc": "The transaction is still under processing"}), PaymentStatus.PENDING),
    (httpx.Response(200, json={**DOC_QUERY_RESPONSE, "ResultCode": "1032",
                               "ResultDesc": "Request cancelled by user"}), PaymentStatus.CANCELLED),
    (httpx.Response(200, json={**DOC_QUERY_RESPONSE, "ResultCode": "1037",
                               "ResultDesc": "DS timeout user cannot be reached"}), PaymentStatus.EXPIRED),
    (httpx.Response(200, json={**DOC_QUERY_RESPONSE, "ResultCode": "1",
                               "ResultDesc": "The balance is insufficient for the transaction"}), PaymentStatus.FAILED),
])
async def test_query_outcomes(adapter, daraja, http, answer, status):
    daraja.script(QUERY, answer)
    result = await adapter.query_status(http, credentials(), "ws_CO_13012021093521236557", collection())
    assert result.status is status


async def test_query_of_an_unknown_request_is_an_error(adapter, daraja, http):
    daraja.script(QUERY, httpx.Response(400, json={"requestId": "1", "errorCode": "400.002.02",
                                                   "errorMessage": "Bad Request - Invalid CheckoutRequestID"}))
    with pytest.raises(ProviderError) as caught:
        await adapter.query_status(http, credentials(), "ws_CO_nope", collection())
    assert not caught.value.retryable and "Invalid CheckoutRequestID" in caught.value.message


# ---- C2B URL registration ----------------------------------------------------------------------------

async def test_register_c2b_urls(adapter, daraja, http):
    daraja.script("/mpesa/c2b/v1/registerurl", httpx.Response(200, json={
        "OriginatorCoversationID": "7619-37765134-1", "ResponseCode": "0", "ResponseDescription": "success"}))
    await adapter.register_c2b_urls(http, credentials(), validation_url="https://fiscal.test/v",
                                    confirmation_url="https://fiscal.test/c")
    [call] = daraja.calls("/mpesa/c2b/v1/registerurl")
    assert json.loads(call.content) == {"ShortCode": "174379", "ResponseType": "Completed",
                                        "ConfirmationURL": "https://fiscal.test/c",
                                        "ValidationURL": "https://fiscal.test/v"}
