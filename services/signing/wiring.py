"""Assemble the signing service: settings, backend, database, key lifecycle, servicer.

Environment:
  FISCAL_PORT (7102), DATABASE_URL,
  FISCAL_SIGNING_BACKEND: software (default) | pkcs11
  FISCAL_SOFT_KEYSTORE_PASSPHRASE: required with software
  FISCAL_PKCS11_MODULE (/usr/lib/softhsm/libsofthsm2.so), FISCAL_PKCS11_TOKEN_LABEL (fiscal),
  FISCAL_PKCS11_PIN: required with pkcs11; FISCAL_PKCS11_MAX_BATCH (256): signatures per hop to the HSM thread
  FISCAL_HSM_PROBE_SECONDS (5): HSM check interval, drives gRPC health
  FISCAL_SIGNING_KEY_REFRESH_SECONDS (1): how often a replica re-reads the active key
  FISCAL_SIGNING_MIGRATE (1): run the signing schema's migrations at start (advisory-locked)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import structlog
from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.runtime.config import env_float, env_int, env_str
from services.runtime.database import create_engine, migrate
from services.runtime.server import Mounted, run_service
from services.signing.backends import Pkcs11Backend, SoftwareBackend
from services.signing.keys import ConfigurationError, KeyBackend, KeyManager
from services.signing.servicer import SigningServicer
from services.signing.store import KeyStore

log = structlog.get_logger()

DEFAULT_PORT = 7102
DEFAULT_PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class SigningSettings:
    backend: str
    probe_seconds: float
    refresh_seconds: float
    migrate: bool

    @classmethod
    def from_env(cls) -> SigningSettings:
        backend = env_str("FISCAL_SIGNING_BACKEND", "software").strip().lower()
        if backend not in ("software", "pkcs11"):
            raise ConfigurationError(f"FISCAL_SIGNING_BACKEND must be software or pkcs11, not {backend!r}")
        return cls(
            backend=backend,
            probe_seconds=env_float("FISCAL_HSM_PROBE_SECONDS", 5.0),
            refresh_seconds=env_float("FISCAL_SIGNING_KEY_REFRESH_SECONDS", 1.0),
            migrate=os.environ.get("FISCAL_SIGNING_MIGRATE", "1") not in ("0", "false", "no"),
        )


def make_backend(settings: SigningSettings) -> KeyBackend:
    if settings.backend == "software":
        return SoftwareBackend(os.environ.get("FISCAL_SOFT_KEYSTORE_PASSPHRASE", ""))
    return Pkcs11Backend(
        module=os.environ.get("FISCAL_PKCS11_MODULE") or DEFAULT_PKCS11_MODULE,
        token_label=os.environ.get("FISCAL_PKCS11_TOKEN_LABEL") or "fiscal",
        pin=os.environ.get("FISCAL_PKCS11_PIN", ""),
        max_batch=env_int("FISCAL_PKCS11_MAX_BATCH", 256),
    )


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server) -> AsyncIterator[Mounted]:
    try:
        settings = SigningSettings.from_env()
        backend = make_backend(settings)
        if settings.migrate:
            await asyncio.to_thread(migrate, "signing")
        await backend.start()
    except ConfigurationError as exc:
        log.error("cannot start", error=str(exc))
        raise SystemExit(f"fiscal-signing: {exc}") from None
    log.info("signing backend ready", backend=backend.name)
    engine = create_engine(default_pool_size=4)
    try:
        manager = KeyManager(KeyStore(engine), backend, refresh_seconds=settings.refresh_seconds)
        await manager.ensure_active()
        signing_pb2_grpc.add_SigningServiceServicer_to_server(SigningServicer(manager), server)
        yield Mounted(
            service_names=[signing_pb2.DESCRIPTOR.services_by_name["SigningService"].full_name],
            readiness_probe=manager.readiness,
            probe_interval=settings.probe_seconds,
            background=[manager.refresh_loop],
        )
    finally:
        await backend.close()
        await engine.dispose()


def main() -> None:
    run_service("signing", DEFAULT_PORT, mount)
