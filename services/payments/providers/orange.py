"""Orange Money Web Payment: the payment session, its notification, the transaction status.

What Orange documents and this adapter follows (the "dev" sandbox path; the base URL is configurable):
- Token: POST {base}/oauth/v3/token, header Authorization: the "Authorization header" Orange gives the
  app ("Basic ..."), form body grant_type=client_credentials -> {"token_type": "Bearer", "access_token",
  "expires_in": "7776000"}.
- Payment: POST {base}/orange-money-webpay/dev/v1/webpayment (Bearer) with {"merchant_key", "currency",
  "order_id" (unique, at most 30 characters), "amount" (whole units), "return_url", "cancel_url",
  "notif_url", "lang", "reference"} -> 201 {"status": 201, "message": "OK", "pay_token", "payment_url",
  "notif_token"}. The customer pays on payment_url.
- Notification: Orange POSTs {"status": "SUCCESS" | "FAILED" | ..., "notif_token", "txnid"} to notif_url.
  It carries neither our order_id nor the pay_token: the notif_token is what ties it to a payment.
- Status: POST {base}/orange-money-webpay/dev/v1/transactionstatus {"order_id", "amount", "pay_token"} ->
  {"status": "INITIATED" | "PENDING" | "SUCCESS" | "FAILED" | "EXPIRED", "order_id", "txnid"}.

A notification is only a claim: it is authenticated by its notif_token (compared in constant time with
the one stored at initiation) and then confirmed with the status API before it counts (see
`parse_callback`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.payments.providers.base import (
    CALLBACK_SECRET_LOOKUP,
    CallbackAnswer,
    CallbackResult,
    Collection,
    ForgedCallback,
    Initiated,
    MalformedCallback,
    PaymentStatus,
    ProviderCredentials,
    ProviderError,
    callback_secret_lookup,
)
from services.payments.providers.json_api import (
    TokenCache,
    call_json,
    callback_answer,
    load_callback,
    with_fresh_token,
)

TOKEN_PATH = "/oauth/v3/token"
# The documented sandbox path; a production deployment's path differs by country (e.g. ".../cm/v1").
WEBPAY_PATH = "/orange-money-webpay/dev/v1"
ORDER_ID_MAX_LENGTH = 30
REFERENCE_MAX_LENGTH = 30
TOKEN_MARGIN_SECONDS = 60.0
PROVIDER = "Orange Money"
# Where a notification's notif_token lookup key goes (base.py: the payment is found by it).
NOTIF_TOKEN_LOOKUP_KEY = CALLBACK_SECRET_LOOKUP

STATUS_BY_NAME = {
    "INITIATED": PaymentStatus.PENDING,
    "PENDING": PaymentStatus.PENDING,
    "SUCCESS": PaymentStatus.CONFIRMED,
    "FAILED": PaymentStatus.FAILED,
    "EXPIRED": PaymentStatus.EXPIRED,
}


def orange_order_id(payment_id: str) -> str:
    """Our order_id for a payment: its alphanumerics when they fit in 30 characters, else a digest."""
    plain = re.sub(r"[^A-Za-z0-9]", "", payment_id)
    if 0 < len(plain) <= ORDER_ID_MAX_LENGTH:
        return plain
    digest = base64.b32encode(hashlib.sha256(payment_id.encode()).digest()).decode().rstrip("=")
    return "FC" + digest[: ORDER_ID_MAX_LENGTH - 2]


def notif_token_lookup(notif_token: str) -> str:
    """A lookup key for a notif_token (its SHA-256, hex): stored in clear next to the encrypted token, so
    a notification can find its payment without decrypting every pending one."""
    return callback_secret_lookup(notif_token)


def _whole_amount(amount: Decimal) -> int:
    if amount <= 0 or amount != amount.to_integral_value():
        raise ProviderError("Orange Money takes whole amounts only (no decimals)", retryable=False)
    return int(amount)


def _refusal_detail(answer: Any) -> str:
    return str(answer.get("message") or answer.get("description") or "") if isinstance(answer, dict) else ""


class OrangeMoneyAdapter:
    name = "orange_money"
    secret_fields = ("authorization_header", "merchant_key")
    setting_fields: tuple[str, ...] = ()
    callback_kinds = ("notification",)

    def __init__(self) -> None:
        # by (base URL, digest of the authorization header)
        self._tokens = TokenCache(TOKEN_MARGIN_SECONDS)

    # -- calls ---------------------------------------------------------------------------------------

    async def initiate(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                       collection: Collection) -> Initiated:
        merchant_key = credentials.secrets.get("merchant_key", "")
        if not merchant_key:
            raise ProviderError("Orange Money credentials are incomplete (merchant_key)", retryable=False)
        amount = _whole_amount(collection.amount)
        # No page of ours for the browser to come back to: the till learns the outcome from us, so the
        # customer's browser goes back to the deployment's root.
        parts = urlsplit(collection.callback_url)
        landing = f"{parts.scheme}://{parts.netloc}/"
        body = {
            "merchant_key": merchant_key,
            "currency": collection.currency,
            "order_id": orange_order_id(collection.payment_id),
            "amount": amount,
            "return_url": landing,
            "cancel_url": landing,
            "notif_url": collection.callback_url,
            "lang": credentials.settings.get("lang", "fr"),
            "reference": (collection.description or collection.account_reference)[:REFERENCE_MAX_LENGTH],
        }
        answer = await self._authorised_call(http, credentials, "/webpayment", body, "payment request")
        pay_token, payment_url, notif_token = (answer.get("pay_token"), answer.get("payment_url"),
                                               answer.get("notif_token"))
        if not all(isinstance(value, str) and value for value in (pay_token, payment_url, notif_token)):
            message = str(answer.get("message") or "no pay_token")[:200]
            raise ProviderError(f"Orange Money refused the payment: {message}", retryable=False)
        assert isinstance(pay_token, str) and isinstance(payment_url, str) and isinstance(notif_token, str)
        return Initiated(provider_request_id=pay_token, payment_url=payment_url, callback_secret=notif_token,
                         customer_message="Payment page ready")

    async def query_status(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                           provider_request_id: str, collection: Collection) -> CallbackResult:
        body = {"order_id": orange_order_id(collection.payment_id), "amount": _whole_amount(collection.amount),
                "pay_token": provider_request_id}
        answer = await self._authorised_call(http, credentials, "/transactionstatus", body, "status request")
        name = str(answer.get("status") or "").upper()
        if name not in STATUS_BY_NAME:
            raise ProviderError(f"Orange Money gave an unknown status {name[:40]!r}", retryable=True)
        txnid = answer.get("txnid")
        return CallbackResult(
            provider_request_id=provider_request_id,
            status=STATUS_BY_NAME[name],
            reason=str(answer.get("message") or "")[:500],
            provider_transaction_id=txnid if isinstance(txnid, str) and name == "SUCCESS" else "",
            result_code=name)

    # -- notifications -------------------------------------------------------------------------------

    def parse_callback(self, kind: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        """The notification's CLAIM. It has no pay_token, so provider_request_id is empty; the payment is
        found by extra["notif_token_sha256"] (see notif_token_lookup). The claim must not be applied:
        authenticate it, then apply what query_status answers for that payment's pay_token."""
        if kind != "notification":
            raise MalformedCallback(f"unknown Orange callback kind {kind!r}")
        data = load_callback(body)
        name, notif_token, txnid = data.get("status"), data.get("notif_token"), data.get("txnid")
        if not isinstance(name, str) or not isinstance(notif_token, str) or not notif_token:
            raise MalformedCallback("status and notif_token are required strings")
        if txnid is not None and not isinstance(txnid, str):
            raise MalformedCallback("txnid must be a string")
        name = name.upper()
        if name not in STATUS_BY_NAME:
            raise MalformedCallback(f"unknown status {name[:40]!r}")
        return CallbackResult(
            provider_request_id="",
            status=STATUS_BY_NAME[name],
            provider_transaction_id=txnid or "",
            result_code=name,
            extra={NOTIF_TOKEN_LOOKUP_KEY: notif_token_lookup(notif_token)})

    def authenticate_callback(self, kind: str, body: bytes, headers: Mapping[str, str],
                              credentials: ProviderCredentials | None, callback_secret: str) -> None:
        given = load_callback(body).get("notif_token")
        if not callback_secret or not isinstance(given, str) \
                or not hmac.compare_digest(given.encode(), callback_secret.encode()):
            raise ForgedCallback("notif_token does not match")

    def callback_answer(self, kind: str, accepted: bool, reason: str = "") -> CallbackAnswer:
        return callback_answer(accepted, reason)

    # -- plumbing ------------------------------------------------------------------------------------

    @staticmethod
    def _headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json",
                "Content-Type": "application/json"}

    async def _token(self, http: httpx.AsyncClient, credentials: ProviderCredentials) -> str:
        authorization = credentials.secrets.get("authorization_header", "")
        if not authorization:
            raise ProviderError("Orange Money credentials are incomplete (authorization_header)",
                                retryable=False)
        key = (credentials.api_base_url, hashlib.sha256(authorization.encode()).hexdigest())
        cached = self._tokens.get(key)
        if cached:
            return cached
        try:
            response = await http.post(credentials.api_base_url + TOKEN_PATH,
                                       headers={"Authorization": authorization, "Accept": "application/json"},
                                       data={"grant_type": "client_credentials"})
        except httpx.TimeoutException as exc:
            raise ProviderError("Orange Money did not answer the token request in time", retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ProviderError("Orange Money could not be reached for the token request", retryable=True) from exc
        if response.status_code in (400, 401, 403):
            raise ProviderError(f"Orange Money refused our credentials (HTTP {response.status_code})",
                                retryable=False)
        if response.status_code >= 300:
            raise ProviderError(f"Orange Money failed the token request (HTTP {response.status_code})",
                                retryable=response.status_code >= 500)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderError("Orange Money gave no access token", retryable=True)
        self._tokens.put(key, token, answer.get("expires_in", 0) if isinstance(answer, dict) else 0)
        return token

    async def _authorised_call(self, http: httpx.AsyncClient, credentials: ProviderCredentials, path: str,
                               body: dict[str, Any], what: str) -> dict[str, Any]:
        async def call(token: str) -> dict[str, Any]:
            return await call_json(http, PROVIDER, "POST", credentials.api_base_url + WEBPAY_PATH + path, what=what,
                                   headers=self._headers(token), json_body=body, refusal_detail=_refusal_detail)

        return await with_fresh_token(PROVIDER, what, self._tokens, lambda: self._token(http, credentials), call)


# The instance the registry (providers/registry.py) uses.
ADAPTER = OrangeMoneyAdapter()
