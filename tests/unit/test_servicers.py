"""Each servicer's translation, in process under grpc_testing (tests/unit/grpc_bridge.py): protobuf
requests into domain calls, domain results into messages, and every kind of failure into the status
code and google.rpc details a client (and Envoy's JSON error) sees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest
from fiscal.v1 import counter_pb2, ledger_pb2, signing_pb2
from sqlalchemy import exc as sa_exc

from services.counter.domain import Lease as CounterLease
from services.counter.servicer import CounterServicer
from services.counter.wiring import LedgerChainHeads
from services.ledger import receipt
from services.ledger.access import Principal, bearer_token, hash_api_key
from services.ledger.servicer import InvoiceServicer, TerminalServicer
from services.ledger.wiring import CounterAllocator, SigningClient
from services.runtime.faults import Aborted, Fault, InvalidArgument, NotFound, Unauthenticated, Unavailable
from services.runtime.grpc_errors import fault_from_rpc_error
from services.signing.servicer import SigningServicer
from services.signing.statement import StatementRules
from tests.unit.fakes import ADMIN_KEY, OUTLET, Rig
from tests.unit.grpc_bridge import InProcessServer

API_KEY = "fk_admin_unit-test-key"
AUTH = (("authorization", f"Bearer {API_KEY}"),)


class NoRecordedPayments:
    """services.ledger.invoice_payments.InvoicePayments' read side with nothing recorded: invoices as sealed."""

    async def views(self, records):
        return [None] * len(records)


class FakeLedger:
    """What InvoiceServicer reads from services.ledger.wiring.Ledger: a sealer, a store, keys."""

    def __init__(self, rig: Rig):
        self.sealer, self.store, self.signer = rig.sealer, rig.store, rig.signer
        self.payments = NoRecordedPayments()
        self.public_url, self.authority_id = "http://receipts.test", "FC-TEST"
        self.principals: dict[bytes, Principal] = {hash_api_key(API_KEY): ADMIN_KEY}

    async def jwk(self, kid: str) -> dict | None:
        return self.signer.public_jwk() if kid == self.signer.key_id else None

    async def authenticate(self, authorization: str | None) -> Principal:
        principal = self.principals.get(hash_api_key(bearer_token(authorization)))
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return principal


def invoice_server() -> tuple[InProcessServer, Rig]:
    rig = Rig()
    service = ledger_pb2.DESCRIPTOR.services_by_name["InvoiceService"]
    return InProcessServer(service, InvoiceServicer(FakeLedger(rig))), rig


def seal_request(**changes) -> ledger_pb2.SealInvoiceRequest:
    request = ledger_pb2.SealInvoiceRequest(
        outlet_id=OUTLET.id, client_invoice_id="sale-1", pos_terminal_id="T1", cashier_id="C1", currency="KES",
        lines=[ledger_pb2.InvoiceLine(description="Sugar 1kg", quantity="2", unit_price="180.00", tax_group="A")],
        payments=[ledger_pb2.PaymentLine(method="mpesa", amount="360.00", reference="QK7H2X9")])
    for name, value in changes.items():
        if name == "lines":
            del request.lines[:]
            request.lines.extend(value)
        else:
            setattr(request, name, value)
    return request


# --- InvoiceService.SealInvoice -------------------------------------------------------------------------

def test_seal_invoice_answers_the_sealed_invoice_as_a_message():
    server, rig = invoice_server()
    outcome = server.call("SealInvoice", seal_request(), AUTH)
    assert outcome.code == grpc.StatusCode.OK, outcome.details
    invoice = outcome.response
    assert (invoice.fiscal.fiscal_number, invoice.fiscal.counter) == ("UNIT001-INV-0000000001", 1)
    assert [(l.description, l.line_total) for l in invoice.lines] == [("Sugar 1kg", "360.00")]
    assert [(t.tax_group, t.rate, t.tax_amount) for t in invoice.tax_totals] == [("A", "16", "49.66")]
    assert (invoice.total, invoice.payment_status, invoice.payments[0].reference) == ("360.00", "paid", "QK7H2X9")
    assert invoice.fiscal.qr_code.startswith("http://receipts.test/v1/verify?v=1&fn=UNIT001-INV-0000000001")
    assert invoice.fiscal.sealed_at_local.endswith("+03:00")  # the outlet's zone, Africa/Nairobi
    record = rig.store.by_number[(OUTLET.id, "INV", 1)]
    assert invoice.fiscal.signature and invoice.id == record.id


