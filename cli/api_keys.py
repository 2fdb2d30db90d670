"""`fiscal api-key create|list|revoke`: a merchant's API keys (stored hashed; shown once at creation),
through the ledger's admin module."""

from __future__ import annotations

import json

from rich.table import Table

from cli.ledger_admin import run_admin
from cli.output import console
from services.ledger.admin import LedgerAdmin


def run_api_keys(args) -> int:
    async def act(admin: LedgerAdmin) -> int:
        if args.api_key_command == "create":
            created = await admin.create_api_key(args.merchant_id, args.scope or "", args.outlet_id,
                                                 args.name or "")
            print(json.dumps({"id": created.id, "scope": created.scope, "outlet_id": created.outlet_id,
                              "key": created.key}))
            console.print("[yellow]the key is shown once: only its hash is stored[/]", highlight=False)
            return 0
        if args.api_key_command == "revoke":
            await admin.revoke_api_key(args.merchant_id, args.key_id or "")
            console.print("revoked; the invoice API stops accepting it within FISCAL_AUTH_CACHE_SECONDS (30 s), "
                          "the webhooks API within 5 s")
            return 0
        table = Table("id", "prefix", "scope", "outlet", "name", "revoked")
        for key in await admin.api_keys(args.merchant_id):
            table.add_row(key.id, key.key_prefix + "…", key.scope, key.outlet_id or "", key.name,
                          key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "")
        console.print(table)
        return 0

    return run_admin(args, act)
