"""`fiscal merchant create`, `fiscal tax-group` and `fiscal api-key` go through the ledger's admin module,
connect as the ledger's own database role, and refuse bad input with one line and exit code 2, writing
nothing. Real processes: the CLI, PostgreSQL and the mesh behind Envoy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from argparse import Namespace
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from cli.state import ledger_database_url
from tests.harness import _with_store, auth, run, sale

FISCAL = str(Path(sys.executable).parent / "fiscal")


@pytest.fixture(scope="module")
def stack_dir(mesh, tmp_path_factory) -> Path:
    """A data directory that points the CLI at the test mesh as `fiscal up` would: stack.json and the
    services' database role passwords."""
    directory = tmp_path_factory.mktemp("cli-admin")
    (directory / "stack.json").write_text(json.dumps({"gateway_url": mesh.gateway_url,
                                                      "database_url": mesh.database_url}))
    shutil.copy(mesh.data_dir / "database-roles.json", directory / "database-roles.json")
    return directory


def fiscal(stack_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([FISCAL, "--data-dir", str(stack_dir), *args], capture_output=True, text=True,
                          timeout=120)


def merchant_count(mesh) -> int:
    return run(_with_store(mesh.database_url, lambda store, _: store.count_rows("merchants")))


def test_the_cli_connects_as_the_ledgers_role(stack_dir):
    url = make_url(ledger_database_url(Namespace(data_dir=stack_dir, database_url=None)))
    assert url.username == "fiscal_ledger"
    assert make_url(ledger_database_url(Namespace(data_dir=stack_dir, database_url="postgresql://op@h/db"))
                    ).username == "op"


def test_merchant_with_custom_tax_groups_seals_with_them(mesh, stack_dir):
    prefix = f"I{uuid.uuid4().hex[:6].upper()}"
    created = fiscal(stack_dir, "merchant", "create", "--name", f"Lagos {prefix}", "--code-prefix", prefix,
                     "--terminals", "1", "--currency", "NGN", "--time-zone", "Africa/Lagos",
                     "--tax-group", "V:7.5:VAT 7.5%", "--tax-group", "E:exempt:Exempt: basic food")
    assert created.returncode == 0, created.stderr
    merchant = json.loads(created.stdout)
    merchant_id = merchant["merchant"]["id"]
    assert merchant["tax_groups"] == [{"code": "V", "label": "VAT 7.5%", "rate": "7.5"},
                                      {"code": "E", "label": "Exempt: basic food", "rate": ""}]
    # Before the outlet's first sale (the ledger caches an outlet with its groups): add one, change none.
    added = fiscal(stack_dir, "tax-group", "set", "--merchant-id", merchant_id, "--tax-group", "A:16:VAT 16%")
    assert added.returncode == 0, added.stderr
    listed = fiscal(stack_dir, "tax-group", "list", "--merchant-id", merchant_id)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"code": "A", "label": "VAT 16%", "rate": "16"},
                                         {"code": "E", "label": "Exempt: basic food", "rate": ""},
                                         {"code": "V", "label": "VAT 7.5%", "rate": "7.5"}]

    outlet = merchant["outlets"][0]
    assert (outlet["currency"], outlet["time_zone"]) == ("NGN", "Africa/Lagos")
    lines = [{"description": "Rice 5kg", "quantity": "1", "unit_price": "107.50", "tax_group": "V"},
             {"description": "Yam", "quantity": "2", "unit_price": "50.00", "tax_group": "E"},
             {"description": "Soap", "quantity": "1", "unit_price": "116.00", "tax_group": "A"}]
    body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0], lines=lines)
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        answer = client.post("/v1/invoices", json=body, headers=auth(merchant["pos_keys"][outlet["id"]]))
        assert answer.status_code == 200, answer.text
        totals = {t["tax_group"]: (t["rate"], t["gross_amount"], t["tax_amount"]) for t in answer.json()["tax_totals"]}
        assert totals == {"V": ("7.5", "107.50", "7.50"), "E": ("", "100.00", "0.00"), "A": ("16", "116.00", "16.00")}
        # The default groups were not given to this merchant.
        body = sale(outlet, merchant["terminals"][outlet["id"]][0], merchant["cashiers"][outlet["id"]][0],
                    lines=[dict(lines[0], tax_group="B")])
        refused = client.post("/v1/invoices", json=body, headers=auth(merchant["pos_keys"][outlet["id"]]))
        assert refused.status_code == 400 and "tax_group" in refused.text, refused.text


