"""`fiscal bench-webhooks`: how fast sealed invoices reach a merchant's webhook receiver.

On the stack running in --data-dir (or one started for the run), the bench provisions a merchant,
starts a receiver on 127.0.0.1 (aiohttp, in its own thread, answering 200 at once and checking every
signature), registers it as an `invoice.sealed` endpoint, seals N sales through the gateway (back to
back from every till, or at a fixed --rate), and waits until every one of them has been delivered.

It prints the seals/s, the delivery throughput (events delivered per second from the first seal sent
to the last delivery), the latency from the seal's answer to the event's first arrival at the receiver
(p50/p95/p99/max), duplicates, and the CPU of each process of the stack per delivered event (from /proc,
cli/bench_cpu.py). Every loop is bounded; traffic goes only to 127.0.0.1; the endpoint is deleted after.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from rich.table import Table

from cli.bench_cpu import CpuMeter, postmaster_pid, running_stack_pids
from cli.output import console

RECEIVER_PATH = "/bench-webhooks"
MAX_SEALS = 1_000_000


class BenchReceiver:
    """A loopback receiver: the first arrival (time.monotonic()) of every webhook-id, the invoice it is
    about, duplicates, and signatures that do not verify. Runs its own event loop in a thread so the
    load generator's loop does not delay its clock readings."""

    def __init__(self):
        self.first_arrival: dict[str, float] = {}   # invoice id -> first arrival
        self.webhook_ids: dict[str, str] = {}       # invoice id -> webhook-id
        self.requests = 0
        self.duplicates = 0
        self.bad_signatures = 0
        self.other_events = 0                       # events not about this run's seals
        self.key: bytes | None = None
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-receiver", daemon=True)

    def start(self) -> BenchReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_post(RECEIVER_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{RECEIVER_PATH}"

    def _signed(self, headers, body: bytes) -> bool:
        if self.key is None:
            return False
        content = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode() + body
        expected = base64.b64encode(hmac.new(self.key, content, hashlib.sha256).digest()).decode()
        return any(hmac.compare_digest(f"v1,{expected}", part)
                   for part in headers.get("webhook-signature", "").split(" "))

    async def _handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        signed = self._signed(request.headers, body)
        try:
            envelope = json.loads(body)
            invoice_id = envelope["data"]["invoice_id"] if envelope.get("type") == "invoice.sealed" else None
        except (ValueError, KeyError, TypeError):
            invoice_id = None
        with self._lock:
            self.requests += 1
            if not signed:
                self.bad_signatures += 1
            if invoice_id is None:
                self.other_events += 1
            elif invoice_id in self.first_arrival:
                self.duplicates += 1
            else:
                self.first_arrival[invoice_id] = arrived
                self.webhook_ids[invoice_id] = request.headers.get("webhook-id", "")
        return web.Response(text="ok")

    def delivered(self, invoice_ids) -> int:
        with self._lock:
            return sum(1 for invoice_id in invoice_ids if invoice_id in self.first_arrival)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)

    def pct(p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 1) if values else 0.0

    return {"p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": round(values[-1] * 1000, 1) if values else 0.0,
            "mean_ms": round(sum(values) / len(values) * 1000, 1) if values else 0.0}


