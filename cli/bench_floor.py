"""`fiscal bench --floor`: the seal's essential work done by one Python process straight on PostgreSQL.

Per seal, in one transaction: lock the outlet's counter row (which holds the chain head), build the
canonical body and the signed statement with services/ledger/receipt.py, ES256-sign it with
`cryptography`, insert the invoice and its outbox event, move the counter and the chain head, commit.
N connections do it concurrently over many outlets. It runs in a throwaway schema of its own (created
and dropped by the run), never in the ledger's or the counter's tables. What the mesh costs on top of
this is the gap between this floor and the seals/s through the gateway.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql

from services.ledger import receipt
from services.runtime import es256

SERIES = "INV"
AUTHORITY = "FLOOR-BENCH"

SCHEMA_SQL = """
CREATE TABLE counters (
  outlet_id text NOT NULL, series text NOT NULL, next_number bigint NOT NULL, head_hash bytea NOT NULL,
  PRIMARY KEY (outlet_id, series));
CREATE TABLE invoices (
  id uuid PRIMARY KEY, outlet_id text NOT NULL, series text NOT NULL, number bigint NOT NULL,
  fiscal_number text NOT NULL, client_invoice_id text NOT NULL, total numeric NOT NULL, body text NOT NULL,
  statement text NOT NULL, prev_hash bytea NOT NULL, hash bytea NOT NULL, signature bytea NOT NULL,
  sealed_at timestamptz NOT NULL, UNIQUE (outlet_id, series, number), UNIQUE (outlet_id, client_invoice_id));
CREATE TABLE outbox (
  id bigserial PRIMARY KEY, invoice_id uuid NOT NULL, kind text NOT NULL, payload jsonb NOT NULL);
