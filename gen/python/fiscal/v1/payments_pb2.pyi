import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import httpbody_pb2 as _httpbody_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from fiscal.v1 import ledger_pb2 as _ledger_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderCallback(_message.Message):
    __slots__ = ("token", "body")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    token: str
    body: _httpbody_pb2.HttpBody
    def __init__(self, token: _Optional[str] = ..., body: _Optional[_Union[_httpbody_pb2.HttpBody, _Mapping]] = ...) -> None: ...

class Payment(_message.Message):
    __slots__ = ("id", "outlet_id", "provider", "amount", "currency", "phone_masked", "status", "status_reason", "invoice_id", "client_invoice_id", "client_payment_id", "provider_reference", "provider_request_id", "confirmed_amount", "amount_mismatch", "payment_url", "sale_state", "created_at", "updated_at", "confirmed_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PHONE_MASKED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_REASON_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MISMATCH_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_URL_FIELD_NUMBER: _ClassVar[int]
    SALE_STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    outlet_id: str
    provider: str
    amount: str
    currency: str
    phone_masked: str
    status: str
    status_reason: str
    invoice_id: str
    client_invoice_id: str
    client_payment_id: str
    provider_reference: str
    provider_request_id: str
    confirmed_amount: str
    amount_mismatch: bool
    payment_url: str
    sale_state: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    confirmed_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., provider: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., phone_masked: _Optional[str] = ..., status: _Optional[str] = ..., status_reason: _Optional[str] = ..., invoice_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., client_payment_id: _Optional[str] = ..., provider_reference: _Optional[str] = ..., provider_request_id: _Optional[str] = ..., confirmed_amount: _Optional[str] = ..., amount_mismatch: _Optional[bool] = ..., payment_url: _Optional[str] = ..., sale_state: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., confirmed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePaymentRequest(_message.Message):
    __slots__ = ("outlet_id", "provider", "amount", "currency", "phone", "invoice_id", "client_invoice_id", "sale", "client_payment_id")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PHONE_FIELD_NUMBER: _ClassVar[int]
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    SALE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    provider: str
    amount: str
    currency: str
    phone: str
    invoice_id: str
    client_invoice_id: str
    sale: _ledger_pb2.SealInvoiceRequest
    client_payment_id: str
    def __init__(self, outlet_id: _Optional[str] = ..., provider: _Optional[str] = ..., amount: _Optional[str] = ..., currency: _Optional[str] = ..., phone: _Optional[str] = ..., invoice_id: _Optional[str] = ..., client_invoice_id: _Optional[str] = ..., sale: _Optional[_Union[_ledger_pb2.SealInvoiceRequest, _Mapping]] = ..., client_payment_id: _Optional[str] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListPaymentsRequest(_message.Message):
    __slots__ = ("invoice_id", "outlet_id", "status", "page_size", "page_token", "client_invoice_id")
    INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_INVOICE_ID_FIELD_NUMBER: _ClassVar[int]
    invoice_id: str
    outlet_id: str
    status: str
    page_size: int
    page_token: str
    client_invoice_id: str
    def __init__(self, invoice_id: _Optional[str] = ..., outlet_id: _Optional[str] = ..., status: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., client_invoice_id: _Optional[str] = ...) -> None: ...

class ListPaymentsResponse(_message.Message):
    __slots__ = ("payments", "next_page_token")
    PAYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    payments: _containers.RepeatedCompositeFieldContainer[Payment]
    next_page_token: str
    def __init__(self, payments: _Optional[_Iterable[_Union[Payment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MpesaSettings(_message.Message):
    __slots__ = ("consumer_key", "consumer_secret", "passkey", "short_code", "transaction_type", "till_number")
    CONSUMER_KEY_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_SECRET_FIELD_NUMBER: _ClassVar[int]
    PASSKEY_FIELD_NUMBER: _ClassVar[int]
    SHORT_CODE_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    TILL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    consumer_key: str
    consumer_secret: str
    passkey: str
    short_code: str
    transaction_type: str
    till_number: str
    def __init__(self, consumer_key: _Optional[str] = ..., consumer_secret: _Optional[str] = ..., passkey: _Optional[str] = ..., short_code: _Optional[str] = ..., transaction_type: _Optional[str] = ..., till_number: _Optional[str] = ...) -> None: ...

class AirtelSettings(_message.Message):
    __slots__ = ("client_id", "client_secret", "country", "callback_hash_secret")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_HASH_SECRET_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_secret: str
    country: str
    callback_hash_secret: str
    def __init__(self, client_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., country: _Optional[str] = ..., callback_hash_secret: _Optional[str] = ...) -> None: ...

class OrangeSettings(_message.Message):
    __slots__ = ("authorization_header", "merchant_key")
    AUTHORIZATION_HEADER_FIELD_NUMBER: _ClassVar[int]
    MERCHANT_KEY_FIELD_NUMBER: _ClassVar[int]
    authorization_header: str
    merchant_key: str
    def __init__(self, authorization_header: _Optional[str] = ..., merchant_key: _Optional[str] = ...) -> None: ...

class SetProviderSettingsRequest(_message.Message):
    __slots__ = ("outlet_id", "provider", "enabled", "api_base_url", "mpesa", "airtel", "orange", "callback_source_cidrs")
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    API_BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MPESA_FIELD_NUMBER: _ClassVar[int]
    AIRTEL_FIELD_NUMBER: _ClassVar[int]
    ORANGE_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_SOURCE_CIDRS_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    provider: str
    enabled: bool
    api_base_url: str
    mpesa: MpesaSettings
    airtel: AirtelSettings
    orange: OrangeSettings
    callback_source_cidrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, outlet_id: _Optional[str] = ..., provider: _Optional[str] = ..., enabled: _Optional[bool] = ..., api_base_url: _Optional[str] = ..., mpesa: _Optional[_Union[MpesaSettings, _Mapping]] = ..., airtel: _Optional[_Union[AirtelSettings, _Mapping]] = ..., orange: _Optional[_Union[OrangeSettings, _Mapping]] = ..., callback_source_cidrs: _Optional[_Iterable[str]] = ...) -> None: ...

class ProviderSettings(_message.Message):
    __slots__ = ("outlet_id", "provider", "enabled", "api_base_url", "credentials_hint", "settings", "callback_source_cidrs", "callback_urls", "updated_at")
    class CredentialsHintEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CallbackUrlsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    API_BASE_URL_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_HINT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_SOURCE_CIDRS_FIELD_NUMBER: _ClassVar[int]
    CALLBACK_URLS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    provider: str
    enabled: bool
    api_base_url: str
    credentials_hint: _containers.ScalarMap[str, str]
    settings: _containers.ScalarMap[str, str]
    callback_source_cidrs: _containers.RepeatedScalarFieldContainer[str]
    callback_urls: _containers.ScalarMap[str, str]
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, outlet_id: _Optional[str] = ..., provider: _Optional[str] = ..., enabled: _Optional[bool] = ..., api_base_url: _Optional[str] = ..., credentials_hint: _Optional[_Mapping[str, str]] = ..., settings: _Optional[_Mapping[str, str]] = ..., callback_source_cidrs: _Optional[_Iterable[str]] = ..., callback_urls: _Optional[_Mapping[str, str]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListProviderSettingsRequest(_message.Message):
    __slots__ = ("outlet_id",)
    OUTLET_ID_FIELD_NUMBER: _ClassVar[int]
    outlet_id: str
    def __init__(self, outlet_id: _Optional[str] = ...) -> None: ...

class ListProviderSettingsResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[ProviderSettings]
    def __init__(self, providers: _Optional[_Iterable[_Union[ProviderSettings, _Mapping]]] = ...) -> None: ...

class GetCallbackStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CallbackCount(_message.Message):
    __slots__ = ("provider", "outcome", "count")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    provider: str
    outcome: str
    count: int
    def __init__(self, provider: _Optional[str] = ..., outcome: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CallbackStats(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedCompositeFieldContainer[CallbackCount]
    def __init__(self, counts: _Optional[_Iterable[_Union[CallbackCount, _Mapping]]] = ...) -> None: ...
