"""Provision merchants: outlets, terminals, cashiers, tax groups and API keys (the demo, tests, bench)."""

from __future__ import annotations

from decimal import Decimal

from services.ledger.access import ADMIN, POS, READ, hash_api_key, new_api_key
from services.ledger.money import TaxGroup
from services.ledger.store import LedgerStore

DEFAULT_TAX_GROUPS = [
    TaxGroup("A", "VAT 16%", Decimal("16")),
    TaxGroup("B", "VAT 8%", Decimal("8")),
    TaxGroup("C", "Zero-rated", Decimal("0")),
    TaxGroup("E", "Exempt", None),
]


async def provision_merchant(store: LedgerStore, *, name: str, code_prefix: str, outlets: int, terminals: int,
                             cashiers: int = 2, currency: str = "KES", time_zone: str = "Africa/Nairobi",
                             taxpayer_prefix: str = "P05", public_url: str = "") -> dict:
    """Create one merchant with `outlets` outlets of `terminals` terminals each, and its keys.
    Returns what a script needs to use it (the shape of demo.json)."""
    merchant_id = await store.create_merchant(name)
    for group in DEFAULT_TAX_GROUPS:
        await store.set_tax_group(merchant_id, group)

    async def key(scope: str, outlet_id: str | None, label: str) -> str:
        secret = new_api_key(scope)
        await store.add_api_key(merchant_id, scope, hash_api_key(secret), secret[:12], outlet_id, label)
        return secret

    result = {
        "gateway_url": public_url,
        "merchant": {"id": merchant_id, "name": name},
        "tax_groups": [{"code": g.code, "label": g.label, "rate": g.rate_text} for g in DEFAULT_TAX_GROUPS],
        "outlets": [], "terminals": {}, "cashiers": {}, "pos_keys": {},
    }
    for index in range(1, outlets + 1):
        code = f"{code_prefix}{index:03d}"
        outlet_id = await store.create_outlet(
            merchant_id, code, f"{name} #{index}", f"{taxpayer_prefix}{index:07d}X", currency, time_zone,
            address=f"Shop {index}")
        terminal_ids = [f"{code}-T{t}" for t in range(1, terminals + 1)]
        cashier_ids = [f"{code}-C{c}" for c in range(1, cashiers + 1)]
        for terminal_id in terminal_ids:
            await store.add_terminal(outlet_id, terminal_id)
        for number, cashier_id in enumerate(cashier_ids, 1):
            await store.add_cashier(outlet_id, cashier_id, f"Cashier {number}")
        result["outlets"].append({"id": outlet_id, "code": code, "name": f"{name} #{index}", "currency": currency,
                                  "time_zone": time_zone})
        result["terminals"][outlet_id] = terminal_ids
        result["cashiers"][outlet_id] = cashier_ids
        result["pos_keys"][outlet_id] = await key(POS, outlet_id, f"POS {code}")
    result["admin_key"] = await key(ADMIN, None, "admin")
    result["read_key"] = await key(READ, None, "dashboard (read-only)")
    return result
