"""`fiscal bench`: seal through the gateway with N outlets x M terminals for a while; report seals/s and
latency percentiles. Each terminal seals one sale after another, as a real till does."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.cli.output import console
from services.cli.state import async_url


async def provision(db_url: str, outlets: int, terminals: int, gateway_url: str) -> dict:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore
    from services.stack.seed import provision_merchant

    engine = create_async_engine(async_url(db_url))
    try:
        return await provision_merchant(LedgerStore(engine), name="Bench Retail",
                                        code_prefix=f"B{uuid.uuid4().hex[:5].upper()}", outlets=outlets,
                                        terminals=terminals, public_url=gateway_url)
    finally:
        await engine.dispose()


def sale_body(outlet: dict, terminal: str, cashier: str, n: int) -> dict:
    return {
        "outlet_id": outlet["id"], "client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": terminal,
        "cashier_id": cashier, "currency": outlet["currency"],
        "lines": [{"description": "Bread 400g", "quantity": "2", "unit_price": "65.00", "tax_group": "A"},
                  {"description": "Milk 500ml", "quantity": "1", "unit_price": "60.00", "tax_group": "C"},
                  {"description": f"Item {n % 97}", "quantity": "1.5", "unit_price": "99.99", "tax_group": "E"}],
        "payments": [{"method": "cash", "amount": "500.00"}],
    }


async def run_load(gateway_url: str, merchant: dict, duration: float, think_time: float = 0.0) -> dict:
    latencies: list[float] = []
    statuses: Counter = Counter()
    deadline = time.monotonic() + duration
    # aiohttp, not httpx, for the load: at hundreds of concurrent connections httpx spent more CPU per
    # request than the whole seal cost the server, and this client shares the machine with the server.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    session = aiohttp.ClientSession(base_url=gateway_url, connector=connector,
                                    timeout=aiohttp.ClientTimeout(total=60))

    async def terminal_loop(outlet: dict, terminal: str, cashier: str) -> None:
        headers = {"Authorization": f"Bearer {merchant['pos_keys'][outlet['id']]}"}
        if think_time:
            # Tills do not all ring up their first sale in the same millisecond.
            await asyncio.sleep(random.uniform(0, think_time))
        n = 0
        while time.monotonic() < deadline:
            n += 1
            started = time.perf_counter()
            try:
                async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, n),
                                        headers=headers) as answer:
                    await answer.read()
                    statuses[answer.status] += 1
                    if answer.status == 200:
                        latencies.append(time.perf_counter() - started)
            except (TimeoutError, aiohttp.ClientError) as exc:
                statuses[type(exc).__name__] += 1
            if think_time:
                # A till between two sales; jittered so terminals do not march in step.
                pause = think_time * random.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    # Warm-up, not measured: one sale per outlet fills the ledger's outlet and key caches and opens the
    # services' database connections, as in a system that has been running.
    async def warm(outlet: dict) -> None:
        headers = {"Authorization": f"Bearer {merchant['pos_keys'][outlet['id']]}"}
        terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
        async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, 0), headers=headers) as r:
            await r.read()

    with console.status("warming up…"):
        await asyncio.gather(*(warm(outlet) for outlet in merchant["outlets"]))
    deadline = time.monotonic() + duration
    tasks = [terminal_loop(outlet, terminal, merchant["cashiers"][outlet["id"]][i % 2])
             for outlet in merchant["outlets"]
             for i, terminal in enumerate(merchant["terminals"][outlet["id"]])]
    started = time.monotonic()
    with Progress(TextColumn("sealing"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[done]} sealed"),
                  console=console) as progress:
        task = progress.add_task("load", total=duration, done=0)

        async def tick():
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                progress.update(task, completed=min(duration, time.monotonic() - started), done=len(latencies))

        await asyncio.gather(tick(), *tasks)
    elapsed = time.monotonic() - started
    await session.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {
        "outlets": len(merchant["outlets"]), "think_time_s": think_time,
        "terminals_per_outlet": len(next(iter(merchant["terminals"].values()))),
        "duration_s": round(elapsed, 1), "sealed": len(latencies),
        "seals_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 1), "p95_ms": round(pct(0.95), 1), "p99_ms": round(pct(0.99), 1),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else 0.0,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0,
        "responses": {str(k): v for k, v in statuses.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
    }


def run_bench(args) -> int:
    from services.stack.mesh import Mesh, MeshOptions

    state_file = args.data_dir / "stack.json"
    mesh = None
    if state_file.exists():
        state = json.loads(state_file.read_text())
        gateway_url, db_url = state["gateway_url"], state["database_url"]
        console.print(f"using the running stack at {gateway_url}")
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="fiscal-bench-"))
        with console.status("no running stack: starting one for the benchmark…"):
            mesh = Mesh(MeshOptions(data_dir=data_dir, replicas=args.replicas)).start()
        gateway_url, db_url = mesh.gateway_url, mesh.database_url
    try:
        with console.status(f"provisioning {args.outlets} outlets x {args.terminals} terminals…"):
            merchant = asyncio.run(provision(db_url, args.outlets, args.terminals, gateway_url))
        result = asyncio.run(run_load(gateway_url, merchant, args.duration, args.think_time))
        result["replicas"] = args.replicas if mesh else "as running"
    finally:
        if mesh:
            mesh.stop()
    table = Table("outlets x terminals", "think s", "seconds", "sealed", "seals/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                  "responses")
    table.add_row(f"{result['outlets']} x {result['terminals_per_outlet']}", str(args.think_time),
                  str(result["duration_s"]),
                  str(result["sealed"]), str(result["seals_per_s"]), str(result["p50_ms"]), str(result["p95_ms"]),
                  str(result["p99_ms"]), str(result["max_ms"]), json.dumps(result["responses"]))
    console.print(table)
    console.print(f"{result['sealed']} seals in {result['duration_s']} s = {result['seals_per_s']} seals/s; latency ms "
                  f"p50 {result['p50_ms']}, p95 {result['p95_ms']}, p99 {result['p99_ms']}, max {result['max_ms']}; "
                  f"responses {json.dumps(result['responses'])}", soft_wrap=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        console.print(f"wrote {args.json}")
    return 0 if result["sealed"] else 1
