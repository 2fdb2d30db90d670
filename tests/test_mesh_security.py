"""The mesh trusts nobody by reachability alone (issue #6, findings 2 and 3): mutual TLS on every
service, per-call caller checks, a signing service that signs only receipt statements, per-service
PostgreSQL roles, and secrets only where they are needed. Real processes throughout."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from fiscal.v1 import (
    counter_pb2,
    counter_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    signing_pb2,
    signing_pb2_grpc,
    webhooks_pb2,
    webhooks_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stack import mesh_certs
from stack.mesh import SERVICES, Mesh, MeshOptions
from stack.mesh_certs import IDENTITIES, MeshCertificates
from tests.harness import provision

INTERNAL_CALLS = {
    # service: (stub class, method, request): one call each service serves only to a mesh member.
    "counter": (counter_pb2_grpc.CounterServiceStub, "GetCounter",
                counter_pb2.GetCounterRequest(outlet_id="o-1", series="INV")),
    "signing": (signing_pb2_grpc.SigningServiceStub, "ListPublicKeys", signing_pb2.ListPublicKeysRequest()),
    "ledger": (ledger_pb2_grpc.LedgerInternalServiceStub, "GetChainHead",
               ledger_pb2.GetChainHeadRequest(outlet_id=str(uuid.uuid4()), series="INV")),
    # An empty batch: stores nothing.
    "webhooks": (webhooks_pb2_grpc.WebhookIngestServiceStub, "PublishEvents", webhooks_pb2.PublishEventsRequest()),
    "payments": (payments_pb2_grpc.PaymentOpsServiceStub, "GetCallbackStats", payments_pb2.GetCallbackStatsRequest()),
}
ALLOWED_IDENTITY = {"counter": "ledger", "signing": "ledger", "ledger": "counter", "webhooks": "ledger",
                    "payments": "operator"}
STUBS = {"SigningService": signing_pb2_grpc.SigningServiceStub, "CounterService": counter_pb2_grpc.CounterServiceStub,
         "InvoiceService": ledger_pb2_grpc.InvoiceServiceStub,
         "LedgerInternalService": ledger_pb2_grpc.LedgerInternalServiceStub,
         "WebhookService": webhooks_pb2_grpc.WebhookServiceStub,
         "WebhookIngestService": webhooks_pb2_grpc.WebhookIngestServiceStub}


def call(channel: grpc.Channel, service: str):
    stub_class, method, request = INTERNAL_CALLS[service]
    return getattr(stub_class(channel), method)(request, timeout=5)


def b64url_int(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def rpc_error(fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        fn()
    return error.value


def statement(**overrides) -> str:
    moment = datetime.now(UTC)
    fields = {
        "version": "FC1", "fiscal_number": "SHOP001-INV-0000000042", "authority": "FC-DEV-0001",
        "sealed_at": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        "total": "1110.00", "currency": "KES", "body_digest": "A" * 43,
    }
    fields.update(overrides)
    return "\n".join(fields.values())


@pytest.mark.parametrize("service", [s for s in INTERNAL_CALLS if s in SERVICES])
def test_a_client_without_a_mesh_certificate_is_refused(mesh, service, tmp_path):
    address = mesh.address(service)
    # The right identity gets an answer: what follows fails for the missing certificate alone.
    with mesh.channel(service, ALLOWED_IDENTITY[service]) as channel:
        call(channel, service)
    # Plain text: no TLS at all.
    with grpc.insecure_channel(address) as channel:
        assert rpc_error(lambda: call(channel, service)).code() == grpc.StatusCode.UNAVAILABLE
    # TLS that trusts the mesh CA but presents no client certificate: refused at the handshake.
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=mesh.certificates.ca_path.read_bytes())
    with grpc.secure_channel(address, no_client_cert,
                             options=[("grpc.ssl_target_name_override", service)]) as channel:
        assert rpc_error(lambda: call(channel, service)).code() == grpc.StatusCode.UNAVAILABLE
    # A certificate with the right name from another CA: refused too.
    stranger = MeshCertificates(tmp_path / "other-ca").ensure()
    with stranger.channel(address, ALLOWED_IDENTITY[service], service) as channel:
        assert rpc_error(lambda: call(channel, service)).code() == grpc.StatusCode.UNAVAILABLE


AUTHENTICATE = ledger_pb2.AuthenticateApiKeyRequest(authorization="Bearer fk_admin_x")
RECORD_PAYMENT = ledger_pb2.RecordPaymentRequest(
    merchant_id=str(uuid.uuid4()), invoice_id=str(uuid.uuid4()),
    payment=ledger_pb2.PaymentRecord(payment_id="p-1", method="mpesa", amount="1.00", currency="KES",
                                     status="confirmed"))
SEAL_FOR_PAYMENT = ledger_pb2.SealSaleForPaymentRequest(merchant_id=str(uuid.uuid4()),
                                                        sale=ledger_pb2.SealInvoiceRequest(outlet_id=str(uuid.uuid4())))
FIND_INVOICE = ledger_pb2.FindInvoiceRequest(merchant_id=str(uuid.uuid4()), invoice_id=str(uuid.uuid4()))
PUBLISH = webhooks_pb2.PublishEventsRequest(events=[webhooks_pb2.OutboxEvent(
    event_id=str(uuid.uuid4()), event_type="invoice.sealed", merchant_id=str(uuid.uuid4()), data_json="{}")])


@pytest.mark.parametrize(("service", "identity", "stub", "method", "request_message"), [
    ("signing", "gateway", "SigningService", "Sign", signing_pb2.SignRequest(statement=statement())),
    ("signing", "counter", "SigningService", "Sign", signing_pb2.SignRequest(statement=statement())),
    ("signing", "ledger", "SigningService", "RotateKey", signing_pb2.RotateKeyRequest()),
    ("signing", "ledger", "SigningService", "GetHsmStatus", signing_pb2.GetHsmStatusRequest()),
    ("signing", "ledger", "SigningService", "CompromiseKey", signing_pb2.CompromiseKeyRequest(kid="x", reason="t")),
    ("signing", "webhooks", "SigningService", "Sign", signing_pb2.SignRequest(statement=statement())),
    ("counter", "gateway", "CounterService", "Allocate",
     counter_pb2.AllocateRequest(outlet_id="o-1", series="INV", holder="x")),
    ("counter", "signing", "CounterService", "Commit", counter_pb2.CommitRequest(lease_id=str(uuid.uuid4()))),
    ("counter", "operator", "CounterService", "Release",
     counter_pb2.ReleaseRequest(lease_id=str(uuid.uuid4()), reason="x")),
    ("counter", "webhooks", "CounterService", "Allocate",
     counter_pb2.AllocateRequest(outlet_id="o-1", series="INV", holder="x")),
    ("ledger", "ledger", "LedgerInternalService", "GetChainHead",
     ledger_pb2.GetChainHeadRequest(outlet_id="o-1", series="INV")),
    ("ledger", "signing", "LedgerInternalService", "GetChainHead",
     ledger_pb2.GetChainHeadRequest(outlet_id="o-1", series="INV")),
    ("ledger", "counter", "InvoiceService", "ListKeys", ledger_pb2.ListKeysRequest()),
    ("ledger", "webhooks", "LedgerInternalService", "GetChainHead",
     ledger_pb2.GetChainHeadRequest(outlet_id="o-1", series="INV")),
    ("ledger", "webhooks", "InvoiceService", "ListKeys", ledger_pb2.ListKeysRequest()),
    # API keys are looked up only by the public services that receive a caller's Authorization header.
    ("ledger", "counter", "LedgerInternalService", "AuthenticateApiKey", AUTHENTICATE),
    ("ledger", "gateway", "LedgerInternalService", "AuthenticateApiKey", AUTHENTICATE),
    ("ledger", "operator", "LedgerInternalService", "AuthenticateApiKey", AUTHENTICATE),
    # Payments on invoices: recorded, looked up and sealed pay-first only by the payments service.
    ("ledger", "gateway", "LedgerInternalService", "RecordPayment", RECORD_PAYMENT),
    ("ledger", "webhooks", "LedgerInternalService", "RecordPayment", RECORD_PAYMENT),
    ("ledger", "operator", "LedgerInternalService", "SealSaleForPayment", SEAL_FOR_PAYMENT),
    ("ledger", "gateway", "LedgerInternalService", "SealSaleForPayment", SEAL_FOR_PAYMENT),
    ("ledger", "counter", "LedgerInternalService", "FindInvoice", FIND_INVOICE),
    ("ledger", "gateway", "LedgerInternalService", "FindInvoice", FIND_INVOICE),
    # ... and the payments service makes no call but those (and AuthenticateApiKey, PublishEvents).
    ("ledger", "payments", "InvoiceService", "ListKeys", ledger_pb2.ListKeysRequest()),
    ("ledger", "payments", "LedgerInternalService", "GetChainHead",
     ledger_pb2.GetChainHeadRequest(outlet_id="o-1", series="INV")),
    ("signing", "payments", "SigningService", "Sign", signing_pb2.SignRequest(statement=statement())),
    ("counter", "payments", "CounterService", "Allocate",
     counter_pb2.AllocateRequest(outlet_id="o-1", series="INV", holder="x")),
    ("webhooks", "payments", "WebhookService", "ListWebhookEndpoints", webhooks_pb2.ListWebhookEndpointsRequest()),
    # Events come only from the producers' outbox relays; the public webhook API only through Envoy.
    ("webhooks", "counter", "WebhookIngestService", "PublishEvents", PUBLISH),
    ("webhooks", "gateway", "WebhookIngestService", "PublishEvents", PUBLISH),
    ("webhooks", "webhooks", "WebhookIngestService", "PublishEvents", PUBLISH),
    ("webhooks", "ledger", "WebhookService", "ListWebhookEndpoints", webhooks_pb2.ListWebhookEndpointsRequest()),
    ("webhooks", "counter", "WebhookService", "ListWebhookEventTypes", webhooks_pb2.ListWebhookEventTypesRequest()),
])
def test_a_mesh_member_may_make_only_the_calls_its_service_makes(mesh, service, identity, stub, method,
                                                                 request_message):
    stub_class = STUBS[stub]
    with mesh.channel(service, identity) as channel:
        error = rpc_error(lambda: getattr(stub_class(channel), method)(request_message, timeout=5))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()
        assert identity in error.details() and method in error.details()
        # Health checks answer every member of the mesh.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_authenticate_api_key_tells_the_webhooks_service_who_a_key_is_uncached(mesh):
    import httpx

    from services.ledger.access import hash_api_key

    demo = provision(mesh, outlets=2, terminals=1)
    outlet_ids = sorted(o["id"] for o in demo["outlets"])
    with mesh.channel("ledger", "webhooks") as channel:
        ledger = ledger_pb2_grpc.LedgerInternalServiceStub(channel)

        def who(authorization: str):
            return ledger.AuthenticateApiKey(ledger_pb2.AuthenticateApiKeyRequest(authorization=authorization),
                                             timeout=5)

        admin = who(f"Bearer {demo['admin_key']}")
        assert (admin.merchant_id, admin.scope, admin.outlet_id) == (demo["merchant"]["id"], "merchant:admin", "")
        assert sorted(admin.merchant_outlet_ids) == outlet_ids and admin.key_id
        pos_outlet = demo["outlets"][1]["id"]
        pos = who(f"bearer {demo['pos_keys'][pos_outlet]}")
        assert (pos.scope, pos.outlet_id, sorted(pos.merchant_outlet_ids)) == ("outlet:pos", pos_outlet, outlet_ids)

        for authorization in ("", "Bearer", "Basic abc", "Bearer fk_admin_unknown", "Bearer " + "x" * 5000):
            error = rpc_error(lambda authorization=authorization: who(authorization))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, authorization[:20]

        # The ledger's own key cache does not answer for other services: a revoked key is refused at once,
        # even while the ledger's public API may still accept it from its cache.
        read_key = demo["read_key"]
        assert who(f"Bearer {read_key}").scope == "merchant:read"
        httpx.get(f"{mesh.gateway_url}/v1/invoices", headers={"Authorization": f"Bearer {read_key}"}, timeout=10)
        with psycopg.connect(mesh.database_url, autocommit=True) as conn:
            conn.execute("UPDATE ledger.api_keys SET revoked_at = now() WHERE key_hash = %s",
                         (hash_api_key(read_key),))
        error = rpc_error(lambda: who(f"Bearer {read_key}"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_payments_identity_reaches_the_ledgers_payment_calls(mesh):
    """The calls refused to everyone else above answer the payments service (an unknown merchant's
    invoice is simply not found)."""
    with mesh.channel("ledger", "payments") as channel:
        ledger = ledger_pb2_grpc.LedgerInternalServiceStub(channel)
        assert ledger.FindInvoice(FIND_INVOICE, timeout=5).found is False
        assert rpc_error(lambda: ledger.RecordPayment(RECORD_PAYMENT, timeout=5)).code() == grpc.StatusCode.NOT_FOUND
        assert rpc_error(lambda: ledger.SealSaleForPayment(SEAL_FOR_PAYMENT, timeout=5)).code() \
            == grpc.StatusCode.NOT_FOUND


def test_the_gateway_routes_payments_and_raw_provider_callbacks_to_the_payments_service(mesh):
    """Envoy transcodes a provider's raw JSON into the callback's google.api.HttpBody field: a callback
    with a token no merchant has reaches the payments service, which refuses and counts it."""
    import httpx

    def forged_count() -> int:
        with mesh.channel("payments", "operator") as channel:
            stats = payments_pb2_grpc.PaymentOpsServiceStub(channel).GetCallbackStats(
                payments_pb2.GetCallbackStatsRequest(), timeout=5)
        return sum(c.count for c in stats.counts if (c.provider, c.outcome) == ("mpesa", "forged_token"))

    before = forged_count()
    body = {"Body": {"stkCallback": {"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": "ws_CO_1",
                                     "ResultCode": 1032, "ResultDesc": "Request cancelled by user"}}}
    with httpx.Client(base_url=mesh.gateway_url, timeout=10) as client:
        answer = client.post(f"/v1/callbacks/mpesa/{'x' * 43}/stk", content=json.dumps(body),
                             headers={"content-type": "application/json"})
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert forged_count() == before + 1
        # The public API is routed too (and wants an API key).
        assert client.get("/v1/payments").status_code == 401
        # The operator's statistics are not public.
        # Envoy answers a gRPC request's local 404 the gRPC way: HTTP 200, grpc-status 12 (UNIMPLEMENTED).
        ops = client.post("/fiscal.v1.PaymentOpsService/GetCallbackStats", content=b"",
                          headers={"content-type": "application/grpc"})
        assert ops.headers.get("grpc-status") not in (None, "0"), (ops.status_code, ops.headers)


def test_rotate_key_only_by_the_operator_and_at_most_once_per_interval(mesh):
    with mesh.channel("signing", "operator") as channel:
        signing = signing_pb2_grpc.SigningServiceStub(channel)
        before = [k.kid for k in signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=5).keys]
        # The mesh runs with the default interval (3600 s) and its key is minutes old.
        error = rpc_error(lambda: signing.RotateKey(signing_pb2.RotateKeyRequest(), timeout=10))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "at most once every 3600 s" in error.details()
        after = [k.kid for k in signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=5).keys]
        assert after == before


def test_sign_refuses_anything_but_a_checkable_statement(mesh):
    with mesh.channel("signing", "ledger") as channel:
        signing = signing_pb2_grpc.SigningServiceStub(channel)
        good = statement()
        answer = signing.Sign(signing_pb2.SignRequest(statement=good), timeout=5)
        assert len(answer.signature) == 64 and answer.key_id

        old = datetime.now(UTC) - timedelta(hours=1)
        bad = {
            "empty": "",
            "a digest as text": hashlib.sha256(b"x").hexdigest(),
            "another version": statement(version="FC2"),
            "another authority": statement(authority="FC-OTHER-0001"),
            "a fiscal number without a number": statement(fiscal_number="SHOP001-INV"),
            "number zero": statement(fiscal_number="SHOP001-INV-0000000000"),
            "non-ASCII digits": statement(fiscal_number="SHOP001-INV-000000004\u0662"),
            "a sealed_at an hour old": statement(
                sealed_at=old.strftime("%Y-%m-%dT%H:%M:%S.") + f"{old.microsecond // 1000:03d}Z"),
            "a sealed_at without zone": statement(sealed_at="2026-11-24T10:00:00.000"),
            "a total that is not a number": statement(total="1e5"),
            "a lowercase currency": statement(currency="kes"),
            "a short body digest": statement(body_digest="A" * 42),
            "a padded body digest": statement(body_digest="A" * 42 + "="),
            "an eighth line": good + "\nextra",
            "CRLF lines": good.replace("\n", "\r\n"),
        }
        for case, text in bad.items():
            error = rpc_error(lambda text=text: signing.Sign(signing_pb2.SignRequest(statement=text), timeout=5))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, case
            assert "not a receipt statement" in error.details(), (case, error.details())

        # An old client sending a raw 32-byte digest in the former `digest` field (1) is refused too.
        raw_sign = channel.unary_unary("/fiscal.v1.SigningService/Sign", request_serializer=lambda b: b,
                                       response_deserializer=signing_pb2.SignResponse.FromString)
        digest = hashlib.sha256(good.encode()).digest()
        error = rpc_error(lambda: raw_sign(b"\x0a\x20" + digest, timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_each_service_role_can_use_only_its_own_schema(mesh):
    own_table = {"counter": "counter.counters", "signing": "signing.keys", "ledger": "ledger.invoices",
                 "webhooks": "webhooks.endpoints", "payments": "payments.payments"}
    own_table = {service: table for service, table in own_table.items() if service in SERVICES}
    # The ledger's record of payments is the ledger's: the payments role reaches it only through the API.
    own_table["ledger"] = "ledger.invoice_payments"
    for service, table in own_table.items():
        with psycopg.connect(mesh.service_database_url(service), autocommit=True) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == f"fiscal_{service}"
            conn.execute(f"SELECT count(*) FROM {table}")  # its own tables: yes
            for other, other_table in own_table.items():
                if other == service:
                    continue
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                    conn.execute(f"SELECT * FROM {other_table} LIMIT 1")
            # No DDL anywhere, its own schema included.
            for schema in ("public", service):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f'CREATE TABLE "{schema}".intruder (x int)')


def process_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def test_another_services_secret_is_blanked_even_from_the_callers_environment(mesh, monkeypatch):
    monkeypatch.setenv("FISCAL_PKCS11_PIN", "operator-shell-pin")
    monkeypatch.setenv("FISCAL_SOFT_KEYSTORE_PASSPHRASE", "operator-shell-passphrase")
    monkeypatch.setenv("FISCAL_WEBHOOK_SECRET_KEY", "operator-shell-webhook-key-of-32-characters")
    for service in ("counter", "ledger", "webhooks"):
        env = mesh.service_env(service)
        assert env["FISCAL_PKCS11_PIN"] == env["FISCAL_SOFT_KEYSTORE_PASSPHRASE"] == "", service
    for service in ("counter", "signing", "ledger"):
        assert mesh.service_env(service)["FISCAL_WEBHOOK_SECRET_KEY"] == "", service
    monkeypatch.setenv("FISCAL_PAYMENTS_SECRET_KEY", "operator-shell-payments-key-of-32-characters")
    monkeypatch.setenv("FISCAL_MPESA_DEFAULT_CREDENTIALS", '{"consumer_secret": "operator-shell"}')
    for service in ("counter", "signing", "ledger", "webhooks"):
        env = mesh.service_env(service)
        assert env["FISCAL_PAYMENTS_SECRET_KEY"] == env["FISCAL_MPESA_DEFAULT_CREDENTIALS"] == "", service
    stored = json.loads((mesh.data_dir / "secrets.json").read_text())
    if "payments" in SERVICES:
        payments_key = mesh.service_env("payments")["FISCAL_PAYMENTS_SECRET_KEY"]
        assert payments_key == stored["FISCAL_PAYMENTS_SECRET_KEY"]
        assert len(base64.urlsafe_b64decode(payments_key)) == 32
    assert mesh.service_env("signing")["FISCAL_SOFT_KEYSTORE_PASSPHRASE"] == stored["FISCAL_SOFT_KEYSTORE_PASSPHRASE"]
    assert mesh.service_env("webhooks")["FISCAL_WEBHOOK_SECRET_KEY"] == stored["FISCAL_WEBHOOK_SECRET_KEY"]


def test_secrets_reach_only_the_service_that_needs_them(mesh):
    stored = json.loads((mesh.data_dir / "secrets.json").read_text())
    passphrase = stored["FISCAL_SOFT_KEYSTORE_PASSPHRASE"]
    webhook_key = stored["FISCAL_WEBHOOK_SECRET_KEY"]
    environs = {service: process_environ(mesh.processes[service][0].popen.pid)
                for service in ("counter", "signing", "ledger", "webhooks")}
    assert environs["signing"]["FISCAL_SOFT_KEYSTORE_PASSPHRASE"] == passphrase
    assert environs["webhooks"]["FISCAL_WEBHOOK_SECRET_KEY"] == webhook_key
    assert len(base64.urlsafe_b64decode(webhook_key)) == 32
    for service in ("counter", "ledger", "webhooks"):
        assert passphrase not in "\0".join(f"{k}={v}" for k, v in environs[service].items()), service
        assert "FISCAL_PKCS11_PIN" not in environs[service]
    for service in ("counter", "signing", "ledger"):
        assert webhook_key not in "\0".join(f"{k}={v}" for k, v in environs[service].items()), service
    if "payments" in SERVICES:
        payments_key = stored["FISCAL_PAYMENTS_SECRET_KEY"]
        environs["payments"] = process_environ(mesh.processes["payments"][0].popen.pid)
        assert environs["payments"]["FISCAL_PAYMENTS_SECRET_KEY"] == payments_key
        for service, environ in environs.items():
            flat = "\0".join(f"{k}={v}" for k, v in environ.items())
            if service != "payments":
                assert payments_key not in flat, service
                assert environ.get("FISCAL_MPESA_DEFAULT_CREDENTIALS", "") == "", service
            if service != "signing":
                assert passphrase not in flat, service
            if service != "webhooks":
                assert webhook_key not in flat, service
    for service, environ in environs.items():
        # Its own database role, and its own certificate.
        assert f"fiscal_{service}:" in environ["DATABASE_URL"], service
        assert environ["FISCAL_TLS_CERT"].endswith(f"/{service}.pem")
        assert "ca.key" not in "".join(environ.values())
    # The private keys and the CA key are private to the owner.
    tls_dir = mesh.certificates.directory
    assert tls_dir.stat().st_mode & 0o777 == 0o700
    for key in tls_dir.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key


def serials(certificates: MeshCertificates) -> dict[str, int]:
    return {identity: x509.load_pem_x509_certificate(certificates.cert_path(identity).read_bytes()).serial_number
            for identity in IDENTITIES}


def test_development_certificates_are_kept_and_made_again_when_expiring_or_from_another_ca(tmp_path, monkeypatch):
    certificates = MeshCertificates(tmp_path / "mesh-tls").ensure()
    first = serials(certificates)
    leaf = x509.load_pem_x509_certificate(certificates.cert_path("counter").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://fiscal.local/counter"]
    assert timedelta(days=89) < leaf.not_valid_after_utc - leaf.not_valid_before_utc <= timedelta(days=91)
    assert serials(certificates.ensure()) == first  # valid ones are kept

    # A new CA (the old one lost): every identity is issued again under it.
    (tmp_path / "mesh-tls" / "ca.key").unlink()
    second = serials(certificates.ensure())
    assert all(second[i] != first[i] for i in IDENTITIES)
    ca = x509.load_pem_x509_certificate(certificates.ca_path.read_bytes())
    for identity in IDENTITIES:
        x509.load_pem_x509_certificate(certificates.cert_path(identity).read_bytes()).verify_directly_issued_by(ca)

    # Certificates inside the renewal window (7 days) are made again at the next start.
    monkeypatch.setattr(mesh_certs, "VALIDITY", timedelta(days=3))
    short = MeshCertificates(tmp_path / "short").ensure()
    before = serials(short)
    assert all(after != before[i] for i, after in serials(short.ensure()).items())


def test_a_mesh_on_its_own_postgres_makes_the_service_roles_give_their_password(tmp_path, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)  # its own embedded server, as `fiscal up` runs
    own = Mesh(MeshOptions(data_dir=tmp_path / "own")).start()
    try:
        assert own.role_passwords_required
        url = own.service_database_url("ledger")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "fiscal_ledger"
        password = json.loads((own.data_dir / "database-roles.json").read_text())["ledger"]
        for wrong in (url.replace(password, "wrong"), url.replace(f":{password}@", "@")):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(wrong).close()
        # The services themselves connect with theirs: a seal path call through the mesh works.
        with own.channel("counter", "ledger") as channel:
            call(channel, "counter")
    finally:
        own.stop()


def test_sign_batch_signs_checked_statements_or_none(mesh):
    texts = [statement(fiscal_number=f"SHOP001-INV-{n:010d}") for n in (1, 2, 3)]
    with mesh.channel("signing", "ledger") as channel:
        signing = signing_pb2_grpc.SigningServiceStub(channel)
        answer = signing.SignBatch(signing_pb2.SignBatchRequest(statements=texts), timeout=10)
        keys = {k.kid: k for k in signing.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=5).keys}
        assert len(answer.signatures) == 3
        for text, signed in zip(texts, answer.signatures, strict=True):
            jwk = keys[signed.key_id]
            public = ec.EllipticCurvePublicNumbers(b64url_int(jwk.x), b64url_int(jwk.y), ec.SECP256R1()).public_key()
            der = utils.encode_dss_signature(int.from_bytes(signed.signature[:32], "big"),
                                             int.from_bytes(signed.signature[32:], "big"))
            public.verify(der, hashlib.sha256(text.encode()).digest(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))

        for statements, expected in (([texts[0], statement(currency="kes"), texts[2]], "statements[1]"),
                                     ([], "1 to 256"), ([texts[0]] * 257, "1 to 256")):
            error = rpc_error(lambda statements=statements: signing.SignBatch(
                signing_pb2.SignBatchRequest(statements=statements), timeout=10))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and expected in error.details()
    with mesh.channel("signing", "gateway") as channel:
        error = rpc_error(lambda: signing_pb2_grpc.SigningServiceStub(channel).SignBatch(
            signing_pb2.SignBatchRequest(statements=texts), timeout=10))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
