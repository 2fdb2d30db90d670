"""Test helpers over a running mesh: provisioning merchants, sealing through the gateway, checking
the ledger. Everything goes through real processes (Envoy, services, PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid
from collections import defaultdict
from decimal import Decimal

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from cli.state import async_url
from cli.verify import published_keys, verify_outlet
from services.ledger.store import LedgerStore
from stack.seed import provision_merchant


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
    """How many invoices and invoice.sealed events one merchant has: 'nothing written' checks. (The DGI
    sync worker adds invoice.sync.* events to the same outbox later, on its own schedule.)"""
    async def count(store, engine):
        async with engine.connect() as conn:
            outbox = (await conn.execute(sa.text(
                "SELECT count(*) FROM ledger.outbox WHERE merchant_id = :m AND event_type = 'invoice.sealed'"),
                {"m": merchant_id})).scalar()
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
                    on_progress=None, error_log: list | None = None) -> dict:
    """Every terminal of every outlet seals `per_terminal` sales one after another, all terminals at
    once; a failed sale is retried with the same body (same client_invoice_id) when errors are
    tolerated. Returns {'ok': [invoice...], 'errors': [(status, body)...], 'sent': {client_invoice_id:
    outlet_id}, 'error_log': [{'status', 'text', 'client_invoice_id', 'at' (time.monotonic())}...]}.
    Pass `error_log` to watch errors while the load runs (wait_for_error). aiohttp: httpx's shared pool
    costs more CPU per request than the server spends on a seal.

    A 503 from admission control (reason OVERLOADED, "nothing was done", with Retry-After) is not an
    error: the stack is answering as designed on a busy machine, and a till (the POS SDK) sends the same
    sale again after Retry-After. Those refusals are counted in 'overload_refusals'."""
    ok, errors, sent = [], [], {}
    overload_refusals = [0]  # a list: the terminals' coroutines add to it
    error_log = [] if error_log is None else error_log

    def failed(status, text: str, client_invoice_id: str) -> None:
        errors.append((status, text))
        error_log.append({"status": status, "text": text, "client_invoice_id": client_invoice_id,
                          "at": time.monotonic()})
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url=gateway_url, connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:
        async def terminal(outlet, terminal_id, cashier_id):
            headers = auth(merchant["pos_keys"][outlet["id"]])
            for _ in range(per_terminal):
                body = sale(outlet, terminal_id, cashier_id)
                sent[body["client_invoice_id"]] = outlet["id"]
                attempt = 0
                while attempt < (150 if tolerate_errors else 1):
                    attempt += 1
                    try:
                        async with session.post("/v1/invoices", json=body, headers=headers) as answer:
                            text = await answer.text()
                            status = answer.status
                            retry_after = answer.headers.get("retry-after")
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        failed(type(exc).__name__, str(exc), body["client_invoice_id"])
                        if not tolerate_errors:
                            raise
                        await asyncio.sleep(0.2)
                        continue
                    if status == 200:
                        ok.append(json.loads(text))
                        break
                    if status == 503 and '"OVERLOADED"' in text and retry_after and overload_refusals[0] < 5000:
                        overload_refusals[0] += 1
                        attempt -= 1  # not an attempt that failed: the same sale again, as a till does
                        await asyncio.sleep(min(float(retry_after), 2.0))
                        continue
                    failed(status, text, body["client_invoice_id"])
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
    return {"ok": ok, "errors": errors, "sent": sent, "error_log": error_log,
            "overload_refusals": overload_refusals[0]}


# gRPC codes (as Envoy's JSON errors carry them) that mean "nothing happened, send the same sale again".
UNAVAILABLE, ABORTED = 14, 10


def is_retryable(status, text: str) -> bool:
    """Only answers a till may safely retry with the same body: 503 (UNAVAILABLE, or Envoy with no
    healthy upstream), 409 ABORTED (the outlet's counter is busy) and a dropped connection. Never a
    500, and never 409 ALREADY_EXISTS: an identical retry must get the sealed invoice back."""
    if isinstance(status, str):
        return True  # aiohttp connection error or client timeout: the request may not have arrived
    try:
        code = json.loads(text).get("code")
    except (ValueError, AttributeError):
        code = None
    if status == 503:
        return code in (None, UNAVAILABLE)
    return status == 409 and code == ABORTED


def assert_only_retryable_errors(result: dict) -> None:
    bad = [(status, text[:200]) for status, text in result["errors"] if not is_retryable(status, text)]
    assert not bad, bad[:5]


def wait_for_error(error_log: list, since: float, timeout: float = 30.0) -> dict:
    """Wait until a client of seal_many has seen an error after `since` (a time.monotonic() reading):
    proof that a disruption was felt. Fails after `timeout` (every mesh call has a deadline)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        felt = [e for e in list(error_log) if e["at"] >= since]
        if felt:
            return felt[0]
        time.sleep(0.02)
    raise AssertionError(f"no client saw an error within {timeout} s of the disruption")


def errors_between(result: dict, start: float, end: float) -> list[dict]:
    """The errors seen between two time.monotonic() readings (e.g. while a service was down)."""
    return [e for e in result["error_log"] if start <= e["at"] <= end]


def assert_exactly_once(mesh, merchant: dict, result: dict) -> None:
    """Exactly once, by mapping: the client_invoice_ids in the ledger are exactly those sent (each once),
    and every 200 the clients got equals its row (same id, number, signature, total)."""
    async def fetch(_, engine):
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(
                "SELECT id::text, client_invoice_id, outlet_id::text, fiscal_number, signature, total "
                "FROM ledger.invoices WHERE merchant_id = :m AND series = 'INV'"),
                {"m": merchant["merchant"]["id"]})).all()
    rows = run(_with_store(mesh.database_url, fetch))
    by_client_id = {row.client_invoice_id: row for row in rows}
    assert len(by_client_id) == len(rows), "a client_invoice_id sealed twice"
    assert set(by_client_id) == set(result["sent"]), (
        f"missing: {sorted(set(result['sent']) - set(by_client_id))[:5]}, "
        f"never sent: {sorted(set(by_client_id) - set(result['sent']))[:5]}")
    assert all(by_client_id[c].outlet_id == o for c, o in result["sent"].items())
    answered = [invoice["client_invoice_id"] for invoice in result["ok"]]
    assert len(answered) == len(set(answered)) == len(result["sent"]), "a sale answered 200 twice or never"
    for invoice in result["ok"]:
        row = by_client_id[invoice["client_invoice_id"]]
        assert (invoice["id"], invoice["fiscal"]["fiscal_number"], invoice["fiscal"]["signature"]) == (
            row.id, row.fiscal_number, b64url(bytes(row.signature))), invoice["client_invoice_id"]
        assert Decimal(invoice["total"]) == row.total, invoice["client_invoice_id"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def require_softhsm() -> None:
    """SoftHSM2 is a required test tool: its absence fails the test instead of skipping it."""
    if shutil.which("softhsm2-util") is None or not os.path.exists("/usr/lib/softhsm/libsofthsm2.so"):
        pytest.fail("SoftHSM2 is required for the PKCS#11 tests and is not installed: apt-get install -y softhsm2",
                    pytrace=False)
