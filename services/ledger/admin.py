"""The ledger's administration: merchants with their outlets, terminals, cashiers and tax groups, and API keys.

The one place that validates and performs these operations. The `fiscal` command line and stack/seed.py
call it today; the public admin endpoints (/v1/outlets, /v1/tax-groups, /v1/api-keys) will call the same
methods, so every operation on an existing merchant takes its merchant_id. Bad input raises a
services.runtime.faults error before anything is written. Imports neither gRPC nor SQLAlchemy: the
store (services/ledger/store.py) owns the SQL.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from services.ledger.access import ADMIN, POS, READ, SCOPES, hash_api_key, new_api_key
from services.ledger.model import Outlet
from services.ledger.money import MINOR_UNITS, TaxGroup, parse_decimal, shown
from services.ledger.request_bounds import check_text, require_uuid
from services.runtime.faults import AlreadyExists, InvalidArgument, NotFound

DEFAULT_TAX_GROUPS = (
    TaxGroup("A", "VAT 16%", Decimal("16")),
    TaxGroup("B", "VAT 8%", Decimal("8")),
    TaxGroup("C", "Zero-rated", Decimal("0")),
    TaxGroup("E", "Exempt", None),
)

# Tax group codes appear on receipts and in every sale line: short, upper-case ASCII.
_TAX_GROUP_CODE = re.compile(r"[A-Z0-9]{1,8}", re.ASCII)
TAX_GROUP_LABEL_MAX = 64
TAX_RATE_MAX = Decimal(100)
TAX_RATE_DECIMALS = 3  # the column is NUMERIC(6, 3)
MAX_TAX_GROUPS = 32
MERCHANT_NAME_MAX = 200
KEY_NAME_MAX = 100
# Outlet codes are PREFIX001…; terminal and cashier ids PREFIX001-T1…, well inside a 64-character identifier.
_CODE_PREFIX = re.compile(r"[A-Za-z0-9]{1,20}", re.ASCII)
_TAXPAYER_PREFIX = re.compile(r"[A-Za-z0-9]{0,16}", re.ASCII)
_TIME_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}", re.ASCII)
TIME_ZONE_MAX = 64
MAX_OUTLETS = 10_000
MAX_TERMINALS = 1_000
MAX_CASHIERS = 1_000


class AdminStore(Protocol):
    """What the admin operations need from the ledger's storage (LedgerStore; a fake in unit tests)."""

    async def create_merchant(self, name: str) -> str: ...
    async def merchant_exists(self, merchant_id: str) -> bool: ...
    async def outlet_codes_taken(self, codes: list[str]) -> set[str]: ...
    async def create_outlet(self, merchant_id: str, code: str, name: str, taxpayer_id: str, currency: str,
                            time_zone: str, address: str = "") -> str: ...
    async def outlet(self, outlet_id: str) -> Outlet | None: ...
    async def add_terminal(self, outlet_id: str, pos_terminal_id: str) -> None: ...
    async def add_cashier(self, outlet_id: str, cashier_id: str, name: str) -> None: ...
    async def set_tax_group(self, merchant_id: str, group: TaxGroup) -> None: ...
    async def tax_groups(self, merchant_id: str) -> list[TaxGroup]: ...
    async def add_api_key(self, merchant_id: str, scope: str, key_hash: bytes, key_prefix: str,
                          outlet_id: str | None = None, name: str = "") -> str: ...
    async def api_keys(self, merchant_id: str) -> list[dict]: ...
    async def revoke_api_key(self, merchant_id: str, key_id: str) -> bool: ...


# --- validation (pure) -------------------------------------------------------------------------------

def tax_group(code: str, rate: str | None, label: str) -> TaxGroup:
    """A tax group from client text: rate None is an exempt group (no tax), else a decimal 0..100."""
    if not isinstance(code, str) or not _TAX_GROUP_CODE.fullmatch(code):
        raise InvalidArgument(f"tax group code must be 1-8 upper-case letters or digits, got {shown(code)}",
                              field="tax_group.code")
    check_text(label, "tax_group.label", TAX_GROUP_LABEL_MAX, required=True)
    if rate is None:
        return TaxGroup(code, label, None)
    value = parse_decimal(rate, "tax_group.rate", max_decimals=TAX_RATE_DECIMALS, allow_zero=True,
                          maximum=TAX_RATE_MAX)
    return TaxGroup(code, label, value)


