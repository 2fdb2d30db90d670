"""PostgreSQL access: an async SQLAlchemy engine over psycopg 3, and Alembic migrations per schema.

Each service owns one PostgreSQL schema (counter, signing, ledger) and its own Alembic history in
`services/<name>/migrations`, with its version table inside that schema.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.runtime.config import database_url, env_int
from services.runtime.telemetry import instrument_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent


def create_engine(default_pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        database_url(),
        pool_size=env_int("FISCAL_DB_POOL_SIZE", default_pool_size),
        max_overflow=env_int("FISCAL_DB_MAX_OVERFLOW", 5),
        # No pre-ping: it would cost a round trip per checkout on the seal path. A connection that
        # died with the server fails one call, answered UNAVAILABLE (see grpc_errors), and is dropped.
        pool_pre_ping=False,
        pool_recycle=1800,
    )
    instrument_engine(engine)
    return engine


def migrate(service: str, url: str | None = None) -> None:
    """Bring `service`'s schema to the newest migration. Safe to run from several processes at once:
    a PostgreSQL advisory lock serialises them."""
    from alembic import command
    from alembic.config import Config

    sync_url = url or database_url()
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(hashtext('fiscal-migrations'))"))
        try:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{service}"'))
            connection.commit()
            config = Config()
            config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
            config.attributes["connection"] = connection
            config.attributes["schema"] = service
            command.upgrade(config, "head")
            connection.commit()
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(hashtext('fiscal-migrations'))"))
            connection.commit()
    engine.dispose()


def run_alembic_env() -> None:
    """The body of every service's migrations/env.py: online migrations on the caller's connection."""
    from alembic import context

    connection = context.config.attributes["connection"]
    schema = context.config.attributes["schema"]
    context.configure(connection=connection, version_table_schema=schema, include_schemas=True)
    with context.begin_transaction():
        context.run_migrations()
