"""`fiscal keys list|rotate`: the signing keys, through the signing service."""

from __future__ import annotations

import grpc
from fiscal.v1 import signing_pb2, signing_pb2_grpc
from rich.table import Table

from services.cli.output import console
from services.cli.state import read_state
from services.runtime.channels import grpc_target


def run_keys(args) -> int:
    address = args.signing_addr or read_state(args.data_dir)["signing_addr"]
    with grpc.insecure_channel(grpc_target(address)) as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        if args.keys_command == "rotate":
            key = stub.RotateKey(signing_pb2.RotateKeyRequest(), timeout=30)
            console.print(f"new active key [bold]{key.kid}[/] ({key.backend}); the previous key is retired and "
                          "stays published, so its receipts keep verifying")
            return 0
        keys = stub.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=10).keys
    table = Table("kid", "status", "backend", "created", "retired")
    for key in keys:
        table.add_row(key.kid, key.status, key.backend,
                      key.created_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("created_at") else "",
                      key.retired_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("retired_at") else "")
    console.print(table)
    return 0
