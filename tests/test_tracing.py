"""One OpenTelemetry trace per seal, from Envoy through ledger, counter and signing to the database.

A real OTLP/gRPC collector runs in the test process; Envoy and every service export to it."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from stack.processes import free_port
from tests.harness import auth, provision, sale


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next((a.value.string_value for a in resource_spans.resource.attributes
                                if a.key == "service.name"), "")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append({
                            "service": service, "name": span.name, "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                            "attributes": {a.key: a.value.string_value or a.value.int_value for a in span.attributes},
                        })
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]


@pytest.fixture(scope="module")
def collector():
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    servicer.endpoint = f"127.0.0.1:{port}"
    yield servicer
    server.stop(grace=None)


@pytest.fixture
def traced_mesh(start_mesh, collector):
    # Every trace recorded (production samples 1 %: FISCAL_TRACES_SAMPLE_RATIO, Envoy and services alike).
    mesh = start_mesh(otlp_endpoint=collector.endpoint, env={"FISCAL_TRACES_SAMPLE_RATIO": "1.0"})
    yield mesh
    mesh.stop()  # while the collector still runs, so the exporters' final flush has somewhere to go


def test_span_tree_of_one_seal(traced_mesh, collector):
    mesh = traced_mesh
    merchant = provision(mesh, outlets=1, terminals=1)
    outlet = merchant["outlets"][0]
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    answer = httpx.post(f"{mesh.gateway_url}/v1/invoices", timeout=30,
                        json=sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0]),
                        headers={**auth(merchant["pos_keys"][outlet["id"]]),
                                 "traceparent": f"00-{trace_id}-{client_span}-01"})
    assert answer.status_code == 200, answer.text

    wanted = {"fiscal-gateway", "fiscal-ledger", "fiscal-counter", "fiscal-signing"}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spans = collector.trace(trace_id)
        names = {s["name"] for s in spans}
        if {s["service"] for s in spans} >= wanted and "/fiscal.v1.CounterService/Commit" in names \
                and "hsm.sign" in names:
            break
        time.sleep(0.25)
    spans = collector.trace(trace_id)
    by_id = {s["span_id"]: s for s in spans}

    def children(span, service=None, name=None):
        return [s for s in spans if s["parent"] == span["span_id"]
                and (service is None or s["service"] == service) and (name is None or s["name"] == name)]

    def one(candidates, what):
        assert len(candidates) == 1, f"expected one {what}, found {[(c['service'], c['name']) for c in candidates]}" \
                                     f" in {[(s['service'], s['name']) for s in spans]}"
        return candidates[0]

    # Envoy's span is the root of our trace, a child of the caller's span.
    gateway = one([s for s in spans if s["service"] == "fiscal-gateway"], "gateway span")
    assert gateway["parent"] == client_span
    ledger = one(children(gateway, "fiscal-ledger", "/fiscal.v1.InvoiceService/SealInvoice"), "ledger server span")
    allocate = one(children(ledger, "fiscal-ledger", "/fiscal.v1.CounterService/Allocate"), "Allocate call")
    sign = one(children(ledger, "fiscal-ledger", "/fiscal.v1.SigningService/Sign"), "Sign call")
    commit = one(children(ledger, "fiscal-ledger", "/fiscal.v1.CounterService/Commit"), "Commit call")
    insert = one(children(ledger, "fiscal-ledger", "ledger.insert_sealed"), "insert transaction")
    # Across the process boundary, W3C trace context made each callee's span a child of the call.
    counter_allocate = one(children(allocate, "fiscal-counter"), "counter's Allocate")
    signing = one(children(sign, "fiscal-signing"), "signing's Sign")
    one(children(commit, "fiscal-counter"), "counter's Commit")
    assert one(children(signing, "fiscal-signing", "hsm.sign"), "HSM span")["attributes"]["backend"] == "software"
    # The database writes are spans too: the invoice and its outbox event in the ledger's transaction,
    # and the counter's lease.
    statements = [s["attributes"].get("db.statement", "") for s in children(insert, "fiscal-ledger")]
    assert any("INSERT INTO ledger.invoices" in st for st in statements), statements
    assert any("INSERT INTO ledger.outbox" in st for st in statements), statements
    assert any(s["service"] == "fiscal-counter" and "counter." in s["attributes"].get("db.statement", "")
               for s in spans if s["parent"] in {counter_allocate["span_id"]} | {
                   c["span_id"] for c in children(counter_allocate)}), "counter's SQL not traced"
    # Every span of the seal is in this one trace and hangs off the gateway's span.
    for span in spans:
        node = span
        while node["parent"] in by_id:
            node = by_id[node["parent"]]
        assert node is gateway, f"{span['service']} {span['name']} is not under the gateway span"
