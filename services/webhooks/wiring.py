"""Assemble the webhooks service: settings, database, ledger client (API keys), servicers, the delivery
engine and the failing-endpoint disabler.

Environment (docs/webhooks.md):
  FISCAL_PORT (7104), DATABASE_URL, FISCAL_TLS_CERT / FISCAL_TLS_KEY / FISCAL_TLS_CA (mesh identity "webhooks"),
  FISCAL_WEBHOOKS_MIGRATE (1): run the webhooks schema's migrations at start (advisory-locked)
  FISCAL_LEDGER_ADDR (127.0.0.1:7103): the ledger, asked who an API key is (AuthenticateApiKey)
  FISCAL_RPC_TIMEOUT_SECONDS (0.6): deadline of that call
  FISCAL_WEBHOOK_SECRET_KEY (required): encrypts endpoint secrets at rest (services/runtime/secret_box.py)
  FISCAL_WEBHOOK_RETRY_SCHEDULE ("300,1800,7200,21600,57600"): seconds between attempts (retry_policy)
  FISCAL_WEBHOOK_TIMEOUT_SECONDS (15): one attempt's whole HTTP exchange
  FISCAL_WEBHOOK_ROTATION_OVERLAP_SECONDS (86400): how long a rotated-out secret keeps signing by default
  FISCAL_WEBHOOK_ALLOW_LOOPBACK (0), FISCAL_WEBHOOK_ALLOWED_NETWORKS (""): the address guard
  FISCAL_WEBHOOK_DISABLE_AFTER_SECONDS (432000): disable an endpoint failing that long
  FISCAL_WEBHOOK_POLL_SECONDS (0.5): how often the engine looks for due deliveries without a NOTIFY
  FISCAL_WEBHOOK_CONCURRENCY (32): attempts in flight per process
  FISCAL_WEBHOOK_PRINCIPAL_CACHE_SECONDS (5, at most 5): how long an API key's principal is cached
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import grpc
from fiscal.v1 import webhooks_pb2, webhooks_pb2_grpc

from services.runtime.api_key_principal import MAX_CACHE_SECONDS, ApiKeyAuthenticator
from services.runtime.channels import open_channel
from services.runtime.config import env_float, env_int, env_str
from services.runtime.database import create_engine, migrate
from services.runtime.notify_listener import NotifyListener, psycopg_conninfo
from services.runtime.secret_box import SecretBox
from services.runtime.server import Mounted, rpc_timeout, run_service
from services.webhooks.address_guard import AddressPolicy
from services.webhooks.engine import DeliveryEngine, FailingEndpointDisabler
from services.webhooks.retry_policy import RetryPolicy
from services.webhooks.sender import Sender
from services.webhooks.servicer import WebhookIngestServicer, WebhookServicer
from services.webhooks.store import NOTIFY_CHANNEL, WebhookStore

DEFAULT_PORT = 7104

_PUBLIC = ("CreateWebhookEndpoint", "ListWebhookEndpoints", "GetWebhookEndpoint", "UpdateWebhookEndpoint",
           "DeleteWebhookEndpoint", "RotateWebhookSecret", "SendTestEvent", "ListWebhookDeliveries",
           "GetWebhookDelivery", "ResendWebhookDelivery", "ResendFailedWebhookDeliveries", "ListWebhookEventTypes")

# Which mesh identities may call which method (services/runtime/mesh_tls.py): the public API only through
# the gateway; events only from the producers' outbox relays.
ALLOWED_CALLERS = {
    **{f"/fiscal.v1.WebhookService/{method}": {"gateway"} for method in _PUBLIC},
    "/fiscal.v1.WebhookIngestService/PublishEvents": {"ledger", "payments"},
}


@contextlib.asynccontextmanager
async def mount(server: grpc.aio.Server) -> AsyncIterator[Mounted]:
    # Read every setting first: a bad one stops the process before it touches anything.
    secret_box = SecretBox.from_env("FISCAL_WEBHOOK_SECRET_KEY", "webhook endpoint secrets")
    retry = RetryPolicy.from_env()
    address_policy = AddressPolicy.from_env()
    attempt_timeout = env_float("FISCAL_WEBHOOK_TIMEOUT_SECONDS", 15.0)
    if not 0 < attempt_timeout <= 300:
        raise SystemExit("FISCAL_WEBHOOK_TIMEOUT_SECONDS must be between 0 and 300")
    overlap_seconds = env_int("FISCAL_WEBHOOK_ROTATION_OVERLAP_SECONDS", 86_400)
    if not 0 <= overlap_seconds <= 604_800:
        raise SystemExit("FISCAL_WEBHOOK_ROTATION_OVERLAP_SECONDS must be between 0 and 604800")
    disable_after = env_float("FISCAL_WEBHOOK_DISABLE_AFTER_SECONDS", 432_000.0)
    concurrency = env_int("FISCAL_WEBHOOK_CONCURRENCY", 32)
    if not 1 <= concurrency <= 1000:
        raise SystemExit("FISCAL_WEBHOOK_CONCURRENCY must be between 1 and 1000")
    poll_seconds = env_float("FISCAL_WEBHOOK_POLL_SECONDS", 0.5)
    cache_seconds = min(env_float("FISCAL_WEBHOOK_PRINCIPAL_CACHE_SECONDS", MAX_CACHE_SECONDS), MAX_CACHE_SECONDS)

    if os.environ.get("FISCAL_WEBHOOKS_MIGRATE", "1") not in ("0", "false", "no"):
        await asyncio.to_thread(migrate, "webhooks")
    engine = create_engine(default_pool_size=10)
    ledger_channel = open_channel(env_str("FISCAL_LEDGER_ADDR", "127.0.0.1:7103"), "ledger")
    store = WebhookStore(engine)
    authenticator = ApiKeyAuthenticator(ledger_channel, timeout=rpc_timeout(), cache_seconds=cache_seconds)
    sender = Sender(address_policy, attempt_timeout)
    delivery_engine = DeliveryEngine(store, sender, secret_box, retry,
                                     concurrency=concurrency, poll_seconds=poll_seconds)
    listener = NotifyListener(psycopg_conninfo(engine), NOTIFY_CHANNEL, lambda _payload: delivery_engine.wake(),
                              delivery_engine.wake, "due webhook deliveries")
    disabler = FailingEndpointDisabler(store, disable_after)

    webhooks_pb2_grpc.add_WebhookServiceServicer_to_server(
        WebhookServicer(authenticator, store, secret_box, address_policy, overlap_seconds), server)
    webhooks_pb2_grpc.add_WebhookIngestServiceServicer_to_server(WebhookIngestServicer(store), server)

    async def database_ready() -> str | None:
        await store.ping()
        return None

    try:
        yield Mounted(
            service_names=[webhooks_pb2.DESCRIPTOR.services_by_name[name].full_name
                           for name in ("WebhookService", "WebhookIngestService")],
            readiness_probe=database_ready,
            background=[delivery_engine.run, listener.run, disabler.run],
        )
    finally:
        await sender.aclose()
        await ledger_channel.close()
        await engine.dispose()


def main() -> None:
    run_service("webhooks", DEFAULT_PORT, mount, ALLOWED_CALLERS)
