"""The interface every mobile-money provider adapter implements, and what flows through it.

An adapter knows one provider's documented API: how to start a collection, how to read and authenticate
that provider's callbacks, how to answer them, and how to ask for a payment's status (reconciliation).
It knows nothing of our database or of gRPC. Calls go through the httpx.AsyncClient it is given (with
the deployment's timeout); parsing is pure, so it is unit-tested with the providers' documented
payloads.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import httpx


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


FINAL_STATUSES = frozenset({PaymentStatus.CONFIRMED, PaymentStatus.FAILED, PaymentStatus.CANCELLED,
                            PaymentStatus.EXPIRED})


class ProviderError(Exception):
    """The provider refused or could not be reached while starting or querying a collection. `message`
    is safe to show a cashier (no credentials, no raw body); `retryable` says whether trying again later
    may work (a timeout, a 5xx) or not (bad credentials, a refused phone number)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


class MalformedCallback(Exception):
    """Not the provider's documented shape (missing fields, wrong types, not JSON)."""


class ForgedCallback(Exception):
    """The provider's own authentication of the callback failed (a wrong hash, a wrong notif_token)."""


@dataclass(frozen=True)
class ProviderCredentials:
    """One outlet's settings for one provider: `secrets` (consumer_secret, passkey, client_secret,
    merchant_key, ...) and `settings` (short_code, till_number, country, ...) by the field names of
    payments.proto's MpesaSettings/AirtelSettings/OrangeSettings."""

    api_base_url: str
    secrets: Mapping[str, str]
    settings: Mapping[str, str]


@dataclass(frozen=True)
class Collection:
    """What we ask the customer to pay."""

    payment_id: str          # ours; Airtel's transaction.id and Orange's order_id are derived from it
    amount: Decimal          # in the currency's units ("150.00")
    currency: str
    phone: str               # E.164 digits without "+", e.g. "254712345678"
    account_reference: str   # shown to the customer (M-Pesa AccountReference: at most 12 characters)
    description: str         # M-Pesa TransactionDesc, Orange reference
    callback_url: str        # where the provider must call us back (carries the merchant's token)


@dataclass(frozen=True)
class Initiated:
    """The provider accepted the request; the outcome comes later by callback (or by a status query)."""

    provider_request_id: str             # CheckoutRequestID / the Airtel transaction id / Orange pay_token
    merchant_request_id: str = ""        # M-Pesa MerchantRequestID
    payment_url: str = ""                # Orange: the page the customer pays on
    callback_secret: str = ""            # Orange notif_token: stored encrypted, compared on callback
    customer_message: str = ""           # what to tell the cashier ("Success. Request accepted for processing")


# A callback that names no request of ours (Orange Money's notification: only its notif_token) carries
# in CallbackResult.extra[CALLBACK_SECRET_LOOKUP] the lookup key of the secret it presents; the payment
# whose Initiated.callback_secret has that key is the one it is about (then authenticated against it).
CALLBACK_SECRET_LOOKUP = "callback_secret_sha256"


def callback_secret_lookup(secret: str) -> str:
    """The lookup key of a callback secret: its SHA-256, hex (stored in clear; the secret is sealed)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class CallbackResult:
    """A provider's callback or status answer, normalised."""

    provider_request_id: str             # what we match the payment by (see Initiated)
    status: PaymentStatus
    reason: str = ""                     # the provider's words (ResultDesc, message)
    provider_transaction_id: str = ""    # the receipt (MpesaReceiptNumber, airtel_money_id, txnid): dedupe key
    amount: Decimal | None = None        # what the provider says was paid, when it says so
    phone: str = ""                      # E.164 digits, when the provider says so
    result_code: str = ""                # the provider's raw code ("0", "1032", "TS", "SUCCESS")
    # C2B only (no request of ours): the bill reference the customer typed (our fiscal number or
    # client_invoice_id), the short code paid, and the customer's name as M-Pesa gives it.
    bill_reference: str = ""
    short_code: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def dedupe_key(self) -> str:
        """One key per provider event: the receipt when there is one, else the request id and code."""
        return self.provider_transaction_id or f"{self.provider_request_id}:{self.result_code or self.status}"


@dataclass(frozen=True)
class CallbackAnswer:
    status: int
    content_type: str
    body: bytes


class ProviderAdapter(Protocol):
    name: str                 # "mpesa", "airtel_money", "orange_money"
    secret_fields: tuple[str, ...]     # credential names kept encrypted, shown as "…abcd"
    setting_fields: tuple[str, ...]    # non-secret settings
    callback_kinds: tuple[str, ...]    # "stk", "c2b_validation", "c2b_confirmation"; "notification" for others

    async def initiate(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                       collection: Collection) -> Initiated:
        """Start the collection; raises ProviderError."""

    def parse_callback(self, kind: str, body: bytes, headers: Mapping[str, str]) -> CallbackResult:
        """Read a callback's body (pure); raises MalformedCallback."""

    def authenticate_callback(self, kind: str, body: bytes, headers: Mapping[str, str],
                              credentials: ProviderCredentials | None, callback_secret: str) -> None:
        """The provider's own check beyond our route token (Airtel's HMAC hash when configured, Orange's
        notif_token against `callback_secret`); raises ForgedCallback. M-Pesa has none: a no-op."""

    def callback_answer(self, kind: str, accepted: bool, reason: str = "") -> CallbackAnswer:
        """What the provider expects back (M-Pesa {"ResultCode": 0, "ResultDesc": "Accepted"}; C2B
        validation's accept/reject codes; ...)."""

    async def query_status(self, http: httpx.AsyncClient, credentials: ProviderCredentials,
                           provider_request_id: str, collection: Collection) -> CallbackResult:
        """Ask the provider where a collection stands (STK Query, Airtel's transaction enquiry, Orange's
        transactionstatus); status PENDING while it does not know yet. Raises ProviderError."""
