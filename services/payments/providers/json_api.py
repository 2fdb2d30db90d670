"""What the Airtel Money and Orange Money adapters share: a JSON API behind an OAuth client-credentials
token (cached per credentials until shortly before it expires; a call refused for the token gets a fresh
token and one retry), their JSON callbacks, and the plain answer they expect to a callback (HTTP 200 to
stop retrying; a refusal is a 4xx with a JSON reason).

Errors name the provider and what we asked for, never a URL's credentials or a body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from services.payments.providers.base import CallbackAnswer, MalformedCallback, ProviderError

TOKEN_REQUEST = "token request"
TOKEN_CACHE_MAX = 1_000
MAX_CALLBACK_BYTES = 64 * 1024


class Unauthorised(Exception):
    """The API refused our access token (401/403): fetch a fresh one."""


class TokenCache:
    """Access tokens by a key of the credentials (never the secret itself), with their monotonic expiry."""

    def __init__(self, margin_seconds: float):
        self.margin_seconds = margin_seconds
        self._tokens: dict[Any, tuple[str, float]] = {}

    def get(self, key: Any) -> str | None:
        cached = self._tokens.get(key)
        return cached[0] if cached and cached[1] > time.monotonic() else None

    def put(self, key: Any, token: str, expires_in: Any) -> None:
        """`expires_in` as the provider gave it (seconds, a number or a string; unreadable: expired at once)."""
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            lifetime = 0.0
        if len(self._tokens) >= TOKEN_CACHE_MAX:
            self._tokens.clear()
        self._tokens[key] = (token, time.monotonic() + max(0.0, lifetime - self.margin_seconds))

    def clear(self) -> None:
        self._tokens.clear()


async def with_fresh_token(provider: str, what: str, cache: TokenCache, token: Callable[[], Awaitable[str]],
                           call: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """`call(token)`; refused for the token: once more with a fresh one, then give up."""
    for attempt in (1, 2):
        try:
            return await call(await token())
        except Unauthorised:
            cache.clear()
            if attempt == 2:
                raise ProviderError(f"{provider} refused our credentials for the {what}", retryable=False) from None
    raise AssertionError("unreachable")


async def call_json(http: httpx.AsyncClient, provider: str, method: str, url: str, *, what: str,
                    headers: dict[str, str], json_body: Any = None,
                    refusal_detail: Callable[[Any], str] = lambda answer: "") -> dict[str, Any]:
    """One call that answers a JSON object. 401/403: Unauthorised (for the token request itself: refused
    credentials); 5xx, a transport failure or not JSON: a retryable ProviderError; another 4xx: a final one
    with `refusal_detail(answer)`."""
    try:
        response = await http.request(method, url, headers=headers, json=json_body)
    except httpx.TimeoutException as exc:
        raise ProviderError(f"{provider} did not answer the {what} in time", retryable=True) from exc
    except httpx.HTTPError as exc:
        raise ProviderError(f"{provider} could not be reached for the {what}", retryable=True) from exc
    if response.status_code in (401, 403):
        if what == TOKEN_REQUEST:
            raise ProviderError(f"{provider} refused our credentials (HTTP {response.status_code})", retryable=False)
        raise Unauthorised()
    if response.status_code >= 500:
        raise ProviderError(f"{provider} failed the {what} (HTTP {response.status_code})", retryable=True)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400:
        detail = refusal_detail(answer)[:200]
        raise ProviderError(f"{provider} refused the {what} (HTTP {response.status_code}) {detail}".strip(),
                            retryable=False)
    if not isinstance(answer, dict):
        raise ProviderError(f"{provider} answered the {what} with something other than JSON", retryable=True)
    return answer


def load_callback(body: bytes) -> dict[str, Any]:
    """A callback's JSON object; MalformedCallback for anything else."""
    if len(body) > MAX_CALLBACK_BYTES:
        raise MalformedCallback("callback body too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedCallback("callback body is not JSON") from exc
    if not isinstance(data, dict):
        raise MalformedCallback("callback is not a JSON object")
    return data


def callback_answer(accepted: bool, reason: str = "") -> CallbackAnswer:
    """Only an HTTP 200 stops the provider retrying; a refusal is 400 (malformed) or 403 with a JSON reason."""
    if accepted:
        payload: dict[str, Any] = {"status": "accepted"}
        status = 200
    else:
        payload = {"status": "refused", "reason": reason or "refused"}
        status = 400 if reason.startswith("malformed") else 403
    return CallbackAnswer(status=status, content_type="application/json", body=json.dumps(payload).encode())
