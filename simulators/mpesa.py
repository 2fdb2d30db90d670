"""M-Pesa Daraja simulator: the Safaricom endpoints we call, answering in Daraja's documented shapes, and
the callbacks Safaricom sends, to loopback only.

  python -m simulators.mpesa --port P [--consumer-key K --consumer-secret S --passkey PK]

Endpoints (see services/payments/providers/mpesa.py for the shapes):
  GET  /oauth/v1/generate?grant_type=client_credentials   Basic auth against --consumer-key/--consumer-secret
  POST /mpesa/stkpush/v1/processrequest                    STK Push: checks the token, the Password
       (base64(BusinessShortCode + --passkey + Timestamp)) and the fields, records the transaction, answers
       like Safaricom and sends the STK callback to CallBackURL per the phone's behaviour (common.py):
       confirm -> ResultCode 0 with CallbackMetadata, cancel -> 1032, timeout -> 1037, fail -> 1; "amount"
       puts that Amount in the metadata instead of the asked one.
  POST /mpesa/stkpushquery/v1/query                        from its own state: "The transaction is being
       processed" (errorCode 500.001.1001) until the behaviour's delay has passed, then the result.
  POST /mpesa/c2b/v1/registerurl (and v2)                  remembers a short code's validation and
       confirmation URLs (kept across /__sim/reset, as Safaricom keeps them).
  POST /__sim/c2b {"short_code", "bill_ref_number", "amount", "phone", "trans_id"?}
       a customer paying the paybill/till: calls the registered validation URL, then, if it answered
       ResultCode "0" (or could not be reached and ResponseType is Completed), the confirmation URL. Answers
       {"trans_id", "validation_status", "validation_result_code", "confirmed", "confirmation_status"}.
  plus the control API of simulators/common.py.

M-Pesa has no intermediate notice, so "out_of_order" sends the one callback twice (common.py's rule);
"slow" sleeps past any caller's timeout and then answers an error without starting a transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from simulators.common import (
    SLOW_SECONDS,
    SimulatorState,
    require_loopback,
    schedule_callbacks,
    send_callback,
    serve,
)

NAIROBI = ZoneInfo("Africa/Nairobi")
DEFAULT_CONSUMER_KEY = "sim-mpesa-key"
DEFAULT_CONSUMER_SECRET = "sim-mpesa-secret"
DEFAULT_PASSKEY = "sim-passkey"
TOKEN_SECONDS = 3599  # Daraja's tokens live an hour
MAX_TOKENS = 10_000
MAX_REGISTRATIONS = 1_000

# outcome knob -> (ResultCode, ResultDesc) as Daraja sends them
RESULTS = {
    "confirm": (0, "The service request is processed successfully."),
    "cancel": (1032, "Request cancelled by user"),
    "timeout": (1037, "DS timeout user cannot be reached"),
    "fail": (1, "The balance is insufficient for the transaction"),
}
TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
STK_FIELDS = ("BusinessShortCode", "Password", "Timestamp", "TransactionType", "Amount", "PartyA", "PartyB",
              "PhoneNumber", "CallBackURL", "AccountReference", "TransactionDesc")
PHONE = re.compile(r"254\d{9}")
TIMESTAMP = re.compile(r"\d{14}")


@dataclass(frozen=True)
class MpesaConfig:
    consumer_key: str = DEFAULT_CONSUMER_KEY
    consumer_secret: str = DEFAULT_CONSUMER_SECRET
    passkey: str = DEFAULT_PASSKEY
    token_seconds: int = TOKEN_SECONDS


def nairobi_now() -> str:
    return datetime.now(UTC).astimezone(NAIROBI).strftime("%Y%m%d%H%M%S")


def daraja_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"requestId": f"{secrets.randbelow(10**5)}-{secrets.randbelow(10**8)}-1",
                              "errorCode": code, "errorMessage": message}, status=status)


def bad_request(field_name: str) -> web.Response:
    return daraja_error(400, "400.002.02", f"Bad Request - Invalid {field_name}")


def receipt_number() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(10))


def json_number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def redacted(raw: bytes) -> bytes:
    """The body as recorded for /__sim/requests: the STK Password (it encodes the passkey) blanked."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw
    if isinstance(body, dict) and "Password" in body:
        body["Password"] = "<redacted>"
        return json.dumps(body).encode()
    return raw


