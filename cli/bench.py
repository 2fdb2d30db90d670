"""`fiscal bench`: seal through the gateway under load and report seals/s, latency and CPU per seal.

Three kinds of gateway run, and a floor to compare them with:

* closed loop (the default): every terminal seals one sale after another, as a till does; the saturation test.
* open loop (`--rate R`): sales arrive at a fixed mean rate with exponential (Poisson) gaps, spread at random
  over the outlets x terminals, each sent when due whether or not earlier ones have answered (up to
  `--max-inflight`). Latency is measured from the *scheduled* send time, so a slow system cannot hide its
  queue by slowing the generator down (coordinated omission).
* sweep (`--sweep R1,R2,…` or `--sweep-auto`): the open loop at each rate; a chart of achieved seals/s and
  p50/p99 against offered load (SVG) and the raw points (JSON).
* floor (`--floor`): the seal's own work by one Python process straight on the same PostgreSQL
  (cli/bench_floor.py); with a gateway run in the same command, the ratio gateway/floor.

Around every measured window the CPU time of each process of the stack (Envoy, each service replica,
PostgreSQL with its backends) and of this load generator is read from /proc (cli/bench_cpu.py) and printed
as ms of CPU per seal, and every few seconds their resident memory (cli/bench_memory.py): start, end, max and
the slope over the second half of the load, so that a 10-minute run shows whether memory stays flat. Every loop is bounded in time and count and stops by itself; traffic goes only to
the gateway on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.bench_cpu import CpuMeter, postmaster_pid, running_stack_pids
from cli.bench_memory import RssSampler, interval_for, slope_mb_per_min
from cli.output import console
from cli.state import async_url

DEFAULT_CHART = Path("docs/bench-sweep.svg")
SWEEP_AUTO_START = 50.0
SWEEP_AUTO_FACTOR = 1.5
SWEEP_AUTO_STEPS = 10          # at most this many rates, whatever happens
SWEEP_PAUSE_S = 2.0            # between two rates: let the previous one's queue drain
ProgressFn = Callable[[float, int], None]


async def provision(db_url: str, outlets: int, terminals: int, gateway_url: str) -> dict:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore
    from stack.seed import provision_merchant

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


def tills(merchant: dict) -> list[tuple[dict, str, str, dict[str, str]]]:
    """(outlet, terminal, cashier, headers) for every terminal of every outlet."""
    return [(outlet, terminal, merchant["cashiers"][outlet["id"]][i % len(merchant["cashiers"][outlet["id"]])],
             {"Authorization": f"Bearer {merchant['pos_keys'][outlet['id']]}"})
            for outlet in merchant["outlets"]
            for i, terminal in enumerate(merchant["terminals"][outlet["id"]])]


def open_session(gateway_url: str, timeout: float) -> aiohttp.ClientSession:
    # aiohttp, not httpx: at hundreds of concurrent connections httpx spent more CPU per request than the
    # whole seal cost the server, and this client shares the machine with the server (its own CPU per
    # request is printed with every run).
    host = urlsplit(gateway_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"fiscal bench sends load only to this machine; the gateway is at {gateway_url}")
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(base_url=gateway_url, connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=timeout))


async def warm_up(session: aiohttp.ClientSession, merchant: dict) -> None:
    """Not measured: one sale per outlet fills the ledger's outlet and key caches and opens the services'
    database connections, as in a system that has been running."""
    async def warm(outlet: dict) -> None:
        headers = {"Authorization": f"Bearer {merchant['pos_keys'][outlet['id']]}"}
        terminal, cashier = merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]
        async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, 0), headers=headers) as r:
            await r.read()

    semaphore = asyncio.Semaphore(64)

    async def bounded(outlet: dict) -> None:
        async with semaphore:
            await warm(outlet)

    await asyncio.gather(*(bounded(outlet) for outlet in merchant["outlets"]))


def _percentiles(latencies: array | list[float]) -> dict:
    latencies = sorted(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1) if latencies else 0.0

    return {"p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else 0.0,
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0.0}


def _cpu(meter: CpuMeter | None) -> dict | None:
    return meter.sample() if meter else None


async def run_closed_loop(session: aiohttp.ClientSession, merchant: dict, duration: float, think_time: float = 0.0,
                          *, meter: CpuMeter | None = None, max_requests: int = 5_000_000,
                          on_progress: ProgressFn = lambda elapsed, done: None) -> dict:
    """Every terminal seals back to back (or with a jittered pause) until `duration` or `max_requests`."""
    latencies = array("d")  # 8 bytes a seal, not a float object's 32: a long run must not grow the generator
    statuses: Counter = Counter()
    sent = 0
    started = time.monotonic()
    deadline = started + duration

    async def terminal_loop(outlet: dict, terminal: str, cashier: str, headers: dict[str, str]) -> None:
        nonlocal sent
        if think_time:
            # Tills do not all ring up their first sale in the same millisecond.
            await asyncio.sleep(random.uniform(0, min(think_time, duration)))
        n = 0
        while time.monotonic() < deadline and sent < max_requests:
            n += 1
            sent += 1
            begun = time.perf_counter()
            try:
                async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, n),
                                        headers=headers) as answer:
                    await answer.read()
                    statuses[str(answer.status)] += 1
                    if answer.status == 200:
                        latencies.append(time.perf_counter() - begun)
            except TimeoutError:
                statuses["timeout"] += 1
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] += 1
            if think_time:
                # A till between two sales; jittered so terminals do not march in step.
                pause = think_time * random.uniform(0.5, 1.5)
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    async def tick() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            on_progress(min(duration, time.monotonic() - started), len(latencies))

    before = _cpu(meter)
    await asyncio.gather(tick(), *(terminal_loop(*till) for till in tills(merchant)))
    elapsed = time.monotonic() - started
    after = _cpu(meter)
    result = {
        "mode": "closed", "client": "aiohttp", "think_time_s": think_time, "duration_s": round(elapsed, 2), "sent": sent,
        "sealed": len(latencies), "seals_per_s": round(len(latencies) / elapsed, 1),
        **_percentiles(latencies), "responses": dict(statuses), "timeouts": statuses.get("timeout", 0),
        "latency_from": "send time (each till waits for its answer)",
    }
    if before and after and meter:
        result["cpu"] = meter.per_seal(before, after, len(latencies), sent)
    return result


async def run_open_loop(session: aiohttp.ClientSession, merchant: dict, rate: float, duration: float, *,
                        max_inflight: int = 1000, timeout: float = 10.0, meter: CpuMeter | None = None,
                        seed: int | None = None, on_progress: ProgressFn = lambda elapsed, done: None) -> dict:
    """Poisson arrivals at `rate`/s for `duration` s over all tills; each sent when due. Bounded: at most
    ~1.5 x rate x duration + 100 arrivals, at most `max_inflight` requests at once (an arrival that finds
    the cap full is counted as skipped, not queued), each request cancelled after `timeout`, and the
    stragglers waited for at most `timeout` + 1 s after the last arrival."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    rng = random.Random(seed)
    everyone = tills(merchant)
    max_arrivals = int(rate * duration * 1.5) + 100
    statuses: Counter = Counter()
    # Arrays of doubles, not lists of floats: 8 bytes an answer instead of 32, so that a 10-minute soak
    # measures the stack's memory and not the generator's own record of it.
    latencies = array("d")
    answered = array("d")  # every answer, whatever its status (overload must be refused fast)
    inflight: set[asyncio.Task] = set()
    arrivals = sent = skipped = retry_after = peak_inflight = 0

    async def one(due: float, outlet: dict, terminal: str, cashier: str, headers: dict[str, str], n: int) -> None:
        nonlocal retry_after
        try:
            async with asyncio.timeout(timeout):
                async with session.post("/v1/invoices", json=sale_body(outlet, terminal, cashier, n),
                                        headers=headers) as answer:
                    await answer.read()
            statuses[str(answer.status)] += 1
            answered.append(time.monotonic() - due)
            if answer.status == 200:
                latencies.append(time.monotonic() - due)  # from when it was due, not when it went out
            elif answer.status == 503 and answer.headers.get("Retry-After"):
                retry_after += 1
        except TimeoutError:
            statuses["timeout"] += 1
        except aiohttp.ClientError as exc:
            statuses[type(exc).__name__] += 1
        except asyncio.CancelledError:
            statuses["cancelled"] += 1
            raise

    before = _cpu(meter)
    started = time.monotonic()
    end = started + duration
    due = started
    last_tick = started
    while arrivals < max_arrivals:
        due += rng.expovariate(rate)
        if due >= end:
            break
        delay = due - time.monotonic()
        # Behind schedule (the generator itself is saturated): send now, but still yield to the loop.
        await asyncio.sleep(max(0.0, delay))
        arrivals += 1
        if len(inflight) >= max_inflight:
            skipped += 1
            continue
        outlet, terminal, cashier, headers = everyone[rng.randrange(len(everyone))]
        task = asyncio.create_task(one(due, outlet, terminal, cashier, headers, arrivals))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        sent += 1
        peak_inflight = max(peak_inflight, len(inflight))
        if due - last_tick >= 0.5:
            last_tick = due
            on_progress(min(duration, due - started), len(latencies))
    if inflight:
        _done, pending = await asyncio.wait(set(inflight), timeout=timeout + 1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    elapsed = time.monotonic() - started
    after = _cpu(meter)
    on_progress(duration, len(latencies))
    result = {
        "mode": "open", "client": "aiohttp", "rate_per_s": rate, "duration_s": round(elapsed, 2), "arrival_window_s": duration,
        "arrivals": arrivals, "sent": sent, "skipped_inflight_cap": skipped, "max_inflight": max_inflight,
        "peak_inflight": peak_inflight, "offered_per_s": round(arrivals / duration, 1),
        "sealed": len(latencies), "seals_per_s": round(len(latencies) / elapsed, 1),
        **_percentiles(latencies), "responses": dict(statuses), "timeouts": statuses.get("timeout", 0),
        "retry_after_503s": retry_after, "timeout_s": timeout,
        "all_answers": {**_percentiles(answered), "over_1s": sum(1 for t in answered if t > 1.0)},
        "latency_from": "scheduled send time (open loop; no coordinated omission)",
    }
    if before and after and meter:
        result["cpu"] = meter.per_seal(before, after, len(latencies), sent)
    return result


def sweep_rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--sweep takes rates in seals/s separated by commas, e.g. 100,200,400 (got {text!r})") from None
    if not rates or any(rate <= 0 for rate in rates):
        raise SystemExit(f"--sweep: every rate must be a positive number of seals/s (got {text!r})")
    return sorted(rates)


def _saturated(point: dict) -> bool:
    """Past the knee: the system no longer keeps up, or answers too slowly to be worth going further."""
    return point["seals_per_s"] < 0.9 * point["offered_per_s"] or point["p99_ms"] > 2000 or \
        point["sealed"] < point["sent"] * 0.99


@contextmanager
def progress_bar(label: str, total: float, unit: str = "sealed") -> Iterator[ProgressFn]:
    with Progress(TextColumn(label), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[done]} " + unit),
                  console=console, transient=False) as progress:
        task = progress.add_task(label, total=total, done=0)
        yield lambda elapsed, done: progress.update(task, completed=elapsed, done=done)


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine()}


