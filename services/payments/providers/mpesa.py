"""M-Pesa Daraja (Safaricom): STK Push ("M-Pesa Express") collections, their callback and status query,
and C2B (customers paying a paybill or till with our reference as the account).

Daraja's documented API, as this adapter uses it:
- OAuth: GET {base}/oauth/v1/generate?grant_type=client_credentials with HTTP Basic consumer_key:
  consumer_secret -> {"access_token": "...", "expires_in": "3599"} (a string). Cached per credentials
  until shortly before it expires; a request refused for an invalid token gets one fresh token and one
  retry.
- STK Push: POST {base}/mpesa/stkpush/v1/processrequest -> {"MerchantRequestID", "CheckoutRequestID",
  "ResponseCode": "0", "ResponseDescription", "CustomerMessage"}; refusals come as
  {"requestId", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid ..."} with a 4xx/5xx.
- The STK callback: {"Body": {"stkCallback": {"MerchantRequestID", "CheckoutRequestID", "ResultCode",
  "ResultDesc", "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1.00}, ...]}}}}; the metadata
  only on success, its items read by Name (their order is not documented; "Balance" may have no Value).
- STK Query: POST {base}/mpesa/stkpushquery/v1/query -> {"ResponseCode": "0", ..., "ResultCode": "0",
  "ResultDesc"}; while the customer has not answered, an error body {"errorCode": "500.001.1001",
  "errorMessage": "The transaction is being processed"} (we read it as PENDING).
- C2B: the validation and confirmation requests carry {"TransactionType", "TransID", "TransTime",
  "TransAmount", "BusinessShortCode", "BillRefNumber", "InvoiceNumber", "OrgAccountBalance",
  "ThirdPartyTransID", "MSISDN", "FirstName", "MiddleName", "LastName"}; validation is answered
  {"ResultCode": "0", "ResultDesc": "Accepted"} or a documented reject code (C2B00011 invalid MSISDN,
  C2B00012 invalid account number, C2B00013 invalid amount, C2B00014 invalid KYC details, C2B00015
  invalid short code, C2B00016 other error) with "ResultDesc": "Rejected". The URLs are registered with
  POST {base}/mpesa/c2b/v1/registerurl (register_c2b_urls below).

Result codes: 0 confirmed; 1032 (cancelled by the user) cancelled; 1037 ("DS timeout user cannot be
reached") and 1019 ("transaction has expired") expired: the prompt never reached or outlived the
customer, no money moved, and like Orange's EXPIRED a later confirmation still wins; 4999 (still under
processing, from the query) pending; anything else failed.

M-Pesa does not sign its callbacks: their authentication is our route token plus the CheckoutRequestID
(only we and Safaricom know it), checked by the service, so authenticate_callback is a no-op.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from services.payments.providers.base import (
    CallbackAnswer,
    CallbackResult,
    Collection,
    Initiated,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)

NAIROBI = ZoneInfo("Africa/Nairobi")  # Daraja's Timestamp is Kenyan local time
PAYBILL = "CustomerPayBillOnline"
BUY_GOODS = "CustomerBuyGoodsOnline"
TRANSACTION_TYPES = (PAYBILL, BUY_GOODS)
ACCOUNT_REFERENCE_MAX = 12   # Daraja: AccountReference at most 12 characters
TRANSACTION_DESC_MAX = 13    # Daraja: TransactionDesc at most 13 characters
PHONE = re.compile(r"254\d{9}")  # Safaricom numbers, 2547XXXXXXXX / 2541XXXXXXXX

# Daraja's spellings of "this access token is not valid (any more)" (the HTTP status varies: 401/404).
INVALID_TOKEN_CODES = frozenset({"404.001.03", "400.003.01", "401.002.01", "401.001"})
STILL_PROCESSING_CODE = "500.001.1001"  # the STK query's "The transaction is being processed"
# Daraja answers these with a 500 although retrying cannot help (a wrong passkey or short code).
PERMANENT_ERROR_MESSAGES = ("wrong credentials", "merchant does not exist")
TOKEN_REFRESH_MARGIN_SECONDS = 60.0
MAX_CACHED_TOKENS = 1000

RESULT_CONFIRMED = "0"
RESULT_CANCELLED = "1032"
EXPIRED_RESULT_CODES = frozenset({"1037", "1019"})
PENDING_RESULT_CODES = frozenset({"4999"})

# C2B validation: our reasons for refusing a payment -> Daraja's documented reject codes.
C2B_REJECT_CODES = {
    "invalid_msisdn": "C2B00011",
    "invalid_account": "C2B00012",
    "invalid_amount": "C2B00013",
    "invalid_kyc": "C2B00014",
    "invalid_short_code": "C2B00015",
    "other": "C2B00016",
}
C2B_DEFAULT_REJECT = "C2B00012"  # an unknown bill reference: "Invalid Account Number"
# Refusals that are not a business "no" but a callback we do not believe: answered 403, not 200.
FORGED_REASON_PREFIXES = ("forged", "unknown", "amount_tampered")

MESSAGE_MAX = 160


def status_for_result_code(code: str) -> PaymentStatus:
    """Daraja's STK ResultCode (callback or query) as our normalised status."""
    if code == RESULT_CONFIRMED:
        return PaymentStatus.CONFIRMED
    if code == RESULT_CANCELLED:
        return PaymentStatus.CANCELLED
    if code in EXPIRED_RESULT_CODES:
        return PaymentStatus.EXPIRED
    if code in PENDING_RESULT_CODES:
        return PaymentStatus.PENDING
    return PaymentStatus.FAILED


