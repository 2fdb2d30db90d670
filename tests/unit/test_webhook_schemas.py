"""The webhook payload contract: docs/webhooks/schemas/*.json (one JSON Schema, draft 2020-12, per event type)
and the example envelopes of docs/webhooks.md.

`jsonschema` is not a dependency of the project, so the schemas are checked by hand: a small validator below
implements exactly the keywords the schemas use and refuses any other, so a schema cannot lean on a keyword
that goes unchecked here. When `jsonschema` is installed, the schemas and examples also go through it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.ledger import receipt
from services.ledger.sealing import CreditNoteRequest
from tests.unit.fakes import ADMIN_KEY, MERCHANT, Rig, sale

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "docs" / "webhooks" / "schemas"
DOC = ROOT / "docs" / "webhooks.md"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
# The catalogue of docs/webhooks-design (services/webhooks/event_types.py, when present, is checked too).
EVENT_TYPES = ("invoice.sealed", "invoice.sync.success", "invoice.sync.failed", "report.generated",
               "outlet.offline_alert", "payment.confirmed", "payment.failed", "webhook.test")
ENVELOPE_KEYS = ["id", "type", "timestamp", "merchant_id", "outlet_id", "data"]
MAX_ENVELOPE_BYTES = 262_144

try:  # optional: a second opinion when installed
    import jsonschema  # type: ignore[import-untyped, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema = None


def load_schemas() -> dict[str, dict]:
    return {path.name.removesuffix(".json"): json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))}


SCHEMAS = load_schemas()


def doc_examples() -> dict[str, list[dict]]:
    """The ```json block right under each `### <event type>` heading of docs/webhooks.md."""
    examples: dict[str, list[dict]] = {}
    for section in re.split(r"^### ", DOC.read_text(), flags=re.MULTILINE)[1:]:
        heading, _, body = section.partition("\n")
        body = re.split(r"^#{1,3} ", body, flags=re.MULTILINE)[0]
        block = re.search(r"^```json\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)
        if heading.strip() in EVENT_TYPES and block:
            examples.setdefault(heading.strip(), []).append(json.loads(block.group(1)))
    return examples


EXAMPLES = doc_examples()


# ---- A validator for the subset of JSON Schema 2020-12 the schemas use ----

ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs"}
ASSERTIONS = {"type", "properties", "required", "additionalProperties", "const", "enum", "pattern", "minLength",
              "maxLength", "minimum", "anyOf", "$ref", "if", "then", "else"}
JSON_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def check_schema(node: Any, root: dict, where: str = "#") -> None:
    """Structure by hand: known keywords only, each with a well-formed value, every $ref resolving."""
    assert isinstance(node, dict), f"{where}: a schema is an object"
    unknown = set(node) - ANNOTATIONS - ASSERTIONS
    assert not unknown, f"{where}: keywords the hand validator does not implement: {sorted(unknown)}"
    for key, value in node.items():
        at = f"{where}/{key}"
        if key == "type":
            names = [value] if isinstance(value, str) else value
            assert isinstance(names, list) and names and set(names) <= JSON_TYPES, at
        elif key in ("properties", "$defs"):
            assert isinstance(value, dict), at
            for name, sub in value.items():
                check_schema(sub, root, f"{at}/{name}")
        elif key == "required":
            assert isinstance(value, list) and all(isinstance(v, str) for v in value) and len(set(value)) == len(value), at
            assert set(value) <= set(node.get("properties", {})), f"{at}: requires a property it does not define"
        elif key == "additionalProperties":
            assert isinstance(value, bool), at
        elif key == "enum":
            assert isinstance(value, list) and value and len({json.dumps(v) for v in value}) == len(value), at
        elif key == "pattern":
            assert isinstance(value, str) and value.startswith("^") and value.endswith("$"), f"{at}: anchored"
            re.compile(value)
        elif key in ("minLength", "maxLength", "minimum"):
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, at
        elif key == "anyOf":
            assert isinstance(value, list) and value, at
            for index, sub in enumerate(value):
                check_schema(sub, root, f"{at}/{index}")
        elif key in ("if", "then", "else"):
            check_schema(value, root, at)
        elif key == "$ref":
            resolve(value, root)
        elif key in ("title", "description", "$id", "$schema"):
            assert isinstance(value, str) and value, at
    if "then" in node or "else" in node:
        assert "if" in node, f"{where}: then/else without if"


def resolve(ref: str, root: dict) -> dict:
    assert ref.startswith("#/$defs/"), f"only local $defs references: {ref}"
    return root["$defs"][ref.removeprefix("#/$defs/")]


def errors(instance: Any, node: dict, root: dict, where: str = "$") -> list[str]:
    """What is wrong with `instance` under `node` (empty: valid)."""
    found: list[str] = []
    if "$ref" in node:
        found += errors(instance, resolve(node["$ref"], root), root, where)
    if "type" in node:
        names = [node["type"]] if isinstance(node["type"], str) else node["type"]
        if not any(is_type(instance, name) for name in names):
            return found + [f"{where}: {json.dumps(instance)[:60]} is not {'/'.join(names)}"]
    if "const" in node and not same(instance, node["const"]):
        found.append(f"{where}: must be {json.dumps(node['const'])}")
    if "enum" in node and not any(same(instance, v) for v in node["enum"]):
        found.append(f"{where}: {json.dumps(instance)[:60]} is not one of {node['enum']}")
    if isinstance(instance, str):
        if "pattern" in node and not re.search(node["pattern"], instance):
            found.append(f"{where}: {instance!r} does not match {node['pattern']}")
        if len(instance) < node.get("minLength", 0) or len(instance) > node.get("maxLength", len(instance)):
            found.append(f"{where}: length {len(instance)} out of bounds")
    if is_type(instance, "number") and "minimum" in node and instance < node["minimum"]:
        found.append(f"{where}: below {node['minimum']}")
    if isinstance(instance, dict):
        properties = node.get("properties", {})
        for name in node.get("required", []):
            if name not in instance:
                found.append(f"{where}: {name} is required")
        for name, value in instance.items():
            if name in properties:
                found += errors(value, properties[name], root, f"{where}.{name}")
            elif node.get("additionalProperties") is False:
                found.append(f"{where}: {name} is not allowed")
    if "anyOf" in node and all(errors(instance, sub, root, where) for sub in node["anyOf"]):
        found.append(f"{where}: matches none of anyOf")
    if "if" in node:
        branch = node.get("then") if not errors(instance, node["if"], root, where) else node.get("else")
        if branch is not None:
            found += errors(instance, branch, root, where)
    return found


def is_type(value: Any, name: str) -> bool:
    return {
        "object": isinstance(value, dict), "array": isinstance(value, list), "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool), "null": value is None,
    }[name]


def same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def validate(event_type: str, envelope: dict) -> list[str]:
    schema = SCHEMAS[event_type]
    found = errors(envelope, schema, schema)
    if jsonschema is not None:
        other = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(envelope)]
        assert bool(other) == bool(found), f"hand validator {found} vs jsonschema {other}"
    return found