@pytest.mark.parametrize(("option", "message"), [
    (["--currency", "XYZ"], "unsupported currency 'XYZ'"),
    (["--time-zone", "Africa/Atlantis"], "unknown time zone 'Africa/Atlantis'"),
    (["--tax-group", "V:101:VAT"], "tax_group.rate must be at most 100"),
    (["--tax-group", "V:7.5555:VAT"], "more than 3 decimals"),
    (["--tax-group", "v-1:16:VAT"], "tax group code must be 1-8 upper-case letters or digits"),
    (["--tax-group", "V:16:" + "x" * 65], "longer than 64"),
    (["--tax-group", "V:16:VAT", "--tax-group", "V:8:VAT"], "tax group V is given twice"),
    (["--outlets", "0"], "outlets must be a whole number"),
])
def test_bad_merchant_input_exits_2_with_one_line_and_writes_nothing(mesh, stack_dir, option, message):
    before = merchant_count(mesh)
    prefix = f"X{uuid.uuid4().hex[:6].upper()}"
    refused = fiscal(stack_dir, "merchant", "create", "--name", "Bad", "--code-prefix", prefix, *option)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith("fiscal merchant: error: ") and message in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert refused.stdout == ""
    assert merchant_count(mesh) == before


def test_taken_outlet_codes_and_unknown_merchants_are_refused(mesh, stack_dir):
    prefix = f"D{uuid.uuid4().hex[:6].upper()}"
    first = fiscal(stack_dir, "merchant", "create", "--name", "Once", "--code-prefix", prefix)
    assert first.returncode == 0, first.stderr
    before = merchant_count(mesh)
    again = fiscal(stack_dir, "merchant", "create", "--name", "Twice", "--code-prefix", prefix)
    assert again.returncode == 2 and f"outlet code {prefix}001 is taken" in again.stderr, again.stderr
    assert merchant_count(mesh) == before
    unknown = str(uuid.uuid4())
    for args in (["tax-group", "list", "--merchant-id", unknown],
                 ["tax-group", "set", "--merchant-id", unknown, "--tax-group", "V:1:VAT"],
                 ["api-key", "list", "--merchant-id", "not-an-id"]):
        answer = fiscal(stack_dir, *args)
        assert answer.returncode == 2 and "not found" in answer.stderr, (args, answer.stderr)
    merchant_id = json.loads(first.stdout)["merchant"]["id"]
    bad_rate = fiscal(stack_dir, "tax-group", "set", "--merchant-id", merchant_id, "--tax-group", "A:exempt:Exempt",
                     "--tax-group", "B:abc:x")
    assert bad_rate.returncode == 2 and "tax_group.rate must be a positive decimal" in bad_rate.stderr
    groups = json.loads(fiscal(stack_dir, "tax-group", "list", "--merchant-id", merchant_id).stdout)
    assert {g["code"]: g["rate"] for g in groups} == {"A": "16", "B": "8", "C": "0", "E": ""}


def test_api_keys_create_list_revoke(mesh, stack_dir):
    prefix = f"K{uuid.uuid4().hex[:6].upper()}"
    merchant = json.loads(fiscal(stack_dir, "merchant", "create", "--name", "Keys", "--code-prefix", prefix,
                                 "--outlets", "2").stdout)
    merchant_id = merchant["merchant"]["id"]
    second = merchant["outlets"][1]["id"]
    created = fiscal(stack_dir, "api-key", "create", "--merchant-id", merchant_id, "--scope", "outlet:pos",
                     "--outlet-id", second, "--name", "till 2 (new)")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout.splitlines()[0])
    assert key["outlet_id"] == second and key["key"].startswith("fk_pos_")
    outlet = merchant["outlets"][1]
    body = sale(outlet, merchant["terminals"][second][0], merchant["cashiers"][second][0])
    with httpx.Client(base_url=mesh.gateway_url, timeout=30) as client:
        assert client.post("/v1/invoices", json=body, headers=auth(key["key"])).status_code == 200
    listing = fiscal(stack_dir, "api-key", "list", "--merchant-id", merchant_id)
    assert key["id"] in listing.stdout and key["key"] not in listing.stdout
    other = json.loads(fiscal(stack_dir, "merchant", "create", "--name", "Other", "--code-prefix", prefix + "O").stdout)
    foreign = fiscal(stack_dir, "api-key", "create", "--merchant-id", merchant_id, "--scope", "outlet:pos",
                     "--outlet-id", other["outlets"][0]["id"])
    assert foreign.returncode == 2 and "not found for this merchant" in foreign.stderr, foreign.stderr
    revoked = fiscal(stack_dir, "api-key", "revoke", "--merchant-id", merchant_id, "--key-id", key["id"])
    assert revoked.returncode == 0, revoked.stderr
    again = fiscal(stack_dir, "api-key", "revoke", "--merchant-id", merchant_id, "--key-id", key["id"])
    assert again.returncode == 2 and "no active API key" in again.stderr, again.stderr
