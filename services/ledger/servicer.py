"""The ledger's gRPC layer: protobuf in and out, authentication, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import grpc
from fiscal.v1 import ledger_pb2, ledger_pb2_grpc

from services.ledger import receipt
from services.ledger.access import Principal, bearer_token, hash_api_key
from services.ledger.dgi_sync import SYNC_STATUSES, SyncState
from services.ledger.invoice_payments import PaymentInput
from services.ledger.model import InvoiceFilter, InvoiceRecord, PaymentView
from services.ledger.money import MAX_AMOUNT_TEXT
from services.ledger.page_tokens import PageTokens
from services.ledger.request_bounds import (
    CHOICE_MAX,
    MAX_DRAFT_AGE_SECONDS,
    MAX_DRAFT_COUNT,
    SDK_VERSION_MAX,
    VERIFY_PARAM_MAX,
    check_count,
    check_text,
    check_timestamp_text,
    require_identifier,
    require_uuid,
)
from services.ledger.sealing import MAX_LINES, CreditNoteRequest, Payment, SaleLine, SaleRequest
from services.runtime.faults import InvalidArgument, NotFound, Unauthenticated
from services.runtime.grpc_errors import handles_faults
from services.runtime.timestamps import to_timestamp as _timestamp

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# An Authorization header longer than any real one ("Bearer " + a 52-character key) is refused unread.
MAX_AUTHORIZATION = 512


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value
    return None


def _payment_lines(body, view: PaymentView | None) -> list[ledger_pb2.PaymentLine]:
    if view is None:  # the sale's own payments, as sealed
        return [ledger_pb2.PaymentLine(method=p.method, amount=p.amount, reference=p.reference) for p in body.payments]
    return [ledger_pb2.PaymentLine(method=l.method, amount=l.amount, reference=l.reference, payment_id=l.payment_id,
                                   status=l.status, phone_masked=l.phone_masked,
                                   confirmed_at=_timestamp(l.confirmed_at) if l.confirmed_at else None,
                                   amount_mismatch=l.amount_mismatch)
            for l in view.lines]


def sync_block(state: SyncState) -> ledger_pb2.SyncBlock:
    return ledger_pb2.SyncBlock(
        status=state.status, attempts=state.attempts, dgi_code=state.dgi_code, dgi_uid=state.dgi_uid,
        reason=state.reason, synced_at=_timestamp(state.synced_at) if state.synced_at else None,
        dgi_error_code=state.dgi_error_code or "", dgi_counters=state.dgi_counters,
        next_attempt_at=_timestamp(state.next_attempt_at)
        if state.status == "pending" and state.attempts and state.next_attempt_at else None)


def invoice_message(record: InvoiceRecord, public_url: str, view: PaymentView | None = None,
                    sync: SyncState | None = None) -> ledger_pb2.Invoice:
    """The invoice as answered. `view`: its payments and payment_status as of now (payments recorded
    after the sale, refunds); None: as sealed (the seal path's answer, which costs no extra query).
    `sync`: its DGI upload state (reads); None: no sync block (the seal path's answer)."""
    body = record.invoice_body()
    statement = receipt.Statement(record.fiscal_number, body.fiscal_authority_id, body.sealed_at,
                                  body.total, body.currency, receipt.b64url(record.body_digest))
    local = record.sealed_at.astimezone(ZoneInfo(body.time_zone or "UTC"))
    return ledger_pb2.Invoice(
        id=record.id, merchant_id=record.merchant_id, outlet_id=record.outlet_id,
        client_invoice_id=record.client_invoice_id, pos_terminal_id=record.pos_terminal_id,
        cashier_id=record.cashier_id, kind=record.kind, status=record.status, currency=record.currency,
        lines=[ledger_pb2.InvoiceLine(description=l.description, quantity=l.quantity, unit_price=l.unit_price,
                                      tax_group=l.tax_group, line_total=l.line_total, sku=l.sku) for l in body.lines],
        tax_totals=[ledger_pb2.TaxTotal(tax_group=t.tax_group, label=t.label, rate=t.rate,
                                        taxable_amount=t.taxable_amount, tax_amount=t.tax_amount,
                                        gross_amount=t.gross_amount) for t in body.tax_totals],
        total_taxable=body.total_taxable, total_tax=body.total_tax, total=body.total,
        payments=_payment_lines(body, view),
        payment_status=view.payment_status if view else body.payment_status, buyer=ledger_pb2.Buyer(**body.buyer),
        sold_at=_timestamp(record.sold_at), original_invoice_id=record.original_invoice_id or "",
        reason=body.reason or "", created_at=_timestamp(record.created_at or record.sealed_at),
        fiscal=ledger_pb2.FiscalBlock(
            fiscal_number=record.fiscal_number, outlet_code=body.outlet_code, series=record.series,
            counter=record.number, fiscal_authority_id=body.fiscal_authority_id, auth_code=record.auth_code,
            sealed_at=_timestamp(record.sealed_at), sealed_at_local=local.isoformat(timespec="seconds"),
            qr_code=receipt.qr_url(public_url, statement, record.auth_code, record.key_id, record.signature),
            signature=receipt.b64url(record.signature), key_id=record.key_id,
            body_digest=receipt.b64url(record.body_digest), prev_hash=receipt.b64url(record.prev_hash),
            hash=receipt.b64url(record.hash), taxpayer_id=body.taxpayer_id, time_zone=body.time_zone,
        ),
        sync=sync_block(sync) if sync is not None else None,
    )


MAX_PAGE_TOKEN = 512


def _lines(lines) -> list[SaleLine]:
    if len(lines) > MAX_LINES:
        raise InvalidArgument(f"lines: at most {MAX_LINES} lines", field="lines")
    for index, line in enumerate(lines):
        # line_total is computed by the ledger; a client's value is ignored, but not unbounded.
        if len(line.line_total) > MAX_AMOUNT_TEXT:
            raise InvalidArgument(f"lines[{index}].line_total is longer than {MAX_AMOUNT_TEXT} characters",
                                  field=f"lines[{index}].line_total")
    return [SaleLine(l.description, l.quantity, l.unit_price, l.tax_group, l.sku) for l in lines]


def _parse_time(text: str, field: str) -> datetime | None:
    if not text:
        return None
    check_timestamp_text(text, field)
    try:
        return receipt.parse_timestamp(text)
    except ValueError:
        raise InvalidArgument(f"{field} must be an RFC 3339 time with a zone, got {text!r}", field=field) from None


def _page_token(tokens: PageTokens, where: InvoiceFilter, seq: int | None) -> str:
    return tokens.issue(where, seq) if seq is not None else ""


def _parse_page_token(tokens: PageTokens, where: InvoiceFilter, token: str) -> int | None:
    return tokens.read(where, token) if token else None


def sale_request(request: ledger_pb2.SealInvoiceRequest) -> SaleRequest:
    return SaleRequest(
        outlet_id=request.outlet_id, client_invoice_id=request.client_invoice_id,
        pos_terminal_id=request.pos_terminal_id, cashier_id=request.cashier_id, currency=request.currency,
        lines=_lines(request.lines),
        payments=[Payment(p.method, p.amount, p.reference) for p in request.payments],
        buyer={k: v for k, v in (("name", request.buyer.name), ("tax_id", request.buyer.tax_id),
                                 ("phone", request.buyer.phone), ("email", request.buyer.email)) if v},
        sold_at=request.sold_at,
    )


async def invoice_messages(ledger, records: list[InvoiceRecord]) -> list[ledger_pb2.Invoice]:
    """Invoices with their payments and DGI sync state as of now: one query each for the whole page,
    whatever its size. A document the sync worker has not reached yet is pending, 0 attempts."""
    views = await ledger.payments.views(records)
    states = await ledger.store.sync_states([r.id for r in records])
    return [invoice_message(r, ledger.public_url, view, states.get(r.id) or SyncState(r.id))
            for r, view in zip(records, views, strict=True)]


class InvoiceServicer(ledger_pb2_grpc.InvoiceServiceServicer):
    def __init__(self, ledger):
        self.ledger = ledger  # services.ledger.wiring.Ledger: the sealer, the store and the caches

    async def _principal(self, context) -> Principal:
        return await self.ledger.authenticate(_authorization(context))

    @handles_faults
    async def SealInvoice(self, request, context):
        principal = await self._principal(context)
        record = await self.ledger.sealer.seal_invoice(principal, sale_request(request))
        # As sealed: payments recorded meanwhile show on reads (GetInvoice, ListInvoices), not here, so
        # the seal path pays no extra query.
        return invoice_message(record, self.ledger.public_url)

    @handles_faults
    async def CreateCreditNote(self, request, context):
        principal = await self._principal(context)
        note = CreditNoteRequest(
            original_invoice_id=request.id, client_invoice_id=request.client_invoice_id,
            pos_terminal_id=request.pos_terminal_id, cashier_id=request.cashier_id, reason=request.reason,
            lines=_lines(request.lines))
        record = await self.ledger.sealer.create_credit_note(principal, note)
        return invoice_message(record, self.ledger.public_url)

    @handles_faults
    async def GetInvoice(self, request, context):
        principal = await self._principal(context)
        invoice_id = require_uuid(request.id, "id", "invoice")
        record = await self.ledger.store.invoice(principal.merchant_id, invoice_id)
        if record is None or (principal.outlet_id and record.outlet_id != principal.outlet_id):
            raise NotFound(f"invoice {invoice_id} not found")
        [message] = await invoice_messages(self.ledger, [record])
        return message

    @handles_faults
    async def ListInvoices(self, request, context):
        principal = await self._principal(context)
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE}", field="page_size")
        if len(request.page_token) > MAX_PAGE_TOKEN:
            raise InvalidArgument("page_token is not one this API returned", field="page_token")
        outlet_id = principal.visible_outlet(request.outlet_id or None)
        if outlet_id:
            outlet_id = require_uuid(outlet_id, "outlet_id", "outlet")
        for name in ("pos_terminal_id", "cashier_id"):
            if getattr(request, name):
                require_identifier(getattr(request, name), name)
        if request.kind and request.kind not in ("invoice", "credit_note"):
            raise InvalidArgument("kind must be invoice or credit_note", field="kind")
        if request.status and request.status != "sealed":
            raise InvalidArgument("status must be sealed", field="status")
        if request.sync_status and request.sync_status not in SYNC_STATUSES:
            raise InvalidArgument(f"sync_status must be one of {', '.join(SYNC_STATUSES)}", field="sync_status")
        where = InvoiceFilter(
            merchant_id=principal.merchant_id, outlet_id=outlet_id, pos_terminal_id=request.pos_terminal_id or None,
            cashier_id=request.cashier_id or None, sealed_from=_parse_time(getattr(request, "from"), "from"),
            sealed_to=_parse_time(request.to, "to"), status=request.status or None, kind=request.kind or None,
            sync_status=request.sync_status or None)
        tokens = self.ledger.page_tokens
        records, next_seq = await self.ledger.store.list_invoices(
            where, page_size, _parse_page_token(tokens, where, request.page_token))
        return ledger_pb2.ListInvoicesResponse(
            invoices=await invoice_messages(self.ledger, records),
            next_page_token=_page_token(tokens, where, next_seq))

    @handles_faults
    async def ListKeys(self, request, context):
        keys = await self.ledger.public_keys()
        return ledger_pb2.KeySet(fiscal_authority_id=self.ledger.authority_id, keys=[
            ledger_pb2.Jwk(kid=k.kid, kty=k.kty, crv=k.crv, x=k.x, y=k.y, alg=k.alg, use=k.use, status=k.status,
                           created_at=k.created_at if k.HasField("created_at") else None,
                           retired_at=k.retired_at if k.HasField("retired_at") else None,
                           compromised_at=k.compromised_at if k.HasField("compromised_at") else None,
                           compromise_reason=k.compromise_reason)
            for k in keys])

    @handles_faults
    async def VerifyReceipt(self, request, context):
        params = {name: getattr(request, name) for name in ("fn", "fa", "ts", "tt", "cur", "d", "ac", "kid", "sg")}
        for name, value in params.items():
            if len(value) > VERIFY_PARAM_MAX[name]:
                raise InvalidArgument(f"{name} is longer than {VERIFY_PARAM_MAX[name]} characters", field=name)
        if request.v not in (0, 1):
            raise InvalidArgument(f"unsupported receipt version {request.v}", field="v")
        if not any(params.values()):
            raise InvalidArgument("pass the receipt's QR code parameters (fn, fa, ts, tt, cur, d, ac, kid, sg)")
        # An unknown kid is cached as unknown and refreshes are rate-limited (public_keys.PublicKeyDirectory):
        # anonymous verify requests cannot hammer the signing service.
        jwk = await self.ledger.jwk(params["kid"]) if params["kid"] else None
        check = receipt.check_qr(params, {params["kid"]: jwk} if jwk else {})
        answer = ledger_pb2.VerifyReceiptResponse(
            valid=check.valid, reason=check.reason, fiscal_number=params["fn"], fiscal_authority_id=params["fa"],
            total=params["tt"], currency=params["cur"], auth_code=params["ac"], key_id=params["kid"],
            key_status=jwk["status"] if jwk else "")
        try:
            answer.sealed_at.CopyFrom(_timestamp(receipt.parse_timestamp(params["ts"])))
        except (ValueError, TypeError):
            pass
        if check.valid and check.statement is not None:
            record = await self.ledger.store.invoice_by_fiscal_number(params["fn"])
            if record is not None and record.statement == check.statement.text() \
                    and receipt.b64url(record.signature) == params["sg"]:
                body = record.invoice_body()
                answer.registered = True
                answer.outlet_name = body.outlet_name
                answer.taxpayer_id = body.taxpayer_id
        return answer


class TerminalServicer(ledger_pb2_grpc.TerminalServiceServicer):
    def __init__(self, ledger):
        self.ledger = ledger

    @handles_faults
    async def Heartbeat(self, request, context):
        principal = await self.ledger.authenticate(_authorization(context))
        outlet = await self.ledger.sealer.outlet_for(principal, request.outlet_id)
        principal.require_write(outlet.id)
        require_identifier(request.pos_terminal_id, "pos_terminal_id")
        if request.cashier_id:
            require_identifier(request.cashier_id, "cashier_id")
        if request.draft_count < 0 or request.oldest_draft_age_seconds < 0 or request.rejected_count < 0:
            raise InvalidArgument("draft_count, oldest_draft_age_seconds and rejected_count must not be negative")
        check_count(request.draft_count, "draft_count", MAX_DRAFT_COUNT)
        check_count(request.rejected_count, "rejected_count", MAX_DRAFT_COUNT)
        check_count(request.oldest_draft_age_seconds, "oldest_draft_age_seconds", MAX_DRAFT_AGE_SECONDS)
        if request.state and request.state not in ("online", "offline", "syncing"):
            raise InvalidArgument("state must be online, offline or syncing", field="state")
        check_text(request.sdk_version, "sdk_version", SDK_VERSION_MAX)
        now = datetime.now(UTC)
        await self.ledger.store.record_heartbeat(
            outlet.id, request.pos_terminal_id, request.cashier_id, request.draft_count,
            request.oldest_draft_age_seconds, request.rejected_count, request.state, request.sdk_version, now)
        return ledger_pb2.HeartbeatResponse(server_time=_timestamp(now),
                                            offline_grace_seconds=outlet.offline_grace_seconds)

    @handles_faults
    async def ListTerminals(self, request, context):
        principal = await self.ledger.authenticate(_authorization(context))
        outlet_id = principal.visible_outlet(request.outlet_id or None)
        if outlet_id:
            outlet_id = require_uuid(outlet_id, "outlet_id", "outlet")
        rows = await self.ledger.store.terminals(principal.merchant_id, outlet_id)
        return ledger_pb2.ListTerminalsResponse(terminals=[ledger_pb2.Terminal(
            pos_terminal_id=r["pos_terminal_id"], outlet_id=r["outlet_id"], last_cashier_id=r["last_cashier_id"],
            first_seen_at=_timestamp(r["first_seen_at"]), last_seen_at=_timestamp(r["last_seen_at"]),
            last_heartbeat_at=_timestamp(r["last_heartbeat_at"]), draft_count=r["draft_count"],
            oldest_draft_age_seconds=r["oldest_draft_age_seconds"], state=r["state"],
            sdk_version=r["sdk_version"], last_seal_at=_timestamp(r["last_seal_at"])) for r in rows])


class LedgerInternalServicer(ledger_pb2_grpc.LedgerInternalServiceServicer):
    def __init__(self, ledger):
        self.ledger = ledger

    @handles_faults
    async def GetChainHead(self, request, context):
        outlet_id = require_uuid(request.outlet_id, "outlet_id", "outlet")
        if not request.series:
            raise InvalidArgument("series is required", field="series")
        if len(request.series) > CHOICE_MAX:
            raise InvalidArgument("series is not one of the ledger's series", field="series")
        number, last_hash = await self.ledger.store.chain_head(outlet_id, request.series)
        return ledger_pb2.ChainHead(last_number=number, last_hash=receipt.b64url(last_hash) if last_hash else "")

    @handles_faults
    async def AuthenticateApiKey(self, request, context):
        """Who the Authorization header the gateway gave another public service (webhooks, payments)
        belongs to. Never from the ledger's own key cache: the caller caches for at most 5 s, so a
        revoked key stops working there within 5 s."""
        if len(request.authorization) > MAX_AUTHORIZATION:
            raise Unauthenticated("malformed Authorization header: expected 'Bearer <key>'")
        principal = await self.ledger.store.principal_for_key(hash_api_key(bearer_token(request.authorization)))
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return ledger_pb2.ApiKeyPrincipal(
            key_id=principal.key_id, merchant_id=principal.merchant_id, scope=principal.scope,
            outlet_id=principal.outlet_id or "",
            merchant_outlet_ids=await self.ledger.store.merchant_outlet_ids(principal.merchant_id))

    @handles_faults
    async def RecordPayment(self, request, context):
        recorded = await self.ledger.payments.record(request.merchant_id, request.outlet_id, request.invoice_id,
                                                     request.client_invoice_id, _payment_input(request.payment))
        if recorded.invoice is None:
            return ledger_pb2.RecordPaymentResponse(invoice_found=False)
        return ledger_pb2.RecordPaymentResponse(invoice_found=True, invoice_id=recorded.invoice.id,
                                                payment_status=recorded.view.payment_status if recorded.view else "")

    @handles_faults
    async def SealSaleForPayment(self, request, context):
        if not request.HasField("sale"):
            raise InvalidArgument("sale is required", field="sale")
        record = await self.ledger.payments.seal_sale(request.merchant_id, sale_request(request.sale),
                                                      _payment_input(request.payment))
        [message] = await invoice_messages(self.ledger, [record])
        return message

    @handles_faults
    async def FindInvoice(self, request, context):
        record = await self.ledger.payments.find(request.merchant_id, request.outlet_id, request.invoice_id,
                                                 request.client_invoice_id)
        if record is None:
            return ledger_pb2.FoundInvoice(found=False)
        return ledger_pb2.FoundInvoice(found=True, invoice_id=record.id, outlet_id=record.outlet_id,
                                       client_invoice_id=record.client_invoice_id,
                                       total=record.invoice_body().total, currency=record.currency, kind=record.kind)


    @handles_faults
    async def CheckSale(self, request, context):
        if not request.HasField("sale"):
            raise InvalidArgument("sale is required", field="sale")
        checked = await self.ledger.payments.check_sale(request.merchant_id, sale_request(request.sale),
                                                        _payment_input(request.payment))
        return ledger_pb2.CheckedSale(total=checked.total, currency=checked.currency, amount_due=checked.amount_due)


def _payment_input(payment: ledger_pb2.PaymentRecord) -> PaymentInput:
    return PaymentInput(
        payment_id=payment.payment_id, method=payment.method, provider_reference=payment.provider_reference,
        amount=payment.amount, currency=payment.currency, phone_masked=payment.phone_masked, status=payment.status,
        confirmed_at=payment.confirmed_at.ToDatetime(tzinfo=UTC) if payment.HasField("confirmed_at") else None,
        amount_mismatch=payment.amount_mismatch)