def run_bench(args) -> int:
    from stack.mesh import Mesh, MeshOptions

    rates = sweep_rates(args.sweep) if args.sweep else []
    if args.duration <= 0 or args.outlets < 1 or args.terminals < 1:
        raise SystemExit("--duration, --outlets and --terminals must be positive")
    if args.rate is not None and args.rate <= 0:
        raise SystemExit("--rate is seals/s offered and must be positive")
    if args.max_inflight < 1 or args.timeout <= 0 or args.floor_connections < 1 or args.wrk_threads < 1:
        raise SystemExit("--max-inflight, --timeout, --floor-connections and --wrk-threads must be positive")
    if args.client == "wrk":
        if args.rate is not None or args.sweep or args.sweep_auto or args.think_time:
            raise SystemExit("--client wrk drives only the closed loop back to back (the saturation test); the open "
                             "loop (--rate, --sweep) and --think-time use the built-in client")
        from cli.bench_wrk import wrk_binary

        wrk_binary()  # a readable error now, not after the stack started
    gateway = not args.floor_only
    state_file = args.data_dir / "stack.json"
    mesh = None
    database = None
    scratch: Path | None = None  # the data directory of a stack started for this run, removed after it
    pids: dict[str, int] = {}
    if state_file.exists():
        state = json.loads(state_file.read_text())
        gateway_url, db_url = state["gateway_url"], state["database_url"]
        pids = running_stack_pids(state)
        console.print(f"using the running stack at {gateway_url}")
    elif gateway:
        scratch = Path(tempfile.mkdtemp(prefix="fiscal-bench-"))
        with console.status("no running stack: starting one for the benchmark…"):
            mesh = Mesh(MeshOptions(data_dir=scratch, replicas=args.replicas)).start()
        gateway_url, db_url = mesh.gateway_url, mesh.database_url
        pids = {process.name: process.popen.pid for process in mesh.all_processes() if process.popen}
    else:
        from stack.postgres import start_database

        with console.status("no running stack: starting PostgreSQL for the floor…"):
            scratch = Path(tempfile.mkdtemp(prefix="fiscal-bench-"))
            database = start_database(scratch)
        gateway_url, db_url = "", database.url
    report: dict = {"machine": _machine(), "outlets": args.outlets, "terminals_per_outlet": args.terminals,
                    "replicas": (args.replicas if mesh else "as running") if gateway else None, "runs": []}
    try:
        postmaster = postmaster_pid(db_url)
        if postmaster is None:
            console.print("[yellow]PostgreSQL's CPU is left out: its server is not a process on this machine "
                          "(or the bench cannot reach it)[/]")
        if gateway and not pids:
            console.print("[yellow]the stack's processes were not found: no CPU per seal for them[/]")
        meter = CpuMeter(pids, postmaster)
        if gateway:
            steps = len(rates) or (SWEEP_AUTO_STEPS if args.sweep_auto and args.rate is None else 1)
            memory = RssSampler(pids, postmaster, interval_for(args.duration * steps))
            report["runs"] = asyncio.run(_gateway_runs(args, gateway_url, db_url, rates, meter, memory))
            report["memory"] = memory.report()
        if args.floor or args.floor_only:
            report["floor"] = _floor(args, db_url, meter)
    finally:
        if mesh:
            mesh.stop()
        if database:
            database.stop()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.sweep or args.sweep_auto:
        points = [run for run in report["runs"] if run["mode"] == "open"]
        report["sweep"] = _write_sweep(args, points, report)
    if report.get("floor") and report["runs"]:
        best = max(run["seals_per_s"] for run in report["runs"])
        report["ratio_gateway_to_floor"] = round(best / report["floor"]["seals_per_s"], 3) \
            if report["floor"]["seals_per_s"] else None
    _print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        console.print(f"wrote {args.json}")
    sealed = sum(run["sealed"] for run in report["runs"]) + (report.get("floor") or {}).get("sealed", 0)
    return 0 if sealed else 1


