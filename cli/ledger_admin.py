"""`fiscal merchant create` and `fiscal tax-group set|list`: the ledger's admin module (services.ledger.admin)
over the running stack's database, as the ledger's own role when the stack made one."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable

from cli.state import async_url, ledger_database_url
from services.ledger.admin import DEFAULT_TAX_GROUPS, LedgerAdmin, MerchantPlan, tax_group
from services.ledger.money import TaxGroup
from services.runtime.faults import Fault, InvalidArgument

EXIT_BAD_INPUT = 2  # like argparse's usage errors


def run_admin(args, operation: Callable[[LedgerAdmin], Awaitable[int]]) -> int:
    """Run one admin operation; a fault (bad input, unknown id) is one line on stderr and exit code 2."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore

    async def go() -> int:
        engine = create_async_engine(async_url(ledger_database_url(args)))
        try:
            return await operation(LedgerAdmin(LedgerStore(engine)))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(go())
    except Fault as fault:
        print(f"fiscal {args.command}: error: {fault.message}", file=sys.stderr)
        return EXIT_BAD_INPUT


def parse_tax_group_option(text: str) -> TaxGroup:
    """CODE:RATE:LABEL (RATE "exempt" for a group without tax; the label may contain colons)."""
    code, rate, label = (text.split(":", 2) + ["", ""])[:3]
    return tax_group(code, None if rate.lower() == "exempt" else rate, label)


def tax_groups_json(groups: list[TaxGroup]) -> list[dict]:
    return [{"code": g.code, "label": g.label, "rate": g.rate_text} for g in groups]


def run_merchant_create(args) -> int:
    from stack.seed import merchant_json

    async def create(admin: LedgerAdmin) -> int:
        groups = tuple(parse_tax_group_option(t) for t in args.tax_group) if args.tax_group else DEFAULT_TAX_GROUPS
        plan = MerchantPlan(name=args.name, code_prefix=args.code_prefix, outlets=args.outlets,
                            terminals=args.terminals, cashiers=args.cashiers, currency=args.currency,
                            time_zone=args.time_zone, tax_groups=groups)
        created = await admin.create_merchant(plan)
        print(json.dumps(merchant_json(created, args.gateway or ""), indent=2))
        return 0

    return run_admin(args, create)


def run_tax_groups(args) -> int:
    async def act(admin: LedgerAdmin) -> int:
        if args.tax_group_command == "set":
            if not args.tax_group:
                raise InvalidArgument("tax-group set needs at least one --tax-group CODE:RATE:LABEL")
            groups = await admin.set_tax_groups(args.merchant_id,
                                                [parse_tax_group_option(t) for t in args.tax_group])
        else:
            if args.tax_group:
                raise InvalidArgument("tax-group list takes no --tax-group")
            groups = await admin.tax_groups(args.merchant_id)
        print(json.dumps(tax_groups_json(groups)))
        return 0

    return run_admin(args, act)

