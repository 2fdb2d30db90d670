"""PostgreSQL access: an async SQLAlchemy engine over psycopg 3, and Alembic migrations per schema.

Each service owns one PostgreSQL schema (counter, signing, ledger) and its own Alembic history in
`services/<name>/migrations`, with its version table inside that schema.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.runtime.config import database_url, env_float, env_int
from services.runtime.db_roles import grant_service_role
from services.runtime.telemetry import instrument_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent


def session_timeouts() -> str:
    """libpq `options` for every pooled connection. Both are below a lease (FISCAL_LEASE_SECONDS, 10 s)
    so a seal stuck on the database fails, retryably, while its number's lease is still valid, instead
    of writing after the counter may have reconciled and reissued the number."""
    statement_ms = round(env_float("FISCAL_DB_STATEMENT_TIMEOUT_SECONDS", 4.0) * 1000)
    lock_ms = round(env_float("FISCAL_DB_LOCK_TIMEOUT_SECONDS", 3.0) * 1000)
    return f"-c statement_timeout={statement_ms} -c lock_timeout={lock_ms}"


def create_engine(default_pool_size: int = 10) -> AsyncEngine:
    engine = create_async_engine(
        database_url(),
        pool_size=env_int("FISCAL_DB_POOL_SIZE", default_pool_size),
        max_overflow=env_int("FISCAL_DB_MAX_OVERFLOW", 5),
        # No pre-ping: it would cost a round trip per checkout on the seal path. A connection that
        # died with the server fails one call, answered UNAVAILABLE (see grpc_errors), and is dropped.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Waiting for a pooled connection is bounded below a lease too (sqlalchemy.exc.TimeoutError:
        # answered UNAVAILABLE by grpc_errors, like a statement or lock timeout).
        pool_timeout=env_float("FISCAL_DB_POOL_TIMEOUT_SECONDS", 3.0),
        connect_args={"options": session_timeouts()},
        hide_parameters=True,  # a DBAPIError's text must not carry invoice data or key hashes into logs
    )
    instrument_engine(engine)
    return engine


def migrate(service: str, url: str | None = None) -> None:
    """Bring `service`'s schema to the newest migration. Safe to run from several processes at once:
    a PostgreSQL advisory lock serialises them."""
    from alembic import command
    from alembic.config import Config

    sync_url = url or database_url()
    engine = sa.create_engine(sync_url, poolclass=sa.pool.NullPool, hide_parameters=True)
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
            # Its role may use the schema's tables, new ones included, and nothing else (db_roles).
            grant_service_role(connection, service)
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