async def _gateway_runs(args, gateway_url: str, db_url: str, rates: list[float], meter: CpuMeter,
                        memory: RssSampler) -> list[dict]:
    with console.status(f"provisioning {args.outlets} outlets x {args.terminals} terminals…"):
        merchant = await provision(db_url, args.outlets, args.terminals, gateway_url)
    session = open_session(gateway_url, args.timeout)
    try:
        with console.status("warming up…"):
            await warm_up(session, merchant)
        with memory:  # resident memory sampled in a thread over all the measured runs, not the warm-up
            return await _measured_runs(args, session, gateway_url, merchant, rates, meter)
    finally:
        await session.close()


async def _measured_runs(args, session: aiohttp.ClientSession, gateway_url: str, merchant: dict,
                         rates: list[float], meter: CpuMeter) -> list[dict]:
    runs: list[dict] = []
    if args.rate is not None:
        with progress_bar(f"open loop {args.rate:g}/s", args.duration) as tick:
            runs.append(await run_open_loop(session, merchant, args.rate, args.duration,
                                            max_inflight=args.max_inflight, timeout=args.timeout,
                                            meter=meter, on_progress=tick))
    elif rates or args.sweep_auto:
        steps = rates or [SWEEP_AUTO_START * SWEEP_AUTO_FACTOR ** i for i in range(SWEEP_AUTO_STEPS)]
        for index, rate in enumerate(steps):
            rate = round(rate, 1)
            with progress_bar(f"sweep {index + 1}/{len(steps)}: {rate:g}/s", args.duration) as tick:
                point = await run_open_loop(session, merchant, rate, args.duration,
                                            max_inflight=args.max_inflight, timeout=args.timeout,
                                            meter=meter, on_progress=tick)
            runs.append(point)
            if args.sweep_auto and _saturated(point):
                console.print(f"saturated at {rate:g}/s offered ({point['seals_per_s']} sealed/s, "
                              f"p99 {point['p99_ms']} ms): sweep stops")
                break
            if index + 1 < len(steps):
                await asyncio.sleep(SWEEP_PAUSE_S)
    elif args.client == "wrk":
        from cli.bench_wrk import run_wrk

        connections = args.connections or args.outlets * args.terminals
        with console.status(f"wrk: {connections} connections back to back for {args.duration:g} s…"):
            before = meter.sample()
            run = await asyncio.to_thread(run_wrk, gateway_url, merchant, args.duration, connections=connections,
                                          threads=args.wrk_threads, timeout=args.timeout)
            after = meter.sample()
        run["cpu"] = meter.per_seal(before, after, run["sealed"], run["sent"])
        runs.append(run)
    else:
        with progress_bar("closed loop", args.duration) as tick:
            runs.append(await run_closed_loop(session, merchant, args.duration, args.think_time, meter=meter,
                                              on_progress=tick))
    return runs


