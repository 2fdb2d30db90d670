"""The ledger's tables (schema "ledger") and every query on them. Only this module speaks SQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import BYTEA, JSONB, UUID, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ledger.access import Principal
from services.ledger.dgi_sync import Claimed, Outcome, SyncState
from services.ledger.model import (
    ChainMoved,
    DuplicateClientInvoice,
    DuplicateNumber,
    InvoiceFilter,
    InvoiceRecord,
    OutboxEvent,
    Outlet,
    RecordedPayment,
)
from services.ledger.money import TaxGroup

metadata = sa.MetaData(schema="ledger")

merchants = sa.Table(
    "merchants", metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
outlets = sa.Table(
    "outlets", metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("code", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("taxpayer_id", sa.Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("time_zone", sa.Text, nullable=False),
    sa.Column("address", sa.Text, nullable=False, server_default=""),
    sa.Column("offline_grace_seconds", sa.Integer, nullable=False),
)
tax_groups = sa.Table(
    "tax_groups", metadata,
    sa.Column("merchant_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("code", sa.Text, primary_key=True),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("rate", sa.Numeric(6, 3)),
)
cashiers = sa.Table(
    "cashiers", metadata,
    sa.Column("outlet_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("cashier_id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
)
terminals = sa.Table(
    "terminals", metadata,
    sa.Column("outlet_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("pos_terminal_id", sa.Text, primary_key=True),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("last_cashier_id", sa.Text, nullable=False, server_default=""),
    sa.Column("last_seal_at", sa.DateTime(timezone=True)),
    sa.Column("last_heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("draft_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("oldest_draft_age_seconds", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rejected_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", sa.Text, nullable=False, server_default=""),
    sa.Column("sdk_version", sa.Text, nullable=False, server_default=""),
)
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outlet_id", UUID(as_uuid=False)),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("key_hash", BYTEA, nullable=False),
    sa.Column("key_prefix", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False, server_default=""),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
invoices = sa.Table(
    "invoices", metadata,
    sa.Column("seq", sa.BigInteger, server_default=sa.FetchedValue()),
    sa.Column("id", UUID(as_uuid=False), primary_key=True),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outlet_id", UUID(as_uuid=False), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("series", sa.Text, nullable=False),
    sa.Column("number", sa.BigInteger, nullable=False),
    sa.Column("fiscal_number", sa.Text, nullable=False),
    sa.Column("client_invoice_id", sa.Text, nullable=False),
    sa.Column("request_hash", BYTEA, nullable=False),
    sa.Column("pos_terminal_id", sa.Text, nullable=False),
    sa.Column("cashier_id", sa.Text, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total", sa.Numeric(20, 3), nullable=False),
    sa.Column("total_tax", sa.Numeric(20, 3), nullable=False),
    sa.Column("payment_status", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("sold_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("original_invoice_id", UUID(as_uuid=False)),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("statement", sa.Text, nullable=False),
    sa.Column("body_digest", BYTEA, nullable=False),
    sa.Column("prev_hash", BYTEA, nullable=False),
    sa.Column("hash", BYTEA, nullable=False),
    sa.Column("signature", BYTEA, nullable=False),
    sa.Column("key_id", sa.Text, nullable=False),
    sa.Column("auth_code", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
outbox = sa.Table(
    "outbox", metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("event_id", UUID(as_uuid=False), nullable=False),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("aggregate_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outlet_id", UUID(as_uuid=False)),  # migration 0003; NULL for an event about no outlet
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("published_at", sa.DateTime(timezone=True)),
)

invoice_payments = sa.Table(
    "invoice_payments", metadata,  # migration 0004: payments recorded after the sale (issue #9)
    sa.Column("payment_id", sa.Text, primary_key=True),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outlet_id", UUID(as_uuid=False), nullable=False),
    sa.Column("client_invoice_id", sa.Text, nullable=False),
    sa.Column("invoice_id", UUID(as_uuid=False)),
    sa.Column("method", sa.Text, nullable=False),
    sa.Column("provider_reference", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(20, 3), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("phone_masked", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("confirmed_at", sa.DateTime(timezone=True)),
    sa.Column("amount_mismatch", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

dgi_sync = sa.Table(
    "dgi_sync", metadata,  # migration 0005: each sealed document's upload to the DGI (issue #10)
    sa.Column("invoice_id", UUID(as_uuid=False), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("merchant_id", UUID(as_uuid=False), nullable=False),
    sa.Column("outlet_id", UUID(as_uuid=False), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_holder", sa.Text),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("dgi_uid", sa.Text, nullable=False),
    sa.Column("dgi_code", sa.Text, nullable=False),
    sa.Column("dgi_counters", sa.Text, nullable=False),
    sa.Column("dgi_error_code", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("synced_at", sa.DateTime(timezone=True)),
    sa.Column("failed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

_INVOICE_COLUMNS = [c for c in invoices.c if c.name != "seq"]


def _invoice(row) -> InvoiceRecord:
    data = {c.name: row._mapping[c.name] for c in _INVOICE_COLUMNS}
    for name in ("request_hash", "body_digest", "prev_hash", "hash", "signature"):
        data[name] = bytes(data[name])
    return InvoiceRecord(**data)


_PAYMENT_FIELDS = ("payment_id", "merchant_id", "outlet_id", "client_invoice_id", "invoice_id", "method",
                   "provider_reference", "amount", "currency", "phone_masked", "status", "confirmed_at",
                   "amount_mismatch")

# A page's recorded payments (index invoice_payments_sale) and credit-note refunds (index
# invoices_original) in one round trip. Payments come in the order they were first recorded.
_PAYMENTS_AND_REFUNDS = sa.text("""
    SELECT 'payment' AS part, p.payment_id, p.merchant_id::text AS merchant_id, p.outlet_id::text AS outlet_id,
           p.client_invoice_id, p.invoice_id::text AS invoice_id, p.method, p.provider_reference, p.amount,
           p.currency, p.phone_masked, p.status, p.confirmed_at, p.amount_mismatch,
           NULL::text AS original_invoice_id, p.created_at AS sort_at
    FROM ledger.invoice_payments p
    WHERE (p.outlet_id, p.client_invoice_id) IN (
        SELECT * FROM unnest(CAST(:outlets AS uuid[]), CAST(:client_ids AS text[])))
    UNION ALL
    SELECT 'refund', NULL, NULL, NULL, NULL, NULL, NULL, NULL, sum(n.total), NULL, NULL, NULL, NULL, NULL,
           n.original_invoice_id::text, NULL
    FROM ledger.invoices n
    WHERE n.original_invoice_id = ANY(CAST(:invoice_ids AS uuid[]))
    GROUP BY n.original_invoice_id
    ORDER BY sort_at NULLS LAST, payment_id