def test_a_domain_invalid_argument_is_400_with_the_field_that_is_wrong():
    server, rig = invoice_server()
    bad_line = ledger_pb2.InvoiceLine(description="Sugar", quantity="1", unit_price="1.00", tax_group="Z")
    outcome = server.call("SealInvoice", seal_request(lines=[bad_line]), AUTH)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in outcome.field_violations()] == ["lines[0].tax_group"]
    assert "tax_group" in outcome.details
    assert not rig.store.by_number and rig.counter.allocated == []


def test_an_unknown_outlet_is_not_found():
    server, _ = invoice_server()
    outcome = server.call("SealInvoice", seal_request(outlet_id="7d3c1f2e-0000-4000-8000-0000000000ff"), AUTH)
    assert outcome.code == grpc.StatusCode.NOT_FOUND
    assert outcome.status is not None and outcome.field_violations() == []


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer fk_admin_nobody"),),
                                      (("authorization", "Basic abc"),)])
def test_a_missing_or_unknown_key_is_unauthenticated(metadata):
    server, rig = invoice_server()
    outcome = server.call("SealInvoice", seal_request(), metadata)
    assert outcome.code == grpc.StatusCode.UNAUTHENTICATED
    assert rig.counter.allocated == []


def test_a_reused_client_invoice_id_is_already_exists_with_its_reason():
    server, _ = invoice_server()
    assert server.call("SealInvoice", seal_request(), AUTH).code == grpc.StatusCode.OK
    changed = ledger_pb2.InvoiceLine(description="Sugar 1kg", quantity="3", unit_price="180.00", tax_group="A")
    outcome = server.call("SealInvoice", seal_request(lines=[changed]), AUTH)
    assert outcome.code == grpc.StatusCode.ALREADY_EXISTS
    assert outcome.error_reasons() == ["CLIENT_INVOICE_ID_REUSED"]


def test_an_unexpected_error_is_internal_and_says_nothing_about_it():
    server, rig = invoice_server()
    rig.store.fail_with = KeyError("password=hunter2 in a bug's message")
    outcome = server.call("SealInvoice", seal_request(), AUTH)
    assert outcome.code == grpc.StatusCode.INTERNAL
    assert outcome.details == "internal error" and outcome.status is None


def test_a_database_outage_is_unavailable_so_the_till_retries():
    server, rig = invoice_server()
    rig.store.fail_with = sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
    outcome = server.call("SealInvoice", seal_request(), AUTH)
    assert outcome.code == grpc.StatusCode.UNAVAILABLE
    assert "SELECT" not in outcome.details


def test_a_signing_failure_is_unavailable_and_keeps_the_number():
    server, rig = invoice_server()
    rig.signer.fail_with = ConnectionResetError("signing went away")
    assert server.call("SealInvoice", seal_request(), AUTH).code == grpc.StatusCode.UNAVAILABLE
    rig.signer.fail_with = None
    assert server.call("SealInvoice", seal_request(), AUTH).response.fiscal.counter == 1


