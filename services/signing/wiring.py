"""Assemble the signing service: settings, backend, database, key lifecycle, servicer.

Environment:
  FISCAL_PORT (7102), DATABASE_URL, FISCAL_TLS_CERT / FISCAL_TLS_KEY / FISCAL_TLS_CA (mesh identity "signing"),
  FISCAL_SIGNING_BACKEND: software (default) | pkcs11
  FISCAL_SOFT_KEYSTORE_PASSPHRASE: required with software
  FISCAL_PKCS11_MODULE (/usr/lib/softhsm/libsofthsm2.so), FISCAL_PKCS11_TOKEN_LABEL (fiscal),
  FISCAL_PKCS11_PIN: required with pkcs11; FISCAL_PKCS11_MAX_BATCH (256): signatures per hop to the HSM thread
  FISCAL_HSM_PROBE_SECONDS (5): HSM check interval, drives gRPC health
  FISCAL_SIGNING_KEY_REFRESH_SECONDS (1): how often a replica re-reads the active key
  FISCAL_AUTHORITY_ID (FC-DEV-0001): the only fiscal authority whose statements this service signs
  FISCAL_STATEMENT_MAX_SKEW_SECONDS (300): how far a statement's sealed_at may be from this clock
  FISCAL_MIN_ROTATION_INTERVAL_SECONDS (3600): RotateKey refused while the active key is younger
  FISCAL_SIGNING_MIGRATE (1): run the signing schema's migrations at start (advisory-locked)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import structlog
from fiscal.v1 import signing_pb2, signing_pb2_grpc

from services.runtime.config import env_float, env_int, env_str
from services.runtime.database import create_engine, migrate
from services.runtime.server import Mounted, run_service
from services.signing.backends import Pkcs11Backend, SoftwareBackend
from services.signing.keys import ConfigurationError, KeyBackend, KeyManager
from services.signing.servicer import SigningServicer
from services.signing.statement import StatementRules
from services.signing.store import KeyStore

log = structlog.get_logger()

DEFAULT_PORT = 7102
DEFAULT_PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

# Which mesh identities may call which method (services/runtime/mesh_tls.py): the ledger signs and
# publishes keys; only an operator rotates keys or reads the HSM's state.
ALLOWED_CALLERS = {
    "/fiscal.v1.SigningService/Sign": {"ledger", "operator"},  # operator: export statements only (servicer)
    "/fiscal.v1.SigningService/SignBatch": {"ledger"},
    "/fiscal.v1.SigningService/ListPublicKeys": {"ledger", "operator"},
    "/fiscal.v1.SigningService/RotateKey": {"operator"},
    "/fiscal.v1.SigningService/CompromiseKey": {"operator"},
    "/fiscal.v1.SigningService/GetHsmStatus": {"operator"},
}


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
        manager = KeyManager(KeyStore(engine), backend, refresh_seconds=settings.refresh_seconds,
                             retirement_grace_seconds=env_float("FISCAL_KEY_RETIREMENT_GRACE_SECONDS", 10.0),
                             min_rotation_interval_seconds=env_float("FISCAL_MIN_ROTATION_INTERVAL_SECONDS", 3600.0))
        await manager.ensure_active()
        signing_pb2_grpc.add_SigningServiceServicer_to_server(SigningServicer(manager, StatementRules(
            authority_id=env_str("FISCAL_AUTHORITY_ID", "FC-DEV-0001"),
            max_skew=timedelta(seconds=env_float("FISCAL_STATEMENT_MAX_SKEW_SECONDS", 300.0)))), server)
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
    run_service("signing", DEFAULT_PORT, mount, ALLOWED_CALLERS)
