"""The payments store and everything above it that needs only PostgreSQL, against the session's real server
(a fresh database of this module, migrated with `migrate("payments", url)`): CreatePayment (idempotency,
scopes, a provider down, not configured), provider settings (sealed, hinted, callback URLs whose token
works), callbacks (dedupe, out of order, forged/unknown/malformed/tampered, counted), pay-first sealing
(once; nothing on failure; retried after the ledger was down), RecordPayment retries and reconciliation
(query, expiry, money after expiry).

No mesh: the servicers run in this process with a scripted provider adapter and a scripted ledger."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import psycopg
import pytest
from fiscal.v1 import ledger_pb2, payments_pb2
from sqlalchemy.ext.asyncio import create_async_engine

from services.payments.callbacks import CallbackProcessor
from services.payments.credentials import Deployment, ProviderAccess
from services.payments.ledger_client import CheckedSale, LedgerRefused, LedgerUnavailable, Recorded
from services.payments.providers.base import (
    CallbackAnswer,
    CallbackResult,
    ForgedCallback,
    Initiated,
    MalformedCallback,
    PaymentStatus,
    ProviderError,
)
from services.payments.providers.registry import ProviderRegistry
from services.payments.reconcile import FollowUp, Reconciler, ReconcileSettings
from services.payments.servicer import PaymentOpsServicer, PaymentServicer
from services.payments.store import PaymentStore
from services.runtime.api_key_principal import ADMIN, POS, READ, Principal
from services.runtime.config import sqlalchemy_url
from services.runtime.database import migrate
from services.runtime.faults import Fault, Unauthenticated
from services.runtime.secret_box import SecretBox
from stack.postgres import start_database

BOX = SecretBox("a test key for payment secrets, 32+ characters long")
PUBLIC_URL = "http://127.0.0.1:8080"


# --- scripted collaborators -----------------------------------------------------------------------

class ScriptedAdapter:
    """A provider whose callbacks are JSON {"request_id", "status", "receipt", "amount", "code", "hash"}."""

    secret_fields = ("consumer_key", "consumer_secret", "hash_secret")
    setting_fields = ("short_code",)
    callback_kinds = ("stk", "notification")

    def __init__(self, name: str):
        self.name = name
        self.initiations: list = []
        self.initiate_error: ProviderError | None = None
        self.query_answers: dict[str, CallbackResult] = {}

    async def initiate(self, http, credentials, collection):
        self.initiations.append((credentials, collection))
        if self.initiate_error is not None:
            raise self.initiate_error
        return Initiated(provider_request_id=f"req-{collection.payment_id}", customer_message="ok")

    def parse_callback(self, kind, body, headers):
        try:
            data = json.loads(body)
            return CallbackResult(provider_request_id=data["request_id"], status=PaymentStatus(data["status"]),
                                  reason=data.get("reason", ""), provider_transaction_id=data.get("receipt", ""),
                                  amount=Decimal(data["amount"]) if "amount" in data else None,
                                  result_code=data.get("code", ""))
        except (ValueError, KeyError, TypeError):
            raise MalformedCallback("not our shape") from None

    def authenticate_callback(self, kind, body, headers, credentials, callback_secret):
        expected = (credentials.secrets.get("hash_secret", "") if credentials else "")
        if expected and json.loads(body).get("hash") != expected:
            raise ForgedCallback("wrong hash")

    def callback_answer(self, kind, accepted, reason=""):
        return CallbackAnswer(200, "application/json", json.dumps({"accepted": accepted}).encode())

    async def query_status(self, http, credentials, provider_request_id, collection):
        return self.query_answers.get(provider_request_id,
                                      CallbackResult(provider_request_id=provider_request_id,
                                                     status=PaymentStatus.PENDING))


@dataclass
class ScriptedLedger:
    down: bool = False
    refuse_seal: bool = False
    records: list = field(default_factory=list)
    seals: list = field(default_factory=list)
    invoices: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)

    async def record_payment(self, payment):
        if self.down:
            raise LedgerUnavailable("down")
        self.records.append((payment.id, payment.status.value, payment.amount_mismatch))
        found = self.invoices.get(payment.client_invoice_id)
        return Recorded(found is not None, found or "", "paid")

    async def seal_sale(self, payment, sale):
        if self.down:
            raise LedgerUnavailable("down")
        if self.refuse_seal:
            raise LedgerRefused("ALREADY_EXISTS", "another body")
        request = ledger_pb2.SealInvoiceRequest.FromString(sale)
        self.seals.append((payment.id, request.client_invoice_id))
        return self.invoices.setdefault(request.client_invoice_id, str(uuid.uuid4()))

    async def find_invoice(self, merchant_id, outlet_id, *, invoice_id="", client_invoice_id=""):
        return None

    async def check_sale(self, merchant_id, sale, payment):
        self.checks.append((sale.client_invoice_id, payment.method, payment.amount))
        total = sum((Decimal(line.quantity) * Decimal(line.unit_price) for line in sale.lines), Decimal(0))
        due = total - sum((Decimal(p.amount) for p in sale.payments), Decimal(0))
        return CheckedSale(f"{total:.2f}", sale.currency, f"{due:.2f}")


class Keys:
    """API keys by their Authorization header."""

    def __init__(self):
        self.principals: dict[str, Principal] = {}

    async def authenticate(self, authorization):
        if authorization not in self.principals:
            raise Unauthenticated("unknown key")
        return self.principals[authorization]


class Context:
    def __init__(self, authorization: str = "", **headers: str):
        self.metadata = [("authorization", authorization), *headers.items()] if authorization else list(headers.items())
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def invocation_metadata(self):
        return self.metadata

    async def abort_with_status(self, status):
        self.code, self.details = status.code, status.details
        raise grpc.aio.AbortError()

    async def abort(self, code, details=""):
        self.code, self.details = code, details
        raise grpc.aio.AbortError()


@dataclass
class Rig:
    store: PaymentStore
    servicer: PaymentServicer
    processor: CallbackProcessor
    reconciler: Reconciler
    adapter: ScriptedAdapter
    airtel: ScriptedAdapter
    ledger: ScriptedLedger
    keys: Keys
    merchant: str
    outlet: str
    other_outlet: str
    url: str

    async def call(self, method: str, request, key: str = "admin"):
        context = Context(f"Bearer {key}-{self.merchant}")
        try:
            return await getattr(self.servicer, method)(request, context), None
        except grpc.aio.AbortError:
            return None, context

    async def create(self, key: str = "admin", **fields):
        request = payments_pb2.CreatePaymentRequest(**{
            "outlet_id": self.outlet, "provider": "mpesa", "amount": "150", "currency": "KES",
            "phone": "254712345678", "client_invoice_id": "sale-1", "client_payment_id": str(uuid.uuid4()),
            **fields})
        answer, failed = await self.call("CreatePayment", request, key)
        assert failed is None, (failed.code, failed.details)
        return answer

    async def callback(self, body: dict, *, provider: str = "mpesa", kind: str = "stk", token: str | None = None,
                       **headers: str):
        return await self.processor.handle(provider, kind, self.token if token is None else token,
                                           json.dumps(body).encode(), headers)

    @property
    def token(self) -> str:
        sealed = sql(self.url, "SELECT callback_token_sealed FROM payments.merchants WHERE merchant_id = %s",
                     self.merchant)[0][0]
        return BOX.open(sealed, self.merchant.encode())


def sql(url: str, statement: str, *params):
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


@pytest.fixture(scope="module")
def payments_database(postgres_server, tmp_path_factory):
    database = start_database(tmp_path_factory.mktemp("payments-db"), fresh_database="fiscal_payments_store")
    migrate("payments", sqlalchemy_url(database.url))
    yield database.url
    database.stop()


@pytest.fixture
async def rig(payments_database):
    with psycopg.connect(payments_database, autocommit=True) as conn:
        conn.execute("TRUNCATE payments.payments, payments.callbacks, payments.callback_counts, payments.outbox, "
                     "payments.provider_settings, payments.merchants")
    engine = create_async_engine(sqlalchemy_url(payments_database), pool_size=5)
    store = PaymentStore(engine, retry_delay_seconds=0.0)
    adapter, airtel = ScriptedAdapter("mpesa"), ScriptedAdapter("airtel_money")
    registry = ProviderRegistry({"mpesa": adapter, "airtel_money": airtel})
    access = ProviderAccess(store, BOX, {
        "mpesa": Deployment("http://127.0.0.1:9", {"consumer_key": "default-key-1234", "short_code": "174379"}),
        "airtel_money": Deployment("http://127.0.0.1:9", None)})
    ledger = ScriptedLedger()
    follow_up = FollowUp(store, ledger)  # type: ignore[arg-type]
    processor = CallbackProcessor(store, registry, access, BOX, None, follow_up)  # type: ignore[arg-type]
    reconciler = Reconciler(store, registry, access, BOX, None, follow_up,  # type: ignore[arg-type]
                            ReconcileSettings(reconcile_after_seconds=0.001, reconcile_every_seconds=0.001,
                                              expire_after_seconds=3600, seal_retry_seconds=0.001))
    keys = Keys()
    servicer = PaymentServicer(keys, store, registry, access, BOX, ledger, None, PUBLIC_URL,  # type: ignore[arg-type]
                               provider_timeout=2.0)
    merchant, outlet, other = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    outlets = frozenset({outlet, other})
    keys.principals[f"Bearer admin-{merchant}"] = Principal("k1", merchant, ADMIN, outlets)
    keys.principals[f"Bearer pos-{merchant}"] = Principal("k2", merchant, POS, outlets, outlet_id=outlet)
    keys.principals[f"Bearer read-{merchant}"] = Principal("k3", merchant, READ, outlets)
    yield Rig(store, servicer, processor, reconciler, adapter, airtel, ledger, keys, merchant, outlet, other,
              payments_database)
    await engine.dispose()


def confirmed(payment, receipt="RCP1", amount="150", **extra) -> dict:
    return {"request_id": payment.provider_request_id, "status": "confirmed", "receipt": receipt, "amount": amount,
            "code": "0", **extra}


def outbox(url: str) -> list[tuple[str, dict]]:
    return [(row[0], row[1]) for row in sql(url, "SELECT event_type, payload FROM payments.outbox ORDER BY seq")]


async def counts(rig: Rig) -> dict[tuple[str, str], int]:
    return {(p, o): n for p, o, n in await rig.store.callback_counts()}


async def stored(rig: Rig, payment_id: str):
    found = await rig.store.get_payment(rig.merchant, payment_id)
    assert found is not None
    return found.payment


# --- CreatePayment --------------------------------------------------------------------------------

async def test_create_initiates_once_per_client_payment_id(rig):
    client_payment_id = str(uuid.uuid4())
    first = await rig.create(client_payment_id=client_payment_id, key="pos")
    again = await rig.create(client_payment_id=client_payment_id, key="pos")
    assert first.id == again.id and first.status == "pending" and first.provider_request_id == f"req-{first.id}"
    assert len(rig.adapter.initiations) == 1
    assert first.phone_masked == "2547******78" and first.amount == "150.00" and first.sale_state == "not_applicable"
    credentials, collection = rig.adapter.initiations[0]
    assert credentials.secrets == {"consumer_key": "default-key-1234"} and credentials.settings == {"short_code": "174379"}
    assert collection.callback_url == f"{PUBLIC_URL}/v1/callbacks/mpesa/{rig.token}/stk"
    # The whole number is stored sealed only.
    rows = sql(rig.url, "SELECT phone_sealed FROM payments.payments WHERE id = %s", first.id)
    assert b"254712345678" not in bytes(rows[0][0]) and BOX.open(rows[0][0], first.id.encode()) == "254712345678"
    # The same id for another payment is refused.
    _, failed = await rig.call("CreatePayment", payments_pb2.CreatePaymentRequest(
        outlet_id=rig.outlet, provider="mpesa", amount="151", currency="KES", phone="254712345678",
        client_invoice_id="sale-1", client_payment_id=client_payment_id), "pos")
    assert failed.code == grpc.StatusCode.ALREADY_EXISTS and len(rig.adapter.initiations) == 1


async def test_scopes_and_outlets(rig):
    request = payments_pb2.CreatePaymentRequest(outlet_id=rig.outlet, provider="mpesa", amount="150", currency="KES",
                                                phone="254712345678", client_invoice_id="s", client_payment_id="p1")
    _, failed = await rig.call("CreatePayment", request, "read")
    assert failed.code == grpc.StatusCode.PERMISSION_DENIED and "read-only" in failed.details
    other = payments_pb2.CreatePaymentRequest()
    other.CopyFrom(request)
    other.outlet_id = rig.other_outlet
    _, failed = await rig.call("CreatePayment", other, "pos")
    assert failed.code == grpc.StatusCode.PERMISSION_DENIED
    other.outlet_id = str(uuid.uuid4())
    _, failed = await rig.call("CreatePayment", other, "admin")
    assert failed.code == grpc.StatusCode.NOT_FOUND
    _, failed = await rig.call("CreatePayment", request, "nobody")
    assert failed.code == grpc.StatusCode.UNAUTHENTICATED
    assert rig.adapter.initiations == []
    # The POS key sees its outlet's payments only; another merchant sees none.
    created = await rig.create(outlet_id=rig.other_outlet, key="admin")
    _, failed = await rig.call("GetPayment", payments_pb2.GetPaymentRequest(id=created.id), "pos")
    assert failed.code == grpc.StatusCode.NOT_FOUND
    answer, _ = await rig.call("GetPayment", payments_pb2.GetPaymentRequest(id=created.id), "read")
    assert answer.id == created.id
    stranger = str(uuid.uuid4())
    rig.keys.principals[f"Bearer admin-{stranger}"] = Principal("k9", stranger, ADMIN, frozenset())
    rig.merchant, mine = stranger, rig.merchant
    _, failed = await rig.call("GetPayment", payments_pb2.GetPaymentRequest(id=created.id), "admin")
    rig.merchant = mine
    assert failed.code == grpc.StatusCode.NOT_FOUND


async def test_a_provider_down_stores_the_payment_failed_and_answers_unavailable(rig):
    rig.adapter.initiate_error = ProviderError("mpesa did not answer in time", retryable=True)
    client_payment_id = str(uuid.uuid4())
    request = payments_pb2.CreatePaymentRequest(outlet_id=rig.outlet, provider="mpesa", amount="150", currency="KES",
                                                phone="254712345678", client_invoice_id="s",
                                                client_payment_id=client_payment_id)
    _, failed = await rig.call("CreatePayment", request)
    assert failed.code == grpc.StatusCode.UNAVAILABLE and "did not answer in time" in failed.details
    again, _ = await rig.call("CreatePayment", request)
    assert again.status == "failed" and "did not answer" in again.status_reason
    assert len(rig.adapter.initiations) == 1
    assert [event for event, _ in outbox(rig.url)] == ["payment.failed"]
    rig.adapter.initiate_error = ProviderError("the phone number is not registered", retryable=False)
    request.client_payment_id = str(uuid.uuid4())
    _, failed = await rig.call("CreatePayment", request)
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION and "not registered" in failed.details
    assert rig.ledger.records == []  # nothing reached a payer: nothing on the invoice


async def test_a_provider_not_configured_is_a_failed_precondition(rig):
    _, failed = await rig.call("CreatePayment", payments_pb2.CreatePaymentRequest(
        outlet_id=rig.outlet, provider="airtel_money", amount="150", currency="KES", phone="254712345678",
        client_invoice_id="s", client_payment_id="p"))
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION and "not configured" in failed.details
    assert sql(rig.url, "SELECT count(*) FROM payments.payments")[0][0] == 0


async def test_listing_filters_and_pages(rig):
    made = [await rig.create(client_invoice_id=f"sale-{n % 2}") for n in range(5)]
    page, _ = await rig.call("ListPayments", payments_pb2.ListPaymentsRequest(page_size=2))
    assert [p.id for p in page.payments] == [made[4].id, made[3].id] and page.next_page_token
    rest, _ = await rig.call("ListPayments", payments_pb2.ListPaymentsRequest(page_size=10,
                                                                               page_token=page.next_page_token))
    assert [p.id for p in rest.payments] == [m.id for m in reversed(made[:3])] and not rest.next_page_token
    zero, _ = await rig.call("ListPayments", payments_pb2.ListPaymentsRequest(client_invoice_id="sale-0"))
    assert {p.id for p in zero.payments} == {made[0].id, made[2].id, made[4].id}
    none, _ = await rig.call("ListPayments", payments_pb2.ListPaymentsRequest(status="confirmed"))
    assert list(none.payments) == []
    _, failed = await rig.call("ListPayments", payments_pb2.ListPaymentsRequest(page_token="garbage!"))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT


# --- provider settings ----------------------------------------------------------------------------

async def test_settings_are_sealed_hinted_and_their_callback_urls_work(rig):
    request = payments_pb2.SetProviderSettingsRequest(
        outlet_id=rig.outlet, provider="mpesa", enabled=True, api_base_url="http://127.0.0.1:9",
        mpesa=payments_pb2.MpesaSettings(consumer_key="ck-0123456789abcd", consumer_secret="cs-0123456789wxyz",
                                         short_code="600000"),
        callback_source_cidrs=["127.0.0.0/8"])
    answer, failed = await rig.call("SetProviderSettings", request)
    assert failed is None
    assert dict(answer.credentials_hint) == {"consumer_key": "…abcd", "consumer_secret": "…wxyz"}
    # The scripted adapter registers no C2B URLs: the answer says so (the real one: tests/test_payments_flows.py).
    settings = dict(answer.settings)
    assert settings.pop("c2b_registration").startswith("not registered")
    assert settings == {"short_code": "600000"}
    assert answer.callback_urls["stk"] == f"{PUBLIC_URL}/v1/callbacks/mpesa/{rig.token}/stk"
    raw = sql(rig.url, "SELECT secrets_sealed::text FROM payments.provider_settings")[0][0]
    assert "0123456789abcd" not in raw
    # A later PUT without secrets keeps them; read keys may look, not change.
    request.mpesa.consumer_key = request.mpesa.consumer_secret = ""
    answer, _ = await rig.call("SetProviderSettings", request)
    assert dict(answer.credentials_hint) == {"consumer_key": "…abcd", "consumer_secret": "…wxyz"}
    listed, _ = await rig.call("ListProviderSettings", payments_pb2.ListProviderSettingsRequest(outlet_id=rig.outlet),
                               "read")
    assert [p.provider for p in listed.providers] == ["mpesa"]
    _, failed = await rig.call("SetProviderSettings", request, "read")
    assert failed.code == grpc.StatusCode.PERMISSION_DENIED
    # Payments of that outlet use the outlet's credentials; its callbacks come from 127.0.0.0/8 only.
    payment = await rig.create()
    assert rig.adapter.initiations[-1][0].secrets["consumer_key"] == "ck-0123456789abcd"
    with pytest.raises(Fault):
        await rig.callback(confirmed(payment), **{"x-forwarded-for": "203.0.113.9"})
    await rig.callback(confirmed(payment), **{"x-forwarded-for": "127.0.0.1"})
    assert (await stored(rig, payment.id)).status is PaymentStatus.CONFIRMED
    assert (await counts(rig)) == {("mpesa", "source_refused"): 1, ("mpesa", "accepted"): 1}


async def test_a_disabled_provider_is_refused(rig):
    await rig.call("SetProviderSettings", payments_pb2.SetProviderSettingsRequest(
        outlet_id=rig.outlet, provider="mpesa", enabled=False))
    _, failed = await rig.call("CreatePayment", payments_pb2.CreatePaymentRequest(
        outlet_id=rig.outlet, provider="mpesa", amount="150", currency="KES", phone="254712345678",
        client_invoice_id="s", client_payment_id="p"))
    assert failed.code == grpc.StatusCode.FAILED_PRECONDITION and "disabled" in failed.details


# --- callbacks ------------------------------------------------------------------------------------

async def test_the_same_callback_three_times_records_one_payment(rig):
    rig.ledger.invoices["sale-1"] = invoice_id = str(uuid.uuid4())
    payment = await rig.create()
    for _ in range(3):
        answer = await rig.callback(confirmed(payment))
        assert answer.status == 200
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.CONFIRMED and after.provider_reference == "RCP1"
    assert (await counts(rig)) == {("mpesa", "accepted"): 1, ("mpesa", "duplicate"): 2}
    assert [event for event, _ in outbox(rig.url)] == ["payment.confirmed"]
    assert rig.ledger.records == [(payment.id, "confirmed", False)]
    assert after.ledger_recorded and after.invoice_id == invoice_id


async def test_concurrent_deliveries_apply_once(rig):
    payment = await rig.create()
    await asyncio.gather(*(rig.callback(confirmed(payment)) for _ in range(10)))
    assert (await counts(rig)) == {("mpesa", "accepted"): 1, ("mpesa", "duplicate"): 9}
    assert len(outbox(rig.url)) == 1


async def test_out_of_order_a_late_failure_is_ignored_and_money_after_failure_wins(rig):
    first, second = await rig.create(), await rig.create()
    await rig.callback(confirmed(first))
    await rig.callback({"request_id": first.provider_request_id, "status": "failed", "code": "1"})
    assert (await stored(rig, first.id)).status is PaymentStatus.CONFIRMED
    await rig.callback({"request_id": second.provider_request_id, "status": "failed", "code": "1",
                        "reason": "The balance is insufficient"})
    assert (await stored(rig, second.id)).status is PaymentStatus.FAILED
    await rig.callback(confirmed(second, receipt="RCP2"))
    assert (await stored(rig, second.id)).status is PaymentStatus.CONFIRMED
    assert [event for event, _ in outbox(rig.url)] == ["payment.confirmed", "payment.failed", "payment.confirmed"]
    assert rig.ledger.records[-2:] == [(second.id, "failed", False), (second.id, "confirmed", False)]


async def test_refused_callbacks_change_nothing_and_are_counted(rig):
    payment = await rig.create()
    attempts = [
        dict(body=confirmed(payment), token="not-the-token"),
        dict(body={"request_id": "ws_CO_unknown", "status": "confirmed", "receipt": "X", "amount": "150"}),
        dict(body={"nonsense": True}),
    ]
    for attempt in attempts:
        with pytest.raises(Fault):
            await rig.callback(**attempt)
    with pytest.raises(Fault):
        await rig.processor.handle("mpesa", "stk", rig.token, b"\xff not json", {})
    assert (await stored(rig, payment.id)).status is PaymentStatus.PENDING
    assert (await counts(rig)) == {("mpesa", "forged_token"): 1, ("mpesa", "unknown_transaction"): 1,
                                   ("mpesa", "malformed"): 2}
    assert outbox(rig.url) == [] and rig.ledger.records == []


async def test_a_wrong_hash_is_forged(rig):
    await rig.call("SetProviderSettings", payments_pb2.SetProviderSettingsRequest(
        outlet_id=rig.outlet, provider="airtel_money", enabled=True, api_base_url="http://127.0.0.1:9"))
    # The scripted adapter reads its hash secret from the stored secrets.
    settings = await rig.store.get_settings(rig.outlet, "airtel_money")
    from services.payments.credentials import seal_secrets
    await rig.store.put_settings(settings.id, rig.merchant, rig.outlet, "airtel_money", enabled=True,
                                 api_base_url="http://127.0.0.1:9",
                                 secrets_sealed=seal_secrets(BOX, settings.id, {"hash_secret": "h"}),
                                 credentials_hint={}, settings={}, callback_source_cidrs=[])
    payment = await rig.create(provider="airtel_money")
    with pytest.raises(Fault):
        await rig.callback(confirmed(payment, hash="wrong"), provider="airtel_money", kind="notification")
    assert (await stored(rig, payment.id)).status is PaymentStatus.PENDING
    await rig.callback(confirmed(payment, hash="h"), provider="airtel_money", kind="notification")
    assert (await stored(rig, payment.id)).status is PaymentStatus.CONFIRMED
    assert (await counts(rig)) == {("airtel_money", "forged_signature"): 1, ("airtel_money", "accepted"): 1}


async def test_a_tampered_stk_amount_is_recorded_flagged_and_counted(rig):
    payment = await rig.create()
    await rig.callback(confirmed(payment, amount="1"))
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.CONFIRMED and after.amount_mismatch and after.confirmed_amount == 1
    assert (await counts(rig)) == {("mpesa", "amount_tampered"): 1}
    [(event, data)] = outbox(rig.url)
    assert data["amount"] == "1.00" and data["requested_amount"] == "150.00" and data["amount_mismatch"] is True
    assert rig.ledger.records == [(payment.id, "confirmed", True)]


# --- pay-first ------------------------------------------------------------------------------------

def sale(client_invoice_id: str) -> ledger_pb2.SealInvoiceRequest:
    return ledger_pb2.SealInvoiceRequest(client_invoice_id=client_invoice_id, lines=[
        ledger_pb2.InvoiceLine(description="Tea", quantity="1", unit_price="150", tax_group="A")])


async def test_pay_first_seals_once_however_many_callbacks(rig):
    payment = await rig.create(client_invoice_id="", sale=sale("kiosk-1"))
    assert payment.sale_state == "waiting" and payment.client_invoice_id == "kiosk-1"
    assert rig.ledger.checks == [("kiosk-1", "mpesa", "150.00")]  # checked before the phone was prompted
    for _ in range(3):
        await rig.callback(confirmed(payment))
    after = await stored(rig, payment.id)
    assert rig.ledger.seals == [(payment.id, "kiosk-1")]
    assert after.sale_state == "sealed" and after.invoice_id == rig.ledger.invoices["kiosk-1"]
    assert rig.ledger.records == []  # the payment is in the sealed body
    await rig.reconciler.retry_seals()
    assert len(rig.ledger.seals) == 1


async def test_pay_first_for_another_amount_than_the_sale_leaves_to_pay_is_refused_before_the_prompt(rig):
    _, failed = await rig.call("CreatePayment", payments_pb2.CreatePaymentRequest(
        outlet_id=rig.outlet, provider="mpesa", amount="100", currency="KES", phone="254712345678",
        client_payment_id=str(uuid.uuid4()), sale=sale("kiosk-9")))
    assert failed.code == grpc.StatusCode.INVALID_ARGUMENT and "total is 150.00" in failed.details
    assert rig.adapter.initiations == [] and sql(rig.url, "SELECT count(*) FROM payments.payments")[0][0] == 0


async def test_pay_first_cancelled_seals_nothing(rig):
    payment = await rig.create(client_invoice_id="", sale=sale("kiosk-2"))
    await rig.callback({"request_id": payment.provider_request_id, "status": "cancelled", "code": "1032",
                        "reason": "Request cancelled by user"})
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.CANCELLED and after.sale_state == "not_sealed"
    assert after.status_reason == "Request cancelled by user"
    await rig.reconciler.retry_seals()
    assert rig.ledger.seals == [] and rig.ledger.records == []


async def test_pay_first_sealing_is_retried_after_the_ledger_was_down(rig):
    payment = await rig.create(client_invoice_id="", sale=sale("kiosk-3"))
    rig.ledger.down = True
    await rig.callback(confirmed(payment))
    assert (await stored(rig, payment.id)).sale_state == "retrying"
    await rig.reconciler.retry_seals()
    assert (await stored(rig, payment.id)).sale_state == "retrying"
    rig.ledger.down = False
    await rig.reconciler.retry_seals()
    after = await stored(rig, payment.id)
    assert after.sale_state == "sealed" and rig.ledger.seals == [(payment.id, "kiosk-3")]


async def test_a_sale_the_ledger_refuses_is_not_sealed_and_the_payment_is_recorded(rig):
    payment = await rig.create(client_invoice_id="", sale=sale("kiosk-4"))
    rig.ledger.refuse_seal = True
    await rig.callback(confirmed(payment))
    after = await stored(rig, payment.id)
    assert after.sale_state == "not_sealed" and "ALREADY_EXISTS" in after.status_reason
    # Recorded against the sale, which the ledger holds until the till seals it; asked again until then.
    assert rig.ledger.records == [(payment.id, "confirmed", False)] and not after.ledger_recorded
    rig.ledger.invoices["kiosk-4"] = invoice_id = str(uuid.uuid4())
    await rig.reconciler.retry_ledger()
    after = await stored(rig, payment.id)
    assert after.ledger_recorded and after.invoice_id == invoice_id


# --- the ledger and reconciliation ----------------------------------------------------------------

async def test_payments_the_ledger_missed_are_recorded_later(rig):
    payment = await rig.create(client_invoice_id="offline-1")
    rig.ledger.down = True
    await rig.callback(confirmed(payment))
    assert not (await stored(rig, payment.id)).ledger_recorded
    await rig.reconciler.retry_ledger()
    rig.ledger.down = False
    rig.ledger.invoices["offline-1"] = invoice_id = str(uuid.uuid4())
    await rig.reconciler.retry_ledger()
    after = await stored(rig, payment.id)
    assert after.ledger_recorded and after.invoice_id == invoice_id
    assert rig.ledger.records == [(payment.id, "confirmed", False)]
    await rig.reconciler.retry_ledger()
    assert len(rig.ledger.records) == 1


async def test_reconciliation_settles_a_payment_whose_callback_never_came(rig):
    payment = await rig.create()
    rig.adapter.query_answers[payment.provider_request_id] = CallbackResult(
        provider_request_id=payment.provider_request_id, status=PaymentStatus.CONFIRMED, result_code="0",
        amount=Decimal(150))
    await asyncio.sleep(0.01)
    assert await rig.reconciler.query_due() == 1
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.CONFIRMED and (await counts(rig)) == {}
    assert [event for event, _ in outbox(rig.url)] == ["payment.confirmed"]


async def test_pending_too_long_expires_and_money_afterwards_still_confirms(rig):
    payment = await rig.create()
    sql(rig.url, "UPDATE payments.payments SET created_at = now() - interval '2 hours' WHERE id = %s", payment.id)
    await rig.reconciler.query_due()
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.EXPIRED and "no confirmation" in after.status_reason
    await rig.callback(confirmed(payment))
    assert (await stored(rig, payment.id)).status is PaymentStatus.CONFIRMED
    assert [event for event, _ in outbox(rig.url)] == ["payment.failed", "payment.confirmed"]


async def test_callback_stats(rig):
    payment = await rig.create()
    await rig.callback(confirmed(payment))
    with pytest.raises(Fault):
        await rig.callback(confirmed(payment), token="forged")
    answer = await PaymentOpsServicer(rig.store).GetCallbackStats(payments_pb2.GetCallbackStatsRequest(), Context())
    assert {(c.provider, c.outcome, c.count) for c in answer.counts} == {("mpesa", "accepted", 1),
                                                                          ("mpesa", "forged_token", 1)}


async def test_a_payment_inserted_but_never_initiated_fails_on_reconciliation(rig):
    rig.adapter.initiate_error = None
    payment = await rig.create()
    sql(rig.url, "UPDATE payments.payments SET provider_request_id = '' WHERE id = %s", payment.id)
    rig.reconciler.clock = lambda: datetime.now(UTC) + timedelta(seconds=1)
    await rig.reconciler.query_due()
    after = await stored(rig, payment.id)
    assert after.status is PaymentStatus.FAILED and "did not complete" in after.status_reason
