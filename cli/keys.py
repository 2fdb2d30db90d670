"""`fiscal keys list|rotate|compromise`: the signing keys, through the signing service."""

from __future__ import annotations

import grpc
from fiscal.v1 import signing_pb2, signing_pb2_grpc
from rich.table import Table

from cli.output import console
from cli.state import operator_channel, read_state


def run_keys(args) -> int:
    address = args.signing_addr or read_state(args.data_dir)["signing_addr"]
    try:
        return _run_keys(args, address)
    except grpc.RpcError as error:
        # The signing service's refusal (e.g. the rotation limit) is the answer: one line, no traceback.
        code = error.code() if isinstance(error, grpc.Call) else None
        console.print(f"[red]fiscal keys {args.keys_command}: {code.name if code else 'error'}: "
                      f"{error.details() if isinstance(error, grpc.Call) else error}[/]", highlight=False)
        return 2 if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
                             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED) else 1


def _run_keys(args, address: str) -> int:
    with operator_channel(args, "signing", address) as channel:
        stub = signing_pb2_grpc.SigningServiceStub(channel)
        if args.keys_command == "compromise":
            return compromise_key(stub, args.kid, args.reason)
        if args.keys_command == "rotate":
            key = stub.RotateKey(signing_pb2.RotateKeyRequest(), timeout=30)
            console.print(f"new active key [bold]{key.kid}[/] ({key.backend}); the previous key is retired and "
                          "stays published, so its receipts keep verifying")
            return 0
        keys = stub.ListPublicKeys(signing_pb2.ListPublicKeysRequest(), timeout=10).keys
    table = Table("kid", "status", "backend", "created", "retired", "compromised")
    for key in keys:
        table.add_row(key.kid, key.status, key.backend,
                      key.created_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("created_at") else "",
                      key.retired_at.ToDatetime().isoformat(timespec="seconds") if key.HasField("retired_at") else "",
                      f"{key.compromised_at.ToDatetime().isoformat(timespec='seconds')}: {key.compromise_reason}"
                      if key.HasField("compromised_at") else "")
    console.print(table)
    return 0


def compromise_key(stub: signing_pb2_grpc.SigningServiceStub, kid: str | None, reason: str | None) -> int:
    if not kid or not (reason or "").strip():
        console.print("usage: fiscal keys compromise KID --reason TEXT")
        return 2
    key = stub.CompromiseKey(signing_pb2.CompromiseKeyRequest(kid=kid, reason=reason), timeout=30)
    console.print(f"key [bold]{key.kid}[/] is compromised since {key.compromised_at.ToDatetime().isoformat()}Z: "
                  "no receipt signed with it verifies any more; it stays published with this status"
                  " (if it was the active key, a new active key was created)")
    return 0