async def _seal(session: aiohttp.ClientSession, merchant: dict, seals: int, rate: float | None,
                timeout: float) -> dict:
    """N seals, back to back from every till (closed loop) or one every 1/rate s round robin over the tills
    (at most 1,000 in flight). Returns the answer time of every sealed invoice and the statuses."""
    from cli.bench import sale_body, tills

    everyone = tills(merchant)
    answered: dict[str, float] = {}
    statuses: dict[str, int] = {}
    sent = 0

    async def one(outlet: dict, terminal: str, cashier: str, headers: dict[str, str], n: int) -> None:
        try:
            async with asyncio.timeout(timeout):
                async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, n),
                                        headers=headers) as answer:
                    text = await answer.text()
            statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
            if answer.status == 200:
                answered[json.loads(text)["id"]] = time.monotonic()
        except TimeoutError:
            statuses["timeout"] = statuses.get("timeout", 0) + 1
        except aiohttp.ClientError as exc:
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

    started = time.monotonic()
    if rate is None:
        async def till(outlet, terminal, cashier, headers) -> None:
            nonlocal sent
            while sent < seals:
                sent += 1
                await one(outlet, terminal, cashier, headers, sent)
        await asyncio.gather(*(till(*t) for t in everyone))
    else:
        inflight: set[asyncio.Task] = set()
        for n in range(seals):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            while len(inflight) >= 1000:
                await asyncio.wait(set(inflight), return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(one(*everyone[n % len(everyone)], n))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            sent += 1
        if inflight:
            await asyncio.wait(set(inflight), timeout=timeout + 1.0)
    return {"answered": answered, "statuses": statuses, "sent": sent, "started": started,
            "seal_seconds": time.monotonic() - started}


async def _run(args, gateway_url: str, db_url: str, meter: CpuMeter, receiver: BenchReceiver) -> dict:
    from cli.bench import open_session, provision, warm_up

    with console.status(f"provisioning {args.outlets} outlets x {args.terminals} terminals…"):
        merchant = await provision(db_url, args.outlets, args.terminals, gateway_url)
    session = open_session(gateway_url, args.timeout)
    admin = {"Authorization": f"Bearer {merchant['admin_key']}"}
    endpoint_id = None
    try:
        with console.status("warming up…"):
            await warm_up(session, merchant)  # before the endpoint exists: its events are not measured
        async with session.post("/v1/webhook-endpoints", headers=admin,
                                json={"url": receiver.url, "event_types": ["invoice.sealed"],
                                      "description": "fiscal bench-webhooks"}) as answer:
            created = await answer.json(content_type=None)
            if answer.status != 200:
                raise SystemExit(f"could not register the bench's loopback receiver ({answer.status}): "
                                 f"{created.get('message', created)} (the stack must allow loopback receivers: "
                                 "FISCAL_WEBHOOK_ALLOW_LOOPBACK=1, as `fiscal up` sets)")
        endpoint_id = created["id"]
        receiver.key = base64.b64decode(created["secret"].removeprefix("whsec_"))

        before = meter.sample()
        label = f"{args.seals} seals " + (f"at {args.rate:g}/s" if args.rate else "back to back")
        with console.status(f"{label}…"):
            sealing = await _seal(session, merchant, args.seals, args.rate, args.timeout)
        sealed = sealing["answered"]
        deadline = time.monotonic() + args.drain_timeout
        with console.status(f"waiting for {len(sealed)} deliveries…"):
            while receiver.delivered(sealed) < len(sealed) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        after = meter.sample()
    finally:
        if endpoint_id:
            async with session.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=admin) as answer:
                await answer.read()
        await session.close()

    latencies = [receiver.first_arrival[i] - at for i, at in sealed.items() if i in receiver.first_arrival]
    arrivals = [receiver.first_arrival[i] for i in sealed if i in receiver.first_arrival]
    delivered = len(latencies)
    window = (max(arrivals) - sealing["started"]) if arrivals else 0.0
    cpu = meter.per_seal(before, after, delivered, sealing["sent"])
    return {
        "seals": args.seals, "rate_per_s": args.rate, "sent": sealing["sent"], "sealed": len(sealed),
        "responses": sealing["statuses"], "seal_seconds": round(sealing["seal_seconds"], 2),
        "seals_per_s": round(len(sealed) / sealing["seal_seconds"], 1) if sealing["seal_seconds"] else 0.0,
        "delivered": delivered, "undelivered": len(sealed) - delivered,
        "delivery_window_s": round(window, 2),
        "deliveries_per_s": round(delivered / window, 1) if window > 0 else 0.0,
        "latency_from": "the seal's 200 answer at the client to the event's first arrival at the receiver",
        **_percentiles(latencies),
        # events_received: distinct invoices delivered, including seals whose answer the client did not see
        # as a 200 (warm-up seals published after the endpoint existed, a 503 after the commit).
        "receiver": {"requests": receiver.requests, "events_received": len(receiver.first_arrival),
                     "not_measured_events": len(receiver.first_arrival) - delivered,
                     "duplicates": receiver.duplicates, "bad_signatures": receiver.bad_signatures,
                     "other_events": receiver.other_events},
        "cpu": {"ms_per_delivered_event": cpu["ms_per_seal"], "stack_ms_per_delivered_event": cpu["stack_ms_per_seal"],
                "stack_cpu_s": cpu["stack_cpu_s"], "load_generator_cpu_s": cpu["load_generator_cpu_s"],
                "not_measured": cpu["not_measured"]},
    }