def stk_callback(transaction: dict[str, Any]) -> dict[str, Any]:
    callback: dict[str, Any] = {
        "MerchantRequestID": transaction["merchant_request_id"],
        "CheckoutRequestID": transaction["checkout_request_id"],
        "ResultCode": transaction["result_code"],
        "ResultDesc": transaction["result_desc"],
    }
    if transaction["result_code"] == 0:
        callback["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": json_number(transaction["paid_amount"])},
            {"Name": "MpesaReceiptNumber", "Value": transaction["receipt"]},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": int(transaction["transaction_date"])},
            {"Name": "PhoneNumber", "Value": int(transaction["phone"])},
        ]}
    return {"Body": {"stkCallback": callback}}


def make_app(state: SimulatorState, config: MpesaConfig) -> web.Application:
    tokens: dict[str, float] = {}                      # access token -> expiry (monotonic)
    stopping = asyncio.Event()                         # set on shutdown: "slow" answers stop waiting
    registrations: dict[str, dict[str, str]] = {}      # short code -> registered C2B URLs

    def authorised(request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        return tokens.get(token, 0.0) > time.monotonic()

    async def read(request: web.Request, required: tuple[str, ...]) -> tuple[dict[str, Any], web.Response | None]:
        """The request's JSON body, or Daraja's refusal: an invalid token, not JSON, a required field empty."""
        raw = await request.read()
        state.record(request, redacted(raw))
        if not authorised(request):
            return {}, daraja_error(404, "404.001.03", "Invalid Access Token")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            return {}, bad_request("JSON")
        missing = [name for name in required if body.get(name) in (None, "")]
        return body, bad_request(missing[0]) if missing else None

    async def generate_token(request: web.Request) -> web.Response:
        state.record(request, b"")
        if request.query.get("grant_type") != "client_credentials":
            return daraja_error(400, "400.008.02", "Invalid grant type passed")
        header = request.headers.get("Authorization", "")
        try:
            key, _, secret = base64.b64decode(header[6:], validate=True).decode().partition(":") \
                if header.startswith("Basic ") else ("", "", "")
        except (binascii.Error, UnicodeDecodeError):
            key, secret = "", ""
        if not (secrets.compare_digest(key, config.consumer_key)
                and secrets.compare_digest(secret, config.consumer_secret)):
            return daraja_error(400, "400.008.01", "Invalid Authentication passed")
        now = time.monotonic()
        for expired in [t for t, until in tokens.items() if until <= now]:
            del tokens[expired]
        if len(tokens) >= MAX_TOKENS:
            tokens.pop(next(iter(tokens)))
        token = secrets.token_urlsafe(21)
        tokens[token] = now + config.token_seconds
        return web.json_response({"access_token": token, "expires_in": str(config.token_seconds)})

    def password_ok(body: dict[str, Any]) -> bool:
        expected = base64.b64encode(
            f"{body.get('BusinessShortCode')}{config.passkey}{body.get('Timestamp')}".encode()).decode()
        return secrets.compare_digest(str(body.get("Password", "")), expected)

    async def stk_push(request: web.Request) -> web.Response:
        body, refusal = await read(request, STK_FIELDS)
        if refusal is not None:
            return refusal
        if not TIMESTAMP.fullmatch(str(body["Timestamp"])):
            return bad_request("Timestamp")
        if not password_ok(body):
            return daraja_error(500, "500.001.1001", "Wrong credentials")
        if body["TransactionType"] not in TRANSACTION_TYPES:
            return bad_request("TransactionType")
        try:
            amount = Decimal(str(body["Amount"]))
        except InvalidOperation:
            return bad_request("Amount")
        if isinstance(body["Amount"], bool) or not amount.is_finite() or amount < 1 \
                or amount != amount.to_integral_value():
            return bad_request("Amount")
        phone = str(body["PhoneNumber"])
        if not PHONE.fullmatch(phone) or not PHONE.fullmatch(str(body["PartyA"])):
            return bad_request("PhoneNumber")
        if len(str(body["AccountReference"])) > 12:
            return bad_request("AccountReference")
        try:
            callback_url = require_loopback(str(body["CallBackURL"]))
        except ValueError:
            return bad_request("CallBackURL")

        behaviour = state.behaviour_for(phone)
        if behaviour.initiate == "slow":
            try:  # past any caller's timeout, but not past our own shutdown
                await asyncio.wait_for(stopping.wait(), SLOW_SECONDS)
            except TimeoutError:
                pass
            return daraja_error(503, "503.001.01", "Service Unavailable")
        if behaviour.initiate == "error":
            return daraja_error(500, "500.003.1001", "Internal Server Error")

        result_code, result_desc = RESULTS[behaviour.outcome]
        paid = amount
        if behaviour.amount is not None:
            try:
                paid = Decimal(behaviour.amount)
            except InvalidOperation:
                paid = amount
        checkout_request_id = f"ws_CO_{datetime.now(NAIROBI).strftime('%d%m%Y%H%M%S')}{uuid.uuid4().int % 10**12:012d}"
        transaction = {
            "merchant_request_id": f"{secrets.randbelow(10**5)}-{secrets.randbelow(10**8)}-1",
            "checkout_request_id": checkout_request_id,
            "short_code": str(body["BusinessShortCode"]),
            "party_b": str(body["PartyB"]),
            "phone": phone,
            "amount": amount,
            "paid_amount": paid,
            "account_reference": str(body["AccountReference"]),
            "callback_url": callback_url,
            "result_code": result_code,
            "result_desc": result_desc,
            "receipt": receipt_number() if result_code == 0 else "",
            "transaction_date": nairobi_now(),
            "decided_at": time.monotonic() + behaviour.delay_seconds,
        }
        state.transactions[checkout_request_id] = transaction
        payload = stk_callback(transaction)

        async def send() -> None:
            await send_callback(state, callback_url, payload)

        schedule_callbacks(state, behaviour, [send])
        return web.json_response({
            "MerchantRequestID": transaction["merchant_request_id"],
            "CheckoutRequestID": checkout_request_id,
            "ResponseCode": "0",
            "ResponseDescription": "Success. Request accepted for processing",
            "CustomerMessage": "Success. Request accepted for processing",
        })

    async def stk_query(request: web.Request) -> web.Response:
        body, refusal = await read(request, ("BusinessShortCode", "Password", "Timestamp", "CheckoutRequestID"))
        if refusal is not None:
            return refusal
        if not password_ok(body):
            return daraja_error(500, "500.001.1001", "Wrong credentials")
        transaction = state.transactions.get(str(body["CheckoutRequestID"]))
        if transaction is None or transaction["short_code"] != str(body["BusinessShortCode"]):
            return bad_request("CheckoutRequestID")
        if time.monotonic() < transaction["decided_at"]:
            return daraja_error(500, "500.001.1001", "The transaction is being processed")
        return web.json_response({
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successsfully",
            "MerchantRequestID": transaction["merchant_request_id"],
            "CheckoutRequestID": transaction["checkout_request_id"],
            "ResultCode": str(transaction["result_code"]),
            "ResultDesc": transaction["result_desc"],
        })

    async def register_url(request: web.Request) -> web.Response:
        body, refusal = await read(request, ("ShortCode", "ResponseType", "ConfirmationURL", "ValidationURL"))
        if refusal is not None:
            return refusal
        if body["ResponseType"] not in ("Completed", "Cancelled"):
            return bad_request("ResponseType")
        for name in ("ConfirmationURL", "ValidationURL"):
            try:
                require_loopback(str(body[name]))
            except ValueError:
                return bad_request(name)
        short_code = str(body["ShortCode"])
        if short_code not in registrations and len(registrations) >= MAX_REGISTRATIONS:
            return daraja_error(429, "429.001.01", "Too many registrations")
        registrations[short_code] = {"validation": str(body["ValidationURL"]),
                                     "confirmation": str(body["ConfirmationURL"]),
                                     "response_type": str(body["ResponseType"])}
        return web.json_response({"OriginatorCoversationID": f"{secrets.randbelow(10**5)}-{secrets.randbelow(10**8)}-1",
                                  "ResponseCode": "0", "ResponseDescription": "Success"})

    async def simulate_c2b(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            short_code = str(data["short_code"])
            amount = Decimal(str(data["amount"])).quantize(Decimal("0.01"))
            phone = str(data["phone"])
            bill_ref = str(data.get("bill_ref_number", ""))
            trans_id = str(data.get("trans_id") or receipt_number())
        except (ValueError, KeyError, TypeError, InvalidOperation, json.JSONDecodeError):
            return web.json_response({"error": "need short_code, amount, phone (bill_ref_number, trans_id)"},
                                     status=400)
        if not amount.is_finite() or amount <= 0 or not PHONE.fullmatch(phone):
            return web.json_response({"error": "bad amount or phone"}, status=400)
        urls = registrations.get(short_code)
        if urls is None:
            return web.json_response({"error": f"no C2B URLs registered for short code {short_code}"}, status=404)
        payload = {
            "TransactionType": str(data.get("transaction_type", "Pay Bill")),
            "TransID": trans_id,
            "TransTime": nairobi_now(),
            "TransAmount": str(amount),
            "BusinessShortCode": short_code,
            "BillRefNumber": bill_ref,
            "InvoiceNumber": "",
            "OrgAccountBalance": "",
            "ThirdPartyTransID": "",
            "MSISDN": f"{phone[:5]}****{phone[-3:]}",  # Daraja masks the payer's number
            "FirstName": str(data.get("first_name", "John")),
            "MiddleName": "",
            "LastName": "",
        }
        validation = await send_and_read(urls["validation"], payload)
        answer = validation.get("json")
        if validation["status"] == 200 and isinstance(answer, dict):
            accepted = str(answer.get("ResultCode")) == "0"
            result_code = str(answer.get("ResultCode"))
        else:  # our validation URL failed: Safaricom applies the registered ResponseType
            accepted = urls["response_type"] == "Completed"
            result_code = ""
        confirmation_status = None
        if accepted:
            confirmation = await send_and_read(urls["confirmation"], payload)
            confirmation_status = confirmation["status"]
        return web.json_response({"trans_id": trans_id, "validation_status": validation["status"],
                                  "validation_result_code": result_code, "confirmed": accepted,
                                  "confirmation_status": confirmation_status})

    async def send_and_read(url: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one C2B request and return what the callback log recorded for it (status, answer)."""
        body_text = json.dumps(payload)
        await send_callback(state, url, payload)
        # send_callback appends its entry just before returning; look it up by url and body, newest first.
        entry: dict[str, Any] = next((e for e in reversed(state.sent) if e["url"] == url and e["body"] == body_text),
                                     {"status": 0})
        try:
            entry = {**entry, "json": json.loads(entry.get("answer") or "")}
        except ValueError:
            pass
        return entry

    async def on_shutdown(_: web.Application) -> None:
        stopping.set()  # runs before aiohttp waits for in-flight handlers

    app = web.Application(client_max_size=64 * 1024)
    app.on_shutdown.append(on_shutdown)
    app.add_routes([
        web.get("/oauth/v1/generate", generate_token),
        web.post("/mpesa/stkpush/v1/processrequest", stk_push),
        web.post("/mpesa/stkpushquery/v1/query", stk_query),
        web.post("/mpesa/c2b/v1/registerurl", register_url),
        web.post("/mpesa/c2b/v2/registerurl", register_url),
        web.post("/__sim/c2b", simulate_c2b),
    ])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.mpesa",
                                     description="M-Pesa Daraja simulator on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--consumer-key", default=DEFAULT_CONSUMER_KEY)
    parser.add_argument("--consumer-secret", default=DEFAULT_CONSUMER_SECRET)
    parser.add_argument("--passkey", default=DEFAULT_PASSKEY)
    parser.add_argument("--token-seconds", type=int, default=TOKEN_SECONDS,
                        help="lifetime of the access tokens it issues")
    # Accepted for a command line shared by every simulator; M-Pesa's callback URLs come in the requests
    # (CallBackURL, registerurl), so this one needs no base.
    parser.add_argument("--callback-base-url", default="")
    args = parser.parse_args(argv)
    if args.token_seconds < 1:
        parser.error("--token-seconds must be at least 1")
    config = MpesaConfig(consumer_key=args.consumer_key, consumer_secret=args.consumer_secret,
                         passkey=args.passkey, token_seconds=args.token_seconds)
    serve("mpesa", lambda state: make_app(state, config), ["--port", str(args.port)])


if __name__ == "__main__":
    main()