def test_get_invoice_hides_a_malformed_or_foreign_id_as_not_found():
    server, _ = invoice_server()
    sealed = server.call("SealInvoice", seal_request(), AUTH).response
    read = server.call("GetInvoice", ledger_pb2.GetInvoiceRequest(id=sealed.id), AUTH).response
    assert (read.sync.status, read.sync.attempts) == ("pending", 0)  # reads carry the DGI sync block
    read.ClearField("sync")
    assert read == sealed
    for invoice_id in ("not-a-uuid", "7d3c1f2e-0000-4000-8000-00000000dead"):
        outcome = server.call("GetInvoice", ledger_pb2.GetInvoiceRequest(id=invoice_id), AUTH)
        assert outcome.code == grpc.StatusCode.NOT_FOUND, invoice_id


def qr_parameters(qr_code: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(qr_code).query).items()}


def test_verify_receipt_checks_the_qr_and_finds_the_registered_invoice():
    server, _ = invoice_server()
    sealed = server.call("SealInvoice", seal_request(), AUTH).response
    params = qr_parameters(sealed.fiscal.qr_code)
    outcome = server.call("VerifyReceipt", ledger_pb2.VerifyReceiptRequest(**{**params, "v": 1}))
    answer = outcome.response
    assert (answer.valid, answer.registered, answer.outlet_name, answer.taxpayer_id) == \
        (True, True, "Unit Shop", "P000000001A")
    assert answer.total == "360.00" and answer.fiscal_number == sealed.fiscal.fiscal_number
    forged = server.call("VerifyReceipt", ledger_pb2.VerifyReceiptRequest(**{**params, "v": 1, "tt": "36.00"}))
    assert (forged.code, forged.response.valid, forged.response.registered) == (grpc.StatusCode.OK, False, False)
    unknown = server.call("VerifyReceipt", ledger_pb2.VerifyReceiptRequest(**{**params, "v": 1, "kid": "nope"}))
    assert unknown.response.valid is False and unknown.response.reason


def test_verify_receipt_without_parameters_is_400():
    server, _ = invoice_server()
    outcome = server.call("VerifyReceipt", ledger_pb2.VerifyReceiptRequest(v=1))
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT


# --- TerminalService.Heartbeat -------------------------------------------------------------------------

def terminal_server() -> tuple[InProcessServer, Rig]:
    rig = Rig()
    service = ledger_pb2.DESCRIPTOR.services_by_name["TerminalService"]
    return InProcessServer(service, TerminalServicer(FakeLedger(rig))), rig


def test_a_heartbeat_is_recorded_and_answers_the_outlets_grace():
    server, rig = terminal_server()
    outcome = server.call("Heartbeat", ledger_pb2.HeartbeatRequest(
        outlet_id=OUTLET.id, pos_terminal_id="T1", cashier_id="C1", draft_count=2, state="offline"), AUTH)
    assert outcome.code == grpc.StatusCode.OK
    assert outcome.response.offline_grace_seconds == OUTLET.offline_grace_seconds
    assert [(o, t, c, drafts) for o, t, c, drafts, *_ in rig.store.heartbeats] == [(OUTLET.id, "T1", "C1", 2)]


@pytest.mark.parametrize("changes", [{"state": "asleep"}, {"pos_terminal_id": "T1\n"}, {"draft_count": -1}])
def test_a_bad_heartbeat_is_400_and_not_recorded(changes):
    server, rig = terminal_server()
    request = ledger_pb2.HeartbeatRequest(outlet_id=OUTLET.id, pos_terminal_id="T1", state="online")
    for name, value in changes.items():
        setattr(request, name, value)
    outcome = server.call("Heartbeat", request, AUTH)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert rig.store.heartbeats == []


# --- CounterService -------------------------------------------------------------------------------------

class FakeCounters:
    """services.counter.domain.Counters as the servicer sees it; `fail_with` makes every call raise."""

    def __init__(self) -> None:
        self.fail_with: BaseException | None = None
        self.calls: list[tuple] = []

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def allocate(self, outlet_id, series, holder, time_remaining, count=1, commit_lease_id=""):
        self.calls.append(("allocate", outlet_id, series, holder))
        self._maybe_fail()
        return CounterLease("lease-1", outlet_id, series, 7, datetime(2026, 11, 24, 12, 0, 10, tzinfo=UTC), 10.0)

    async def commit(self, lease_id):
        self.calls.append(("commit", lease_id))
        self._maybe_fail()
        return 7


