import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentRecord(_message.Message):
    __slots__ = ("payment_id", "method", "provider_reference", "amount", "currency", "phone_masked", "status", "confirmed_at", "amount_mismatch")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PHONE_MASKED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    method: str
    provider_reference: str
    amount: str
    currency: str
    phone_masked: str
    status: str
    confirmed_at: _timestamp_pb2.Timestamp
    amount_mismatch: bool
    def __init__(self, payment_id: _Optional[str] = ..., method: _Optional[str] = ..., provider_reference: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., phone_masked: _Optional[str] = ..., status: _Optional[str] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., amount_mismatch: _Optional[bool] = ...) -> None: ...

class RecordPaymentRequest(_message.Message):
    __slots__ = ("merchant_id", "outlet_id", "invoice_id", "client_invoice_id", "payment")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    outlet_id: str
    invoice_id: str
    client_invoice_id: str
    payment: PaymentRecord
    def __init__(self, merchant_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., invoice_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., payment: _Optional[_Union[PaymentRecord, _Mapping]] = ...) -> None: ...

class RecordPaymentResponse(_message.Message):
    __slots__ = ("invoice_found", "invoice_id", "payment_status")
    INVOICE_FOUND_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    invoice_found: bool
    invoice_id: str
    payment_status: str
    def __init__(self, invoice_found: _Optional[bool] = ..., invoice_id: _Optional[str] = ..., payment_status: _Optional[str] = ...) -> None: ...

class SealSaleForPaymentRequest(_message.Message):
    __slots__ = ("merchant_id", "sale", "payment")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SALE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    sale: SealInvoiceRequest
    payment: PaymentRecord
    def __init__(self, merchant_id: _Optional[str] = ..., sale: _Optional[_Union[SealInvoiceRequest, _Mapping]] = ..., payment: _Optional[_Union[PaymentRecord, _Mapping]] = ...) -> None: ...

class FindInvoiceRequest(_message.Message):
    __slots__ = ("merchant_id", "outlet_id", "invoice_id", "client_invoice_id")
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    merchant_id: str
    outlet_id: str
    invoice_id: str
    client_invoice_id: str
    def __init__(self, merchant_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., invoice_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ...) -> None: ...