"""


def _body(outlet: str, number: int, prev_hash: bytes, sealed_text: str, client_id: str, n: int) -> dict:
    # The same shape and size as the gateway bench's sale after the ledger priced it.
    return {
        "v": 1, "kind": "invoice", "fiscal_number": receipt.fiscal_number(outlet, SERIES, number),
        "fiscal_authority_id": AUTHORITY, "outlet_id": outlet, "outlet_code": outlet, "outlet_name": "Floor",
        "taxpayer_id": "P000000000F", "time_zone": "Africa/Nairobi", "series": SERIES, "number": number,
        "prev_hash": receipt.b64url(prev_hash), "sealed_at": sealed_text, "sold_at": sealed_text,
        "client_invoice_id": client_id, "pos_terminal_id": "T1", "cashier_id": "C1", "currency": "KES",
        "lines": [{"description": "Bread 400g", "quantity": "2", "unit_price": "65.00", "tax_group": "A",
                   "amount": "130.00"},
                  {"description": "Milk 500ml", "quantity": "1", "unit_price": "60.00", "tax_group": "C",
                   "amount": "60.00"},
                  {"description": f"Item {n % 97}", "quantity": "1.5", "unit_price": "99.99", "tax_group": "E",
                   "amount": "149.99"}],
        "tax_totals": [{"group": "A", "rate": "16", "taxable": "112.07", "tax": "17.93"}],
        "total": "339.99", "total_tax": "17.93", "payment_status": "paid",
        "payments": [{"method": "cash", "amount": "500.00"}],
    }


async def run_floor(database_url: str, *, connections: int, outlets: int, duration: float,
                    max_seals: int = 2_000_000, on_progress=lambda elapsed, done: None) -> dict:
    """Seal for `duration` seconds (or `max_seals`, whichever first) on `connections` connections."""
    if connections < 1 or outlets < 1 or duration <= 0:
        raise ValueError("the floor needs at least 1 connection, 1 outlet and a positive duration")
    schema = f"bench_floor_{uuid.uuid4().hex[:10]}"
    key = ec.generate_private_key(ec.SECP256R1())
    outlet_ids = [f"F{i:05d}" for i in range(outlets)]
    admin = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await admin.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement in SCHEMA_SQL.split(";"):
            if statement.strip():
                await admin.execute(sql.SQL(statement))
        async with admin.cursor() as cursor:
            await cursor.executemany("INSERT INTO counters VALUES (%s, %s, 1, %s)",
                                     [(o, SERIES, receipt.GENESIS_HASH) for o in outlet_ids])
        sealed = 0
        conflicts = 0
        started = time.monotonic()
        deadline = started + duration

        async def worker() -> None:
            nonlocal sealed, conflicts
            # prepare_threshold=0: every statement is a server-side prepared statement from its first use.
            conn = await psycopg.AsyncConnection.connect(database_url, prepare_threshold=0,
                                                         options=f"-c search_path={schema}")
            try:
                while time.monotonic() < deadline and sealed < max_seals:
                    outlet = random.choice(outlet_ids)
                    client_id = str(uuid.uuid4())
                    try:
                        async with conn.transaction():
                            row = await (await conn.execute(
                                "SELECT next_number, head_hash FROM counters "
                                "WHERE outlet_id = %s AND series = %s FOR UPDATE", (outlet, SERIES))).fetchone()
                            assert row is not None
                            number, prev_hash = row[0], bytes(row[1])
                            sealed_at = receipt.truncate_to_millis(datetime.now(UTC))
                            sealed_text = receipt.format_timestamp(sealed_at)
                            body = _body(outlet, number, prev_hash, sealed_text, client_id, sealed)
                            body_text = receipt.canonical_json(body)
                            statement = receipt.Statement(body["fiscal_number"], AUTHORITY, sealed_text, body["total"],
                                                          body["currency"],
                                                          receipt.b64url(receipt.body_digest(body_text)))
                            signature = es256.sign_digest(key, statement.digest())
                            invoice_id = uuid.uuid4()
                            await conn.execute(
                                "INSERT INTO invoices VALUES "
                                "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                                (invoice_id, outlet, SERIES, number, body["fiscal_number"], client_id,
                                 Decimal(body["total"]), body_text, statement.text(), prev_hash,
                                 statement.entry_hash(), signature, sealed_at))
                            await conn.execute(
                                "INSERT INTO outbox (invoice_id, kind, payload) "
                                "VALUES (%s, 'invoice.sealed', %s::jsonb)",
                                (invoice_id, json.dumps({"fiscal_number": body["fiscal_number"],
                                                         "auth_code": receipt.auth_code(signature)})))
                            await conn.execute(
                                "UPDATE counters SET next_number = %s, head_hash = %s "
                                "WHERE outlet_id = %s AND series = %s",
                                (number + 1, statement.entry_hash(), outlet, SERIES))
                        sealed += 1
                    except psycopg.errors.SerializationFailure:
                        conflicts += 1
            finally:
                await conn.close()

        async def progress() -> None:
            while time.monotonic() < deadline and sealed < max_seals:
                await asyncio.sleep(0.5)
                on_progress(min(duration, time.monotonic() - started), sealed)

        await asyncio.gather(progress(), *(worker() for _ in range(connections)))
        elapsed = time.monotonic() - started
        # The floor checks its own work: every outlet's numbers are 1..n without a gap or duplicate.
        row = await (await admin.execute(
            "SELECT count(*), count(DISTINCT (outlet_id, number)) FROM invoices")).fetchone()
        heads = await (await admin.execute("SELECT coalesce(sum(next_number - 1), 0) FROM counters")).fetchone()
        assert row is not None and heads is not None
        gapless = row[0] == row[1] == heads[0] == sealed
    finally:
        await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        await admin.close()
    return {"connections": connections, "outlets": outlets, "duration_s": round(elapsed, 2), "sealed": sealed,
            "seals_per_s": round(sealed / elapsed, 1) if elapsed else 0.0, "conflicts": conflicts,
            "gapless": gapless, "schema": schema}
