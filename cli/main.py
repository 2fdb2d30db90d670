"""The `fiscal` command line."""

from __future__ import annotations

import os

# `fiscal up` starts (and restarts) processes while it talks gRPC; they exec at once and need no
# fork handlers, which can abort a child when other threads are inside gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse  # noqa: E402
import sys
from pathlib import Path

from cli.state import DEFAULT_DATA_DIR


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

    export = commands.add_parser("export", help="write an outlet's signed audit package for a period (a .zip)",
                                 description="Invoices and credit notes sealed from --from to --to (whole days in "
                                 "the outlet's time zone), their chain, the public keys and a manifest of hashes "
                                 "signed by the signing service. See docs/export.md.")
    export.add_argument("--outlet", required=True, help="outlet id")
    export.add_argument("--from", dest="from_day", required=True, metavar="DATE", help="first day (YYYY-MM-DD)")
    export.add_argument("--to", dest="to_day", required=True, metavar="DATE", help="last day, included")
    export.add_argument("file", metavar="FILE", help="the package to write (.zip)")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.add_argument("--signing-addr", help="signing service address (default: the running stack's)")
    export.add_argument("--database-url", help="PostgreSQL URL (default: the running stack's as the ledger's "
                        "role, or DATABASE_URL)")

    verify_export = commands.add_parser("verify-export", help="check an audit package offline",
                                        description="No network, no database: every file against the manifest, the "
                                        "manifest's signature, every document's signature, the chain and the "
                                        "numbering. Exit 0 when all holds, else 1 naming the first altered document.")
    verify_export.add_argument("file", metavar="FILE", help="the package (.zip)")
    verify_export.add_argument("--keys", metavar="JWKS", help="trust only these keys (a saved GET /v1/keys answer)")
    verify_export.add_argument("--quiet", action="store_true", help="no progress bar")

    keys = commands.add_parser("keys", help="list, rotate or mark compromised the signing keys")
    keys.add_argument("keys_command", choices=["list", "rotate", "compromise"])
    keys.add_argument("kid", nargs="?", help="compromise: the key id to mark compromised")
    keys.add_argument("--reason", help="compromise: why (published with the key)")
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
    api_key.add_argument("--database-url", help="PostgreSQL URL (default: the running stack's as the ledger's "
                         "role, or DATABASE_URL)")

    merchant = commands.add_parser("merchant", help="provision a merchant with outlets, terminals and API keys")
    merchant.add_argument("merchant_command", choices=["create"])
    merchant.add_argument("--name", required=True)
    merchant.add_argument("--code-prefix", required=True, help="outlet codes are PREFIX001, PREFIX002, …")
    merchant.add_argument("--outlets", type=int, default=1)
    merchant.add_argument("--terminals", type=int, default=2, help="terminals per outlet")
    merchant.add_argument("--cashiers", type=int, default=2, help="cashiers per outlet")
    merchant.add_argument("--currency", default="KES")
    merchant.add_argument("--time-zone", default="Africa/Nairobi")
    merchant.add_argument("--tax-group", action="append", metavar="CODE:RATE:LABEL",
                          help="a tax group, repeatable, e.g. V:7.5:VAT 7.5%% or E:exempt:Exempt "
                               "(default: A:16, B:8, C:0, E:exempt)")
    merchant.add_argument("--gateway", help="gateway URL to write into the output")
    merchant.add_argument("--database-url", help="PostgreSQL URL (default: the running stack's as the ledger's "
                          "role, or DATABASE_URL)")

    tax_group = commands.add_parser("tax-group", help="add, update or list a merchant's tax groups",
                                    description="Sealed invoices keep the rates they were sealed with.")
    tax_group.add_argument("tax_group_command", choices=["set", "list"])
    tax_group.add_argument("--tax-group", action="append", metavar="CODE:RATE:LABEL",
                           help="with set, repeatable: a group to add or update (RATE \"exempt\" for no tax)")
    tax_group.add_argument("--merchant-id", required=True)
    tax_group.add_argument("--database-url", help="PostgreSQL URL (default: the running stack's as the ledger's "
                           "role, or DATABASE_URL)")

    bench = commands.add_parser(
        "bench", help="seal through the gateway under load; print seals/s, latency and CPU per seal",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Uses the stack running in --data-dir, or starts one for the run (and stops it after).\n"
                    "Without --rate or --sweep: the closed loop (every terminal seals back to back, or with\n"
                    "--think-time). Every run prints ms of CPU per seal for each process of the stack (from\n"
                    "/proc) and the load generator's own CPU per request. Load goes only to 127.0.0.1.",
        epilog="examples:\n"
               "  fiscal bench --outlets 100 --terminals 4 --duration 30          # saturation (closed loop)\n"
               "  fiscal bench --outlets 20 --terminals 4 --rate 100 --duration 10 # open loop at 100 seals/s\n"
               "  fiscal bench --rate 600 --duration 30 --floor --json out.json    # ... and the floor and ratio\n"
               "  fiscal bench --sweep 100,200,400,800 --duration 20               # chart in docs/bench-sweep.svg\n"
               "  fiscal bench --sweep-auto --duration 15 --chart /tmp/sweep.svg   # 50/s x1.5 until saturated\n"
               "  fiscal bench --client wrk --outlets 100 --terminals 4 --duration 30 # saturation driven by wrk\n"
               "  fiscal bench --floor-only --duration 5                            # the floor alone")
    bench.add_argument("--outlets", type=int, default=100, help="outlets to provision (default: %(default)s)")
    bench.add_argument("--terminals", type=int, default=4, help="terminals per outlet (default: %(default)s)")
    bench.add_argument("--duration", type=float, default=30.0,
                       help="seconds of load per run, per sweep rate and for the floor (default: %(default)s)")
    bench.add_argument("--think-time", type=float, default=0.0,
                       help="closed loop: seconds a terminal waits between sales (0: back to back, the saturation "
                            "test)")
    load = bench.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, metavar="R",
                      help="open loop: R seals/s offered, Poisson arrivals over all terminals, latency from the "
                           "scheduled send time")
    load.add_argument("--sweep", metavar="R1,R2,...", help="open loop at each rate in turn; writes --chart")
    load.add_argument("--sweep-auto", action="store_true",
                      help="open loop from 50/s, x1.5 each step (at most 10), until the stack stops keeping up")
    bench.add_argument("--chart", default="docs/bench-sweep.svg",
                       help="sweep: SVG chart path; the points go next to it as .json (default: %(default)s)")
    bench.add_argument("--max-inflight", type=int, default=1000,
                       help="open loop: requests in flight at most; an arrival beyond it is counted as skipped "
                            "(default: %(default)s)")
    bench.add_argument("--timeout", type=float, default=10.0,
                       help="seconds before a request counts as a timeout (default: %(default)s)")
    floor = bench.add_mutually_exclusive_group()
    floor.add_argument("--floor", action="store_true",
                       help="also run the seal's work in one Python process straight on the same PostgreSQL "
                            "(throwaway schema) and print the ratio gateway/floor")
    floor.add_argument("--floor-only", action="store_true", help="only the floor, no gateway run")
    bench.add_argument("--floor-connections", type=int, default=8,
                       help="concurrent PostgreSQL connections for the floor (default: %(default)s)")
    bench.add_argument("--client", choices=["aiohttp", "wrk"], default="aiohttp",
                       help="closed loop: the built-in aiohttp client, or wrk (`apt-get install -y wrk`; ~0.01 ms "
                            "of CPU per request instead of ~0.5) (default: %(default)s)")
    bench.add_argument("--connections", type=int,
                       help="--client wrk: connections (default: outlets x terminals, one per till)")
    bench.add_argument("--wrk-threads", type=int, default=1, help="--client wrk: threads (default: %(default)s)")
    bench.add_argument("--replicas", type=int, default=1, help="replicas when the bench starts its own stack")
    bench.add_argument("--json", help="also write everything (runs, CPU, floor, machine) as JSON to this file")
    bench_webhooks = commands.add_parser(
        "bench-webhooks", help="seal N sales and time their invoice.sealed webhooks to a loopback receiver",
        description="Uses the stack running in --data-dir, or starts one for the run. Registers an endpoint on a "
                    "receiver on 127.0.0.1, seals, waits for every delivery; prints deliveries/s, the seal-answer-to-"
                    "delivery latency p50/p99 and the CPU of each process per delivered event.")
    bench_webhooks.add_argument("--seals", type=int, default=1000, help="sales to seal (default: %(default)s)")
    bench_webhooks.add_argument("--outlets", type=int, default=10, help="outlets (default: %(default)s)")
    bench_webhooks.add_argument("--terminals", type=int, default=4, help="terminals per outlet (default: %(default)s)")
    bench_webhooks.add_argument("--rate", type=float, metavar="R",
                                help="seal R sales/s (round robin over the tills); default: back to back")
    bench_webhooks.add_argument("--timeout", type=float, default=10.0, help="seconds per seal (default: %(default)s)")
    bench_webhooks.add_argument("--drain-timeout", type=float, default=120.0,
                                help="seconds to wait for the deliveries after the last seal (default: %(default)s)")
    bench_webhooks.add_argument("--replicas", type=int, default=1, help="replicas when the bench starts its own stack")
    bench_webhooks.add_argument("--json", help="also write the report as JSON to this file")
    for sub in (up, verify, export, verify_export, keys, api_key, merchant, tax_group, bench, bench_webhooks):
        # `fiscal up --data-dir X` reads as naturally as `fiscal --data-dir X up`.
        sub.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                         help="where the stack keeps its database, logs and demo.json (default: .fiscal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "up":
        from cli.up import run_up
        return run_up(args)
    if args.command == "verify":
        from cli.verify import run_verify
        return run_verify(args)
    if args.command == "export":
        from cli.export import run_export
        return run_export(args)
    if args.command == "verify-export":
        from cli.export import run_verify_export
        return run_verify_export(args)
    if args.command == "keys":
        from cli.keys import run_keys
        return run_keys(args)
    if args.command == "api-key":
        if args.api_key_command == "create" and not args.scope:
            build_parser().error("api-key create needs --scope")
        if args.api_key_command == "revoke" and not args.key_id:
            build_parser().error("api-key revoke needs --key-id")
        from cli.api_keys import run_api_keys
        return run_api_keys(args)
    if args.command == "merchant":
        from cli.ledger_admin import run_merchant_create
        return run_merchant_create(args)
    if args.command == "tax-group":
        from cli.ledger_admin import run_tax_groups
        return run_tax_groups(args)
    if args.command == "bench":
        from cli.bench import run_bench
        return run_bench(args)
    if args.command == "bench-webhooks":
        from cli.bench_webhooks import run_bench_webhooks
        return run_bench_webhooks(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
