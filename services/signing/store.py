"""The signing schema (SQLAlchemy Core) and the key repository on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.signing.keys import ACTIVE, COMPROMISED, RETIRED, GeneratedKey, KeyRecord

metadata = sa.MetaData(schema="signing")

keys = sa.Table(
    "keys", metadata,
    sa.Column("kid", sa.Text, primary_key=True),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("crv", sa.Text, nullable=False),
    sa.Column("x", sa.Text, nullable=False),
    sa.Column("y", sa.Text, nullable=False),
    sa.Column("private_pem", sa.LargeBinary),
    sa.Column("hsm_label", sa.Text),
    sa.Column("hsm_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("retired_at", sa.DateTime(timezone=True)),
    sa.Column("compromised_at", sa.DateTime(timezone=True)),
    sa.Column("compromise_reason", sa.Text),
)

# Every replica creating or rotating keys takes this transaction-scoped advisory lock first.
_LOCK = sa.text("SELECT pg_advisory_xact_lock(hashtext('fiscal-signing-keys'))")


def _record(row) -> KeyRecord:
    return KeyRecord(
        kid=row.kid, backend=row.backend, status=row.status, x=row.x, y=row.y, created_at=row.created_at,
        retired_at=row.retired_at, private_pem=row.private_pem, hsm_label=row.hsm_label, hsm_id=row.hsm_id,
        compromised_at=row.compromised_at, compromise_reason=row.compromise_reason,
    )


class _Transaction:
    def __init__(self, connection: AsyncConnection):
        self.connection = connection

    async def active(self) -> KeyRecord | None:
        row = (await self.connection.execute(sa.select(keys).where(keys.c.status == ACTIVE))).first()
        return _record(row) if row else None

    async def get(self, kid: str) -> KeyRecord | None:
        row = (await self.connection.execute(sa.select(keys).where(keys.c.kid == kid))).first()
        return _record(row) if row else None

    async def retire(self, kid: str, grace_seconds: float) -> None:
        # The database's clock, like created_at: one clock for every replica.
        await self.connection.execute(
            keys.update().where(keys.c.kid == kid, keys.c.status == ACTIVE)
            .values(status=RETIRED, retired_at=sa.func.now() + sa.func.make_interval(
                0, 0, 0, 0, 0, 0, sa.cast(grace_seconds, sa.Float))))

    async def compromise(self, kid: str, reason: str) -> KeyRecord:
        row = (await self.connection.execute(
            keys.update().where(keys.c.kid == kid)
            .values(status=COMPROMISED, compromised_at=sa.func.now(), compromise_reason=reason,
                    retired_at=sa.func.coalesce(keys.c.retired_at, sa.func.now()))
            .returning(*keys.c))).one()
        return _record(row)

    async def insert(self, backend: str, key: GeneratedKey) -> KeyRecord:
        row = (await self.connection.execute(
            keys.insert().values(
                kid=key.kid, backend=backend, status=ACTIVE, crv="P-256", x=key.x, y=key.y,
                private_pem=key.private_pem, hsm_label=key.hsm_label, hsm_id=key.hsm_id,
            ).returning(*keys.c))).one()
        return _record(row)


class KeyStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[_Transaction]:
        async with self.engine.begin() as connection:
            await connection.execute(_LOCK)
            yield _Transaction(connection)

    async def active(self) -> KeyRecord | None:
        async with self.engine.connect() as connection:
            return await _Transaction(connection).active()

    async def all(self) -> list[KeyRecord]:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(
                sa.select(keys).order_by(keys.c.created_at.desc(), keys.c.kid))).all()
        return [_record(row) for row in rows]
