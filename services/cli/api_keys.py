"""`fiscal api-key create|list|revoke`: a merchant's API keys (stored hashed; shown once at creation)."""

from __future__ import annotations

import asyncio
import json
import uuid

from rich.table import Table

from services.cli.output import console
from services.cli.state import async_url, database_url
from services.ledger.access import POS, SCOPES, hash_api_key, new_api_key


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError):
        raise SystemExit(f"{what} must be an id (a UUID), got {value!r}") from None


async def _run(args) -> int:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore

    merchant_id = _uuid(args.merchant_id, "--merchant-id")
    engine = create_async_engine(async_url(database_url(args)))
    store = LedgerStore(engine)
    try:
        if args.api_key_command == "create":
            if args.scope not in SCOPES:
                raise SystemExit(f"--scope must be one of {', '.join(SCOPES)}")
            outlet_id = None
            if args.scope == POS:
                if not args.outlet_id:
                    raise SystemExit("an outlet:pos key needs --outlet-id")
                outlet = await store.outlet(_uuid(args.outlet_id, "--outlet-id"))
                if outlet is None or outlet.merchant_id != merchant_id:
                    raise SystemExit("no such outlet for this merchant")
                outlet_id = outlet.id
            secret = new_api_key(args.scope)
            key_id = await store.add_api_key(merchant_id, args.scope, hash_api_key(secret), secret[:12], outlet_id,
                                             args.name or "")
            print(json.dumps({"id": key_id, "scope": args.scope, "outlet_id": outlet_id, "key": secret}))
            console.print("[yellow]the key is shown once: only its hash is stored[/]", highlight=False)
            return 0
        if args.api_key_command == "revoke":
            if await store.revoke_api_key(merchant_id, _uuid(args.key_id, "--key-id")):
                console.print("revoked; gateways stop accepting it within FISCAL_AUTH_CACHE_SECONDS (30 s)")
                return 0
            console.print("[red]no active key with that id for this merchant[/]")
            return 1
        table = Table("id", "prefix", "scope", "outlet", "name", "revoked")
        for key in await store.api_keys(merchant_id):
            table.add_row(key["id"], key["key_prefix"] + "…", key["scope"], key["outlet_id"] or "", key["name"],
                          key["revoked_at"].isoformat(timespec="seconds") if key["revoked_at"] else "")
        console.print(table)
        return 0
    finally:
        await engine.dispose()


def run_api_keys(args) -> int:
    return asyncio.run(_run(args))