def counter_server() -> tuple[InProcessServer, FakeCounters]:
    counters = FakeCounters()
    service = counter_pb2.DESCRIPTOR.services_by_name["CounterService"]
    return InProcessServer(service, CounterServicer(counters)), counters


def test_allocate_answers_the_lease():
    server, counters = counter_server()
    outcome = server.call("Allocate", counter_pb2.AllocateRequest(outlet_id="o1", series="INV", holder="h"))
    assert outcome.code == grpc.StatusCode.OK
    assert (outcome.response.lease_id, outcome.response.number) == ("lease-1", 7)
    assert outcome.response.expires_at.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 24, 12, 0, 10, tzinfo=UTC)
    assert counters.calls == [("allocate", "o1", "INV", "h")]


@pytest.mark.parametrize(("fault", "code"), [
    (Aborted("counter busy", reason="COUNTER_BUSY"), grpc.StatusCode.ABORTED),
    (InvalidArgument("series must be INV or CN", field="series"), grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound("no such lease"), grpc.StatusCode.NOT_FOUND),
    (Unavailable("ledger unavailable", reason="LEDGER_UNAVAILABLE"), grpc.StatusCode.UNAVAILABLE),
])
def test_counter_faults_keep_their_code_and_details(fault: Fault, code):
    server, counters = counter_server()
    counters.fail_with = fault
    outcome = server.call("Allocate", counter_pb2.AllocateRequest(outlet_id="o1", series="INV", holder="h"))
    assert (outcome.code, outcome.details) == (code, fault.message)
    assert outcome.error_reasons() == ([fault.reason] if fault.reason else [])
    assert [f for f, _ in outcome.field_violations()] == ([fault.field] if fault.field else [])


def test_an_unexpected_counter_error_is_internal_without_detail():
    server, counters = counter_server()
    counters.fail_with = ZeroDivisionError("lease arithmetic")
    outcome = server.call("Commit", counter_pb2.CommitRequest(lease_id="lease-1"))
    assert (outcome.code, outcome.details, outcome.status) == (grpc.StatusCode.INTERNAL, "internal error", None)


def test_a_counter_without_its_database_is_unavailable():
    server, counters = counter_server()
    counters.fail_with = sa_exc.OperationalError("SELECT … FOR UPDATE", {}, OSError("server closed the connection"))
    outcome = server.call("Commit", counter_pb2.CommitRequest(lease_id="lease-1"))
    assert outcome.code == grpc.StatusCode.UNAVAILABLE and "FOR UPDATE" not in outcome.details


# --- SigningService -------------------------------------------------------------------------------------

class FakeKeyManager:
    def __init__(self) -> None:
        self.fail_with: BaseException | None = None
        self.digests: list[bytes] = []

    async def sign(self, digest: bytes):
        if self.fail_with is not None:
            raise self.fail_with
        self.digests.append(digest)
        return b"\x01" * 64, SimpleNamespace(kid="kid-1")


def signing_server() -> tuple[InProcessServer, FakeKeyManager]:
    manager = FakeKeyManager()
    service = signing_pb2.DESCRIPTOR.services_by_name["SigningService"]
    rules = StatementRules(authority_id="FC-TEST", max_skew=timedelta(minutes=5))
    return InProcessServer(service, SigningServicer(manager, rules)), manager


def statement(authority_id: str = "FC-TEST") -> receipt.Statement:
    return receipt.Statement("UNIT001-INV-0000000001", authority_id, receipt.format_timestamp(datetime.now(UTC)),
                             "360.00", "KES", receipt.b64url(b"\x03" * 32))


