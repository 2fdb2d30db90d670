"""Assemble the payments service: settings, database, the ledger (API keys, payments on invoices, pay-first
seals), the provider adapters, servicers, the outbox relay and the reconciler.

Environment (docs/payments.md):
  FISCAL_PORT (7105), DATABASE_URL, FISCAL_TLS_CERT / FISCAL_TLS_KEY / FISCAL_TLS_CA (mesh identity "payments"),
  FISCAL_PAYMENTS_MIGRATE (1): run the payments schema's migrations at start (advisory-locked)
  FISCAL_LEDGER_ADDR (127.0.0.1:7103): AuthenticateApiKey, RecordPayment, SealSaleForPayment, FindInvoice
  FISCAL_WEBHOOKS_ADDR (127.0.0.1:7104): the outbox relay's PublishEvents (FISCAL_OUTBOX_* tune it)
  FISCAL_RPC_TIMEOUT_SECONDS (0.6): deadline of AuthenticateApiKey
  FISCAL_PAYMENTS_LEDGER_TIMEOUT_SECONDS (2): deadline of RecordPayment and FindInvoice
  FISCAL_PAYMENTS_SEAL_TIMEOUT_SECONDS (3): deadline of SealSaleForPayment
  FISCAL_PUBLIC_URL (http://127.0.0.1:8080): the gateway's base URL, for the callback URLs
  FISCAL_PAYMENTS_SECRET_KEY (required): encrypts provider credentials, callback tokens, notif_tokens and
    phone numbers at rest (services/runtime/secret_box.py)
  FISCAL_MPESA_API_URL / _AIRTEL_ / _ORANGE_, FISCAL_MPESA_DEFAULT_CREDENTIALS / _AIRTEL_ / _ORANGE_: see
    credentials.py
  FISCAL_PROVIDER_TIMEOUT_SECONDS (10): every call to a provider
  FISCAL_PAYMENTS_RECONCILE_AFTER_SECONDS (60), FISCAL_PAYMENTS_RECONCILE_EVERY_SECONDS (15),
  FISCAL_PAYMENTS_EXPIRE_AFTER_SECONDS (900), FISCAL_PAYMENTS_SEAL_RETRY_SECONDS (2): see reconcile.py
  FISCAL_PAYMENTS_PRINCIPAL_CACHE_SECONDS (5, at most 5): how long an API key's principal is cached
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import grpc
import httpx
from fiscal.v1 import payments_pb2, payments_pb2_grpc

from services.payments.callbacks import CallbackProcessor
from services.payments.credentials import ProviderAccess
from services.payments.ledger_client import LedgerClient
from services.payments.providers.registry import ProviderRegistry
from services.payments.reconcile import FollowUp, Reconciler, ReconcileSettings
from services.payments.servicer import PaymentCallbackServicer, PaymentOpsServicer, PaymentServicer
from services.payments.store import PaymentStore
from services.runtime.api_key_principal import MAX_CACHE_SECONDS, ApiKeyAuthenticator
from services.runtime.channels import open_channel
from services.runtime.config import env_float, env_str
from services.runtime.database import create_engine, migrate
from services.runtime.outbox_relay import OutboxRelay, PostgresOutbox, RelaySettings, webhooks_publisher
from services.runtime.secret_box import SecretBox
from services.runtime.server import Mounted, rpc_timeout, run_service

DEFAULT_PORT = 7105

_PUBLIC = ("CreatePayment", "GetPayment", "ListPayments", "SetProviderSettings", "ListProviderSettings")
_CALLBACKS = ("MpesaStkCallback", "MpesaC2bValidation", "MpesaC2bConfirmation", "AirtelCallback",
              "OrangeNotification")

# Which mesh identities may call which method (services/runtime/mesh_tls.py): the public API and the
# provider callbacks only through the gateway; the callback statistics only from the operator.
ALLOWED_CALLERS = {
    **{f"/fiscal.v1.PaymentService/{method}": {"gateway"} for method in _PUBLIC},
    **{f"/fiscal.v1.PaymentCallbackService/{method}": {"gateway"} for method in _CALLBACKS},
    "/fiscal.v1.PaymentOpsService/GetCallbackStats": {"operator"},
}


def _seconds(name: str, default: float, maximum: float) -> float:
    value = env_float(name, default)
    if not 0 < value <= maximum:
        raise SystemExit(f"{name} must be more than 0 and at most {maximum}")
    return value


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server) -> AsyncIterator[Mounted]:
    # Read every setting first: a bad one stops the process before it touches anything.
    box = SecretBox.from_env("FISCAL_PAYMENTS_SECRET_KEY", "payment provider credentials")
    public_url = env_str("FISCAL_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/")
    if not public_url.startswith(("https://", "http://")):
        raise SystemExit("FISCAL_PUBLIC_URL must be an http(s):// URL")
    provider_timeout = _seconds("FISCAL_PROVIDER_TIMEOUT_SECONDS", 10.0, 120.0)
    ledger_timeout = _seconds("FISCAL_PAYMENTS_LEDGER_TIMEOUT_SECONDS", 2.0, 60.0)
    seal_timeout = _seconds("FISCAL_PAYMENTS_SEAL_TIMEOUT_SECONDS", 3.0, 60.0)
    cache_seconds = min(env_float("FISCAL_PAYMENTS_PRINCIPAL_CACHE_SECONDS", MAX_CACHE_SECONDS), MAX_CACHE_SECONDS)
    reconcile_settings = ReconcileSettings.from_env()
    relay_settings = RelaySettings.from_env()

    if os.environ.get("FISCAL_PAYMENTS_MIGRATE", "1") not in ("0", "false", "no"):
        await asyncio.to_thread(migrate, "payments")
    engine = create_engine(default_pool_size=10)
    ledger_channel = open_channel(env_str("FISCAL_LEDGER_ADDR", "127.0.0.1:7103"), "ledger")
    webhooks_channel = open_channel(env_str("FISCAL_WEBHOOKS_ADDR", "127.0.0.1:7104"), "webhooks")
    # Providers are on the internet (simulators on loopback in development): no proxy from the environment.
    http = httpx.AsyncClient(timeout=httpx.Timeout(provider_timeout), trust_env=False, follow_redirects=False)
    store = PaymentStore(engine, retry_delay_seconds=reconcile_settings.seal_retry_seconds)
    registry = ProviderRegistry()
    access = ProviderAccess.from_env(store, box)
    ledger = LedgerClient(ledger_channel, timeout=ledger_timeout, seal_timeout=seal_timeout)
    authenticator = ApiKeyAuthenticator(ledger_channel, timeout=rpc_timeout(), cache_seconds=cache_seconds)
    relay = OutboxRelay(PostgresOutbox(engine, "payments"),
                        webhooks_publisher(webhooks_channel, relay_settings.publish_timeout), relay_settings)
    follow_up = FollowUp(store, ledger)
    processor = CallbackProcessor(store, registry, access, box, http, follow_up, on_change=relay.wake)
    reconciler = Reconciler(store, registry, access, box, http, follow_up, reconcile_settings, on_change=relay.wake)

    payments_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentServicer(authenticator, store, registry, access, box, ledger, http, public_url, provider_timeout,
                        on_change=relay.wake), server)
    payments_pb2_grpc.add_PaymentCallbackServiceServicer_to_server(PaymentCallbackServicer(processor), server)
    payments_pb2_grpc.add_PaymentOpsServiceServicer_to_server(PaymentOpsServicer(store), server)

    async def database_ready() -> str | None:
        await store.ping()
        return None

    try:
        yield Mounted(
            service_names=[payments_pb2.DESCRIPTOR.services_by_name[name].full_name
                           for name in ("PaymentService", "PaymentCallbackService", "PaymentOpsService")],
            readiness_probe=database_ready,
            background=[relay.run, reconciler.run],
        )
    finally:
        await http.aclose()
        await webhooks_channel.close()
        await ledger_channel.close()
        await engine.dispose()


def main() -> None:
    run_service("payments", DEFAULT_PORT, mount, ALLOWED_CALLERS)
