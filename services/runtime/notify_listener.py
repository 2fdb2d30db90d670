"""LISTEN on a PostgreSQL channel from a dedicated connection, for a service whose replicas wake each
other (the counter's freed leases, the webhooks service's due deliveries). A lost connection is
reconnected after a second; meanwhile the service's own polling sees every change, so a notification
only ever makes things faster, never correct."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger()


def psycopg_conninfo(engine: AsyncEngine) -> str:
    """The engine's database as a plain psycopg connection string (for LISTEN outside the pool)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class NotifyListener:
    def __init__(self, conninfo: str, channel: str, on_notify: Callable[[str], None],
                 on_connect: Callable[[], None], what: str):
        self.conninfo = conninfo
        self.channel = channel
        self.on_notify = on_notify      # gets each notification's payload
        self.on_connect = on_connect    # after (re)connecting: what was sent while we were deaf
        self.what = what                # for the log: "freed counters", "due webhook deliveries"

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    log.info(f"listening for {self.what}")
                    self.on_connect()
                    # A bounded wait per round, so that a shutdown is seen within a second.
                    while not stopping.is_set():
                        async for notify in conn.notifies(timeout=1.0):
                            self.on_notify(notify.payload)
                            if stopping.is_set():
                                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect; polling covers the gap
                log.warning(f"listener for {self.what} lost its connection", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 1.0)
