"""`fiscal verify --outlet ID`: re-check an outlet's chains and signatures against the published keys."""

from __future__ import annotations

import asyncio

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.output import console
from cli.state import async_url, database_url, read_state
from services.ledger.chain import ChainCheck, check_entry


def published_keys(gateway_url: str) -> dict[str, dict]:
    answer = httpx.get(f"{gateway_url.rstrip('/')}/v1/keys", timeout=10)
    answer.raise_for_status()
    return {k["kid"]: k for k in answer.json()["keys"]}


async def verify_outlet(db_url: str, outlet_id: str, keys: dict[str, dict], show_progress: bool = True
                        ) -> list[ChainCheck]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore

    engine = create_async_engine(async_url(db_url))
    store = LedgerStore(engine)
    try:
        outlet = await store.outlet(outlet_id)
        if outlet is None:
            raise SystemExit(f"outlet {outlet_id} not found")
        counts = await store.series_counts(outlet_id)
        heads = await store.anchored_heads(outlet_id)
        checks = []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, disable=not show_progress) as progress:
            for series in sorted(counts.keys() | heads.keys()):
                task = progress.add_task(f"{outlet.code} {series}", total=counts.get(series, 0))
                check = ChainCheck(series)
                async for entry in store.chain(outlet_id, series):
                    check_entry(check, entry, keys)
                    progress.advance(task)
                head = heads.get(series)
                if head is None or head[0] < check.last_number:  # read before the walk: seals may have moved it
                    head = (await store.anchored_heads(outlet_id)).get(series)
                check_anchored_head(check, outlet.code, head)
                checks.append(check)
        return checks
    finally:
        await engine.dispose()


def check_anchored_head(check: ChainCheck, outlet_code: str, head: tuple[int, bytes] | None) -> None:
    """The chain's last entry must be the head each seal recorded: otherwise its tail was cut off
    (or the entries after the head were added outside the seal path)."""
    if head is None:
        if check.checked:
            check.problems.append(f"{outlet_code} {check.series}: no anchored chain head for {check.checked} entries")
        return
    number, last_hash = head
    if number > check.last_number:
        check.problems.append(f"{outlet_code} {check.series}: chain's tail deleted: entries {check.last_number + 1}"
                              f"..{number} are missing (the anchored head is number {number})")
    elif number < check.last_number:
        check.problems.append(f"{outlet_code} {check.series}: entries after the anchored head {number} were"
                              " not sealed through the ledger")
    elif last_hash != check.last_hash:
        check.problems.append(f"{outlet_code} {check.series}: last entry {number} differs from the anchored head")


def run_verify(args) -> int:
    gateway = args.gateway or read_state(args.data_dir)["gateway_url"]
    keys = published_keys(gateway)
    checks = asyncio.run(verify_outlet(database_url(args), args.outlet, keys))
    failed = False
    for check in checks:
        if check.ok:
            console.print(f"[green]✔[/] series {check.series}: {check.checked} entries, numbers 1..{check.last_number},"
                          " chain and signatures verify")
        else:
            failed = True
            console.print(f"[red]✘[/] series {check.series}: {len(check.problems)} problem(s) in {check.checked} entries")
            for problem in check.problems[:50]:
                console.print(f"   {problem}")
    if not checks:
        console.print("no invoices in this outlet yet")
    return 1 if failed else 0
