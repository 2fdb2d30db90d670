"""The dashboard's path: gRPC-web through Envoy to the same services the REST API uses."""

from __future__ import annotations

import struct

import httpx
from fiscal.v1 import ledger_pb2

from tests.harness import auth, provision


def grpc_web_call(gateway: str, method: str, request, response_type, headers=None):
    body = request.SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(body)) + body
    answer = httpx.post(f"{gateway}/fiscal.v1.InvoiceService/{method}", content=frame, timeout=30,
                        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1",
                                 "origin": "http://dashboard.example", **(headers or {})})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == "http://dashboard.example"
    message, trailers, data = None, {}, answer.content
    while data:
        flag, length = data[0], struct.unpack(">I", data[1:5])[0]
        payload, data = data[5:5 + length], data[5 + length:]
        if flag & 0x80:  # the trailers frame
            for line in payload.decode().strip().split("\r\n"):
                key, _, value = line.partition(":")
                trailers[key.strip().lower()] = value.strip()
        else:
            message = response_type.FromString(payload)
    trailers.update({k: v for k, v in answer.headers.items() if k in ("grpc-status", "grpc-message")})
    return message, trailers


def test_grpc_web_reads_keys_and_invoices_and_reports_errors(mesh):
    keys, trailers = grpc_web_call(mesh.gateway_url, "ListKeys", ledger_pb2.ListKeysRequest(), ledger_pb2.KeySet)
    assert trailers["grpc-status"] == "0" and keys.keys[0].kty == "EC"
    merchant = provision(mesh, outlets=1, terminals=1)
    listed, trailers = grpc_web_call(mesh.gateway_url, "ListInvoices", ledger_pb2.ListInvoicesRequest(),
                                     ledger_pb2.ListInvoicesResponse, headers=auth(merchant["read_key"]))
    assert trailers["grpc-status"] == "0" and list(listed.invoices) == []
    _, trailers = grpc_web_call(mesh.gateway_url, "ListInvoices", ledger_pb2.ListInvoicesRequest(),
                                ledger_pb2.ListInvoicesResponse)
    assert trailers["grpc-status"] == "16" and "API key" in trailers["grpc-message"]