def test_sign_answers_signature_and_key_id():
    server, manager = signing_server()
    signed = statement()
    outcome = server.call("Sign", signing_pb2.SignRequest(statement=signed.text()))
    assert outcome.code == grpc.StatusCode.OK
    assert (outcome.response.signature, outcome.response.key_id, outcome.response.algorithm) == \
        (b"\x01" * 64, "kid-1", "ES256")
    assert manager.digests == [signed.digest()]


@pytest.mark.parametrize("text", ["", "\x00" * 32, statement(authority_id="FC-ELSEWHERE").text()])
def test_sign_refuses_what_is_not_a_statement_of_ours_with_the_field(text):
    server, manager = signing_server()
    outcome = server.call("Sign", signing_pb2.SignRequest(statement=text))
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in outcome.field_violations()] == ["statement"]
    assert manager.digests == []


@pytest.mark.parametrize(("error", "code"), [
    (InvalidArgument("digest must be 32 bytes", field="digest"), grpc.StatusCode.INVALID_ARGUMENT),
    (Unavailable("HSM token not present"), grpc.StatusCode.UNAVAILABLE),
    (OSError("PKCS#11 module went away"), grpc.StatusCode.UNAVAILABLE),
    (RuntimeError("a bug"), grpc.StatusCode.INTERNAL),
])
def test_signing_failures_map_to_their_codes(error: BaseException, code):
    server, manager = signing_server()
    manager.fail_with = error
    outcome = server.call("Sign", signing_pb2.SignRequest(statement=statement().text()))
    assert outcome.code == code
    if isinstance(error, Fault):
        assert outcome.details == error.message
        assert [f for f, _ in outcome.field_violations()] == ([error.field] if error.field else [])
    else:
        assert str(error) not in outcome.details


# --- calls between services: one mapping of RpcError to a fault (runtime.grpc_errors) --------------------

def rpc_error(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(("code", "fault"), [
    (grpc.StatusCode.ABORTED, Aborted),
    (grpc.StatusCode.INVALID_ARGUMENT, Unavailable),
    (grpc.StatusCode.PERMISSION_DENIED, Unavailable),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable),
    (grpc.StatusCode.INTERNAL, Unavailable),
])
def test_fault_from_rpc_error(code, fault):
    mapped = fault_from_rpc_error(rpc_error(code, "callee said no"), "fiscal counter", unavailable_reason="WHY")
    assert type(mapped) is fault
    assert code.name in mapped.message or fault is Aborted
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED):
        # The client's input was validated before the call: a peer's refusal is ours, retryable (503).
        assert mapped.reason == "MESH_PEER_REFUSED"
    elif fault is Unavailable:
        assert mapped.reason == "WHY"


class RaisingStub:
    def __init__(self, error: grpc.RpcError):
        self.error = error

    def __getattr__(self, name):
        async def call(*args, **kwargs):
            raise self.error
        return call


async def test_the_counter_names_the_ledgers_status_when_it_cannot_reconcile():
    heads = LedgerChainHeads.__new__(LedgerChainHeads)
    heads.stub = RaisingStub(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    with pytest.raises(Unavailable) as raised:
        await heads.last_number("o1", "INV", timeout=1.0)
    # The old mapping tested isinstance(error, grpc.Call), which an AioRpcError is not: always "UNKNOWN".
    assert "DEADLINE_EXCEEDED" in raised.value.message and raised.value.reason == "LEDGER_UNAVAILABLE"


async def test_the_ledgers_clients_map_counter_and_signing_errors_the_same_way():
    allocator = CounterAllocator.__new__(CounterAllocator)
    allocator.allocate_timeout = 1.0
    allocator.stub = RaisingStub(rpc_error(grpc.StatusCode.ABORTED))
    with pytest.raises(Aborted):
        await allocator.allocate("o1", "INV", "holder")
    signing = SigningClient.__new__(SigningClient)
    signing.stub = RaisingStub(rpc_error(grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(Unavailable):
        await signing.sign_batch([statement().text()])
    with pytest.raises(Unavailable):
        await signing.sign_batch([statement().text(), statement().text()])