def _floor(args, db_url: str, meter: CpuMeter) -> dict:
    from cli.bench_floor import run_floor

    with progress_bar(f"floor ({args.floor_connections} connections)", args.duration) as tick:
        before = meter.sample()
        result = asyncio.run(run_floor(db_url, connections=args.floor_connections, outlets=args.outlets,
                                       duration=args.duration, on_progress=tick))
        after = meter.sample()
    # The floor's Python work is this process ("load generator" in the meter) plus PostgreSQL.
    cpu = meter.per_seal(before, after, result["sealed"], result["sealed"])
    result["cpu"] = {"python_ms_per_seal": cpu["load_generator_ms_per_request"],
                     "postgresql_ms_per_seal": cpu["ms_per_seal"].get("postgresql")}
    return result


def _write_sweep(args, points: list[dict], report: dict) -> dict:
    from cli.bench_chart import write_sweep_chart

    chart = Path(args.chart)
    raw = chart.with_suffix(".json")
    title = (f"fiscal bench sweep: {args.outlets} outlets x {args.terminals} terminals, {args.duration:g} s per rate, "
             f"{report['machine']['cpus']} CPUs")
    renderer = write_sweep_chart(points, chart, title) if points else "none"
    raw.write_text(json.dumps({"title": title, "machine": report["machine"], "points": points}, indent=2))
    console.print(f"wrote the sweep chart {chart} ({renderer}) and its points {raw}")
    return {"chart": str(chart), "points_json": str(raw), "renderer": renderer}


