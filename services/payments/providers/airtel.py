"""Airtel Money Open API (collections): the USSD-push collection, its callback, the transaction enquiry.

What Airtel documents and this adapter follows:
- Token: POST {base}/auth/oauth2/token {"client_id", "client_secret", "grant_type": "client_credentials"}
  -> {"access_token", "expires_in": "180" (seconds, a string), "token_type": "bearer"}.
- Collection (USSD push): POST {base}/merchant/v1/payments/ with headers X-Country / X-Currency and body
  {"reference", "subscriber": {"country", "currency", "msisdn" (WITHOUT the country code)},
   "transaction": {"amount", "country", "currency", "id" (the partner's unique transaction id)}}
  -> {"data": {"transaction": {"id", "status"}}, "status": {"code", "message", "result_code", "success"}}.
- Callback (to the URL registered on the Airtel app): {"transaction": {"id", "message",
  "status_code": "TS" | "TF", "airtel_money_id"}} and, when "callback authentication" is enabled on the
  app, a "hash": the HMAC-SHA256 of the callback with the app's private key, Base64.
- Transaction enquiry: GET {base}/standard/v1/payments/{id} -> {"data": {"transaction": {"airtel_money_id",
  "id", "message", "status": "TS" | "TF" | "TA" | "TIP"}}, "status": {...}}.

Airtel's docs say the hash is computed over "the callback request" without saying how the `hash` field
itself is left out. We read it as the HMAC of the `transaction` object in compact JSON (as received,
key order kept) and also accept the HMAC of the whole body without `hash` in compact JSON; both are
keyed with the merchant's secret, so accepting either weakens nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx

from services.payments.providers.base import (
    CallbackAnswer,
    CallbackResult,
    Collection,
    ForgedCallback,
    Initiated,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
)
from services.payments.providers.json_api import (
    TOKEN_REQUEST,
    TokenCache,
    call_json,
    callback_answer,
    load_callback,
    with_fresh_token,
)

TOKEN_PATH = "/auth/oauth2/token"
COLLECTION_PATH = "/merchant/v1/payments/"
ENQUIRY_PATH = "/standard/v1/payments/"
# The partner transaction id we send: short and alphanumeric, well inside what Airtel accepts.
TRANSACTION_ID_MAX_LENGTH = 20
TOKEN_MARGIN_SECONDS = 30.0
PROVIDER = "Airtel Money"
# Not part of Airtel's API (the callback URL is registered on the Airtel app): a real Airtel ignores it;
# the simulator uses it to call back the right merchant's route.
CALLBACK_URL_HEADER = "X-Callback-Url"

# Country calling codes of the countries Airtel Money operates in (the msisdn goes without it).
CALLING_CODES = {
    "KE": "254", "UG": "256", "TZ": "255", "RW": "250", "ZM": "260", "MW": "265", "CD": "243",
    "CG": "242", "GA": "241", "TD": "235", "NE": "227", "MG": "261", "SC": "248", "NG": "234",
}

STATUS_BY_CODE = {
    "TS": PaymentStatus.CONFIRMED,   # transaction success
    "TF": PaymentStatus.FAILED,      # transaction failed
    "TA": PaymentStatus.PENDING,     # ambiguous: ask again later
    "TIP": PaymentStatus.PENDING,    # in progress
}


def airtel_transaction_id(payment_id: str) -> str:
    """Our transaction.id for a payment: its alphanumerics when short enough, else a digest of it."""
    plain = re.sub(r"[^A-Za-z0-9]", "", payment_id)
    if 0 < len(plain) <= TRANSACTION_ID_MAX_LENGTH:
        return plain
    digest = base64.b32encode(hashlib.sha256(payment_id.encode()).digest()).decode().rstrip("=")
    return "FC" + digest[: TRANSACTION_ID_MAX_LENGTH - 2]


def callback_hash(secret: str, transaction: Mapping[str, Any]) -> str:
    """The callback's `hash` as we check it (and as the simulator makes it): Base64 HMAC-SHA256 of the
    `transaction` object in compact JSON."""
    return _hmac_b64(secret, _compact(transaction))


def national_msisdn(phone: str, country: str) -> str:
    """The subscriber's number without its country code, as Airtel wants it."""
    code = CALLING_CODES.get(country.upper())
    if code is None:
        raise ProviderError(f"Airtel Money is not configured for country {country!r}", retryable=False)
    if not phone.isdigit() or not phone.startswith(code) or len(phone) <= len(code) + 5:
        raise ProviderError(f"phone number is not an Airtel Money number of {country.upper()} (+{code})",
                            retryable=False)
    return phone[len(code):]


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _hmac_b64(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def _amount_json(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _status_of(answer: dict[str, Any]) -> dict[str, Any]:
    """Airtel's {"status": {"code", "message", "result_code", "success"}} envelope, or {}."""
    status = answer.get("status")
    return status if isinstance(status, dict) else {}


def _load_callback(body: bytes) -> dict[str, Any]:
    data = load_callback(body)
    if not isinstance(data.get("transaction"), dict):
        raise MalformedCallback("callback has no transaction object")
    return data


def _refusal_detail(answer: Any) -> str:
    status = answer.get("status") if isinstance(answer, dict) else None
    return str(status.get("message") or "") if isinstance(status, dict) else ""


class AirtelMoneyAdapter:
    name = "airtel_money"
    secret_fields = ("client_id", "client_secret", "callback_hash_secret")
    setting_fields = ("country",)
    callback_kinds = ("notification",)

    def __init__(self) -> None:
        # by (base URL, client_id, digest of the secret)
        self._tokens = TokenCache(TOKEN_MARGIN_SECONDS)

    # -- calls ---------------------------------------------------------------------------------------

    async def initiate(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                       collection: Collection) -> Initiated:
        country = credentials.settings.get("country", "").upper()
        msisdn = national_msisdn(collection.phone, country)
        if collection.amount <= 0:
            raise ProviderError("amount must be positive", retryable=False)
        transaction_id = airtel_transaction_id(collection.payment_id)
        body = {
            "reference": (collection.description or collection.account_reference)[:64],
            "subscriber": {"country": country, "currency": collection.currency, "msisdn": msisdn},
            "transaction": {"amount": _amount_json(collection.amount), "country": country,
                            "currency": collection.currency, "id": transaction_id},
        }
        answer = await self._authorised_call(http, credentials, "POST", COLLECTION_PATH, body, country,
                                             collection.currency, "collection request",
                                             {CALLBACK_URL_HEADER: collection.callback_url})
        status = _status_of(answer)
        if status.get("success") is not True:
            message = str(status.get("message") or "refused")[:200]
            raise ProviderError(f"Airtel Money refused the collection: {message} "
                                f"({status.get('result_code', '')})", retryable=False)
        return Initiated(provider_request_id=transaction_id,
                         customer_message="Request sent to the customer's phone")

    async def query_status(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                           provider_request_id: str, collection: Collection) -> CallbackResult:
        country = credentials.settings.get("country", "").upper()
        answer = await self._authorised_call(http, credentials, "GET", ENQUIRY_PATH + provider_request_id, None,
                                             country, collection.currency, "transaction enquiry", {})
        data = answer.get("data")
        transaction = data.get("transaction") if isinstance(data, dict) else None
        if not isinstance(transaction, dict):
            raise ProviderError(f"Airtel Money enquiry gave no transaction: "
                                f"{str(_status_of(answer).get('message') or '')[:200]}", retryable=True)
        code = str(transaction.get("status") or "").upper()
        return CallbackResult(
            provider_request_id=str(transaction.get("id") or provider_request_id),
            status=STATUS_BY_CODE.get(code, PaymentStatus.PENDING),
            reason=str(transaction.get("message") or "")[:500],
            provider_transaction_id=str(transaction.get("airtel_money_id") or "") if code == "TS" else "",
            result_code=code)

    # -- callbacks -----------------------------------------------------------------------------------

    def parse_callback(self, kind: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        if kind != "notification":
            raise MalformedCallback(f"unknown Airtel callback kind {kind!r}")
        transaction = _load_callback(body)["transaction"]
        transaction_id = transaction.get("id")
        code = transaction.get("status_code")
        if not isinstance(transaction_id, str) or not transaction_id or not isinstance(code, str):
            raise MalformedCallback("transaction.id and transaction.status_code are required strings")
        code = code.upper()
        if code not in ("TS", "TF"):
            raise MalformedCallback(f"unknown status_code {code!r}")
        receipt = transaction.get("airtel_money_id")
        if code == "TS" and (not isinstance(receipt, str) or not receipt):
            raise MalformedCallback("a successful callback needs transaction.airtel_money_id")
        message = transaction.get("message")
        return CallbackResult(
            provider_request_id=transaction_id,
            status=STATUS_BY_CODE[code],
            reason=str(message)[:500] if isinstance(message, str) else "",
            provider_transaction_id=receipt if isinstance(receipt, str) else "",
            result_code=code)

    def authenticate_callback(self, kind: str, body: bytes, headers: Mapping[str, str],
                              credentials: ProviderCredentials | None, callback_secret: str) -> None:
        secret = credentials.secrets.get("callback_hash_secret", "") if credentials else ""
        if not secret:
            return  # callback authentication not enabled on this merchant's Airtel app
        data = _load_callback(body)
        given = data.get("hash")
        if not isinstance(given, str) or not given:
            raise ForgedCallback("callback hash missing")
        unsigned = {key: value for key, value in data.items() if key != "hash"}
        candidates = (callback_hash(secret, data["transaction"]), _hmac_b64(secret, _compact(unsigned)))
        # Compare against every candidate (no early exit) in constant time.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(candidate.encode(), given.encode())
        if not matched:
            raise ForgedCallback("callback hash does not match")

    def callback_answer(self, kind: str, accepted: bool, reason: str = "") -> CallbackAnswer:
        return callback_answer(accepted, reason)

    # -- plumbing ------------------------------------------------------------------------------------

    @staticmethod
    def _headers(token: str, country: str, currency: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "*/*", "Content-Type": "application/json",
                "X-Country": country, "X-Currency": currency}

    async def _token(self, http: httpx.AsyncClient, credentials: ProviderCredentials) -> str:
        client_id = credentials.secrets.get("client_id", "")
        client_secret = credentials.secrets.get("client_secret", "")
        if not client_id or not client_secret:
            raise ProviderError("Airtel Money credentials are incomplete (client_id, client_secret)",
                                retryable=False)
        key = (credentials.api_base_url, client_id, hashlib.sha256(client_secret.encode()).hexdigest())
        cached = self._tokens.get(key)
        if cached:
            return cached
        answer = await call_json(http, PROVIDER, "POST", credentials.api_base_url + TOKEN_PATH,
                                 headers={"Content-Type": "application/json", "Accept": "*/*"},
                                 json_body={"client_id": client_id, "client_secret": client_secret,
                                            "grant_type": "client_credentials"},
                                 what=TOKEN_REQUEST, refusal_detail=_refusal_detail)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            raise ProviderError("Airtel Money gave no access token", retryable=True)
        self._tokens.put(key, token, answer.get("expires_in", 0))
        return token

    async def _authorised_call(self, http: httpx.AsyncClient, credentials: ProviderCredentials, method: str,
                               path: str, body: Any, country: str, currency: str, what: str,
                               extra_headers: dict[str, str]) -> dict[str, Any]:
        async def call(token: str) -> dict[str, Any]:
            return await call_json(http, PROVIDER, method, credentials.api_base_url + path, what=what,
                                   headers={**self._headers(token, country, currency), **extra_headers},
                                   json_body=body, refusal_detail=_refusal_detail)

        return await with_fresh_token(PROVIDER, what, self._tokens, lambda: self._token(http, credentials), call)


# The instance the registry (providers/registry.py) uses.
ADAPTER = AirtelMoneyAdapter()
