"""Credit notes refund at most what each tax group of the invoice charged, at the invoice's own rates."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
import pytest

from services.ledger.money import TaxGroup
from tests.harness import _with_store, auth, ledger_rows, provision, run, sale


@pytest.fixture(scope="module")
def uncached_mesh(start_mesh):
    # The ledger re-reads the outlet (and its tax groups) on every call, so a rate changed in a test
    # is what the ledger sees at once: the refund must still use the invoice's rate.
    return start_mesh(env={"FISCAL_OUTLET_CACHE_SECONDS": "0"})


def _line(group: str, amount: str, description: str = "Item") -> dict:
    return {"description": description, "quantity": "1", "unit_price": amount, "tax_group": group}


class Shop:
    """One merchant and an invoice of 100.00 at 16 % (group A) + 900.00 exempt (group E)."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.merchant = provision(mesh, outlets=1, terminals=1)
        self.outlet = self.merchant["outlets"][0]
        self.terminal = self.merchant["terminals"][self.outlet["id"]][0]
        self.cashier = self.merchant["cashiers"][self.outlet["id"]][0]
        self.headers = auth(self.merchant["pos_keys"][self.outlet["id"]])
        body = sale(self.outlet, self.terminal, self.cashier, lines=[_line("A", "100.00"), _line("E", "900.00")])
        answer = self._post("/v1/invoices", body)
        assert answer.status_code == 200, answer.text
        self.invoice = answer.json()
        assert [(t["tax_group"], t["gross_amount"], t["tax_amount"]) for t in self.invoice["tax_totals"]] == [
            ("A", "100.00", "13.79"), ("E", "900.00", "0.00")]

    def _post(self, path: str, body: dict) -> httpx.Response:
        with httpx.Client(base_url=self.mesh.gateway_url, timeout=30) as client:
            return client.post(path, json=body, headers=self.headers)

    def refund(self, *lines: dict) -> httpx.Response:
        body = {"client_invoice_id": str(uuid.uuid4()), "pos_terminal_id": self.terminal, "cashier_id": self.cashier,
                "reason": "returned", "lines": list(lines)}
        return self._post(f"/v1/invoices/{self.invoice['id']}/credit-notes", body)

    def rows(self) -> dict[str, int]:
        return ledger_rows(self.mesh, self.merchant["merchant"]["id"])

    def refused(self, *lines: dict, group: str) -> None:
        before = self.rows()
        answer = self.refund(*lines)
        assert answer.status_code == 400, answer.text  # FAILED_PRECONDITION through Envoy
        error = answer.json()
        assert error["code"] == 9 and "REFUND_EXCEEDS_INVOICE" in answer.text, error
        assert f"tax group {group} " in error["message"], error
        assert self.rows() == before


def _taxes(note: dict) -> dict[str, tuple[str, str, str]]:
    return {t["tax_group"]: (t["gross_amount"], t["tax_amount"], t["rate"]) for t in note["tax_totals"]}


def test_refunding_more_than_a_group_charged_is_refused(uncached_mesh):
    # The example: 1,000 refunded in the 16 % group of a 100 @ 16 % + 900 exempt invoice would
    # claim back 137.93 of VAT when 13.79 was paid. The gross total alone (1,000) does not catch it.
    shop = Shop(uncached_mesh)
    shop.refused(_line("A", "1000.00"), group="A")
    shop.refused(_line("A", "100.01"), group="A")
    shop.refused(_line("A", "60.00"), _line("A", "40.01"), group="A")


def test_partial_refunds_in_each_group_until_each_is_used_up(uncached_mesh):
    shop = Shop(uncached_mesh)
    first = shop.refund(_line("A", "40.00"), _line("E", "300.00"))
    assert first.status_code == 200, first.text
    assert _taxes(first.json()) == {"A": ("40.00", "5.52", "16"), "E": ("300.00", "0.00", "")}
    second = shop.refund(_line("A", "50.00"))
    assert second.status_code == 200, second.text
    # Rounded on the cumulative refund: tax(90.00) = 12.41, minus 5.52 already refunded.
    assert _taxes(second.json()) == {"A": ("50.00", "6.89", "16")}
    # Together with the first two, 20.00 more in A exceeds the 10.00 left in A; E still has 600.00.
    shop.refused(_line("A", "20.00"), group="A")
    shop.refused(_line("E", "600.01"), group="E")
    shop.refused(group="A")  # a full refund (no lines) is more than what is left
    last = shop.refund(_line("A", "10.00"), _line("E", "600.00"))
    assert last.status_code == 200, last.text
    # Every group refunded in full gives back exactly the tax the invoice charged: 5.52 + 6.89 + 1.38.
    assert _taxes(last.json()) == {"A": ("10.00", "1.38", "16"), "E": ("600.00", "0.00", "")}
    shop.refused(_line("E", "0.01"), group="E")
    assert shop.rows() == {"invoices": 4, "outbox": 4}


def test_a_rate_changed_after_the_sale_does_not_change_the_refund(uncached_mesh):
    shop = Shop(uncached_mesh)
    merchant_id = shop.merchant["merchant"]["id"]
    run(_with_store(uncached_mesh.database_url,
                    lambda store, _: store.set_tax_group(merchant_id, TaxGroup("A", "VAT 8%", Decimal("8")))))
    # The merchant now sells at 8 %: a new sale says so ...
    new_sale = shop._post("/v1/invoices", sale(shop.outlet, shop.terminal, shop.cashier, lines=[_line("A", "50.00")]))
    assert new_sale.status_code == 200, new_sale.text
    assert _taxes(new_sale.json()) == {"A": ("50.00", "3.70", "8")}
    # ... but a refund of the earlier sale gives back the 16 % it charged, under its label.
    note = shop.refund(_line("A", "50.00"))
    assert note.status_code == 200, note.text
    assert _taxes(note.json()) == {"A": ("50.00", "6.90", "16")}
    assert [t["label"] for t in note.json()["tax_totals"]] == ["VAT 16%"]