def stk_password(short_code: str, passkey: str, timestamp: str) -> str:
    """Daraja's Password: base64(BusinessShortCode + passkey + Timestamp)."""
    return base64.b64encode(f"{short_code}{passkey}{timestamp}".encode()).decode("ascii")


def daraja_timestamp(now: datetime) -> str:
    """YYYYMMDDHHmmss in Nairobi time."""
    return now.astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Token:
    value: str
    refresh_at: float  # monotonic seconds


@dataclass(frozen=True)
class _Settings:
    consumer_key: str
    consumer_secret: str
    passkey: str
    short_code: str
    transaction_type: str
    party_b: str
    base_url: str


class MpesaAdapter:
    """The Daraja adapter. One instance serves every outlet: tokens are cached per credentials."""

    name = "mpesa"
    secret_fields: tuple[str, ...] = ("consumer_key", "consumer_secret", "passkey")
    setting_fields: tuple[str, ...] = ("short_code", "transaction_type", "till_number")
    callback_kinds: tuple[str, ...] = ("stk", "c2b_validation", "c2b_confirmation")

    def __init__(self, *, clock: Callable[[], datetime] = _utc_now,
                 monotonic: Callable[[], float] = time.monotonic):
        self._clock = clock          # wall time, for Daraja's Timestamp
        self._monotonic = monotonic  # token lifetimes
        self._tokens: dict[str, _Token] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}

    # ---- starting a collection ---------------------------------------------------------------------

    async def initiate(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                       collection: Collection) -> Initiated:
        settings = _settings(credentials)
        amount = _whole_amount(collection.amount)
        if not PHONE.fullmatch(collection.phone):
            raise ProviderError("M-Pesa needs a Safaricom phone number as 254XXXXXXXXX", retryable=False)
        timestamp = daraja_timestamp(self._clock())
        body = {
            "BusinessShortCode": settings.short_code,
            "Password": stk_password(settings.short_code, settings.passkey, timestamp),
            "Timestamp": timestamp,
            "TransactionType": settings.transaction_type,
            "Amount": amount,
            "PartyA": collection.phone,
            "PartyB": settings.party_b,
            "PhoneNumber": collection.phone,
            "CallBackURL": collection.callback_url,
            "AccountReference": (collection.account_reference or collection.payment_id)[:ACCOUNT_REFERENCE_MAX],
            "TransactionDesc": (collection.description or "Payment")[:TRANSACTION_DESC_MAX],
        }
        status, answer = await self._authorised_post(http, settings, "/mpesa/stkpush/v1/processrequest", body,
                                                     what="the payment request")
        if status != 200 or answer is None:
            raise _refusal(status, answer, "refused the payment request")
        if str(answer.get("ResponseCode", "")) != "0":
            raise ProviderError(f"M-Pesa refused the payment request: {_describe(answer)}", retryable=False)
        checkout_request_id = answer.get("CheckoutRequestID")
        if not isinstance(checkout_request_id, str) or not checkout_request_id:
            raise ProviderError("M-Pesa accepted the payment request without a CheckoutRequestID", retryable=True)
        return Initiated(provider_request_id=checkout_request_id,
                         merchant_request_id=str(answer.get("MerchantRequestID") or ""),
                         customer_message=_clean(answer.get("CustomerMessage") or answer.get("ResponseDescription")))

    # ---- callbacks ---------------------------------------------------------------------------------

    def parse_callback(self, kind: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        try:
            payload = json.loads(body, parse_float=Decimal)  # amounts stay exact
        except (ValueError, UnicodeDecodeError):
            raise MalformedCallback("not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedCallback("not a JSON object")
        if kind == "stk":
            return _parse_stk(payload)
        if kind in ("c2b_validation", "c2b_confirmation"):
            return _parse_c2b(payload, confirmation=kind == "c2b_confirmation")
        raise MalformedCallback(f"unknown M-Pesa callback kind {kind!r}")

    def authenticate_callback(self, kind: str, body: bytes, headers: Mapping[str, str],
                              credentials: ProviderCredentials | None, callback_secret: str) -> None:
        """M-Pesa signs nothing: the route token and the CheckoutRequestID are checked by the service."""

    def callback_answer(self, kind: str, accepted: bool, reason: str = "") -> CallbackAnswer:
        """What Daraja expects back. STK: {"ResultCode": 0, "ResultDesc": "Accepted"}. C2B validation:
        accept {"ResultCode": "0", ...} or reject with a documented code, always HTTP 200 (Safaricom reads
        the body): `reason` is a C2B code ("C2B00013"), a key of C2B_REJECT_CODES, or anything else for
        C2B00012. C2B confirmation: {"ResultCode": 0, "ResultDesc": "Success"}. A refused STK callback or
        confirmation (and a forged validation) is answered 400 (malformed), or 403 when `reason` starts
        with forged/unknown/amount_tampered; Daraja only logs those."""
        if kind == "c2b_validation":
            if accepted:
                return _json_answer(200, {"ResultCode": "0", "ResultDesc": "Accepted"})
            if not reason.startswith(FORGED_REASON_PREFIXES) and reason != "malformed":
                code = reason if reason in C2B_REJECT_CODES.values() else C2B_REJECT_CODES.get(reason, C2B_DEFAULT_REJECT)
                return _json_answer(200, {"ResultCode": code, "ResultDesc": "Rejected"})
        elif accepted:
            if kind == "c2b_confirmation":
                return _json_answer(200, {"ResultCode": 0, "ResultDesc": "Success"})
            return _json_answer(200, {"ResultCode": 0, "ResultDesc": "Accepted"})
        status = 403 if reason.startswith(FORGED_REASON_PREFIXES) else 400
        return _json_answer(status, {"ResultCode": 1, "ResultDesc": "Rejected"})

    # ---- reconciliation ----------------------------------------------------------------------------

    async def query_status(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                           provider_request_id: str, collection: Collection) -> CallbackResult:
        """STK Query. Its answer names no receipt and no amount: a CONFIRMED from here has neither (the
        service records the asked amount, or waits for the callback's details)."""
        settings = _settings(credentials)
        timestamp = daraja_timestamp(self._clock())
        body = {
            "BusinessShortCode": settings.short_code,
            "Password": stk_password(settings.short_code, settings.passkey, timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": provider_request_id,
        }
        status, answer = await self._authorised_post(http, settings, "/mpesa/stkpushquery/v1/query", body,
                                                     what="the status query")
        if answer is not None and str(answer.get("errorCode", "")) == STILL_PROCESSING_CODE:
            return CallbackResult(provider_request_id=provider_request_id, status=PaymentStatus.PENDING,
                                  reason=_clean(answer.get("errorMessage")), result_code=STILL_PROCESSING_CODE)
        if status != 200 or answer is None:
            raise _refusal(status, answer, "refused the status query")
        code = answer.get("ResultCode")
        if code is None or str(code) == "" or str(answer.get("ResponseCode", "0")) != "0":
            raise ProviderError(f"M-Pesa answered the status query without a result: {_describe(answer)}",
                                retryable=True)
        result_code = str(code)
        return CallbackResult(provider_request_id=provider_request_id, status=status_for_result_code(result_code),
                              reason=_clean(answer.get("ResultDesc")), result_code=result_code,
                              extra={"merchant_request_id": str(answer.get("MerchantRequestID") or "")})

    # ---- C2B URL registration ----------------------------------------------------------------------

    async def register_c2b_urls(self, http: httpx.AsyncClient, credentials: ProviderCredentials, *,
                                validation_url: str, confirmation_url: str,
                                response_type: str = "Completed") -> None:
        """Register our C2B validation and confirmation URLs for the outlet's short code (Daraja's
        registerurl). ResponseType "Completed": when our validation URL cannot be reached M-Pesa completes
        the payment anyway, so a customer's money is never refused because we were down; the confirmation
        still tells us."""
        if response_type not in ("Completed", "Cancelled"):
            raise ValueError("response_type must be Completed or Cancelled")
        settings = _settings(credentials, need_passkey=False)
        body = {"ShortCode": settings.short_code, "ResponseType": response_type,
                "ConfirmationURL": confirmation_url, "ValidationURL": validation_url}
        status, answer = await self._authorised_post(http, settings, "/mpesa/c2b/v1/registerurl", body,
                                                     what="the C2B URL registration")
        if status != 200 or answer is None:
            raise _refusal(status, answer, "refused the C2B URL registration")
        if str(answer.get("ResponseCode", "")) != "0":
            raise ProviderError(f"M-Pesa refused the C2B URL registration: {_describe(answer)}", retryable=False)

    # ---- HTTP --------------------------------------------------------------------------------------

    async def _authorised_post(self, http: httpx.AsyncClient, settings: _Settings, path: str,
                               body: dict[str, Any], *, what: str) -> tuple[int, dict[str, Any] | None]:
        """POST with a bearer token; one fresh token and one retry when Daraja says the token is invalid."""
        for attempt in range(2):
            token = await self._token(http, settings, force=attempt > 0)
            status, answer = await _send(http, "POST", settings.base_url + path, what=what, json=body,
                                         headers={"Authorization": f"Bearer {token}"})
            invalid_token = status == 401 or (answer is not None
                                              and str(answer.get("errorCode", "")) in INVALID_TOKEN_CODES)
            if not invalid_token:
                return status, answer
        raise ProviderError("M-Pesa refused our access token twice: check the app's API products and "
                            "credentials", retryable=False)

    async def _token(self, http: httpx.AsyncClient, settings: _Settings, *, force: bool = False) -> str:
        key = hashlib.sha256("\0".join((settings.base_url, settings.consumer_key,
                                        settings.consumer_secret)).encode()).hexdigest()
        lock = self._token_locks.setdefault(key, asyncio.Lock())
        async with lock:  # one token request per credentials at a time, not one per waiting payment
            cached = self._tokens.get(key)
            if cached is not None and not force and self._monotonic() < cached.refresh_at:
                return cached.value
            token, lifetime = await self._fetch_token(http, settings)
            margin = min(TOKEN_REFRESH_MARGIN_SECONDS, lifetime / 2)
            self._remember(key, _Token(token, self._monotonic() + lifetime - margin))
            return token

    def _remember(self, key: str, token: _Token) -> None:
        if len(self._tokens) >= MAX_CACHED_TOKENS:
            now = self._monotonic()
            for stale in [k for k, t in self._tokens.items() if t.refresh_at <= now] or list(self._tokens)[:1]:
                self._tokens.pop(stale, None)
                self._token_locks.pop(stale, None)
        self._tokens[key] = token

    async def _fetch_token(self, http: httpx.AsyncClient, settings: _Settings) -> tuple[str, float]:
        status, answer = await _send(http, "GET", settings.base_url + "/oauth/v1/generate",
                                     what="an access token", params={"grant_type": "client_credentials"},
                                     auth=httpx.BasicAuth(settings.consumer_key, settings.consumer_secret))
        if status != 200 or answer is None:
            if status in (400, 401, 403):
                raise ProviderError(f"M-Pesa refused the consumer key and secret: {_describe(answer)}",
                                    retryable=False)
            raise _refusal(status, answer, "did not issue an access token")
        token = answer.get("access_token")
        try:
            lifetime = float(answer.get("expires_in", 3599))
        except (TypeError, ValueError):
            lifetime = 0.0
        if not isinstance(token, str) or not token or lifetime <= 0:
            raise ProviderError("M-Pesa answered the token request without a usable token", retryable=True)
        return token, lifetime


# ---- helpers ----------------------------------------------------------------------------------------

def _field(credentials: ProviderCredentials, name: str) -> str:
    value = credentials.secrets.get(name) or credentials.settings.get(name) or ""
    return str(value).strip()


def _settings(credentials: ProviderCredentials, *, need_passkey: bool = True) -> _Settings:
    base_url = credentials.api_base_url.rstrip("/")
    if not base_url.startswith(("https://", "http://")):
        raise ProviderError("M-Pesa API URL is not configured", retryable=False)
    values = {name: _field(credentials, name) for name in
              ("consumer_key", "consumer_secret", "passkey", "short_code", "transaction_type", "till_number")}
    required = ["consumer_key", "consumer_secret", "short_code"] + (["passkey"] if need_passkey else [])
    missing = [name for name in required if not values[name]]
    if missing:
        raise ProviderError(f"M-Pesa settings incomplete: missing {', '.join(missing)}", retryable=False)
    transaction_type = values["transaction_type"] or (BUY_GOODS if values["till_number"] else PAYBILL)
    if transaction_type not in TRANSACTION_TYPES:
        raise ProviderError(f"M-Pesa transaction_type must be {PAYBILL} or {BUY_GOODS}", retryable=False)
    if transaction_type == BUY_GOODS and not values["till_number"]:
        raise ProviderError("M-Pesa buy-goods payments need a till_number", retryable=False)
    # Buy goods: the money goes to the till (PartyB) under the store's short code; paybill: to the short code.
    party_b = values["till_number"] if transaction_type == BUY_GOODS else values["short_code"]
    return _Settings(values["consumer_key"], values["consumer_secret"], values["passkey"], values["short_code"],
                     transaction_type, party_b, base_url)


def _whole_amount(amount: Decimal) -> int:
    if not amount.is_finite() or amount <= 0:
        raise ProviderError("the amount must be positive", retryable=False)
    if amount != amount.to_integral_value():
        raise ProviderError(f"M-Pesa collects whole shillings only: {amount} has cents; round the amount",
                            retryable=False)
    return int(amount)


async def _send(http: httpx.AsyncClient, method: str, url: str, *, what: str,
                **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
    """One call to Daraja: (HTTP status, the JSON object it answered or None). Transport failures become
    retryable ProviderErrors naming what we asked for, never the URL's credentials or a body."""
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ProviderError(f"M-Pesa did not answer {what} in time", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ProviderError(f"M-Pesa could not be reached for {what} ({type(exc).__name__})",
                            retryable=True) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return response.status_code, answer if isinstance(answer, dict) else None


def _refusal(status: int, answer: dict[str, Any] | None, doing: str) -> ProviderError:
    detail = _describe(answer) if answer is not None else f"HTTP {status}"
    message = detail.lower()
    retryable = (status >= 500 or status == 429) and not any(m in message for m in PERMANENT_ERROR_MESSAGES)
    return ProviderError(f"M-Pesa {doing}: {detail}", retryable=retryable)


def _describe(answer: dict[str, Any] | None) -> str:
    """Daraja's own words about a refusal (errorCode/errorMessage or ResponseCode/ResponseDescription),
    trimmed to printable text. Daraja never echoes credentials in them."""
    if not answer:
        return "no details"
    code = answer.get("errorCode") or answer.get("ResponseCode") or ""
    text = answer.get("errorMessage") or answer.get("ResponseDescription") or answer.get("ResultDesc") or ""
    return _clean(f"{code} {text}".strip()) or "no details"


def _clean(value: Any) -> str:
    text = "" if value is None else str(value)
    return "".join(ch for ch in text if ch.isprintable())[:MESSAGE_MAX]


def _json_answer(status: int, body: dict[str, Any]) -> CallbackAnswer:
    return CallbackAnswer(status=status, content_type="application/json", body=json.dumps(body).encode())


def _text(payload: Mapping[str, Any], name: str, *, required: bool = True) -> str:
    value = payload.get(name)
    if value is None or value == "":
        if required:
            raise MalformedCallback(f"{name} missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise MalformedCallback(f"{name} is not text")
    return str(value)


def _amount(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise MalformedCallback(f"{name} is not a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise MalformedCallback(f"{name} is not a number") from None
    if not amount.is_finite() or amount <= 0:
        raise MalformedCallback(f"{name} is not a positive amount")
    return amount


def _result_code(value: Any) -> str:
    if isinstance(value, bool):
        raise MalformedCallback("ResultCode is not a number")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return str(int(value))
    raise MalformedCallback("ResultCode is not a number")


def _parse_stk(payload: dict[str, Any]) -> CallbackResult:
    body = payload.get("Body")
    callback = body.get("stkCallback") if isinstance(body, dict) else None
    if not isinstance(callback, dict):
        raise MalformedCallback("Body.stkCallback missing")
    checkout_request_id = _text(callback, "CheckoutRequestID")
    merchant_request_id = _text(callback, "MerchantRequestID", required=False)
    result_code = _result_code(callback.get("ResultCode"))
    reason = _clean(_text(callback, "ResultDesc", required=False))
    status = status_for_result_code(result_code)
    extra = {"merchant_request_id": merchant_request_id}
    if status is not PaymentStatus.CONFIRMED:
        return CallbackResult(provider_request_id=checkout_request_id, status=status, reason=reason,
                              result_code=result_code, extra=extra)
    metadata = callback.get("CallbackMetadata")
    items = metadata.get("Item") if isinstance(metadata, dict) else None
    if not isinstance(items, list):
        raise MalformedCallback("CallbackMetadata.Item missing on a successful payment")
    by_name: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("Name"), str):
            raise MalformedCallback("CallbackMetadata item without a Name")
        if "Value" in item:  # "Balance" comes without one
            by_name[item["Name"]] = item["Value"]
    if "Amount" not in by_name:
        raise MalformedCallback("Amount missing on a successful payment")
    receipt = _text(by_name, "MpesaReceiptNumber")
    phone = _text(by_name, "PhoneNumber", required=False)
    if phone and not phone.isdigit():
        raise MalformedCallback("PhoneNumber is not digits")
    transaction_date = _text(by_name, "TransactionDate", required=False)
    if transaction_date:
        extra["transaction_date"] = transaction_date
    return CallbackResult(provider_request_id=checkout_request_id, status=status, reason=reason,
                          provider_transaction_id=receipt, amount=_amount(by_name["Amount"], "Amount"),
                          phone=phone, result_code=result_code, extra=extra)


def _parse_c2b(payload: dict[str, Any], *, confirmation: bool) -> CallbackResult:
    """A C2B validation asks whether to accept a payment (PENDING: no money moved yet, and no receipt,
    so its dedupe key differs from the confirmation's); a confirmation reports one (CONFIRMED, the
    TransID as receipt). Both name no request of ours: match them by bill_reference."""
    trans_id = _text(payload, "TransID")
    msisdn = _text(payload, "MSISDN", required=False)  # masked ("2547 ***** 126") since 2021: then no phone
    names = [_text(payload, name, required=False) for name in ("FirstName", "MiddleName", "LastName")]
    extra = {
        "transaction_type": _text(payload, "TransactionType", required=False),
        "trans_time": _text(payload, "TransTime", required=False),
        "invoice_number": _text(payload, "InvoiceNumber", required=False),
        "msisdn": msisdn,
        "customer_name": " ".join(name for name in names if name),
    }
    return CallbackResult(
        provider_request_id=trans_id,
        status=PaymentStatus.CONFIRMED if confirmation else PaymentStatus.PENDING,
        provider_transaction_id=trans_id if confirmation else "",
        amount=_amount(payload.get("TransAmount"), "TransAmount"),
        phone=msisdn if msisdn.isdigit() else "",
        result_code="c2b_confirmation" if confirmation else "c2b_validation",
        bill_reference=_text(payload, "BillRefNumber", required=False).strip(),
        short_code=_text(payload, "BusinessShortCode"),
        extra=extra,
    )


# The registry (providers/registry.py) takes this instance: one token cache for the whole process.
ADAPTER = MpesaAdapter()
