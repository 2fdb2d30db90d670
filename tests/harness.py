"""Test helpers over a running mesh: provisioning merchants, sealing through the gateway, checking
the ledger. Everything goes through real processes (Envoy, services, PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from services.cli.state import async_url
from services.cli.verify import published_keys, verify_outlet
from services.ledger.store import LedgerStore
from services.stack.seed import provision_merchant


def run(coro):
    return asyncio.run(coro)


async def _with_store(db_url: str, fn):
    engine = create_async_engine(async_url(db_url))
    try:
        return await fn(LedgerStore(engine), engine)
    finally:
        await engine.dispose()


def provision(mesh, outlets: int, terminals: int, prefix: str | None = None, **kwargs) -> dict:
    prefix = prefix or f"T{uuid.uuid4().hex[:6].upper()}"
    return run(_with_store(mesh.database_url, lambda store, _: provision_merchant(
        store, name=f"Test {prefix}", code_prefix=prefix, outlets=outlets, terminals=terminals,
        public_url=mesh.gateway_url, **kwargs)))


def sale(outlet: dict, terminal: str, cashier: str, client_invoice_id: str | None = None, **overrides) -> dict:
    body = {
        "outlet_id": outlet["id"], "client_invoice_id": client_invoice_id or str(uuid.uuid4()),
        "pos_terminal_id": terminal, "cashier_id": cashier, "currency": outlet["currency"],
        "lines": [{"description": "Maize flour 2kg", "quantity": "1", "unit_price": "210.00", "tax_group": "A"},
                  {"description": "Eggs (tray)", "quantity": "2", "unit_price": "450.50", "tax_group": "E"}],
    }
    body.update(overrides)
    return body


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def ledger_rows(mesh, merchant_id: str) -> dict[str, int]:
    """How many invoices and outbox events one merchant has: 'nothing written' checks."""
    async def count(store, engine):
        async with engine.connect() as conn:
            outbox = (await conn.execute(sa.text(
                "SELECT count(*) FROM ledger.outbox WHERE merchant_id = :m"), {"m": merchant_id})).scalar()
        return {"invoices": await store.count_rows("invoices", merchant_id), "outbox": outbox}
    return run(_with_store(mesh.database_url, count))


def numbers_by_outlet(mesh, merchant_id: str, series: str = "INV") -> dict[str, list[int]]:
    async def fetch(_, engine):
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT outlet_id::text, number FROM ledger.invoices WHERE merchant_id = :m AND series = :s"),
                {"m": merchant_id, "s": series})).all()
        found = defaultdict(list)
        for outlet_id, number in rows:
            found[outlet_id].append(number)
        return {k: sorted(v) for k, v in found.items()}
    return run(_with_store(mesh.database_url, fetch))


def verify_chains(mesh, outlet_id: str):
    """`fiscal verify`'s own check: numbers 1..n, links, digests, signatures, auth codes."""
    return run(verify_outlet(mesh.database_url, outlet_id, published_keys(mesh.gateway_url), show_progress=False))


async def seal_many(gateway_url: str, merchant: dict, per_terminal: int, *, tolerate_errors: bool = False,
                    on_progress=None) -> dict:
    """Every terminal of every outlet seals `per_terminal` sales one after another, all terminals at
    once; a failed sale is retried with the same body (same client_invoice_id) when errors are
    tolerated. Returns {'ok': [invoice...], 'errors': [(status, body)...]}. aiohttp: httpx's shared pool
    costs more CPU per request than the server spends on a seal."""
    ok, errors = [], []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url=gateway_url, connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        async def terminal(outlet, terminal_id, cashier_id):
            headers = auth(merchant["pos_keys"][outlet["id"]])
            for _ in range(per_terminal):
                body = sale(outlet, terminal_id, cashier_id)
                for _attempt in range(150 if tolerate_errors else 1):
                    try:
                        async with session.post("/v1/invoices", json=body, headers=headers) as answer:
                            text = await answer.text()
                            status = answer.status
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        errors.append((type(exc).__name__, ""))
                        if not tolerate_errors:
                            raise
                        await asyncio.sleep(0.2)
                        continue
                    if status == 200:
                        ok.append(json.loads(text))
                        break
                    errors.append((status, text))
                    if not tolerate_errors:
                        raise AssertionError(f"seal failed: {status} {text}")
                    await asyncio.sleep(0.2)  # retry the same sale (same client_invoice_id)
                if on_progress:
                    on_progress()

        await asyncio.gather(*[
            terminal(outlet, terminal_id,
                     merchant["cashiers"][outlet["id"]][i % len(merchant["cashiers"][outlet["id"]])])
            for outlet in merchant["outlets"]
            for i, terminal_id in enumerate(merchant["terminals"][outlet["id"]])])
    return {"ok": ok, "errors": errors}