def run_bench_webhooks(args) -> int:
    from stack.mesh import Mesh, MeshOptions

    if not 1 <= args.seals <= MAX_SEALS or args.outlets < 1 or args.terminals < 1:
        raise SystemExit(f"--seals (1..{MAX_SEALS}), --outlets and --terminals must be positive")
    if args.rate is not None and args.rate <= 0:
        raise SystemExit("--rate is seals/s and must be positive")
    if args.timeout <= 0 or args.drain_timeout <= 0:
        raise SystemExit("--timeout and --drain-timeout must be positive")
    state_file = args.data_dir / "stack.json"
    mesh = None
    scratch: Path | None = None
    if state_file.exists():
        state = json.loads(state_file.read_text())
        gateway_url, db_url = state["gateway_url"], state["database_url"]
        pids = running_stack_pids(state)
        console.print(f"using the running stack at {gateway_url}")
    else:
        scratch = Path(tempfile.mkdtemp(prefix="fiscal-bench-webhooks-"))
        with console.status("no running stack: starting one for the benchmark…"):
            mesh = Mesh(MeshOptions(data_dir=scratch, replicas=args.replicas)).start()
        gateway_url, db_url = mesh.gateway_url, mesh.database_url
        pids = {process.name: process.popen.pid for process in mesh.all_processes() if process.popen}
    if urlsplit(gateway_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"fiscal bench-webhooks sends load only to this machine; the gateway is at {gateway_url}")
    receiver = BenchReceiver().start()
    try:
        meter = CpuMeter(pids, postmaster_pid(db_url))
        report = asyncio.run(_run(args, gateway_url, db_url, meter, receiver))
    finally:
        receiver.stop()
        if mesh:
            mesh.stop()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    report["outlets"], report["terminals_per_outlet"] = args.outlets, args.terminals
    _print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    return 0 if report["delivered"] and not report["undelivered"] and not report["receiver"]["bad_signatures"] else 1


def _print(report: dict) -> None:
    load = f"at {report['rate_per_s']:g}/s" if report["rate_per_s"] else "back to back"
    console.print(
        f"{report['sealed']} of {report['sent']} seals sealed {load} in {report['seal_seconds']} s "
        f"({report['seals_per_s']} seals/s, {report['outlets']} outlets x {report['terminals_per_outlet']} terminals); "
        f"{report['delivered']} delivered in {report['delivery_window_s']} s from the first seal = "
        f"{report['deliveries_per_s']} deliveries/s; {report['undelivered']} not delivered", soft_wrap=True)
    console.print(f"seal answer -> delivery, ms: p50 {report['p50_ms']}, p95 {report['p95_ms']}, p99 {report['p99_ms']}, "
                  f"max {report['max_ms']}; receiver: {json.dumps(report['receiver'])}; "
                  f"seal answers {json.dumps(report['responses'])}", soft_wrap=True)
    cpu = Table("process", "CPU ms per delivered event", title="CPU per delivered event (seal included)")
    for name, value in sorted(report["cpu"]["ms_per_delivered_event"].items()):
        cpu.add_row(name, str(value))
    cpu.add_row("[bold]stack total[/]", str(report["cpu"]["stack_ms_per_delivered_event"]))
    console.print(cpu)
    if report["cpu"]["not_measured"]:
        console.print(f"not measured: {json.dumps(report['cpu']['not_measured'])}")
