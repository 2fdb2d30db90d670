"""Orange Money Web Payment simulator: the endpoints we call, the notification Orange sends.

  python -m simulators.orange --port P [--authorization-header "Basic ..."] [--merchant-key K]
                              [--callback-base-url URL]

- POST /oauth/v3/token                                 checks the Authorization header (default
                                                       "Basic c2ltLW9yYW5nZQ==") and grant_type
- POST /orange-money-webpay/{segment}/v1/webpayment    checks the token and merchant_key (default
                                                       "sim-orange-merchant"), answers pay_token,
                                                       payment_url, notif_token
- POST /orange-money-webpay/{segment}/v1/transactionstatus   from the simulator's own state
- GET  /payment/{pay_token}                            a stand-in for Orange's payment page

The customer "pays" without a browser: after the behaviour's delay the simulator marks the transaction
SUCCESS (confirm), FAILED (fail; cancel, with a cancel message) or EXPIRED (timeout) and POSTs the
notification {"status", "notif_token", "txnid"} to the notif_url given at initiation (loopback only;
--callback-base-url replaces its scheme and host). Orange's web payment carries no phone number:
behaviours are matched by order_id, then "*" (set them with "phone": "<order_id>" or "*").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from simulators.airtel import rebase
from simulators.common import SLOW_SECONDS, Behaviour, SimulatorState, schedule_callbacks, send_callback, serve

TOKEN_SECONDS = 7_776_000
OUTCOMES = {
    "confirm": ("SUCCESS", "Payment successful"),
    "fail": ("FAILED", "Payment failed: insufficient balance"),
    "cancel": ("FAILED", "Payment cancelled by the customer"),
    "timeout": ("EXPIRED", "Payment session expired"),
}
REQUIRED_FIELDS = ("merchant_key", "currency", "order_id", "amount", "return_url", "cancel_url", "notif_url",
                   "lang", "reference")


def make_app(state: SimulatorState, options: argparse.Namespace) -> web.Application:
    tokens: dict[str, float] = {}  # access token -> expiry

    def authorised(request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        expiry = tokens.get(header[7:].strip()) if header.lower().startswith("bearer ") else None
        return expiry is not None and expiry > time.time()

    async def token(request: web.Request) -> web.Response:
        body = await request.read()
        state.record(request, body)
        if request.headers.get("Authorization", "") != options.authorization_header:
            return web.json_response({"error": "invalid_client",
                                      "error_description": "The requested service needs credentials"}, status=401)
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        access_token = secrets.token_urlsafe(24)
        tokens[access_token] = time.time() + TOKEN_SECONDS
        return web.json_response({"token_type": "Bearer", "access_token": access_token,
                                  "expires_in": str(TOKEN_SECONDS)})

    async def webpayment(request: web.Request) -> web.Response:
        body = await request.read()
        state.record(request, body)
        if not authorised(request):
            return web.json_response({"code": 42, "message": "Expired credentials",
                                      "description": "The requested service needs credentials"}, status=401)
        try:
            data = json.loads(body)
            if not isinstance(data, dict) or any(field not in data for field in REQUIRED_FIELDS):
                raise ValueError("missing field")
            order_id, amount = str(data["order_id"]), data["amount"]
            if not 0 < len(order_id) <= 30 or not isinstance(amount, int) or amount <= 0:
                raise ValueError("bad order_id or amount")
            notif_url = rebase(str(data["notif_url"]), options.callback_base_url)
        except (ValueError, TypeError):
            return web.json_response({"status": 400, "message": "Bad request",
                                      "description": "Invalid body field"}, status=400)
        if data["merchant_key"] != options.merchant_key:
            return web.json_response({"status": 401, "message": "Invalid merchant key"}, status=401)
        if any(record["order_id"] == order_id for record in state.transactions.values()):
            return web.json_response({"status": 400, "message": "order_id already used"}, status=400)
        behaviour = state.behaviour_for(order_id)
        if behaviour.initiate == "error":
            return web.json_response({"status": 500, "message": "Internal error"}, status=500)
        if behaviour.initiate == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        pay_token = "v1" + secrets.token_hex(16)
        notif_token = secrets.token_hex(16)
        state.transactions[pay_token] = {
            "order_id": order_id, "amount": amount, "currency": str(data["currency"]), "status": "INITIATED",
            "message": "", "txnid": "", "notif_token": notif_token, "notif_url": notif_url}
        settle(pay_token, behaviour)
        host = request.host
        return web.json_response({"status": 201, "message": "OK", "pay_token": pay_token,
                                  "payment_url": f"http://{host}/payment/{pay_token}",
                                  "notif_token": notif_token}, status=201)

    def settle(pay_token: str, behaviour: Behaviour) -> None:
        """The customer opens the page at once (PENDING), then after the delay pays, fails or lets it
        expire; the state changes, then the notification(s) go out per the callback mode."""
        async def run() -> None:
            record = state.transactions.get(pay_token)
            if record is None:
                return
            record["status"] = "PENDING"
            await asyncio.sleep(behaviour.delay_seconds)
            if state.transactions.get(pay_token) is not record:  # reset meanwhile
                return
            name, message = OUTCOMES[behaviour.outcome]
            txnid = f"MP{time.strftime('%y%m%d.%H%M')}.{secrets.token_hex(3).upper()}"
            record.update(status=name, message=message, txnid=txnid)
            payload = {"status": name, "notif_token": record["notif_token"], "txnid": txnid}

            async def deliver() -> None:
                await send_callback(state, record["notif_url"], payload)

            schedule_callbacks(state, replace(behaviour, delay_seconds=0.0), [deliver])

        task = asyncio.get_running_loop().create_task(run())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def transaction_status(request: web.Request) -> web.Response:
        body = await request.read()
        state.record(request, body)
        if not authorised(request):
            return web.json_response({"code": 42, "message": "Expired credentials"}, status=401)
        try:
            data = json.loads(body)
            record = state.transactions.get(str(data["pay_token"]))
            matches = record is not None and record["order_id"] == str(data["order_id"]) \
                and record["amount"] == data["amount"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"status": 400, "message": "Bad request"}, status=400)
        if record is None or not matches:
            return web.json_response({"status": 404, "message": "Transaction not found"}, status=404)
        answer: dict[str, Any] = {"status": record["status"], "order_id": record["order_id"],
                                  "txnid": record["txnid"] or None}
        if record["message"]:
            answer["message"] = record["message"]
        return web.json_response(answer)

    async def payment_page(request: web.Request) -> web.Response:
        record = state.transactions.get(request.match_info["pay_token"])
        if record is None:
            return web.Response(status=404, text="unknown payment")
        return web.Response(text=f"Orange Money (simulated): order {record['order_id']}, "
                                 f"{record['amount']} {record['currency']}, {record['status']}\n")

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes([
        web.post("/oauth/v3/token", token),
        web.post("/orange-money-webpay/{segment}/v1/webpayment", webpayment),
        web.post("/orange-money-webpay/{segment}/v1/transactionstatus", transaction_status),
        web.get("/payment/{pay_token}", payment_page),
    ])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--authorization-header", default="Basic c2ltLW9yYW5nZQ==")
    parser.add_argument("--merchant-key", default="sim-orange-merchant")
    parser.add_argument("--callback-base-url", default="", help="send notifications to this scheme://host:port")
    options, rest = parser.parse_known_args(argv)
    serve("orange", lambda state: make_app(state, options), rest)


if __name__ == "__main__":
    main()