""")


def _recorded_payment(row) -> RecordedPayment:
    return RecordedPayment(**{name: row._mapping[name] for name in _PAYMENT_FIELDS})


def _insert_sealed_sql() -> sa.TextClause:
    """One seal's rows as one statement (invoice, outbox event, terminal's last seal), written out once:
    building it with Core per seal cost more CPU than the database spent running it. A batch runs it
    with executemany (psycopg pipelines the statements) after the chain head's compare-and-set."""
    columns = [c.name for c in _INVOICE_COLUMNS]
    return sa.text(f"""
        WITH add_invoice AS (
            INSERT INTO ledger.invoices ({", ".join(columns)})
            VALUES ({", ".join(":" + c for c in columns)})
        ), add_event AS (
            INSERT INTO ledger.outbox (event_id, event_type, merchant_id, aggregate_id, outlet_id, payload)
            VALUES (:event_id, :event_type, :merchant_id, :aggregate_id, :event_outlet_id, :payload)
        )
        INSERT INTO ledger.terminals (outlet_id, pos_terminal_id, last_cashier_id, last_seal_at)
        VALUES (:outlet_id, :pos_terminal_id, :cashier_id, :sealed_at)
        ON CONFLICT (outlet_id, pos_terminal_id) DO UPDATE
        SET last_seen_at = now(), last_cashier_id = EXCLUDED.last_cashier_id, last_seal_at = EXCLUDED.last_seal_at
    """).bindparams(sa.bindparam("payload", type_=JSONB), sa.bindparam("total", type_=sa.Numeric),
                    sa.bindparam("total_tax", type_=sa.Numeric))


