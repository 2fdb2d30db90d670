"""What every provider simulator shares: the behaviour knobs and their control API, the log of what
it received and sent, a bounded callback sender that only ever calls loopback, and the process's
command line.

Control API (JSON):
  POST /__sim/behaviour  {"phone": "2547..." | "*", "outcome": "confirm|fail|cancel|timeout",
                          "delay_seconds": 0.2, "callback": "send|never|twice|out_of_order",
                          "amount": "<paid amount override>", "initiate": "ok|error|slow", "times": N}
  GET  /__sim/requests   what it received (Authorization values blanked) and the callbacks it sent
  POST /__sim/reset      forget behaviours, requests and transactions
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import web

OUTCOMES = ("confirm", "fail", "cancel", "timeout")
CALLBACK_MODES = ("send", "never", "twice", "out_of_order")
INITIATE_MODES = ("ok", "error", "slow")
CALLBACK_TIMEOUT_SECONDS = 10.0
SLOW_SECONDS = 30.0  # "slow": longer than any caller's timeout


@dataclass
class Behaviour:
    outcome: str = "confirm"
    delay_seconds: float = 0.2
    callback: str = "send"
    amount: str | None = None
    initiate: str = "ok"
    times: int | None = None  # how many initiations it applies to; None: until changed

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Behaviour:
        behaviour = cls(
            outcome=str(data.get("outcome", "confirm")), delay_seconds=float(data.get("delay_seconds", 0.2)),
            callback=str(data.get("callback", "send")),
            amount=str(data["amount"]) if data.get("amount") is not None else None,
            initiate=str(data.get("initiate", "ok")),
            times=int(data["times"]) if data.get("times") is not None else None)
        if behaviour.outcome not in OUTCOMES or behaviour.callback not in CALLBACK_MODES \
                or behaviour.initiate not in INITIATE_MODES or not 0 <= behaviour.delay_seconds <= 600:
            raise ValueError("bad behaviour")
        return behaviour


@dataclass
class SimulatorState:
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    # The provider's own record of each transaction, by its request id (for status queries).
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)

    def behaviour_for(self, phone: str) -> Behaviour:
        """The behaviour for an initiation from `phone` (consumes one of its `times`)."""
        for key in (phone, "*"):
            behaviour = self.behaviours.get(key)
            if behaviour is None:
                continue
            if behaviour.times is not None:
                behaviour.times -= 1
                if behaviour.times <= 0:
                    del self.behaviours[key]
            return behaviour
        return Behaviour()

    def record(self, request: web.Request, body: bytes) -> None:
        headers = {k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in request.headers.items()}
        self.received.append({"path": request.path, "method": request.method, "headers": headers,
                              "body": body.decode("utf-8", "replace"), "at": time.time()})
        del self.received[:-10_000]  # bounded


def require_loopback(url: str) -> str:
    """Simulators call back only to loopback: never any other address, private ranges included."""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"callback URL must be on loopback, got host {host!r}")
    return url


async def send_callback(state: SimulatorState, url: str, payload: dict[str, Any] | bytes,
                        headers: dict[str, str] | None = None) -> dict[str, Any]:
    """POST one callback (loopback only); returns what was sent and the answer (also kept in state.sent)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    entry: dict[str, Any] = {"url": url, "body": body.decode("utf-8", "replace"), "at": time.time()}
    try:
        require_loopback(url)
        async with httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS, trust_env=False) as client:
            answer = await client.post(url, content=body,
                                       headers={"content-type": "application/json", **(headers or {})})
        entry.update(status=answer.status_code, answer=answer.text[:500])
    except (httpx.HTTPError, ValueError) as exc:
        entry.update(status=0, error=type(exc).__name__)
    state.sent.append(entry)
    del state.sent[:-10_000]
    return entry


def schedule_callbacks(state: SimulatorState, behaviour: Behaviour,
                       callbacks: list[Callable[[], Any]]) -> None:
    """Send the provider's callback(s) after the behaviour's delay, per its callback mode. `callbacks` is
    the provider's sequence for this outcome (usually one coroutine factory; out_of_order gets the
    provider's intermediate notice first when it has one, else the same callback twice reversed)."""
    if behaviour.callback == "never":
        return

    async def run() -> None:
        await asyncio.sleep(behaviour.delay_seconds)
        sequence = list(callbacks)
        if behaviour.callback == "twice":
            sequence = sequence + sequence
        elif behaviour.callback == "out_of_order":
            sequence = list(reversed(sequence)) + list(reversed(sequence))
        for make in sequence:
            await make()

    task = asyncio.get_running_loop().create_task(run())
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


def control_routes(state: SimulatorState) -> list[web.RouteDef]:
    async def set_behaviour(request: web.Request) -> web.Response:
        try:
            data = await request.json()
            phone = str(data.get("phone", "*"))
            state.behaviours[phone] = Behaviour.from_json(data)
        except (ValueError, TypeError, json.JSONDecodeError):
            return web.json_response({"error": "bad behaviour"}, status=400)
        return web.json_response({"ok": True})

    async def requests(_: web.Request) -> web.Response:
        return web.json_response({"received": state.received, "sent": state.sent})

    async def reset(_: web.Request) -> web.Response:
        state.behaviours.clear()
        state.received.clear()
        state.sent.clear()
        state.transactions.clear()
        return web.json_response({"ok": True})

    return [web.post("/__sim/behaviour", set_behaviour), web.get("/__sim/requests", requests),
            web.post("/__sim/reset", reset)]


def serve(name: str, make_app: Callable[[SimulatorState], web.Application], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m simulators.{name}",
                                     description=f"{name} simulator: the provider's API on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    state = SimulatorState()
    app = make_app(state)
    app.add_routes(control_routes(state))

    async def on_cleanup(_: web.Application) -> None:
        for task in list(state.tasks):
            task.cancel()

    app.on_cleanup.append(on_cleanup)
    print(f"simulator-{name} listening on 127.0.0.1:{args.port}", flush=True)
    # A short shutdown timeout: a simulator told to be slow must still stop at once.
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handle_signals=True, shutdown_timeout=2.0)
