"""A real webhook receiver for the tests: an HTTP/1.1 server on 127.0.0.1 (one thread per connection)
that records every request (path, headers, body, arrival time, the answer it got) and answers what a
test told it to, per path: a sequence of answers (status, headers, body, a delay before answering),
then a default. Several endpoints share one receiver by using different paths.

Only loopback: the server binds 127.0.0.1 and nothing else. Every wait is bounded.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_BODY_BYTES = 1 << 20   # the service sends at most 256 KB; anything bigger is a bug we want to see
MAX_DELAY_SECONDS = 30.0   # a test's "sleep before answering" is capped: a handler thread never hangs


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (timeouts)


@dataclass(frozen=True)
class Received:
    path: str
    method: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    arrived_at: float        # time.time()
    arrived_mono: float      # time.monotonic()
    answered: int            # the status this receiver answered
    sender: str | None = None  # who sent it, when the receiver was given a way to tell (`sender_of`)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


def ok() -> Answer:
    return Answer(200)


def status(code: int, body: str = "", **headers: str) -> Answer:
    return Answer(code, body or f"status {code}", {k.replace("_", "-"): v for k, v in headers.items()})


class WebhookReceiver:
    """`with WebhookReceiver() as receiver:` or `.start()`/`.stop()`. `path()` gives a fresh path,
    `url(path)` its URL; `script(path, *answers, default=...)` sets what the path answers."""

    def __init__(self, port: int = 0, sender_of=None):
        self.sender_of = sender_of  # (client host, client port) -> a name, e.g. which process sent it
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[Received] = []
        self._scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self._defaults: dict[str, Answer] = {}
        self._responders: dict[str, Callable[[dict[str, str]], Answer]] = {}
        self.connections = 0  # TCP connections accepted, even ones that never made a valid request
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str, scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @staticmethod
    def path() -> str:
        return f"/hooks/{uuid.uuid4().hex[:12]}"

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, path: str, *answers: Answer, default: Answer | None = None) -> None:
        """The next requests to `path` get `answers` in order, then `default` (200 "ok" unless given)."""
        with self._lock:
            self._scripts[path] = deque(answers)
            if default is not None:
                self._defaults[path] = default

    def respond(self, path: str, responder) -> None:
        """`path` answers `responder(headers)` (e.g. per_event(...)) for every request, scripts aside."""
        with self._lock:
            self._responders[path] = responder

    def requests(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 30.0,
                 match=lambda received: True) -> list[Received]:
        """Wait until at least `count` requests (to `path`, matching `match`) arrived; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                found = [r for r in self._received if (path is None or r.path == path) and match(r)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: {len(found)} of {count} requests to {path or 'any path'} "
                                         f"after {timeout} s")
                self._arrived.wait(min(left, 0.5))

    def _answer_for(self, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            responder = self._responders.get(path)
        if responder is not None:
            return responder(headers)
        with self._lock:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
            return self._defaults.get(path, Answer())

    def _record(self, received: Received) -> None:
        with self._arrived:
            self._received.append(received)
            self._arrived.notify_all()

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address, handler, receiver: WebhookReceiver):
        self.receiver = receiver
        super().__init__(address, handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()

    def handle_error(self, request, client_address) -> None:
        pass  # a sender that hangs up (its timeout, a killed process) is part of what the tests do

    def process_request(self, request, client_address) -> None:
        self.receiver._connected()
        super().process_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do
    server: _Server
    timeout = 30  # an idle or stuck connection's thread ends

    def log_message(self, format, *args) -> None:  # noqa: A002 - quiet: the tests print what matters
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        arrived_at, arrived_mono = time.time(), time.monotonic()
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            return
        path = self.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver = self.server.receiver
        answer = receiver._answer_for(path, headers)
        sender = receiver.sender_of(self.client_address) if receiver.sender_of else None
        receiver._record(Received(
            path=path, method=self.command, headers=headers,
            body=body, arrived_at=arrived_at, arrived_mono=arrived_mono, answered=answer.status, sender=sender))
        if answer.delay:
            time.sleep(min(answer.delay, MAX_DELAY_SECONDS))
        payload = answer.body.encode()
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up (its timeout): what it saw is what the test checks

    do_POST = _handle
    do_PUT = _handle
    do_GET = _handle


def per_event(*first: Answer, then: Answer | None = None):
    """A responder for `WebhookReceiver.respond`: the n-th request carrying one webhook-id gets
    first[n] (counting from 0), later ones `then` (200 "ok")."""
    counts: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def answer(received_headers: dict[str, str]) -> Answer:
        with lock:
            n = counts[received_headers.get("webhook-id", "")]
            counts[received_headers.get("webhook-id", "")] = n + 1
        return first[n] if n < len(first) else (then or Answer())
    return answer


# ---- The public webhooks API through Envoy, as the tests use it ----

SUBSCRIBABLE_TYPES = {"invoice.sealed", "invoice.sync.success", "invoice.sync.failed", "report.generated",
                      "outlet.offline_alert", "payment.confirmed", "payment.failed"}
# The webhooks service (through Envoy's transcoder) answers errors as {"code": <gRPC code>, "message": ...}.
INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED = 3, 5, 7, 16


class WebhooksApi:
    """One API key's view of /v1/webhook-*: every call through the gateway, 30 s deadline."""

    def __init__(self, gateway_url: str, key: str | None):
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=gateway_url, timeout=30, headers=headers)

    def call(self, method: str, path: str, body: dict | None = None, params: dict | None = None):
        return self.client.request(method, path, json=body, params=params)

    def create(self, url: str, event_types=("invoice.sealed",), **fields) -> dict:
        answer = self.call("POST", "/v1/webhook-endpoints", {"url": url, "event_types": list(event_types), **fields})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def get(self, endpoint_id: str) -> dict:
        answer = self.call("GET", f"/v1/webhook-endpoints/{endpoint_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def endpoints(self) -> list[dict]:
        found, token = [], ""
        for _ in range(100):  # bounded: 100 pages of up to 100
            answer = self.call("GET", "/v1/webhook-endpoints", params={"page_size": 100, "page_token": token})
            assert answer.status_code == 200, answer.text
            found += answer.json().get("endpoints", [])
            token = answer.json().get("next_page_token", "")
            if not token:
                return found
        raise AssertionError("more than 100 pages of endpoints")

    def deliveries(self, endpoint_id: str, **params) -> list[dict]:
        found, token = [], ""
        for _ in range(200):
            answer = self.call("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries",
                               params={"page_size": 100, **params, **({"page_token": token} if token else {})})
            assert answer.status_code == 200, answer.text
            found += answer.json().get("deliveries", [])
            token = answer.json().get("next_page_token", "")
            if not token:
                return found
        raise AssertionError("more than 200 pages of deliveries")

    def wait_deliveries(self, endpoint_id: str, done, timeout: float = 30.0, **params) -> list[dict]:
        """Poll the endpoint's deliveries until `done(deliveries)`; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            deliveries = self.deliveries(endpoint_id, **params)
            if done(deliveries):
                return deliveries
            if time.monotonic() > deadline:
                raise AssertionError(f"deliveries never reached the expected state in {timeout} s: "
                                     f"{[(d.get('status'), d.get('attempt_count')) for d in deliveries][:10]}")
            time.sleep(0.2)

    def close(self) -> None:
        self.client.close()


def verify(secret: str, received: Received) -> dict:
    """The receiver's side, with the `standardwebhooks` package: the parsed envelope, or it raises."""
    from standardwebhooks import Webhook

    return Webhook(secret).verify(received.body, received.headers)


def process_of_connection(pids: dict[str, int]):
    """A `sender_of` for WebhookReceiver: which of `pids` (name -> pid) holds the client end of a
    loopback connection, from /proc/net/tcp (the socket's inode by its local port) and /proc/<pid>/fd."""
    import os

    def sender_of(client_address) -> str | None:
        port = client_address[1]
        inode = None
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as rows:
                    for row in list(rows)[1:]:
                        parts = row.split()
                        if int(parts[1].rsplit(":", 1)[1], 16) == port:
                            inode = parts[9]
                            break
            except FileNotFoundError:
                continue
            if inode:
                break
        if not inode:
            return None
        for name, pid in pids.items():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except (FileNotFoundError, PermissionError):
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return name
                except OSError:
                    continue
        return None
    return sender_of
