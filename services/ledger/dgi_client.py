"""The DGI's e-MCF API (docs/dgi-simulator.md), as the sync worker uses it: submit a document, confirm
it. Every call has a deadline; every failure is classified: DgiRefused (the DGI said no to this
document: final) or DgiUnavailable (try again later). The token is never logged nor put in an error."""

from __future__ import annotations

from typing import Any

import httpx

from services.ledger.dgi_sync import Acknowledgement, DgiRefused, DgiUnavailable, SyncSettings, document_json

# Statuses that say "not now" rather than "not this document": retried. 401/403 too: a token problem is
# the deployment's, not the document's, and must not mark every document failed.
RETRYABLE_STATUSES = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
MAX_ANSWER_BYTES = 1_048_576


def _json(response: httpx.Response) -> Any:
    if len(response.content) > MAX_ANSWER_BYTES:
        raise DgiUnavailable(f"the DGI's answer is over {MAX_ANSWER_BYTES} bytes (HTTP {response.status_code})")
    try:
        return response.json()
    except ValueError:
        return None


def classify(response: httpx.Response) -> Any:
    """The answer's JSON if it is a success; else raise. Any errorCode in the body is a refusal, whatever
    the status (some integrations answer errors with 200)."""
    data = _json(response)
    if isinstance(data, dict) and data.get("errorCode") not in (None, "", 0, "0"):
        if response.status_code in RETRYABLE_STATUSES:
            raise DgiUnavailable(f"DGI error {data.get('errorCode')} (HTTP {response.status_code}): "
                                 f"{str(data.get('errorDesc', ''))[:200]}")
        raise DgiRefused(str(data["errorCode"]), str(data.get("errorDesc") or f"DGI error {data['errorCode']}"))
    if response.status_code in RETRYABLE_STATUSES or response.status_code >= 500:
        raise DgiUnavailable(f"the DGI answered HTTP {response.status_code}")
    if response.status_code >= 400:
        message = data.get("message") if isinstance(data, dict) else None
        raise DgiRefused(None, f"the DGI refused the document (HTTP {response.status_code})"
                               + (f": {str(message)[:500]}" if message else ""))
    if not isinstance(data, dict):
        raise DgiUnavailable(f"the DGI's answer is not a JSON object (HTTP {response.status_code})")
    return data


class DgiClient:
    """One HTTP client per ledger process (a connection pool), closed by `close()`."""

    def __init__(self, settings: SyncSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._http = httpx.AsyncClient(
            base_url=f"{settings.url}/api", transport=transport,
            timeout=httpx.Timeout(settings.timeout_seconds), follow_redirects=False,
            headers={"Authorization": f"Bearer {settings.token}", "Accept": "application/json"})

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, content: bytes | None = None) -> Any:
        try:
            response = await self._http.request(
                method, path, content=content,
                headers={"Content-Type": "application/json"} if content is not None else None)
        except httpx.TimeoutException as exc:
            raise DgiUnavailable(f"the DGI did not answer within {self.settings.timeout_seconds:g} s "
                                 f"({type(exc).__name__})") from None
        except httpx.HTTPError as exc:  # refused, reset, dropped without an answer, protocol errors
            raise DgiUnavailable(f"the DGI could not be reached ({type(exc).__name__})") from None
        return classify(response)

    async def upload(self, document: dict[str, Any]) -> Acknowledgement:
        """Submit then confirm. Idempotent by documentNumber at the DGI: a repeat answers as the first time."""
        submitted = await self._call("POST", "/invoice", document_json(document))
        uid = submitted.get("uid")
        if not isinstance(uid, str) or not uid or len(uid) > 128 or "/" in uid:
            raise DgiUnavailable("the DGI's answer to a submission carries no usable uid")
        confirmed = await self._call("PUT", f"/invoice/{uid}/confirm")
        code = confirmed.get("codeMECeFDGI")
        if not isinstance(code, str) or not code:
            raise DgiUnavailable("the DGI's confirmation carries no codeMECeFDGI")
        return Acknowledgement(uid=uid, code=code[:128], counters=str(confirmed.get("counters") or "")[:64],
                               date_time=str(confirmed.get("dateTime") or "")[:64])
