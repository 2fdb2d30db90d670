"""The webhooks service's gRPC layer: authentication, scope checks, bounds, protobuf in and out.

Public calls (WebhookService, from the gateway) carry the caller's `authorization` metadata: the ledger
says whose key it is (services/runtime/api_key_principal.py). Every query is filtered by the key's merchant, so another
merchant's endpoint or delivery id is NOT_FOUND, exactly like an id that does not exist.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import grpc
import structlog
from fiscal.v1 import webhooks_pb2, webhooks_pb2_grpc

from services.runtime.api_key_principal import ApiKeyAuthenticator, Principal
from services.runtime.faults import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.grpc_errors import handles_faults
from services.runtime.position_tokens import page_token, parse_page_token
from services.runtime.secret_box import SecretBox
from services.runtime.timestamps import to_timestamp as _timestamp
from services.webhooks import endpoint_rules as rules
from services.webhooks.address_guard import AddressPolicy, ParsedUrl, Resolver, check_url, resolve_and_check
from services.webhooks.event_types import EVENT_TYPES, TEST_EVENT, bounded_envelope_bytes, envelope_bytes
from services.webhooks.signatures import new_secret
from services.webhooks.store import Delivery, Endpoint, NewEvent, WebhookStore

log = structlog.get_logger()

MAX_EVENTS_PER_PUBLISH = 500
MAX_MERCHANT_ID_LENGTH = 128
MAX_OUTLET_ID_LENGTH = 128


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None



def endpoint_message(endpoint: Endpoint, secret: str = "") -> webhooks_pb2.WebhookEndpoint:
    return webhooks_pb2.WebhookEndpoint(
        id=endpoint.id, url=endpoint.url, description=endpoint.description, event_types=endpoint.event_types,
        outlet_ids=endpoint.outlet_ids, disabled=endpoint.disabled, disabled_reason=endpoint.disabled_reason or "",
        secret=secret, previous_secret_expires_at=_timestamp(endpoint.previous_secret_expires_at),
        created_at=_timestamp(endpoint.created_at), updated_at=_timestamp(endpoint.updated_at))


def delivery_message(delivery: Delivery) -> webhooks_pb2.WebhookDelivery:
    return webhooks_pb2.WebhookDelivery(
        id=delivery.id, endpoint_id=delivery.endpoint_id, event_id=delivery.event_id,
        event_type=delivery.event_type, outlet_id=delivery.outlet_id, status=delivery.status,
        attempt_count=delivery.attempt_count, next_attempt_at=_timestamp(delivery.next_attempt_at),
        created_at=_timestamp(delivery.created_at), completed_at=_timestamp(delivery.completed_at),
        attempts=[webhooks_pb2.WebhookAttempt(
            number=a.number, started_at=_timestamp(a.started_at), http_status=a.http_status,
            latency_ms=a.latency_ms, response_excerpt=a.response_excerpt, error=a.error, resend=a.resend)
            for a in delivery.attempts])


class WebhookServicer(webhooks_pb2_grpc.WebhookServiceServicer):
    def __init__(self, authenticator: ApiKeyAuthenticator, store: WebhookStore, secret_box: SecretBox,
                 address_policy: AddressPolicy, default_overlap_seconds: int, resolver: Resolver | None = None):
        self.authenticator = authenticator
        self.store = store
        self.secret_box = secret_box
        self.address_policy = address_policy
        self.default_overlap_seconds = default_overlap_seconds
        self.resolver = resolver

    async def _looker(self, context) -> Principal:
        principal = await self.authenticator.authenticate(_authorization(context))
        principal.require_look()
        return principal

    async def _changer(self, context) -> Principal:
        principal = await self.authenticator.authenticate(_authorization(context))
        principal.require_change()
        return principal

    async def _checked_url(self, url: str) -> ParsedUrl:
        """Syntax, scheme and every address the host resolves to (address_guard): UrlRefused is a 400."""
        parsed = check_url(url, self.address_policy)
        await resolve_and_check(parsed, self.address_policy, self.resolver)
        return parsed

    async def _endpoint(self, principal: Principal, endpoint_id: str, field: str = "id") -> Endpoint:
        endpoint = await self.store.get_endpoint(principal.merchant_id, rules.parse_id(endpoint_id, field))
        if endpoint is None:
            raise NotFound("webhook endpoint not found")
        return endpoint

    @handles_faults
    async def CreateWebhookEndpoint(self, request, context):
        principal = await self._changer(context)
        event_types = rules.validate_event_types(list(request.event_types))
        description = rules.validate_description(request.description)
        outlet_ids = rules.validate_outlet_ids(list(request.outlet_ids), principal.merchant_outlet_ids)
        parsed = await self._checked_url(request.url)
        endpoint_id = str(uuid.uuid4())
        secret = new_secret()
        endpoint = await self.store.create_endpoint(
            endpoint_id, principal.merchant_id, parsed.url, description, event_types, outlet_ids,
            self.secret_box.seal(secret, endpoint_id.encode()))
        log.info("webhook endpoint created", endpoint_id=endpoint_id, merchant_id=principal.merchant_id)
        return endpoint_message(endpoint, secret=secret)

    @handles_faults
    async def ListWebhookEndpoints(self, request, context):
        principal = await self._looker(context)
        page_size = rules.validate_page_size(request.page_size)
        after = parse_page_token(request.page_token) or 0
        endpoints = await self.store.list_endpoints(principal.merchant_id, after, page_size + 1)
        more = len(endpoints) > page_size
        endpoints = endpoints[:page_size]
        return webhooks_pb2.ListWebhookEndpointsResponse(
            endpoints=[endpoint_message(e) for e in endpoints],
            next_page_token=page_token(endpoints[-1].seq) if more else "")

    @handles_faults
    async def GetWebhookEndpoint(self, request, context):
        principal = await self._looker(context)
        return endpoint_message(await self._endpoint(principal, request.id))

    @handles_faults
    async def UpdateWebhookEndpoint(self, request, context):
        principal = await self._changer(context)
        endpoint_id = rules.parse_id(request.id)
        changes: dict = {}
        if request.HasField("event_types"):
            changes["event_types"] = rules.validate_event_types(list(request.event_types))
        if request.HasField("outlet_ids"):
            changes["outlet_ids"] = rules.validate_outlet_ids(list(request.outlet_ids), principal.merchant_outlet_ids)
        if request.HasField("description"):
            changes["description"] = rules.validate_description(request.description)
        if request.HasField("disabled"):
            changes["disabled"] = request.disabled
        if request.HasField("url"):
            changes["url"] = (await self._checked_url(request.url)).url
        if changes:
            endpoint = await self.store.update_endpoint(principal.merchant_id, endpoint_id, **changes)
        else:
            endpoint = await self.store.get_endpoint(principal.merchant_id, endpoint_id)
        if endpoint is None:
            raise NotFound("webhook endpoint not found")
        if "disabled" in changes:
            log.info("webhook endpoint enabled" if not request.disabled else "webhook endpoint disabled by hand",
                     endpoint_id=endpoint_id, merchant_id=principal.merchant_id)
        return endpoint_message(endpoint)

    @handles_faults
    async def DeleteWebhookEndpoint(self, request, context):
        principal = await self._changer(context)
        endpoint_id = rules.parse_id(request.id)
        if not await self.store.delete_endpoint(principal.merchant_id, endpoint_id):
            raise NotFound("webhook endpoint not found")
        log.info("webhook endpoint deleted", endpoint_id=endpoint_id, merchant_id=principal.merchant_id)
        return webhooks_pb2.DeleteWebhookEndpointResponse()

    @handles_faults
    async def RotateWebhookSecret(self, request, context):
        principal = await self._changer(context)
        endpoint_id = rules.parse_id(request.id)
        overlap = rules.validate_overlap_seconds(request.overlap_seconds, default=self.default_overlap_seconds)
        secret = new_secret()
        expires_at = await self.store.rotate_secret(principal.merchant_id, endpoint_id,
                                                    self.secret_box.seal(secret, endpoint_id.encode()), overlap)
        if expires_at is None:
            raise NotFound("webhook endpoint not found")
        log.info("webhook secret rotated", endpoint_id=endpoint_id, merchant_id=principal.merchant_id,
                 overlap_seconds=overlap)
        return webhooks_pb2.RotateWebhookSecretResponse(secret=secret, previous_secret_expires_at=_timestamp(expires_at))

    @handles_faults
    async def SendTestEvent(self, request, context):
        principal = await self._changer(context)
        endpoint = await self._endpoint(principal, request.id)
        if endpoint.disabled:
            raise FailedPrecondition("the endpoint is disabled: enable it (disabled: false) to send it a test event")
        event_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        body = envelope_bytes(event_id, TEST_EVENT, now, principal.merchant_id, None,
                              {"endpoint_id": endpoint.id, "message": "A test event from Fiscal Cloud."})
        delivery = await self.store.create_test_delivery(
            principal.merchant_id, endpoint.id, NewEvent(event_id, TEST_EVENT, principal.merchant_id, None, now, body))
        if delivery is None:  # deleted meanwhile
            raise NotFound("webhook endpoint not found")
        return delivery_message(delivery)

    @handles_faults
    async def ListWebhookDeliveries(self, request, context):
        principal = await self._looker(context)
        endpoint = await self._endpoint(principal, request.endpoint_id, "endpoint_id")
        status = rules.validate_status_filter(request.status)
        event_type = rules.validate_event_type_filter(request.event_type)
        page_size = rules.validate_page_size(request.page_size)
        before = parse_page_token(request.page_token)
        deliveries = await self.store.list_deliveries(principal.merchant_id, endpoint.id, status=status,
                                                      event_type=event_type, before_seq=before, limit=page_size + 1)
        more = len(deliveries) > page_size
        deliveries = deliveries[:page_size]
        return webhooks_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_message(d) for d in deliveries],
            next_page_token=page_token(deliveries[-1].seq) if more else "")

    @handles_faults
    async def GetWebhookDelivery(self, request, context):
        principal = await self._looker(context)
        delivery = await self.store.get_delivery(principal.merchant_id, rules.parse_id(request.id))
        if delivery is None:
            raise NotFound("webhook delivery not found")
        return delivery_message(delivery)

    @handles_faults
    async def ResendWebhookDelivery(self, request, context):
        principal = await self._changer(context)
        delivery = await self.store.resend(principal.merchant_id, rules.parse_id(request.id))
        if delivery is None:
            raise NotFound("webhook delivery not found")
        return delivery_message(delivery)

    @handles_faults
    async def ResendFailedWebhookDeliveries(self, request, context):
        principal = await self._changer(context)
        endpoint = await self._endpoint(principal, request.endpoint_id, "endpoint_id")
        if not request.HasField("since"):
            raise InvalidArgument("since is required (RFC 3339)", field="since")
        try:
            since = request.since.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument("since is out of range", field="since") from None
        resent = await self.store.resend_failed(principal.merchant_id, endpoint.id, since)
        return webhooks_pb2.ResendFailedWebhookDeliveriesResponse(resent_count=resent)

    @handles_faults
    async def ListWebhookEventTypes(self, request, context):
        await self._looker(context)
        return webhooks_pb2.ListWebhookEventTypesResponse(event_types=[
            webhooks_pb2.WebhookEventType(type=name, description=text) for name, text in EVENT_TYPES.items()])


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _event(index: int, event: webhooks_pb2.OutboxEvent) -> NewEvent:
    """One producer event, checked and turned into its stored envelope. A malformed event is the
    producer's bug: INVALID_ARGUMENT naming it (the relay keeps it and logs; nothing is half-stored)."""
    where = f"events[{index}]"
    event_id = rules.parse_id(event.event_id, f"{where}.event_id")
    if event.event_type not in EVENT_TYPES:
        raise InvalidArgument(f"{where}.event_type is not a publishable event type", field=f"{where}.event_type")
    if not event.merchant_id or len(event.merchant_id) > MAX_MERCHANT_ID_LENGTH:
        raise InvalidArgument(f"{where}.merchant_id must be 1-{MAX_MERCHANT_ID_LENGTH} characters",
                              field=f"{where}.merchant_id")
    if len(event.outlet_id) > MAX_OUTLET_ID_LENGTH:
        raise InvalidArgument(f"{where}.outlet_id is longer than {MAX_OUTLET_ID_LENGTH} characters",
                              field=f"{where}.outlet_id")
    if not event.HasField("occurred_at"):
        raise InvalidArgument(f"{where}.occurred_at is required", field=f"{where}.occurred_at")
    try:
        occurred_at = event.occurred_at.ToDatetime(tzinfo=UTC)
        data = json.loads(event.data_json or "{}", parse_constant=_reject_constant)
        if not isinstance(data, dict):
            raise ValueError("data_json is not a JSON object")
        envelope, truncated = bounded_envelope_bytes(event_id, event.event_type, occurred_at, event.merchant_id,
                                                     event.outlet_id or None, data)
    except (ValueError, OverflowError, RecursionError):
        raise InvalidArgument(f"{where}: occurred_at or data_json is malformed (data_json must be a JSON object)",
                              field=f"{where}.data_json") from None
    if truncated:
        log.warning("webhook event over 256 KB: its data is replaced by a truncation notice", event_id=event_id,
                    event_type=event.event_type)
    return NewEvent(event_id, event.event_type, event.merchant_id, event.outlet_id or None, occurred_at, envelope)


class WebhookIngestServicer(webhooks_pb2_grpc.WebhookIngestServiceServicer):
    def __init__(self, store: WebhookStore):
        self.store = store

    @handles_faults
    async def PublishEvents(self, request, context):
        if len(request.events) > MAX_EVENTS_PER_PUBLISH:
            raise InvalidArgument(f"at most {MAX_EVENTS_PER_PUBLISH} events per call", field="events")
        events: dict[str, NewEvent] = {}
        for index, event in enumerate(request.events):
            checked = _event(index, event)
            events.setdefault(checked.event_id, checked)  # the same event twice in one batch: once
        stored, deliveries = await self.store.publish_events(list(events.values()))
        return webhooks_pb2.PublishEventsResponse(stored=stored, deliveries=deliveries)