def check_tax_groups(groups) -> list[TaxGroup]:
    groups = list(groups)
    if not groups:
        raise InvalidArgument("at least one tax group is required", field="tax_groups")
    if len(groups) > MAX_TAX_GROUPS:
        raise InvalidArgument(f"at most {MAX_TAX_GROUPS} tax groups", field="tax_groups")
    codes = [g.code for g in groups]
    duplicates = sorted({c for c in codes if codes.count(c) > 1})
    if duplicates:
        raise InvalidArgument(f"tax group {duplicates[0]} is given twice", field="tax_groups")
    return [tax_group(g.code, None if g.rate is None else format(g.rate, "f"), g.label) for g in groups]


def check_currency(currency: str) -> str:
    if currency not in MINOR_UNITS:
        raise InvalidArgument(f"unsupported currency {shown(currency)} (known: {', '.join(sorted(MINOR_UNITS))})",
                              field="currency")
    return currency


def check_time_zone(name: str) -> str:
    problem = InvalidArgument(f"unknown time zone {shown(name)} (an IANA name such as Africa/Nairobi)",
                              field="time_zone")
    if not isinstance(name, str) or len(name) > TIME_ZONE_MAX or not _TIME_ZONE.fullmatch(name):
        raise problem
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise problem from None
    return name


