"""Run one gRPC service: mutual TLS with per-call caller checks, health, reflection, tracing, structured
logs, graceful shutdown.

Each service writes only a `mount` function: an async context manager that opens what the service
needs (database engine, clients, background loops), registers its servicers on the server, yields a
`Mounted`, and closes everything when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import AsyncContextManager

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime.admission import admission_interceptor
from services.runtime.config import ServerSettings, env_float, env_int
from services.runtime.grpc_errors import IN_FLIGHT
from services.runtime.logs import configure_logging
from services.runtime.mesh_tls import AllowTable, CallerAuthorization, process_tls
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


async def _serve(name: str, settings: ServerSettings, mount: MountFn, allowed_callers: AllowTable) -> None:
    credentials = process_tls().server_credentials()
    # Outermost first: tracing sees every call, then the caller check, then admission control (a refused
    # call costs no slot; an admitted one runs the servicer).
    server = grpc.aio.server(interceptors=[*server_interceptors(), CallerAuthorization(allowed_callers),
                                           admission_interceptor()],
                             options=SERVER_OPTIONS)
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
        port = server.add_secure_port(address, credentials)
        if port == 0:
            raise SystemExit(f"fiscal-{name}: cannot listen on {address}")
        freeze_startup_heap()
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
        log.info("shutting down", drain_seconds=settings.drain_seconds, grace_seconds=settings.grace_seconds)
        await health_servicer.enter_graceful_shutdown()
        # Keep serving while the gateway's health checks see NOT_SERVING and move traffic away: a call
        # that lands on a server already stopping is refused as CANCELLED, which reaches a POS as HTTP 499,
        # an answer it must not retry.
        await asyncio.sleep(settings.drain_seconds)
        stop = asyncio.create_task(server.stop(settings.grace_seconds))
        # Shortly before the grace ends, answer the calls still running UNAVAILABLE (retry) ourselves,
        # instead of letting gRPC cancel them at the deadline (CANCELLED, 499 again).
        await asyncio.wait({stop}, timeout=max(settings.grace_seconds - 0.5, 0.0))
        if not stop.done():
            IN_FLIGHT.answer_retry_and_cancel()
        await stop
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")


def freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, protobuf descriptors, SQLAlchemy metadata, caches) out of
    the garbage collector's reach, and make young-generation collections rarer.

    A service allocates ~100,000 long-lived objects while importing and mounting (94,000 in the ledger); without
    this every full collection walks them all again. `gc.freeze()` puts them in a permanent generation.
    The first threshold is raised from CPython's 700 so a seal's short-lived objects (protobuf messages,
    dicts, coroutines) are collected in bigger, rarer sweeps; generations 1 and 2 keep their defaults.
    FISCAL_GC_THRESHOLD=0 leaves the collector as CPython sets it (no freeze, default thresholds)."""
    threshold = env_int("FISCAL_GC_THRESHOLD", 10_000)
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(threshold, second, third)
    log.info("gc frozen", frozen_objects=gc.get_freeze_count(), threshold=gc.get_threshold())


def run_service(name: str, default_port: int, mount: MountFn, allowed_callers: AllowTable) -> None:
    """Entry point of a service process: `python -m services.<name>`. `allowed_callers` maps each full
    method name to the mesh identities that may call it (see mesh_tls.CallerAuthorization)."""
    configure_logging(name)
    configure_tracing(name)
    settings = ServerSettings.from_env(default_port)
    try:
        asyncio.run(_serve(name, settings, mount, allowed_callers))
    except KeyboardInterrupt:
        pass
    finally:
        shutdown_tracing()
    sys.exit(0)


def rpc_timeout() -> float:
    """Default deadline (seconds) for an outgoing call inside the mesh: FISCAL_RPC_TIMEOUT_SECONDS, 0.6.

    A seal is answered within 1 s (Envoy's seal deadline, FISCAL_SEAL_TIMEOUT_SECONDS): a call on its
    path (Sign, Commit) that cannot finish well inside that must fail here, so the ledger answers 503
    with the reason ("signing unavailable; retry") and releases the number, rather than being cut off by
    Envoy's deadline mid-seal. A healthy call takes milliseconds."""
    return env_float("FISCAL_RPC_TIMEOUT_SECONDS", 0.6)
