"""Settings every service reads from its environment."""

from __future__ import annotations

import os
from dataclasses import dataclass


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise SystemExit(f"missing required environment variable {name}")
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"environment variable {name} must be a number, got {raw!r}") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [part.strip() for part in os.environ.get(name, default).split(",") if part.strip()]


@dataclass(frozen=True)
class ServerSettings:
    """Where a service listens and how long it drains on shutdown."""

    host: str
    port: int
    grace_seconds: float
    drain_seconds: float = 2.5

    @classmethod
    def from_env(cls, default_port: int) -> ServerSettings:
        return cls(
            host=env_str("FISCAL_LISTEN_HOST", "127.0.0.1"),
            port=env_int("FISCAL_PORT", default_port),
            grace_seconds=env_float("FISCAL_SHUTDOWN_GRACE_SECONDS", 10.0),
            # Longer than the gateway needs to see NOT_SERVING: 2 failed health checks 1 s apart.
            drain_seconds=env_float("FISCAL_SHUTDOWN_DRAIN_SECONDS", 2.5),
        )


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL (postgresql://, postgres://) as SQLAlchemy wants it: the psycopg 3 driver.
    The one place this rewrite lives (services, CLI, stack and tests use it)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise SystemExit("a database URL must be a postgresql:// URL")


def database_url() -> str:
    """DATABASE_URL as SQLAlchemy wants it (psycopg 3 driver)."""
    return sqlalchemy_url(env_str("DATABASE_URL"))