def _check_count(value: int, field_name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{field_name} must be a whole number from {low} to {high}", field=field_name)
    return value


def _check_pattern(value: str, pattern: re.Pattern, field_name: str, description: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgument(f"{field_name} must be {description}, got {shown(value)}", field=field_name)
    return value


@dataclass(frozen=True)
class MerchantPlan:
    """A merchant to create: every outlet is PREFIX001… with the same currency, time zone and counts."""

    name: str
    code_prefix: str
    outlets: int = 1
    terminals: int = 2
    cashiers: int = 2
    currency: str = "KES"
    time_zone: str = "Africa/Nairobi"
    taxpayer_prefix: str = "P05"
    tax_groups: tuple[TaxGroup, ...] = DEFAULT_TAX_GROUPS

    def checked(self) -> MerchantPlan:
        check_text(self.name, "name", MERCHANT_NAME_MAX, required=True)
        _check_pattern(self.code_prefix, _CODE_PREFIX, "code_prefix", "1-20 letters or digits")
        _check_pattern(self.taxpayer_prefix, _TAXPAYER_PREFIX, "taxpayer_prefix", "up to 16 letters or digits")
        _check_count(self.outlets, "outlets", 1, MAX_OUTLETS)
        _check_count(self.terminals, "terminals", 1, MAX_TERMINALS)
        _check_count(self.cashiers, "cashiers", 1, MAX_CASHIERS)
        check_currency(self.currency)
        check_time_zone(self.time_zone)
        return MerchantPlan(self.name, self.code_prefix, self.outlets, self.terminals, self.cashiers, self.currency,
                            self.time_zone, self.taxpayer_prefix, tuple(check_tax_groups(self.tax_groups)))

    def outlet_codes(self) -> list[str]:
        return [f"{self.code_prefix}{index:03d}" for index in range(1, self.outlets + 1)]


@dataclass(frozen=True)
class CreatedOutlet:
    id: str
    code: str
    name: str
    currency: str
    time_zone: str
    terminals: list[str]
    cashiers: list[str]
    pos_key: str  # shown once: only its hash is stored


@dataclass(frozen=True)
class CreatedMerchant:
    id: str
    name: str
    tax_groups: list[TaxGroup]
    outlets: list[CreatedOutlet] = field(default_factory=list)
    admin_key: str = ""
    read_key: str = ""


@dataclass(frozen=True)
class CreatedApiKey:
    id: str
    scope: str
    outlet_id: str | None
    key: str  # the secret, shown once


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    key_prefix: str
    scope: str
    outlet_id: str | None
    name: str
    revoked_at: datetime | None


# --- operations --------------------------------------------------------------------------------------

class LedgerAdmin:
    def __init__(self, store: AdminStore):
        self.store = store

    async def create_merchant(self, plan: MerchantPlan) -> CreatedMerchant:
        """A merchant with its outlets (terminals, cashiers, a POS key each), tax groups, an admin key and a
        read-only key. Everything is checked before the first row is written."""
        plan = plan.checked()
        codes = plan.outlet_codes()
        taken = await self.store.outlet_codes_taken(codes)
        if taken:
            raise AlreadyExists(f"outlet code {sorted(taken)[0]} is taken: choose another code prefix",
                                field="code_prefix")
        merchant_id = await self.store.create_merchant(plan.name)
        for group in plan.tax_groups:
            await self.store.set_tax_group(merchant_id, group)
        outlets = []
        for index, code in enumerate(codes, 1):
            name = f"{plan.name} #{index}"
            outlet_id = await self.store.create_outlet(merchant_id, code, name,
                                                       f"{plan.taxpayer_prefix}{index:07d}X", plan.currency,
                                                       plan.time_zone, address=f"Shop {index}")
            terminal_ids = [f"{code}-T{t}" for t in range(1, plan.terminals + 1)]
            cashier_ids = [f"{code}-C{c}" for c in range(1, plan.cashiers + 1)]
            for terminal_id in terminal_ids:
                await self.store.add_terminal(outlet_id, terminal_id)
            for number, cashier_id in enumerate(cashier_ids, 1):
                await self.store.add_cashier(outlet_id, cashier_id, f"Cashier {number}")
            pos_key = await self._new_key(merchant_id, POS, outlet_id, f"POS {code}")
            outlets.append(CreatedOutlet(outlet_id, code, name, plan.currency, plan.time_zone, terminal_ids,
                                         cashier_ids, pos_key.key))
        admin_key = await self._new_key(merchant_id, ADMIN, None, "admin")
        read_key = await self._new_key(merchant_id, READ, None, "dashboard (read-only)")
        return CreatedMerchant(merchant_id, plan.name, list(plan.tax_groups), outlets, admin_key.key, read_key.key)

    async def set_tax_groups(self, merchant_id: str, groups) -> list[TaxGroup]:
        """Add or update these groups of the merchant (sealed invoices keep the rates they were sealed with).
        Returns all of the merchant's groups."""
        merchant_id = await self._merchant(merchant_id)
        for group in check_tax_groups(groups):
            await self.store.set_tax_group(merchant_id, group)
        return await self.store.tax_groups(merchant_id)

    async def tax_groups(self, merchant_id: str) -> list[TaxGroup]:
        return await self.store.tax_groups(await self._merchant(merchant_id))

    async def create_api_key(self, merchant_id: str, scope: str, outlet_id: str | None = None,
                             name: str = "") -> CreatedApiKey:
        merchant_id = await self._merchant(merchant_id)
        if scope not in SCOPES:
            raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, got {shown(scope)}", field="scope")
        check_text(name, "name", KEY_NAME_MAX)
        if scope == POS:
            if not outlet_id:
                raise InvalidArgument("an outlet:pos key needs an outlet_id", field="outlet_id")
            outlet = await self.store.outlet(require_uuid(outlet_id, "outlet_id", "outlet"))
            if outlet is None or outlet.merchant_id != merchant_id:
                raise NotFound(f"outlet {shown(outlet_id)} not found for this merchant", field="outlet_id")
            outlet_id = outlet.id
        elif outlet_id:
            raise InvalidArgument(f"only an {POS} key belongs to an outlet", field="outlet_id")
        return await self._new_key(merchant_id, scope, outlet_id or None, name)

    async def api_keys(self, merchant_id: str) -> list[ApiKeyInfo]:
        rows = await self.store.api_keys(await self._merchant(merchant_id))
        return [ApiKeyInfo(str(r["id"]), r["key_prefix"], r["scope"], str(r["outlet_id"]) if r["outlet_id"] else None,
                           r["name"], r["revoked_at"]) for r in rows]

    async def revoke_api_key(self, merchant_id: str, key_id: str) -> None:
        """Gateways stop accepting the key within their auth cache's lifetime (FISCAL_AUTH_CACHE_SECONDS)."""
        merchant_id = await self._merchant(merchant_id)
        key_id = require_uuid(key_id, "key_id", "API key")
        if not await self.store.revoke_api_key(merchant_id, key_id):
            raise NotFound(f"no active API key {key_id} for this merchant", field="key_id")

    async def _merchant(self, merchant_id: str) -> str:
        merchant_id = require_uuid(merchant_id, "merchant_id", "merchant")
        if not await self.store.merchant_exists(merchant_id):
            raise NotFound(f"merchant {merchant_id} not found", field="merchant_id")
        return merchant_id

    async def _new_key(self, merchant_id: str, scope: str, outlet_id: str | None, name: str) -> CreatedApiKey:
        secret = new_api_key(scope)
        key_id = await self.store.add_api_key(merchant_id, scope, hash_api_key(secret), secret[:12], outlet_id, name)
        return CreatedApiKey(key_id, scope, outlet_id, secret)
