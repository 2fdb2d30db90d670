"""Run one gRPC service: health, reflection, tracing, structured logs, graceful shutdown.

Each service writes only a `mount` function: an async context manager that opens what the service
needs (database engine, clients, background loops), registers its servicers on the server, yields a
`Mounted`, and closes everything when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import AsyncContextManager

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.config import ServerSettings, env_float
from services.runtime.logs import configure_logging
from services.runtime.telemetry import configure_tracing, server_interceptors, shutdown_tracing

log = structlog.get_logger()

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.so_reuseport", 0),
]


@dataclass
class Mounted:
    """What a service registered: its full service names, and an optional readiness probe."""

    service_names: list[str]
    # Returns None when ready, or a reason it is not. Run every `probe_interval` seconds.
    readiness_probe: Callable[[], Awaitable[str | None]] | None = None
    probe_interval: float = 5.0
    background: list[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)


MountFn = Callable[[grpc.aio.Server], AsyncContextManager[Mounted]]


async def _serve(name: str, settings: ServerSettings, mount: MountFn) -> None:
    server = grpc.aio.server(interceptors=server_interceptors(), options=SERVER_OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async with mount(server) as mounted:
        names = [*mounted.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
        address = f"{settings.host}:{settings.port}"
        port = server.add_insecure_port(address)
        if port == 0:
            raise SystemExit(f"fiscal-{name}: cannot listen on {address}")
        await server.start()

        async def set_health(serving: bool) -> None:
            status = (health_pb2.HealthCheckResponse.SERVING if serving
                      else health_pb2.HealthCheckResponse.NOT_SERVING)
            for service_name in ["", *mounted.service_names]:
                await health_servicer.set(service_name, status)

        async def probe_loop() -> None:
            last: str | None = "starting"
            while not stopping.is_set():
                try:
                    reason = await mounted.readiness_probe() if mounted.readiness_probe else None
                except Exception as exc:  # noqa: BLE001 - a failing probe means not ready
                    reason = f"probe failed: {exc}"
                if reason != last:
                    log.info("readiness", ready=reason is None, reason=reason)
                    last = reason
                await set_health(reason is None)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), mounted.probe_interval)

        tasks = [asyncio.create_task(probe_loop(), name=f"{name}-probe")]
        tasks += [asyncio.create_task(job(stopping), name=f"{name}-bg") for job in mounted.background]
        print(f"fiscal-{name} listening on {settings.host}:{port}", flush=True)
        log.info("listening", address=f"{settings.host}:{port}")

        await stopping.wait()
        log.info("shutting down", grace_seconds=settings.grace_seconds)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(settings.grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")


def run_service(name: str, default_port: int, mount: MountFn) -> None:
    """Entry point of a service process: `python -m services.<name>`."""
    configure_logging(name)
    configure_tracing(name)
    settings = ServerSettings.from_env(default_port)
    try:
        asyncio.run(_serve(name, settings, mount))
    except KeyboardInterrupt:
        pass
    finally:
        shutdown_tracing()
    sys.exit(0)


def rpc_timeout() -> float:
    """Default deadline (seconds) for an outgoing call inside the mesh."""
    return env_float("FISCAL_RPC_TIMEOUT_SECONDS", 5.0)
