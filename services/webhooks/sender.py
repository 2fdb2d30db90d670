"""One HTTP attempt: POST the stored envelope to the endpoint, within one deadline, to a checked address.

- The URL is checked again and its host resolved and checked (address_guard) at send time; the request
  then goes to that checked address, with the Host header and TLS SNI set to the hostname, so no second
  DNS lookup can swap the address (rebinding). The certificate is verified against the hostname.
- No redirects (a 3xx is a failed attempt), no proxies from the environment, no connection reuse (a
  connection is tied to one hostname's TLS session).
- The whole exchange (resolution, connect, TLS, request, reading the answer) has one deadline.
- At most 64 KB of the answer is read; its first 1,024 characters are kept (decoded with "replace").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from services.webhooks.address_guard import AddressPolicy, Resolver, UrlRefused, check_url, resolve_and_check

MAX_READ_BYTES = 64 * 1024
EXCERPT_CHARS = 1024
USER_AGENT = "FiscalCloud-Webhooks/1"

# httpx logs every request with its URL at INFO: a merchant's URL may carry a token in its query, and the
# engine logs what matters (delivery and endpoint ids, outcome) itself.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)


@dataclass(frozen=True)
class AttemptResult:
    http_status: int  # 0 when no HTTP answer came
    latency_ms: int
    response_excerpt: str
    error: str  # "" when the receiver answered (any status)
    retry_after: str | None = None

    @property
    def succeeded(self) -> bool:
        return not self.error and 200 <= self.http_status < 300


def _status_error(status: int) -> str:
    if 200 <= status < 300:
        return ""
    if 300 <= status < 400:
        return f"redirect not followed (HTTP {status})"
    return f"HTTP {status}"


class Sender:
    def __init__(self, policy: AddressPolicy, timeout: float, resolver: Resolver | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        self.policy = policy
        self.timeout = timeout
        self.resolver = resolver
        # Built once (loading the CA bundle costs milliseconds); shared by every attempt. No keep-alive:
        # a pooled connection would carry another hostname's TLS session to the same address.
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.client = httpx.AsyncClient(verify=self.ssl_context, follow_redirects=False, trust_env=False,
                                        timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> AttemptResult:
        started = time.monotonic()

        def elapsed_ms() -> int:
            return min(int((time.monotonic() - started) * 1000), 2**31 - 1)

        try:
            async with asyncio.timeout(self.timeout):
                parsed = check_url(url, self.policy)
                addresses = await resolve_and_check(parsed, self.policy, self.resolver)
                address = addresses[0]
                # identity: the 64 KB read bound is on the bytes received, no decompression.
                request_headers = {**headers, "host": parsed.host_header, "user-agent": USER_AGENT,
                                   "content-type": "application/json", "accept-encoding": "identity"}
                request = self.client.build_request("POST", parsed.url_for(address), headers=request_headers,
                                                    content=body, extensions={"sni_hostname": parsed.host})
                response = await self.client.send(request, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_raw():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= MAX_READ_BYTES:
                            break
                finally:
                    await response.aclose()
                raw = b"".join(chunks)[:MAX_READ_BYTES]
                excerpt = raw.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
                return AttemptResult(response.status_code, elapsed_ms(), excerpt, _status_error(response.status_code),
                                     response.headers.get("retry-after"))
        except TimeoutError:
            return AttemptResult(0, elapsed_ms(), "", f"timeout after {self.timeout:g} s")
        except UrlRefused as refused:
            return AttemptResult(0, elapsed_ms(), "", f"address not allowed: {refused.refusal}")
        except httpx.TimeoutException:
            return AttemptResult(0, elapsed_ms(), "", f"timeout after {self.timeout:g} s")
        except httpx.ConnectError as exc:
            return AttemptResult(0, elapsed_ms(), "", _connect_error(exc))
        except httpx.HTTPError as exc:
            # A protocol error, a reset connection...: the type says which; no request data in it.
            return AttemptResult(0, elapsed_ms(), "", f"HTTP exchange failed ({type(exc).__name__})")
        except (OSError, ssl.SSLError) as exc:
            return AttemptResult(0, elapsed_ms(), "", f"connection failed ({type(exc).__name__})")


def _connect_error(exc: httpx.ConnectError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS error: certificate verification failed"
        if isinstance(cause, ssl.SSLError):
            return "TLS error"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "ssl" in text or "certificate" in text or "tls" in text:
        return "TLS error"
    return "connection failed"