class FoundInvoice(_message.Message):
    __slots__ = ("found", "invoice_id", "outlet_id", "client_invoice_id", "total", "currency", "kind")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    invoice_id: str
    outlet_id: str
    client_invoice_id: str
    total: str
    currency: str
    kind: str
    def __init__(self, found: _Optional[bool] = ..., invoice_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., total: _Optional[str] = ..., currency: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class CheckedSale(_message.Message):
    __slots__ = ("total", "currency", "amount_due")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_DUE_FIELD_NUMBER: _ClassVar[int]
    total: str
    currency: str
    amount_due: str
    def __init__(self, total: _Optional[str] = ..., currency: _Optional[str] = ..., amount_due: _Optional[str] = ...) -> None: ...

class AuthenticateApiKeyRequest(_message.Message):
    __slots__ = ("authorization",)
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    authorization: str
    def __init__(self, authorization: _Optional[str] = ...) -> None: ...

class ApiKeyPrincipal(_message.Message):
    __slots__ = ("key_id", "merchant_id", "scope", "outlet_id", "merchant_outlet_ids")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_OUTLET_IDS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    merchant_id: str
    scope: str
    outlet_id: str
    merchant_outlet_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key_id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., scope: _Optional[str] = ..., outlet_id: _Optional[str] = ..., merchant_outlet_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("description", "quantity", "unit_price", "tax_group", "line_total", "sku")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    TAX_GROUP_FIELD_NUMBER: _ClassVar[int]
    LINE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    description: str
    quantity: str
    unit_price: str
    tax_group: str
    line_total: str
    sku: str
    def __init__(self, description: _Optional[str] = ..., quantity: _Optional[str] = ..., unit_price: _Optional[str] = ..., tax_group: _Optional[str] = ..., line_total: _Optional[str] = ..., sku: _Optional[str] = ...) -> None: ...

class PaymentLine(_message.Message):
    __slots__ = ("method", "amount", "reference", "payment_id", "status", "phone_masked", "confirmed_at", "amount_mismatch")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PHONE_MASKED_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    method: str
    amount: str
    reference: str
    payment_id: str
    status: str
    phone_masked: str
    confirmed_at: _timestamp_pb2.Timestamp
    amount_mismatch: bool
    def __init__(self, method: _Optional[str] = ..., amount: _Optional[str] = ..., reference: _Optional[str] = ..., payment_id: _Optional[str] = ..., status: _Optional[str] = ..., phone_masked: _Optional[str] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., amount_mismatch: _Optional[bool] = ...) -> None: ...

class Buyer(_message.Message):
    __slots__ = ("name", "tax_id", "phone", "email")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAX_ID_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    tax_id: str
    phone: str
    email: str
    def __init__(self, name: _Optional[str] = ..., tax_id: _Optional[str] = ..., phone: _Optional[str] = ..., email: _Optional[str] = ...) -> None: ...

class TaxTotal(_message.Message):
    __slots__ = ("tax_group", "label", "rate", "taxable_amount", "tax_amount", "gross_amount")
    TAX_GROUP_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    TAXABLE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TAX_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    GROSS_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    tax_group: str
    label: str
    rate: str
    taxable_amount: str
    tax_amount: str
    gross_amount: str
    def __init__(self, tax_group: _Optional[str] = ..., label: _Optional[str] = ..., rate: _Optional[str] = ..., taxable_amount: _Optional[str] = ..., tax_amount: _Optional[str] = ..., gross_amount: _Optional[str] = ...) -> None: ...

class FiscalBlock(_message.Message):
    __slots__ = ("fiscal_number", "outlet_code", "series", "counter", "fiscal_authority_id", "auth_code", "sealed_at", "sealed_at_local", "qr_code", "signature", "key_id", "body_digest", "prev_hash", "hash", "taxpayer_id", "time_zone")
    FISCAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OUTLET_CODE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    COUNTER_FIELD_NUMBER: _ClassVar[int]
    FISCAL_AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_CODE_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_LOCAL_FIELD_NUMBER: _ClassVar[int]
    QR_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    TAXPAYER_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    fiscal_number: str
    outlet_code: str
    series: str
    counter: int
    fiscal_authority_id: str
    auth_code: str
    sealed_at: _timestamp_pb2.Timestamp
    sealed_at_local: str
    qr_code: str
    signature: str
    key_id: str
    body_digest: str
    prev_hash: str
    hash: str
    taxpayer_id: str
    time_zone: str
    def __init__(self, fiscal_number: _Optional[str] = ..., outlet_code: _Optional[str] = ..., series: _Optional[str] = ..., counter: _Optional[int] = ..., fiscal_authority_id: _Optional[str] = ..., auth_code: _Optional[str] = ..., sealed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sealed_at_local: _Optional[str] = ..., qr_code: _Optional[str] = ..., signature: _Optional[str] = ..., key_id: _Optional[str] = ..., body_digest: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., taxpayer_id: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class Invoice(_message.Message):
    __slots__ = ("id", "merchant_id", "outlet_id", "client_invoice_id", "pos_terminal_id", "cashier_id", "kind", "status", "currency", "lines", "tax_totals", "total_taxable", "total_tax", "total", "payments", "payment_status", "buyer", "sold_at", "original_invoice_id", "reason", "fiscal", "created_at", "sync")
    ID_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TAX_TOTALS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TAXABLE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TAX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_STATUS_FIELD_NUMBER: _ClassVar[int]
    BUYER_FIELD_NUMBER: _ClassVar[int]
    SOLD_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FISCAL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    id: str
    merchant_id: str
    outlet_id: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    kind: str
    status: str
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    tax_totals: _containers.RepeatedCompositeFieldContainer[TaxTotal]
    total_taxable: str
    total_tax: str
    total: str
    payments: _containers.RepeatedCompositeFieldContainer[PaymentLine]
    payment_status: str
    buyer: Buyer
    sold_at: _timestamp_pb2.Timestamp
    original_invoice_id: str
    reason: str
    fiscal: FiscalBlock
    created_at: _timestamp_pb2.Timestamp
    sync: SyncBlock
    def __init__(self, id: _Optional[str] = ..., merchant_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., pos_terminal_id: _Optional[str] = ..., cashier_id: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., tax_totals: _Optional[_Iterable[_Union[TaxTotal, _Mapping]]] = ..., total_taxable: _Optional[str] = ..., total_tax: _Optional[str] = ..., total: _Optional[str] = ..., payments: _Optional[_Iterable[_Union[PaymentLine, _Mapping]]] = ..., payment_status: _Optional[str] = ..., buyer: _Optional[_Union[Buyer, _Mapping]] = ..., sold_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., original_invoice_id: _Optional[str] = ..., reason: _Optional[str] = ..., fiscal: _Optional[_Union[FiscalBlock, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sync: _Optional[_Union[SyncBlock, _Mapping]] = ...) -> None: ...

class SyncBlock(_message.Message):
    __slots__ = ("status", "attempts", "dgi_code", "dgi_uid", "reason", "synced_at", "dgi_error_code", "dgi_counters", "next_attempt_at")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DGI_CODE_FIELD_NUMBER: _ClassVar[int]
    DGI_UID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SYNCED_AT_FIELD_NUMBER: _ClassVar[int]
    DGI_ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    DGI_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    status: str
    attempts: int
    dgi_code: str
    dgi_uid: str
    reason: str
    synced_at: _timestamp_pb2.Timestamp
    dgi_error_code: str
    dgi_counters: str
    next_attempt_at: _timestamp_pb2.Timestamp
    def __init__(self, status: _Optional[str] = ..., attempts: _Optional[int] = ..., dgi_code: _Optional[str] = ..., dgi_uid: _Optional[str] = ..., reason: _Optional[str] = ..., synced_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dgi_error_code: _Optional[str] = ..., dgi_counters: _Optional[str] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SealInvoiceRequest(_message.Message):
    __slots__ = ("outlet_id", "client_invoice_id", "pos_terminal_id", "cashier_id", "currency", "lines", "payments", "buyer", "sold_at")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    BUYER_FIELD_NUMBER: _ClassVar[int]
    SOLD_AT_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    payments: _containers.RepeatedCompositeFieldContainer[PaymentLine]
    buyer: Buyer
    sold_at: str
    def __init__(self, outlet_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., pos_terminal_id: _Optional[str] = ..., cashier_id: _Optional[str] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., payments: _Optional[_Iterable[_Union[PaymentLine, _Mapping]]] = ..., buyer: _Optional[_Union[Buyer, _Mapping]] = ..., sold_at: _Optional[str] = ...) -> None: ...

class GetInvoiceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListInvoicesRequest(_message.Message):
    __slots__ = ("outlet_id", "pos_terminal_id", "cashier_id", "to", "status", "kind", "page_size", "page_token", "sync_status")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SYNC_STATUS_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    pos_terminal_id: str
    cashier_id: str
    to: str
    status: str
    kind: str
    page_size: int
    page_token: str
    sync_status: str
    def __init__(self, outlet_id: _Optional[str] = ..., pos_terminal_id: _Optional[str] = ..., cashier_id: _Optional[str] = ..., to: _Optional[str] = ..., status: _Optional[str] = ..., kind: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., sync_status: _Optional[str] = ..., **kwargs) -> None: ...

class ListInvoicesResponse(_message.Message):
    __slots__ = ("invoices", "next_page_token")
    INVOICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    invoices: _containers.RepeatedCompositeFieldContainer[Invoice]
    next_page_token: str
    def __init__(self, invoices: _Optional[_Iterable[_Union[Invoice, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateCreditNoteRequest(_message.Message):
    __slots__ = ("id", "client_invoice_id", "pos_terminal_id", "cashier_id", "reason", "lines")
    ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    id: str
    client_invoice_id: str
    pos_terminal_id: str
    cashier_id: str
    reason: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    def __init__(self, id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., pos_terminal_id: _Optional[str] = ..., cashier_id: _Optional[str] = ..., reason: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Jwk(_message.Message):
    __slots__ = ("kid", "kty", "crv", "x", "y", "alg", "use", "status", "created_at", "retired_at", "compromised_at", "compromise_reason")
    KID_FIELD_NUMBER: _ClassVar[int]
    KTY_FIELD_NUMBER: _ClassVar[int]
    CRV_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    ALG_FIELD_NUMBER: _ClassVar[int]
    USE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETIRED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPROMISED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPROMISE_REASON_FIELD_NUMBER: _ClassVar[int]
    kid: str
    kty: str
    crv: str
    x: str
    y: str
    alg: str
    use: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    retired_at: _timestamp_pb2.Timestamp
    compromised_at: _timestamp_pb2.Timestamp
    compromise_reason: str
    def __init__(self, kid: _Optional[str] = ..., kty: _Optional[str] = ..., crv: _Optional[str] = ..., x: _Optional[str] = ..., y: _Optional[str] = ..., alg: _Optional[str] = ..., use: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retired_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., compromised_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., compromise_reason: _Optional[str] = ...) -> None: ...

class KeySet(_message.Message):
    __slots__ = ("keys", "fiscal_authority_id")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    FISCAL_AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[Jwk]
    fiscal_authority_id: str
    def __init__(self, keys: _Optional[_Iterable[_Union[Jwk, _Mapping]]] = ..., fiscal_authority_id: _Optional[str] = ...) -> None: ...

class VerifyReceiptRequest(_message.Message):
    __slots__ = ("v", "fn", "fa", "ts", "tt", "cur", "d", "ac", "kid", "sg")
    V_FIELD_NUMBER: _ClassVar[int]
    FN_FIELD_NUMBER: _ClassVar[int]
    FA_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    TT_FIELD_NUMBER: _ClassVar[int]
    CUR_FIELD_NUMBER: _ClassVar[int]
    D_FIELD_NUMBER: _ClassVar[int]
    AC_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    SG_FIELD_NUMBER: _ClassVar[int]
    v: int
    fn: str
    fa: str
    ts: str
    tt: str
    cur: str
    d: str
    ac: str
    kid: str
    sg: str
    def __init__(self, v: _Optional[int] = ..., fn: _Optional[str] = ..., fa: _Optional[str] = ..., ts: _Optional[str] = ..., tt: _Optional[str] = ..., cur: _Optional[str] = ..., d: _Optional[str] = ..., ac: _Optional[str] = ..., kid: _Optional[str] = ..., sg: _Optional[str] = ...) -> None: ...

class VerifyReceiptResponse(_message.Message):
    __slots__ = ("valid", "reason", "fiscal_number", "fiscal_authority_id", "sealed_at", "total", "currency", "auth_code", "key_id", "registered", "outlet_name", "taxpayer_id", "key_status")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FISCAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    FISCAL_AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    AUTH_CODE_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    OUTLET_NAME_FIELD_NUMBER: _ClassVar[int]
    TAXPAYER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_STATUS_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: str
    fiscal_number: str
    fiscal_authority_id: str
    sealed_at: _timestamp_pb2.Timestamp
    total: str
    currency: str
    auth_code: str
    key_id: str
    registered: bool
    outlet_name: str
    taxpayer_id: str
    key_status: str
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[str] = ..., fiscal_number: _Optional[str] = ..., fiscal_authority_id: _Optional[str] = ..., sealed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total: _Optional[str] = ..., currency: _Optional[str] = ..., auth_code: _Optional[str] = ..., key_id: _Optional[str] = ..., registered: _Optional[bool] = ..., outlet_name: _Optional[str] = ..., taxpayer_id: _Optional[str] = ..., key_status: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("pos_terminal_id", "outlet_id", "cashier_id", "draft_count", "oldest_draft_age_seconds", "rejected_count", "sdk_version", "state")
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    DRAFT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_DRAFT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    pos_terminal_id: str
    outlet_id: str
    cashier_id: str
    draft_count: int
    oldest_draft_age_seconds: int
    rejected_count: int
    sdk_version: str
    state: str
    def __init__(self, pos_terminal_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., cashier_id: _Optional[str] = ..., draft_count: _Optional[int] = ..., oldest_draft_age_seconds: _Optional[int] = ..., rejected_count: _Optional[int] = ..., sdk_version: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("server_time", "offline_grace_seconds")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    offline_grace_seconds: int
    def __init__(self, server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offline_grace_seconds: _Optional[int] = ...) -> None: ...

class ListTerminalsRequest(_message.Message):
    __slots__ = ("outlet_id",)
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    def __init__(self, outlet_id: _Optional[str] = ...) -> None: ...

class Terminal(_message.Message):
    __slots__ = ("pos_terminal_id", "outlet_id", "last_cashier_id", "first_seen_at", "last_seen_at", "last_heartbeat_at", "draft_count", "oldest_draft_age_seconds", "state", "sdk_version", "last_seal_at")
    POS_TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_CASHIER_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AT_FIELD_NUMBER: _ClassVar[int]
    DRAFT_COUNT_FIELD_NUMBER: _ClassVar[int]
    OLDEST_DRAFT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_SEAL_AT_FIELD_NUMBER: _ClassVar[int]
    pos_terminal_id: str
    outlet_id: str
    last_cashier_id: str
    first_seen_at: _timestamp_pb2.Timestamp
    last_seen_at: _timestamp_pb2.Timestamp
    last_heartbeat_at: _timestamp_pb2.Timestamp
    draft_count: int
    oldest_draft_age_seconds: int
    state: str
    sdk_version: str
    last_seal_at: _timestamp_pb2.Timestamp
    def __init__(self, pos_terminal_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., last_cashier_id: _Optional[str] = ..., first_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., draft_count: _Optional[int] = ..., oldest_draft_age_seconds: _Optional[int] = ..., state: _Optional[str] = ..., sdk_version: _Optional[str] = ..., last_seal_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTerminalsResponse(_message.Message):
    __slots__ = ("terminals",)
    TERMINALS_FIELD_NUMBER: _ClassVar[int]
    terminals: _containers.RepeatedCompositeFieldContainer[Terminal]
    def __init__(self, terminals: _Optional[_Iterable[_Union[Terminal, _Mapping]]] = ...) -> None: ...

class GetChainHeadRequest(_message.Message):
    __slots__ = ("outlet_id", "series")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    series: str
    def __init__(self, outlet_id: _Optional[str] = ..., series: _Optional[str] = ...) -> None: ...

class ChainHead(_message.Message):
    __slots__ = ("last_number", "last_hash")
    LAST_NUMBER_FIELD_NUMBER: _ClassVar[int]
    LAST_HASH_FIELD_NUMBER: _ClassVar[int]
    last_number: int
    last_hash: str
    def __init__(self, last_number: _Optional[int] = ..., last_hash: _Optional[str] = ...) -> None: ...
