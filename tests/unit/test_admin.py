"""services/ledger/admin.py over an in-memory store: what it refuses (before writing anything) and what it
writes."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from services.ledger.access import ADMIN, POS, READ, hash_api_key
from services.ledger.admin import DEFAULT_TAX_GROUPS, LedgerAdmin, MerchantPlan, tax_group
from services.ledger.model import Outlet
from services.ledger.money import TaxGroup
from services.runtime.faults import AlreadyExists, InvalidArgument, NotFound


class MemoryAdminStore:
    """The AdminStore protocol in dictionaries; `writes` counts every row written."""

    def __init__(self):
        self.merchants: dict[str, str] = {}
        self.outlets: dict[str, Outlet] = {}
        self.groups: dict[tuple[str, str], TaxGroup] = {}
        self.terminals: list[tuple[str, str]] = []
        self.cashiers: list[tuple[str, str, str]] = []
        self.keys: dict[str, dict] = {}
        self.writes = 0

    async def create_merchant(self, name):
        self.writes += 1
        merchant_id = str(uuid.uuid4())
        self.merchants[merchant_id] = name
        return merchant_id

    async def merchant_exists(self, merchant_id):
        return merchant_id in self.merchants

    async def outlet_codes_taken(self, codes):
        return {o.code for o in self.outlets.values()} & set(codes)

    async def create_outlet(self, merchant_id, code, name, taxpayer_id, currency, time_zone, address=""):
        self.writes += 1
        outlet_id = str(uuid.uuid4())
        self.outlets[outlet_id] = Outlet(id=outlet_id, merchant_id=merchant_id, code=code, name=name,
                                         taxpayer_id=taxpayer_id, currency=currency, time_zone=time_zone,
                                         offline_grace_seconds=3600)
        return outlet_id

    async def outlet(self, outlet_id):
        return self.outlets.get(outlet_id)

    async def add_terminal(self, outlet_id, pos_terminal_id):
        self.writes += 1
        self.terminals.append((outlet_id, pos_terminal_id))

    async def add_cashier(self, outlet_id, cashier_id, name):
        self.writes += 1
        self.cashiers.append((outlet_id, cashier_id, name))

    async def set_tax_group(self, merchant_id, group):
        self.writes += 1
        self.groups[(merchant_id, group.code)] = group

    async def tax_groups(self, merchant_id):
        return sorted((g for (m, _), g in self.groups.items() if m == merchant_id), key=lambda g: g.code)

    async def add_api_key(self, merchant_id, scope, key_hash, key_prefix, outlet_id=None, name=""):
        self.writes += 1
        key_id = str(uuid.uuid4())
        self.keys[key_id] = {"id": key_id, "merchant_id": merchant_id, "scope": scope, "key_hash": key_hash,
                             "key_prefix": key_prefix, "outlet_id": outlet_id, "name": name, "revoked_at": None}
        return key_id

    async def api_keys(self, merchant_id):
        return [k for k in self.keys.values() if k["merchant_id"] == merchant_id]

    async def revoke_api_key(self, merchant_id, key_id):
        key = self.keys.get(key_id)
        if key is None or key["merchant_id"] != merchant_id or key["revoked_at"] is not None:
            return False
        key["revoked_at"] = "now"
        return True


def plan(**changes) -> MerchantPlan:
    return MerchantPlan(**({"name": "Duka", "code_prefix": "DK", "outlets": 2, "terminals": 2} | changes))


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"currency": "XYZ"}, "currency", "unsupported currency 'XYZ'"),
    ({"currency": "kes"}, "currency", "unsupported currency"),
    ({"time_zone": "Mars/Olympus"}, "time_zone", "unknown time zone 'Mars/Olympus'"),
    ({"time_zone": "../../etc/passwd"}, "time_zone", "unknown time zone"),
    ({"time_zone": "Africa/Nairobi\n"}, "time_zone", "unknown time zone"),
    ({"code_prefix": "D K"}, "code_prefix", "1-20 letters or digits"),
    ({"code_prefix": ""}, "code_prefix", "1-20 letters or digits"),
    ({"name": ""}, "name", "name must be"),
    ({"name": "x" * 201}, "name", "longer than 200"),
    ({"name": "Duka\nInjected"}, "name", "line breaks"),
    ({"outlets": 0}, "outlets", "from 1 to"),
    ({"terminals": 1001}, "terminals", "from 1 to"),
    ({"tax_groups": ()}, "tax_groups", "at least one tax group"),
    ({"tax_groups": (TaxGroup("A", "x", Decimal(1)), TaxGroup("A", "y", None))}, "tax_groups", "A is given twice"),
    ({"tax_groups": (TaxGroup("A", "VAT", Decimal(101)),)}, "tax_group.rate", "at most 100"),
    ({"tax_groups": (TaxGroup("a", "VAT", Decimal(1)),)}, "tax_group.code", "upper-case letters or digits"),
])
async def test_a_bad_merchant_plan_is_refused_before_anything_is_written(changes, field, message):
    store = MemoryAdminStore()
    with pytest.raises(InvalidArgument, match=message) as refused:
        await LedgerAdmin(store).create_merchant(plan(**changes))
    assert refused.value.field == field
    assert store.writes == 0


@pytest.mark.parametrize(("code", "rate", "label", "message"), [
    ("V", "101", "VAT", "at most 100"),
    ("V", "7.5001", "VAT", "more than 3 decimals"),
    ("V", "-1", "VAT", "positive decimal"),
    ("V", "١٢", "VAT", "positive decimal"),
    ("V", "", "VAT", "positive decimal"),
    ("V", "NaN", "VAT", "positive decimal"),
    ("V1:", "1", "VAT", "upper-case"),
    ("ABCDEFGHI", "1", "VAT", "upper-case"),
    ("V", "1", "", "label must be"),
    ("V", "1", "x" * 65, "longer than 64"),
])
def test_tax_group_text_is_checked(code, rate, label, message):
    with pytest.raises(InvalidArgument, match=message):
        tax_group(code, rate, label)


def test_tax_group_rates_from_zero_to_one_hundred_with_three_decimals_and_exempt():
    assert tax_group("V", "7.5", "VAT 7.5%").rate == Decimal("7.5")
    assert tax_group("Z", "0", "Zero").rate == Decimal(0)
    assert tax_group("H", "100.000", "All").rate == Decimal(100)
    assert tax_group("E", None, "Exempt").rate is None


async def test_create_merchant_writes_outlets_terminals_cashiers_groups_and_hashed_keys():
    store = MemoryAdminStore()
    groups = (TaxGroup("V", "VAT 7.5%", Decimal("7.5")), TaxGroup("E", "Exempt", None))
    created = await LedgerAdmin(store).create_merchant(plan(tax_groups=groups, currency="NGN", time_zone="Africa/Lagos"))
    assert [o.code for o in created.outlets] == ["DK001", "DK002"]
    assert created.outlets[0].terminals == ["DK001-T1", "DK001-T2"]
    assert await store.tax_groups(created.id) == sorted(groups, key=lambda g: g.code)
    assert {o.currency for o in store.outlets.values()} == {"NGN"}
    scopes = sorted(k["scope"] for k in store.keys.values())
    assert scopes == sorted([POS, POS, ADMIN, READ])
    stored_hashes = {k["key_hash"] for k in store.keys.values()}
    assert hash_api_key(created.admin_key) in stored_hashes and created.admin_key.encode() not in stored_hashes


async def test_default_tax_groups_and_taken_outlet_codes():
    store = MemoryAdminStore()
    admin = LedgerAdmin(store)
    first = await admin.create_merchant(plan())
    assert first.tax_groups == list(DEFAULT_TAX_GROUPS)
    writes = store.writes
    with pytest.raises(AlreadyExists, match="DK001 is taken"):
        await admin.create_merchant(plan(outlets=1))
    assert store.writes == writes


async def test_merchant_scoped_operations_check_the_merchant_and_its_outlets():
    store = MemoryAdminStore()
    admin = LedgerAdmin(store)
    one = await admin.create_merchant(plan(code_prefix="ONE", outlets=1))
    other = await admin.create_merchant(plan(code_prefix="TWO", outlets=1))
    writes = store.writes
    with pytest.raises(NotFound, match="merchant"):
        await admin.tax_groups(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await admin.set_tax_groups("not-a-uuid", [TaxGroup("V", "VAT", Decimal(1))])
    with pytest.raises(NotFound, match="outlet"):
        await admin.create_api_key(one.id, POS, other.outlets[0].id)
    with pytest.raises(InvalidArgument, match="needs an outlet_id"):
        await admin.create_api_key(one.id, POS)
    with pytest.raises(InvalidArgument, match="only an outlet:pos key"):
        await admin.create_api_key(one.id, ADMIN, one.outlets[0].id)
    with pytest.raises(InvalidArgument, match="scope must be one of"):
        await admin.create_api_key(one.id, "root")
    assert store.writes == writes
    created = await admin.create_api_key(one.id, POS, one.outlets[0].id.upper(), "till 9")
    assert created.outlet_id == one.outlets[0].id
    assert created.id in {k.id for k in await admin.api_keys(one.id)}
    with pytest.raises(NotFound):
        await admin.revoke_api_key(other.id, created.id)
    await admin.revoke_api_key(one.id, created.id)
    with pytest.raises(NotFound, match="no active API key"):
        await admin.revoke_api_key(one.id, created.id)


async def test_set_tax_groups_adds_and_updates_and_returns_all():
    store = MemoryAdminStore()
    admin = LedgerAdmin(store)
    merchant = await admin.create_merchant(plan(outlets=1))
    groups = await admin.set_tax_groups(merchant.id, [TaxGroup("A", "VAT 18%", Decimal(18)),
                                                      TaxGroup("V", "VAT 7.5%", Decimal("7.5"))])
    assert {g.code: g.rate for g in groups} == {"A": Decimal(18), "B": Decimal(8), "C": Decimal(0), "E": None,
                                                "V": Decimal("7.5")}
