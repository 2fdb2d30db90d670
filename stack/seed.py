"""Provision merchants for the demo, the tests and the bench, through the ledger's admin module."""

from __future__ import annotations

from services.ledger.admin import DEFAULT_TAX_GROUPS, CreatedMerchant, LedgerAdmin, MerchantPlan
from services.ledger.store import LedgerStore

__all__ = ["DEFAULT_TAX_GROUPS", "merchant_json", "provision_merchant"]


def merchant_json(created: CreatedMerchant, public_url: str = "") -> dict:
    """What a script needs to use a new merchant (the shape of demo.json; the keys are in it)."""
    return {
        "gateway_url": public_url,
        "merchant": {"id": created.id, "name": created.name},
        "tax_groups": [{"code": g.code, "label": g.label, "rate": g.rate_text} for g in created.tax_groups],
        "outlets": [{"id": o.id, "code": o.code, "name": o.name, "currency": o.currency, "time_zone": o.time_zone}
                    for o in created.outlets],
        "terminals": {o.id: o.terminals for o in created.outlets},
        "cashiers": {o.id: o.cashiers for o in created.outlets},
        "pos_keys": {o.id: o.pos_key for o in created.outlets},
        "admin_key": created.admin_key,
        "read_key": created.read_key,
    }


async def provision_merchant(store: LedgerStore, *, name: str, code_prefix: str, outlets: int, terminals: int,
                             cashiers: int = 2, currency: str = "KES", time_zone: str = "Africa/Nairobi",
                             taxpayer_prefix: str = "P05", public_url: str = "",
                             tax_groups=DEFAULT_TAX_GROUPS) -> dict:
    """Create one merchant with `outlets` outlets of `terminals` terminals each, and its keys
    (services.ledger.admin checks everything first: a bad value raises a faults error, nothing written)."""
    plan = MerchantPlan(name=name, code_prefix=code_prefix, outlets=outlets, terminals=terminals, cashiers=cashiers,
                        currency=currency, time_zone=time_zone, taxpayer_prefix=taxpayer_prefix,
                        tax_groups=tuple(tax_groups))
    return merchant_json(await LedgerAdmin(store).create_merchant(plan), public_url)
