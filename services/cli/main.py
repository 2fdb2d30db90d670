"""The `fiscal` command line."""

from __future__ import annotations

import os

# `fiscal up` starts (and restarts) processes while it talks gRPC; they exec at once and need no
# fork handlers, which can abort a child when other threads are inside gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse  # noqa: E402
import asyncio
import json
import sys
from pathlib import Path

from services.cli.state import DEFAULT_DATA_DIR, async_url, database_url


def _merchant_create(args) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore
    from services.stack.seed import provision_merchant

    async def go() -> dict:
        engine = create_async_engine(async_url(database_url(args)))
        try:
            gateway = args.gateway or ""
            return await provision_merchant(LedgerStore(engine), name=args.name, code_prefix=args.code_prefix,
                                            outlets=args.outlets, terminals=args.terminals, cashiers=args.cashiers,
                                            currency=args.currency, time_zone=args.time_zone, public_url=gateway)
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(go()), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiscal", description="Fiscal Cloud: run the system, provision merchants, verify chains, benchmark.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  fiscal up                      # everything on http://127.0.0.1:8080\n"
               "  fiscal verify --outlet <id>    # re-check an outlet's chains\n"
               "  fiscal bench --outlets 100 --terminals 4 --duration 30")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="where the stack keeps its database, logs and demo.json (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start PostgreSQL, the services and Envoy; seed a demo merchant",
                             description="Start everything and wait; Ctrl-C or SIGTERM stops it all.")
    up.add_argument("--port", type=int, default=8080, help="public gateway port (default: %(default)s)")
    up.add_argument("--replicas", type=int, default=1, help="processes per service (default: %(default)s)")
    up.add_argument("--signing-backend", choices=["software", "pkcs11"], default="software",
                    help="software keystore, or SoftHSM2 through PKCS#11 (default: %(default)s)")
    up.add_argument("--otlp-endpoint", help="host:port of an OTLP/gRPC collector for traces")

    verify = commands.add_parser("verify", help="re-check an outlet's hash chains and signatures")
    verify.add_argument("--outlet", required=True, help="outlet id")
    verify.add_argument("--gateway", help="gateway URL for the public keys (default: the running stack's)")
    verify.add_argument("--database-url", help="PostgreSQL URL (default: DATABASE_URL or the running stack's)")

    keys = commands.add_parser("keys", help="list or rotate the signing keys")
    keys.add_argument("keys_command", choices=["list", "rotate"])
    keys.add_argument("--signing-addr", help="signing service address (default: the running stack's)")

    api_key = commands.add_parser("api-key", help="create, list or revoke a merchant's API keys",
                                  description="Keys are stored hashed: `create` prints the key once.")
    api_key.add_argument("api_key_command", choices=["create", "list", "revoke"])
    api_key.add_argument("--merchant-id", required=True)
    api_key.add_argument("--scope", choices=["merchant:admin", "outlet:pos", "merchant:read"],
                         help="with create")
    api_key.add_argument("--outlet-id", help="with create --scope outlet:pos")
    api_key.add_argument("--name", help="with create: a label (e.g. the till)")
    api_key.add_argument("--key-id", help="with revoke")
    api_key.add_argument("--database-url", help="PostgreSQL URL (default: the running stack's, or DATABASE_URL)")

    merchant = commands.add_parser("merchant", help="provision a merchant with outlets, terminals and API keys")
    merchant.add_argument("merchant_command", choices=["create"])
    merchant.add_argument("--name", required=True)
    merchant.add_argument("--code-prefix", required=True, help="outlet codes are PREFIX001, PREFIX002, …")
    merchant.add_argument("--outlets", type=int, default=1)
    merchant.add_argument("--terminals", type=int, default=2, help="terminals per outlet")
    merchant.add_argument("--cashiers", type=int, default=2, help="cashiers per outlet")
    merchant.add_argument("--currency", default="KES")
    merchant.add_argument("--time-zone", default="Africa/Nairobi")
    merchant.add_argument("--gateway", help="gateway URL to write into the output")
    merchant.add_argument("--database-url", help="PostgreSQL URL (default: DATABASE_URL or the running stack's)")

    bench = commands.add_parser("bench", help="seal through the gateway under load; print seals/s and latency",
                                description="Uses the stack running in --data-dir, or starts one for the run.")
    bench.add_argument("--outlets", type=int, default=100)
    bench.add_argument("--terminals", type=int, default=4, help="terminals per outlet")
    bench.add_argument("--duration", type=float, default=30.0, help="seconds of load (default: %(default)s)")
    bench.add_argument("--think-time", type=float, default=0.0,
                       help="seconds a terminal waits between sales (0: back to back, the saturation test)")
    bench.add_argument("--replicas", type=int, default=1, help="replicas when the bench starts its own stack")
    bench.add_argument("--json", help="also write the result as JSON to this file")
    for sub in (up, verify, keys, api_key, merchant, bench):
        # `fiscal up --data-dir X` reads as naturally as `fiscal --data-dir X up`.
        sub.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                         help="where the stack keeps its database, logs and demo.json (default: .fiscal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from services.cli.up import run_up
        return run_up(args)
    if args.command == "verify":
        from services.cli.verify import run_verify
        return run_verify(args)
    if args.command == "keys":
        from services.cli.keys import run_keys
        return run_keys(args)
    if args.command == "api-key":
        if args.api_key_command == "create" and not args.scope:
            build_parser().error("api-key create needs --scope")
        if args.api_key_command == "revoke" and not args.key_id:
            build_parser().error("api-key revoke needs --key-id")
        from services.cli.api_keys import run_api_keys
        return run_api_keys(args)
    if args.command == "merchant":
        return _merchant_create(args)
    if args.command == "bench":
        from services.cli.bench import run_bench
        return run_bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