# The chain head's compare-and-set, first in a batch's transaction: it moves from (prev_number, prev_hash)
# to the batch's last entry, or (zero rows) the chain moved under the batch and nothing is written. The
# row lock it takes serialises writers of one chain; a second writer re-checks against the committed row.
# (No row yet: the chain's first batch, or a chain sealed before the heads were recorded.) The anchored
# head also lets `fiscal verify` see a deleted tail.
_MOVE_HEAD = sa.text("""
    INSERT INTO ledger.chain_heads (outlet_id, series, number, hash)
    VALUES (:outlet_id, :series, :number, :hash)
    ON CONFLICT (outlet_id, series) DO UPDATE
    SET number = EXCLUDED.number, hash = EXCLUDED.hash, updated_at = now()
    WHERE ledger.chain_heads.number = :prev_number AND ledger.chain_heads.hash = :prev_hash
    RETURNING 1
""")


_INSERT_SEALED = _insert_sealed_sql()


class LedgerStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        # Reads need no transaction: autocommit saves the BEGIN/ROLLBACK round trips on the seal path.
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Called after a transaction that wrote outbox events committed (the outbox relay's wake-up, so an
        # event leaves without waiting for the relay's next poll). Must be cheap and must not raise.
        self.on_outbox_written: Callable[[], None] | None = None

    # --- tenancy and keys -------------------------------------------------------------------------

    async def principal_for_key(self, key_hash: bytes) -> Principal | None:
        query = sa.select(api_keys.c.id, api_keys.c.merchant_id, api_keys.c.scope, api_keys.c.outlet_id).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Principal(row.id, row.merchant_id, row.scope, row.outlet_id) if row else None

    async def merchant_outlet_ids(self, merchant_id: str) -> list[str]:
        query = sa.select(outlets.c.id).where(outlets.c.merchant_id == merchant_id).order_by(outlets.c.code)
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def outlet(self, outlet_id: str) -> Outlet | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(outlets).where(outlets.c.id == outlet_id))).first()
            if row is None:
                return None
            groups = (await conn.execute(
                sa.select(tax_groups).where(tax_groups.c.merchant_id == row.merchant_id))).all()
        return Outlet(
            id=row.id, merchant_id=row.merchant_id, code=row.code, name=row.name, taxpayer_id=row.taxpayer_id,
            currency=row.currency, time_zone=row.time_zone, offline_grace_seconds=row.offline_grace_seconds,
            tax_groups={g.code: TaxGroup(g.code, g.label, g.rate) for g in groups},
        )

    async def outlet_by_code(self, code: str) -> Outlet | None:
        async with self.engine.connect() as conn:
            outlet_id = (await conn.execute(sa.select(outlets.c.id).where(outlets.c.code == code))).scalar()
        return await self.outlet(outlet_id) if outlet_id else None

    async def outlet_ids(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(sa.select(outlets.c.id).order_by(outlets.c.code))).scalars())

    # --- invoices ------------------------------------------------------------------------------------

    async def invoice_by_client_id(self, outlet_id: str, client_invoice_id: str) -> InvoiceRecord | None:
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.outlet_id == outlet_id,
                                                   invoices.c.client_invoice_id == client_invoice_id)
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return _invoice(row) if row else None

    async def invoice(self, merchant_id: str, invoice_id: str) -> InvoiceRecord | None:
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.id == invoice_id,
                                                   invoices.c.merchant_id == merchant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _invoice(row) if row else None

    async def invoice_by_fiscal_number(self, fiscal_number: str) -> InvoiceRecord | None:
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.fiscal_number == fiscal_number)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _invoice(row) if row else None

    async def entry_hash(self, outlet_id: str, series: str, number: int) -> bytes | None:
        query = sa.select(invoices.c.hash).where(invoices.c.outlet_id == outlet_id, invoices.c.series == series,
                                                 invoices.c.number == number)
        async with self.reader.connect() as conn:
            value = (await conn.execute(query)).scalar()
        return bytes(value) if value is not None else None

    async def chain_head(self, outlet_id: str, series: str) -> tuple[int, bytes | None]:
        query = (sa.select(invoices.c.number, invoices.c.hash)
                 .where(invoices.c.outlet_id == outlet_id, invoices.c.series == series)
                 .order_by(invoices.c.number.desc()).limit(1))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (row.number, bytes(row.hash)) if row else (0, None)

    async def credit_notes(self, original_invoice_id: str) -> list[InvoiceRecord]:
        """The credit notes already sealed against one invoice (what is left to refund depends on them)."""
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.original_invoice_id == original_invoice_id)
        async with self.engine.connect() as conn:
            return [_invoice(row) for row in await conn.execute(query)]

    async def invoices_by_client_ids(self, outlet_id: str, client_invoice_ids: list[str]
                                     ) -> dict[str, InvoiceRecord]:
        query = sa.select(*_INVOICE_COLUMNS).where(invoices.c.outlet_id == outlet_id,
                                                   invoices.c.client_invoice_id.in_(client_invoice_ids))
        async with self.reader.connect() as conn:
            return {row.client_invoice_id: _invoice(row) for row in await conn.execute(query)}

    async def insert_sealed_batch(self, records: list[InvoiceRecord], events: list[OutboxEvent],
                                  prev_number: int, prev_hash: bytes) -> None:
        """One transaction for a whole batch: the chain head's compare-and-set, then each entry with its
        outbox event and its terminal's last seal (pipelined). Committed on return."""
        last = records[-1]
        rows = []
        for record, event in zip(records, events, strict=True):
            params = {c.name: getattr(record, c.name) for c in _INVOICE_COLUMNS}
            params.update(event_id=event.event_id, event_type=event.event_type, aggregate_id=event.aggregate_id,
                          event_outlet_id=event.outlet_id, payload=event.payload)
            rows.append(params)
        try:
            async with self.engine.begin() as conn:
                moved = (await conn.execute(_MOVE_HEAD, {
                    "outlet_id": last.outlet_id, "series": last.series, "number": last.number, "hash": last.hash,
                    "prev_number": prev_number, "prev_hash": prev_hash})).first()
                if moved is None:
                    raise ChainMoved(f"{last.outlet_id}/{last.series} is no longer at {prev_number}")
                await conn.execute(_INSERT_SEALED, rows if len(rows) > 1 else rows[0])
        except IntegrityError as exc:
            constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", "") or ""
            if "client_invoice_id" in constraint:
                raise DuplicateClientInvoice(", ".join(r.client_invoice_id for r in records)) from exc
            if "number" in constraint or "fiscal_number" in constraint or "hash" in constraint:
                raise DuplicateNumber(f"{records[0].fiscal_number}..{last.fiscal_number}") from exc
            raise
        if self.on_outbox_written is not None:
            self.on_outbox_written()

    async def list_invoices(self, where: InvoiceFilter, limit: int, before_seq: int | None
                            ) -> tuple[list[InvoiceRecord], int | None]:
        conditions = [invoices.c.merchant_id == where.merchant_id]
        for column, value in ((invoices.c.outlet_id, where.outlet_id),
                              (invoices.c.pos_terminal_id, where.pos_terminal_id),
                              (invoices.c.cashier_id, where.cashier_id), (invoices.c.status, where.status),
                              (invoices.c.kind, where.kind)):
            if value:
                conditions.append(column == value)
        if where.sealed_from:
            conditions.append(invoices.c.sealed_at >= where.sealed_from)
        if where.sealed_to:
            conditions.append(invoices.c.sealed_at < where.sealed_to)
        if before_seq is not None:
            conditions.append(invoices.c.seq < before_seq)
        if where.sync_status:
            # A document the sync worker has not reached yet has no row: it is pending.
            settled = sa.select(dgi_sync.c.invoice_id).where(dgi_sync.c.invoice_id == invoices.c.id)
            if where.sync_status == "pending":
                conditions.append(~settled.where(dgi_sync.c.status != "pending").exists())
            else:
                conditions.append(settled.where(dgi_sync.c.status == where.sync_status).exists())
        query = (sa.select(invoices.c.seq, *_INVOICE_COLUMNS).where(*conditions)
                 .order_by(invoices.c.seq.desc()).limit(limit + 1))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return [_invoice(r) for r in rows], (rows[-1].seq if more else None)

    async def chain(self, outlet_id: str, series: str, after_number: int = 0, batch: int = 1000,
                    last_number: int | None = None):
        """Yield a series' entries in number order (up to `last_number`, if given), `batch` rows per query:
        keyset, no OFFSET, no long transaction (`fiscal verify`, `fiscal export`)."""
        while True:
            bound = [invoices.c.number <= last_number] if last_number is not None else []
            query = (sa.select(*_INVOICE_COLUMNS)
                     .where(invoices.c.outlet_id == outlet_id, invoices.c.series == series,
                            invoices.c.number > after_number, *bound)
                     .order_by(invoices.c.number).limit(batch))
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return
            for row in rows:
                yield _invoice(row)
            after_number = rows[-1].number

    async def anchored_heads(self, outlet_id: str) -> dict[str, tuple[int, bytes]]:
        """The (number, hash) each series' last seal recorded in ledger.chain_heads, by series."""
        query = sa.text("SELECT series, number, hash FROM ledger.chain_heads WHERE outlet_id = :o")
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query, {"o": outlet_id})).all()
        return {row.series: (row.number, bytes(row.hash)) for row in rows}

    async def series_counts(self, outlet_id: str) -> dict[str, int]:
        query = (sa.select(invoices.c.series, sa.func.count()).where(invoices.c.outlet_id == outlet_id)
                 .group_by(invoices.c.series))
        async with self.engine.connect() as conn:
            return {row[0]: row[1] for row in (await conn.execute(query)).all()}

    # --- DGI upload sync (issue #10): ledger.dgi_sync, never written on the seal path --------------------

    async def dgi_discover(self, after_seq: int, limit: int) -> int:
        """Give sealed documents past `after_seq` that have no sync row one (pending, due now), in seq
        order, at most `limit`. Returns the highest seq given a row (0: none). Replicas may race: the
        primary key keeps one row per document."""
        query = sa.text("""
            INSERT INTO ledger.dgi_sync (invoice_id, seq, merchant_id, outlet_id, kind)
            SELECT i.id, i.seq, i.merchant_id, i.outlet_id, i.kind FROM ledger.invoices i
            WHERE i.seq > :after AND NOT EXISTS (SELECT 1 FROM ledger.dgi_sync s WHERE s.invoice_id = i.id)
            ORDER BY i.seq LIMIT :limit
            ON CONFLICT (invoice_id) DO NOTHING
            RETURNING seq""")
        async with self.engine.begin() as conn:
            seqs = list((await conn.execute(query, {"after": after_seq, "limit": limit})).scalars())
        return max(seqs, default=0)

    async def dgi_highest_seq(self) -> int:
        async with self.reader.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(dgi_sync.c.seq), 0)))).scalar())

    async def dgi_claim(self, holder: str, lease_seconds: float, limit: int) -> list[Claimed]:
        """Take up to `limit` pending documents that are due and not under another worker's lease, in seq
        order, for `lease_seconds`. SKIP LOCKED: replicas claiming at once take different rows; the lease
        keeps them from taking this batch again while it is being uploaded (outside any transaction)."""
        take = sa.text("""
            WITH due AS (
                SELECT invoice_id FROM ledger.dgi_sync
                WHERE status = 'pending' AND next_attempt_at <= now()
                  AND (lease_until IS NULL OR lease_until < now())
                ORDER BY seq LIMIT :limit FOR UPDATE SKIP LOCKED
            )
            UPDATE ledger.dgi_sync s SET lease_holder = :holder,
                   lease_until = now() + make_interval(secs => :lease), updated_at = now()
            FROM due WHERE s.invoice_id = due.invoice_id
            RETURNING s.invoice_id::text AS invoice_id, s.attempts, s.seq""")
        async with self.engine.begin() as conn:
            taken = (await conn.execute(take, {"holder": holder, "lease": float(lease_seconds),
                                               "limit": limit})).all()
        if not taken:
            return []
        ids = [row.invoice_id for row in taken]
        async with self.reader.connect() as conn:
            records = {row.id: _invoice(row) for row in await conn.execute(
                sa.select(*_INVOICE_COLUMNS).where(invoices.c.id.in_(ids)))}
            originals = [r.original_invoice_id for r in records.values() if r.original_invoice_id]
            original_states = {row.invoice_id: (row.status, row.dgi_code) for row in await conn.execute(
                sa.select(dgi_sync.c.invoice_id, dgi_sync.c.status, dgi_sync.c.dgi_code)
                .where(dgi_sync.c.invoice_id.in_(originals)))} if originals else {}
        claimed = []
        for row in sorted(taken, key=lambda r: r.seq):
            record = records.get(row.invoice_id)
            if record is None:  # not possible while invoices are never deleted; skip rather than fail the batch
                continue
            status, code = original_states.get(record.original_invoice_id or "", (None, ""))
            claimed.append(Claimed(record, row.attempts, original_code=code or None, original_status=status))
        return claimed

    async def dgi_record(self, holder: str, invoice_id: str, outcome: Outcome, now: datetime) -> bool:
        """Record one attempt's outcome, with its event, in one transaction, if the document is still
        pending under this worker's lease (False: another worker took it over; nothing written)."""
        values = dict(status=outcome.status, attempts=outcome.attempts, lease_holder=None, lease_until=None,
                      reason=outcome.reason[:1000], dgi_error_code=outcome.dgi_error_code, updated_at=now)
        if outcome.next_attempt_at is not None:
            values["next_attempt_at"] = outcome.next_attempt_at
        if outcome.acknowledgement is not None:
            ack = outcome.acknowledgement
            values.update(dgi_uid=ack.uid, dgi_code=ack.code, dgi_counters=ack.counters, synced_at=now, reason="")
        if outcome.status == "failed":
            values["failed_at"] = now
        update = (dgi_sync.update()
                  .where(dgi_sync.c.invoice_id == invoice_id, dgi_sync.c.lease_holder == holder,
                         dgi_sync.c.status == "pending")
                  .values(**values).returning(dgi_sync.c.invoice_id))
        event = outcome.event
        async with self.engine.begin() as conn:
            if (await conn.execute(update)).first() is None:
                return False
            if event is not None:
                await conn.execute(outbox.insert().values(
                    event_id=event.event_id, event_type=event.event_type, merchant_id=event.merchant_id,
                    aggregate_id=event.aggregate_id, outlet_id=event.outlet_id, payload=event.payload))
        if event is not None and self.on_outbox_written is not None:
            self.on_outbox_written()
        return True

    async def dgi_release(self, holder: str, invoice_ids: list[str]) -> None:
        """Give back documents taken but not tried (shutdown, lease running out): due again at once."""
        if not invoice_ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(dgi_sync.update()
                               .where(dgi_sync.c.invoice_id.in_(invoice_ids), dgi_sync.c.lease_holder == holder)
                               .values(lease_holder=None, lease_until=None))

    async def sync_states(self, invoice_ids: list[str]) -> dict[str, SyncState]:
        """The DGI sync state of these documents, by id (a document without a row is not in it: pending)."""
        if not invoice_ids:
            return {}
        query = sa.select(dgi_sync).where(dgi_sync.c.invoice_id.in_(invoice_ids))
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.invoice_id: SyncState(
            invoice_id=row.invoice_id, status=row.status, attempts=row.attempts, dgi_uid=row.dgi_uid,
            dgi_code=row.dgi_code, dgi_counters=row.dgi_counters, dgi_error_code=row.dgi_error_code,
            reason=row.reason, next_attempt_at=row.next_attempt_at, synced_at=row.synced_at,
            failed_at=row.failed_at) for row in rows}

    # --- payments recorded against invoices (issue #9) ------------------------------------------------

    async def record_payment(self, payment: RecordedPayment) -> None:
        """Insert or update one payment by its id. A later status replaces an earlier one, except that a
        confirmed payment stays confirmed (money arrived; a late or replayed older status changes
        nothing). The row stays the merchant's it was first recorded for."""
        values = {c: getattr(payment, c) for c in (
            "payment_id", "merchant_id", "outlet_id", "client_invoice_id", "invoice_id", "method",
            "provider_reference", "amount", "currency", "phone_masked", "status", "confirmed_at",
            "amount_mismatch")}
        changed = {name: values[name] for name in (
            "invoice_id", "provider_reference", "amount", "phone_masked", "status", "confirmed_at",
            "amount_mismatch")}
        # An invoice found later is kept; an invoice id never goes back to unknown.
        changed["invoice_id"] = sa.func.coalesce(insert(invoice_payments).excluded.invoice_id,
                                                 invoice_payments.c.invoice_id)
        statement = insert(invoice_payments).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[invoice_payments.c.payment_id],
            set_={**changed, "updated_at": sa.func.now()},
            where=(invoice_payments.c.merchant_id == statement.excluded.merchant_id)
            & ((invoice_payments.c.status != "confirmed") | (statement.excluded.status == "confirmed")))
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def payments_and_refunds(self, records: list[InvoiceRecord]
                                   ) -> tuple[dict[tuple[str, str], list[RecordedPayment]], dict[str, Decimal]]:
        """For a page of invoices, in one query (both parts indexed): the payments recorded against each
        sale by (outlet_id, client_invoice_id), and what credit notes refunded of each invoice by id."""
        if not records:
            return {}, {}
        invoice_ids = [r.id for r in records if r.kind == "invoice"]
        async with self.reader.connect() as conn:
            rows = (await conn.execute(_PAYMENTS_AND_REFUNDS, {
                "outlets": [r.outlet_id for r in records], "client_ids": [r.client_invoice_id for r in records],
                "invoice_ids": invoice_ids})).all()
        payments: dict[tuple[str, str], list[RecordedPayment]] = {}
        refunded: dict[str, Decimal] = {}
        for row in rows:
            if row.part == "refund":
                refunded[row.original_invoice_id] = Decimal(row.amount)
            else:
                payments.setdefault((row.outlet_id, row.client_invoice_id), []).append(_recorded_payment(row))
        return payments, refunded

    # --- terminals ----------------------------------------------------------------------------------

    async def record_heartbeat(self, outlet_id: str, pos_terminal_id: str, cashier_id: str, draft_count: int,
                               oldest_draft_age_seconds: int, rejected_count: int, state: str,
                               sdk_version: str, now: datetime) -> None:
        values = dict(last_seen_at=now, last_heartbeat_at=now, draft_count=draft_count,
                      oldest_draft_age_seconds=oldest_draft_age_seconds, rejected_count=rejected_count,
                      state=state, sdk_version=sdk_version)
        if cashier_id:
            values["last_cashier_id"] = cashier_id
        async with self.engine.begin() as conn:
            await conn.execute(insert(terminals).values(outlet_id=outlet_id, pos_terminal_id=pos_terminal_id,
                                                        **values)
                               .on_conflict_do_update(index_elements=[terminals.c.outlet_id,
                                                                      terminals.c.pos_terminal_id], set_=values))

    async def terminals(self, merchant_id: str, outlet_id: str | None) -> list[dict]:
        query = (sa.select(terminals).join(outlets, outlets.c.id == terminals.c.outlet_id)
                 .where(outlets.c.merchant_id == merchant_id)
                 .order_by(terminals.c.outlet_id, terminals.c.pos_terminal_id))
        if outlet_id:
            query = query.where(terminals.c.outlet_id == outlet_id)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    # --- provisioning (the `fiscal` command line's operator tools) -----------------------------------

    async def create_merchant(self, name: str) -> str:
        merchant_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            await conn.execute(merchants.insert().values(id=merchant_id, name=name))
        return merchant_id

    async def merchant_exists(self, merchant_id: str) -> bool:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(merchants.c.id).where(merchants.c.id == merchant_id))).first() \
                is not None

    async def outlet_codes_taken(self, codes: list[str]) -> set[str]:
        """Which of these outlet codes an outlet (of any merchant) already has."""
        async with self.engine.connect() as conn:
            return set((await conn.execute(sa.select(outlets.c.code).where(outlets.c.code.in_(codes)))).scalars())

    async def tax_groups(self, merchant_id: str) -> list[TaxGroup]:
        query = sa.select(tax_groups).where(tax_groups.c.merchant_id == merchant_id).order_by(tax_groups.c.code)
        async with self.engine.connect() as conn:
            return [TaxGroup(g.code, g.label, g.rate) for g in (await conn.execute(query)).all()]

    async def create_outlet(self, merchant_id: str, code: str, name: str, taxpayer_id: str, currency: str,
                            time_zone: str, address: str = "", offline_grace_seconds: int = 72 * 3600) -> str:
        outlet_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            await conn.execute(outlets.insert().values(
                id=outlet_id, merchant_id=merchant_id, code=code, name=name, taxpayer_id=taxpayer_id,
                currency=currency, time_zone=time_zone, address=address,
                offline_grace_seconds=offline_grace_seconds))
        return outlet_id

    async def set_tax_group(self, merchant_id: str, group: TaxGroup) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(tax_groups).values(merchant_id=merchant_id, code=group.code,
                                                         label=group.label, rate=group.rate)
                               .on_conflict_do_update(index_elements=[tax_groups.c.merchant_id,
                                                                      tax_groups.c.code],
                                                      set_={"label": group.label, "rate": group.rate}))

    async def add_cashier(self, outlet_id: str, cashier_id: str, name: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(cashiers).values(outlet_id=outlet_id, cashier_id=cashier_id, name=name)
                               .on_conflict_do_nothing())

    async def add_terminal(self, outlet_id: str, pos_terminal_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(terminals).values(outlet_id=outlet_id, pos_terminal_id=pos_terminal_id)
                               .on_conflict_do_nothing())

    async def add_api_key(self, merchant_id: str, scope: str, key_hash: bytes, key_prefix: str,
                          outlet_id: str | None = None, name: str = "") -> str:
        key_id = str(uuid.uuid4())
        async with self.engine.begin() as conn:
            await conn.execute(api_keys.insert().values(id=key_id, merchant_id=merchant_id, outlet_id=outlet_id,
                                                        scope=scope, key_hash=key_hash, key_prefix=key_prefix,
                                                        name=name))
        return key_id

    async def api_keys(self, merchant_id: str) -> list[dict]:
        query = (sa.select(api_keys.c.id, api_keys.c.key_prefix, api_keys.c.scope, api_keys.c.outlet_id,
                           api_keys.c.name, api_keys.c.revoked_at)
                 .where(api_keys.c.merchant_id == merchant_id).order_by(api_keys.c.key_prefix))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(query)).all()]

    async def revoke_api_key(self, merchant_id: str, key_id: str) -> bool:
        """Revoke one key of a merchant; True if it was active. Takes effect within the auth cache's TTL."""
        query = (api_keys.update()
                 .where(api_keys.c.id == key_id, api_keys.c.merchant_id == merchant_id,
                        api_keys.c.revoked_at.is_(None))
                 .values(revoked_at=sa.func.now()))
        async with self.engine.begin() as conn:
            return (await conn.execute(query)).rowcount == 1

    async def count_rows(self, table: str, merchant_id: str | None = None) -> int:
        """For tests and operators: how many rows a ledger table holds (optionally one merchant's)."""
        target = metadata.tables[f"ledger.{table}"]
        query = sa.select(sa.func.count()).select_from(target)
        if merchant_id is not None and "merchant_id" in target.c:
            query = query.where(target.c.merchant_id == merchant_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar())
