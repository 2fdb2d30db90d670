"""One PostgreSQL role per service (fiscal_counter, fiscal_signing, fiscal_ledger, fiscal_webhooks,
fiscal_payments): it may read and write the tables of its own schema and nothing else (no USAGE on the
other services' schemas, no CREATE anywhere), so a compromised counter cannot read signing.keys.

Migrations run as the database owner (admin) and call `grant_service_role` after every upgrade, so new
tables are granted too. The services then connect as their role and do not migrate themselves.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

SERVICE_SCHEMAS = ("counter", "signing", "ledger", "webhooks", "payments")


def service_role(service: str) -> str:
    if service not in SERVICE_SCHEMAS:
        raise ValueError(f"no database role for {service!r}")
    return f"fiscal_{service}"


def grant_service_role(connection: Connection, service: str) -> None:
    """Create the service's role if missing (LOGIN, no other attribute) and grant it its schema only."""
    role = service_role(service)
    # Roles are shared by every database of the server: another migration may create it at the same time.
    connection.execute(sa.text(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END $$"""))
    for statement in (
        f'REVOKE ALL ON SCHEMA "{service}" FROM PUBLIC',
        f'GRANT USAGE ON SCHEMA "{service}" TO {role}',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{service}" TO {role}',
        f'GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "{service}" TO {role}',
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    ):
        connection.execute(sa.text(statement))


def set_role_password(connection: Connection, service: str, password: str) -> None:
    """Give the service's role this password (scram-sha-256 on servers that ask for one)."""
    role = service_role(service)
    quoted = connection.exec_driver_sql("SELECT quote_literal(%(p)s)", {"p": password}).scalar_one()
    connection.exec_driver_sql(f"ALTER ROLE {role} WITH LOGIN PASSWORD {quoted}")


def role_url(admin_url: str, service: str, password: str) -> str:
    """The admin URL with the service's role and password instead (same server, database, options)."""
    return make_url(admin_url).set(username=service_role(service), password=password).render_as_string(
        hide_password=False)