def _print_report(report: dict) -> None:
    runs = report["runs"]
    if runs:
        table = Table("run", "offered/s", "sealed/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "sent", "sealed",
                      "responses", title=f"{report['outlets']} outlets x {report['terminals_per_outlet']} terminals")
        for run in runs:
            name = f"open {run['rate_per_s']:g}/s" if run["mode"] == "open" else (
                f"closed ({run.get('client', 'aiohttp')}), think {run['think_time_s']:g} s")
            offered = str(run.get("offered_per_s", "—"))
            responses = dict(run["responses"])
            if run.get("skipped_inflight_cap"):
                responses["skipped (in-flight cap)"] = run["skipped_inflight_cap"]
            table.add_row(name, offered, str(run["seals_per_s"]), str(run["p50_ms"]), str(run["p95_ms"]),
                          str(run["p99_ms"]), str(run["max_ms"]), str(run["sent"]), str(run["sealed"]),
                          json.dumps(responses))
        console.print(table)
        for run in runs:
            console.print(f"{run['mode']} loop: {run['sealed']} seals in {run['duration_s']} s = {run['seals_per_s']} "
                          f"seals/s; latency ms p50 {run['p50_ms']}, p95 {run['p95_ms']}, p99 {run['p99_ms']}, "
                          f"max {run['max_ms']} (from {run['latency_from']}); responses {json.dumps(run['responses'])}"
                          + (f"; offered {run['offered_per_s']}/s" if run["mode"] == "open" else ""),
                          soft_wrap=True)
        with_cpu = [run for run in runs if run.get("cpu")]
        if with_cpu:
            names = sorted({name for run in with_cpu for name in run["cpu"]["ms_per_seal"]})
            cpu = Table("CPU ms per seal", *(f"open {r['rate_per_s']:g}/s" if r["mode"] == "open" else
                                             f"closed ({r.get('client', 'aiohttp')})" for r in with_cpu))
            for name in names:
                cpu.add_row(name, *(str(r["cpu"]["ms_per_seal"].get(name, "—")) for r in with_cpu))
            cpu.add_row("[bold]stack total[/]", *(str(r["cpu"]["stack_ms_per_seal"]) for r in with_cpu))
            cpu.add_row("load generator, per request", *(str(r["cpu"]["load_generator_ms_per_request"])
                                                         for r in with_cpu))
            console.print(cpu)
    if report.get("memory"):
        _print_memory(report["memory"])
    floor = report.get("floor")
    if floor:
        console.print(f"floor: {floor['sealed']} seals in {floor['duration_s']} s on {floor['connections']} connections "
                      f"= {floor['seals_per_s']} seals/s (one Python process straight on PostgreSQL; gapless: "
                      f"{floor['gapless']}); CPU ms per seal: Python {floor['cpu']['python_ms_per_seal']}, "
                      f"PostgreSQL {floor['cpu']['postgresql_ms_per_seal']}", soft_wrap=True)
    if report.get("ratio_gateway_to_floor") is not None:
        console.print(f"gateway / floor = {report['ratio_gateway_to_floor']} (best gateway run "
                      f"{max(run['seals_per_s'] for run in runs)} seals/s ÷ floor {floor['seals_per_s']} seals/s)"
                      if floor else "", soft_wrap=True)