# ---- The schemas ----

def test_one_schema_per_event_type_and_one_example_each():
    assert sorted(SCHEMAS) == sorted(EVENT_TYPES)
    assert sorted(EXAMPLES) == sorted(EVENT_TYPES), "docs/webhooks.md: a `### <type>` section with a json example each"
    assert all(len(found) == 1 for found in EXAMPLES.values()), "one example per type"
    text = DOC.read_text()
    for event_type in EVENT_TYPES:
        assert f"(webhooks/schemas/{event_type}.json)" in text, f"the doc links {event_type}'s schema"


def test_the_catalogue_of_the_webhook_service_matches_when_it_exists():
    try:
        from services.webhooks import event_types
    except ImportError:
        pytest.skip("services/webhooks/event_types.py not written yet")
    assert sorted([*event_types.EVENT_TYPES, event_types.TEST_EVENT]) == sorted(EVENT_TYPES)
    assert event_types.MAX_ENVELOPE_BYTES == MAX_ENVELOPE_BYTES


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_is_a_well_formed_2020_12_envelope_schema(event_type):
    schema = SCHEMAS[event_type]
    assert schema["$schema"] == DRAFT_2020_12
    assert schema["$id"] == f"urn:fiscal-cloud:webhooks:{event_type}"
    check_schema(schema, schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ENVELOPE_KEYS and list(schema["properties"]) == ENVELOPE_KEYS
    assert schema["properties"]["type"] == {"const": event_type}
    data = schema["properties"]["data"]
    # Every field is always present (null when it does not apply), so required lists them all.
    assert data["type"] == "object" and data["additionalProperties"] is False
    assert data["required"] == list(data["properties"])
    if jsonschema is not None:
        jsonschema.Draft202012Validator.check_schema(schema)


def test_the_envelope_part_is_the_same_in_every_schema():
    def shared(schema: dict) -> dict:
        properties = {k: v for k, v in schema["properties"].items() if k not in ("type", "outlet_id", "data")}
        return {**{k: v for k, v in schema.items() if k not in ("$id", "title", "description", "properties")},
                "properties": properties}

    first = shared(SCHEMAS[EVENT_TYPES[0]])
    for event_type in EVENT_TYPES[1:]:
        assert shared(SCHEMAS[event_type]) == first, event_type
    # Only webhook.test is about no outlet.
    for event_type in EVENT_TYPES:
        outlet = SCHEMAS[event_type]["properties"]["outlet_id"]
        assert (outlet.get("type") == "null") == (event_type == "webhook.test"), event_type


# ---- The examples of docs/webhooks.md ----

@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_doc_example_validates(event_type):
    [example] = EXAMPLES[event_type]
    assert example["type"] == event_type
    assert list(example) == ENVELOPE_KEYS, "the doc shows the envelope's fields in their documented order"
    assert validate(event_type, example) == []
    if example["outlet_id"] is not None and "outlet_id" in example["data"]:
        assert example["data"]["outlet_id"] == example["outlet_id"]
    wire = json.dumps(example, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
    assert len(wire) < 2048, "the doc says the largest event is under 2 KB"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_example_is_under_the_right_schema_only(event_type):
    # An example validates only against its own type's schema (the `type` const), so nothing passes by accident.
    [example] = EXAMPLES[event_type]
    for other in EVENT_TYPES:
        if other != event_type:
            assert validate(other, example) != [], (event_type, other)


def mutated(event_type: str, change) -> dict:
    example = json.loads(json.dumps(EXAMPLES[event_type][0]))
    change(example)
    return example


@pytest.mark.parametrize(("event_type", "change", "complaint"), [
    ("invoice.sealed", lambda e: e.pop("data"), "data is required"),
    ("invoice.sealed", lambda e: e.__setitem__("extra", 1), "extra is not allowed"),
    ("invoice.sealed", lambda e: e["data"].pop("fiscal_number"), "fiscal_number is required"),
    ("invoice.sealed", lambda e: e["data"].__setitem__("total", "-5.00"), "does not match"),
    ("invoice.sealed", lambda e: e["data"].__setitem__("original_invoice_id", e["id"]), "is not null"),
    ("invoice.sealed", lambda e: e["data"].__setitem__("kind", "credit_note"), "is not string"),
    ("invoice.sealed", lambda e: e.__setitem__("merchant_id", e["merchant_id"].upper()), "does not match"),
    ("invoice.sealed", lambda e: e.__setitem__("timestamp", "2026-11-25T10:00:00Z"), "does not match"),
    ("invoice.sealed", lambda e: e.__setitem__("outlet_id", None), "is not string"),
    ("report.generated", lambda e: e["data"].__setitem__("kind", "x"), "is not string"),
    ("report.generated", lambda e: e["data"].__setitem__("drafts_waiting", -1), "below 0"),
    ("payment.confirmed", lambda e: e["data"].__setitem__("provider", "paypal"), "is not one of"),
    ("payment.failed", lambda e: e["data"].__setitem__("status", "confirmed"), "is not one of"),
    ("outlet.offline_alert", lambda e: e["data"].__setitem__("draft_count", True), "is not integer"),
    ("webhook.test", lambda e: e.__setitem__("outlet_id", e["merchant_id"]), "is not null"),
    ("webhook.test", lambda e: e["data"].__setitem__("message", ""), "out of bounds"),
])
def test_the_schemas_refuse_wrong_envelopes(event_type, change, complaint):
    found = validate(event_type, mutated(event_type, change))
    assert any(complaint in line for line in found), found


# ---- invoice.sealed against what the ledger writes ----

async def sealed_events():
    """An invoice and a credit note sealed by the real Sealer (in-memory fakes), with their outbox events."""
    rig = Rig()
    invoice = await rig.sealer.seal_invoice(ADMIN_KEY, sale("doc-sale-1"))
    note = await rig.sealer.create_credit_note(ADMIN_KEY, CreditNoteRequest(
        original_invoice_id=invoice.id, client_invoice_id="doc-refund-1", pos_terminal_id="T1", cashier_id="C1",
        reason="returned"))
    events = {event.aggregate_id: event for event in rig.store.events}
    return [(invoice, events[invoice.id]), (note, events[note.id])]


def envelope_of(record, event) -> dict:
    """The envelope the webhook service builds from an outbox event (docs/webhooks-design: envelope)."""
    return {"id": event.event_id, "type": event.event_type, "timestamp": receipt.format_timestamp(record.sealed_at),
            "merchant_id": event.merchant_id, "outlet_id": outlet_of(record, event), "data": event.payload}


def outlet_of(record, event) -> str | None:
    """The envelope's outlet: the outbox event's own (the relay sends it), else the record's (older ledger)."""
    return getattr(event, "outlet_id", record.outlet_id)


async def test_invoice_sealed_example_has_exactly_the_keys_sealed_event_writes():
    [example] = EXAMPLES["invoice.sealed"]
    for _record, event in await sealed_events():
        assert event.event_type == "invoice.sealed"
        assert sorted(event.payload) == sorted(example["data"])
        assert sorted(event.payload) == sorted(SCHEMAS["invoice.sealed"]["properties"]["data"]["properties"])


async def test_what_the_ledger_writes_validates_for_an_invoice_and_a_credit_note():
    (invoice, invoice_event), (note, note_event) = await sealed_events()
    assert invoice_event.merchant_id == MERCHANT
    assert validate("invoice.sealed", envelope_of(invoice, invoice_event)) == []
    assert validate("invoice.sealed", envelope_of(note, note_event)) == []
    assert (invoice_event.payload["kind"], invoice_event.payload["original_invoice_id"]) == ("invoice", None)
    assert (note_event.payload["kind"], note_event.payload["original_invoice_id"]) == ("credit_note", invoice.id)


async def test_the_webhook_service_envelope_validates_when_it_exists():
    try:
        from services.webhooks.event_types import envelope_bytes
    except ImportError:
        pytest.skip("services/webhooks/event_types.py not written yet")
    for record, event in await sealed_events():
        wire = envelope_bytes(event.event_id, event.event_type, record.sealed_at, event.merchant_id,
                              outlet_of(record, event), event.payload)
        assert validate("invoice.sealed", json.loads(wire)) == []
        assert wire == json.dumps(json.loads(wire), separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def test_the_python_receiver_of_the_doc_compiles():
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert blocks and any("standardwebhooks" in block for block in blocks)
    for block in blocks:
        compile(block, "docs/webhooks.md", "exec")
