"""Airtel Money Open API simulator (collections): the endpoints we call, the callback Airtel sends.

  python -m simulators.airtel --port P [--client-id ID] [--client-secret S] [--hash-secret K]
                              [--callback-url URL] [--callback-base-url URL]

- POST /auth/oauth2/token            checks client_id / client_secret (defaults sim-airtel-id / -secret)
- POST /merchant/v1/payments/        the USSD push: validates the documented body, answers like Airtel,
                                     then per behaviour settles the transaction (TS / TF) and calls back
- GET  /standard/v1/payments/{id}    the transaction enquiry, from the simulator's own state (TIP until
                                     the outcome, then TS / TF)
- POST /__sim/airtel/callback_url    {"client_id", "url"}: the callback URL registered on an Airtel app

Where the callback goes: Airtel calls the URL registered on the merchant's app. The simulator uses, in
order, the request's X-Callback-Url header (our adapter sends it; a real Airtel ignores it), the URL
registered for the client_id, then --callback-url. --callback-base-url replaces the scheme and host of
that URL (a public URL reached on loopback). With --hash-secret every callback carries the `hash`.
Behaviours are matched by the subscriber's full number (country code + msisdn), e.g. "256712345678".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from simulators.common import (
    SLOW_SECONDS,
    Behaviour,
    SimulatorState,
    require_loopback,
    schedule_callbacks,
    send_callback,
    serve,
)

TOKEN_SECONDS = 180
CALLING_CODES = {
    "KE": "254", "UG": "256", "TZ": "255", "RW": "250", "ZM": "260", "MW": "265", "CD": "243",
    "CG": "242", "GA": "241", "TD": "235", "NE": "227", "MG": "261", "SC": "248", "NG": "234",
}
OUTCOME_CODES = {
    "confirm": ("TS", "Paid {currency} {amount} to FISCAL SIM MERCHANT, Trans ID {receipt}."),
    "fail": ("TF", "Transaction failed: insufficient funds."),
    "cancel": ("TF", "Transaction cancelled by the customer."),
    "timeout": ("TF", "Transaction timed out: the customer did not enter the PIN."),
}


def airtel_status(code: str, message: str, success: bool, http: int = 200) -> dict[str, Any]:
    return {"code": str(http), "message": message, "result_code": code, "success": success}


def sign(secret: str, transaction: dict[str, Any]) -> str:
    """The callback hash: Base64 HMAC-SHA256 of the transaction object in compact JSON."""
    message = json.dumps(transaction, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def rebase(url: str, base: str | None) -> str:
    if not base:
        return url
    target, origin = urlsplit(url), urlsplit(base)
    return urlunsplit((origin.scheme, origin.netloc, target.path, target.query, ""))


def make_app(state: SimulatorState, options: argparse.Namespace) -> web.Application:
    tokens: dict[str, tuple[str, float]] = {}          # access token -> (client_id, expiry)
    callback_urls: dict[str, str] = {}                  # client_id -> URL registered on the app

    def bearer_client(request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        entry = tokens.get(header[7:].strip())
        if entry is None or entry[1] < time.time():
            return None
        return entry[0]

    async def token(request: web.Request) -> web.Response:
        body = await request.read()
        state.record(request, body)
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_request",
                                      "error_description": "grant_type client_credentials required"}, status=400)
        if data.get("client_id") != options.client_id or data.get("client_secret") != options.client_secret:
            return web.json_response({"error": "invalid_client",
                                      "error_description": "Client Authentication failed"}, status=401)
        access_token = secrets.token_urlsafe(24)
        tokens[access_token] = (options.client_id, time.time() + TOKEN_SECONDS)
        for stale in [key for key, (_, expiry) in tokens.items() if expiry < time.time()]:
            del tokens[stale]
        return web.json_response({"access_token": access_token, "expires_in": str(TOKEN_SECONDS),
                                  "token_type": "bearer"})

    async def collect(request: web.Request) -> web.Response:
        body = await request.read()
        state.record(request, body)
        client_id = bearer_client(request)
        if client_id is None:
            return web.json_response({"status": airtel_status("ESB000041", "Invalid token", False, 401)},
                                     status=401)
        try:
            data = json.loads(body)
            subscriber, transaction = data["subscriber"], data["transaction"]
            country, msisdn = str(subscriber["country"]).upper(), str(subscriber["msisdn"])
            currency = str(transaction["currency"])
            amount = Decimal(str(transaction["amount"]))
            transaction_id = str(transaction["id"])
            if not msisdn.isdigit() or not transaction_id or amount <= 0 \
                    or request.headers.get("X-Country", "").upper() != country \
                    or request.headers.get("X-Currency", "") != currency:
                raise ValueError("bad collection")
        except (ValueError, KeyError, TypeError, InvalidOperation):
            return web.json_response({"status": airtel_status("ESB000008", "Field validation failed", False, 400)},
                                     status=400)
        if transaction_id in state.transactions:
            return web.json_response({"status": airtel_status("ESB000014", "Duplicate transaction id", False, 400)},
                                     status=400)
        phone = CALLING_CODES.get(country, "") + msisdn
        behaviour = state.behaviour_for(phone)
        if behaviour.initiate == "error":
            return web.json_response({"status": airtel_status("ESB000001", "Something went wrong", False, 500)},
                                     status=500)
        if behaviour.initiate == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        url = request.headers.get("X-Callback-Url") or callback_urls.get(client_id) or options.callback_url
        state.transactions[transaction_id] = {
            "id": transaction_id, "status": "TIP", "message": "Transaction in progress", "airtel_money_id": "",
            "amount": str(amount), "currency": currency, "phone": phone,
            "callback_url": rebase(url, options.callback_base_url) if url else ""}
        settle(transaction_id, behaviour)
        return web.json_response({
            "data": {"transaction": {"id": transaction_id, "status": "Success."}},
            "status": {**airtel_status("ESB000010", "SUCCESS", True), "response_code": "DP00800001006"}})

    def settle(transaction_id: str, behaviour: Behaviour) -> None:
        """After the delay: the customer answers (or not); the state changes, then the callback(s)."""
        async def run() -> None:
            await asyncio.sleep(behaviour.delay_seconds)
            record = state.transactions.get(transaction_id)
            if record is None:  # reset meanwhile
                return
            code, message = OUTCOME_CODES[behaviour.outcome]
            receipt = f"MP{time.strftime('%y%m%d.%H%M')}.{secrets.token_hex(3).upper()}" if code == "TS" else ""
            paid = behaviour.amount or record["amount"]
            record.update(status=code, airtel_money_id=receipt,
                          message=message.format(currency=record["currency"], amount=paid, receipt=receipt))
            if not record["callback_url"]:
                return
            transaction = {"id": transaction_id, "message": record["message"], "status_code": code,
                           "airtel_money_id": receipt}
            payload: dict[str, Any] = {"transaction": transaction}
            if options.hash_secret:
                payload["hash"] = sign(options.hash_secret, transaction)

            async def deliver() -> None:
                await send_callback(state, record["callback_url"], payload)

            schedule_callbacks(state, replace(behaviour, delay_seconds=0.0), [deliver])

        task = asyncio.get_running_loop().create_task(run())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def enquiry(request: web.Request) -> web.Response:
        state.record(request, b"")
        if bearer_client(request) is None:
            return web.json_response({"status": airtel_status("ESB000041", "Invalid token", False, 401)},
                                     status=401)
        record = state.transactions.get(request.match_info["transaction_id"])
        if record is None:
            return web.json_response({"status": airtel_status("ESB000011", "Transaction not found", False, 404)},
                                     status=404)
        return web.json_response({
            "data": {"transaction": {"airtel_money_id": record["airtel_money_id"], "id": record["id"],
                                     "message": record["message"], "status": record["status"]}},
            "status": {**airtel_status("ESB000010", "SUCCESS", True), "response_code": "DP00800001001"}})

    async def register_callback_url(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            callback_urls[str(data["client_id"])] = require_loopback(str(data["url"]))
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "client_id and a loopback url required"}, status=400)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes([
        web.post("/auth/oauth2/token", token),
        web.post("/merchant/v1/payments/", collect),
        web.get("/standard/v1/payments/{transaction_id}", enquiry),
        web.post("/__sim/airtel/callback_url", register_callback_url),
    ])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--client-id", default="sim-airtel-id")
    parser.add_argument("--client-secret", default="sim-airtel-secret")
    parser.add_argument("--hash-secret", default="", help="sign callbacks with this key (Airtel's `hash`)")
    parser.add_argument("--callback-url", default="", help="callback URL when none is registered")
    parser.add_argument("--callback-base-url", default="", help="send callbacks to this scheme://host:port")
    options, rest = parser.parse_known_args(argv)
    if options.callback_url:
        require_loopback(rebase(options.callback_url, options.callback_base_url))
    serve("airtel", lambda state: make_app(state, options), rest)


if __name__ == "__main__":
    main()