def _print_memory(memory: dict) -> None:
    def mb(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    span = memory["t_s"][-1] if memory["t_s"] else 0
    table = Table("process", "start MB", "end MB", "max MB", "MB/min (2nd half)", "samples",
                  title=f"resident memory (RSS) over {span:g} s, every {memory['interval_s']:g} s")
    for name, figures in memory["processes"].items():
        slope = figures["slope_mb_per_min"]
        table.add_row(name, mb(figures["start_mb"]), mb(figures["end_mb"]), mb(figures["max_mb"]),
                      "— (too few samples)" if slope is None else f"{slope:+.2f}", str(figures["samples"]))
        # PostgreSQL's two terms apart: its processes' own memory, and the shared buffers touched (which fill
        # up to shared_buffers as the tables grow: a cache warming, not a leak).
        for part, label in (("private_mb", "  private, all processes"), ("shared_mb", "  shared buffers touched")):
            values = [v for v in figures.get(part, []) if v is not None]
            if values:
                part_slope = slope_mb_per_min(memory["t_s"], figures[part])
                table.add_row(label, mb(values[0]), mb(values[-1]), mb(max(values)),
                              "—" if part_slope is None else f"{part_slope:+.2f}", str(len(values)))
        if figures.get("processes"):
            counts = [c for c in figures["processes"] if c is not None]
            if counts:
                table.add_row("  processes", str(counts[0]), str(counts[-1]), str(max(counts)), "", str(len(counts)))
    console.print(table)
