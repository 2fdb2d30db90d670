"""A merchant of a payments mesh and what the payments tests do with it: seal sales, start payments, steer
the provider simulators through their control API (simulators/common.py), read the operator's callback
counters, and look at the rows behind the API ("nothing written" checks). Everything goes through Envoy
or the simulators' own HTTP ports; nothing calls a service in-process."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import sqlalchemy as sa
from fiscal.v1 import payments_pb2, payments_pb2_grpc

from tests.harness import _with_store, auth, provision, run, sale

PROVIDERS = ("mpesa", "airtel_money", "orange_money")
# Payment.provider -> the simulator's name (python -m simulators.<name>).
SIMULATOR = {"mpesa": "mpesa", "airtel_money": "airtel", "orange_money": "orange"}
FINAL = frozenset({"confirmed", "failed", "cancelled", "expired"})
# A currency each provider collects (services/payments/domain.py AMOUNT_RULES: Orange Money takes no KES).
CURRENCY = {"mpesa": "KES", "airtel_money": "KES", "orange_money": "XOF"}
# The sale the tests sell, per currency (XOF has no minor units), and its tax-inclusive total.
SALE_LINES = {
    "KES": ([{"description": "Maize flour 2kg", "quantity": "1", "unit_price": "210.00", "tax_group": "A"},
             {"description": "Eggs (tray)", "quantity": "2", "unit_price": "450.50", "tax_group": "E"}], "1111.00"),
    "XOF": ([{"description": "Attieke 1kg", "quantity": "1", "unit_price": "1500", "tax_group": "A"},
             {"description": "Huile 1L", "quantity": "2", "unit_price": "2500", "tax_group": "E"}], "6500"),
}


def simulator_url(mesh, provider: str) -> str:
    """The base URL of the mesh's simulator for `provider` (stack/mesh.py starts them)."""
    return mesh.simulator_url(SIMULATOR.get(provider, provider))


def new_phone() -> str:
    """A Kenyan mobile number nobody else in the run uses: simulator behaviours are set per phone."""
    return "2547" + "".join(random.choice("0123456789") for _ in range(8))


def callback_counts(mesh) -> Counter:
    """The operator's view: callbacks by (provider, outcome), across merchants."""
    stub = payments_pb2_grpc.PaymentOpsServiceStub(mesh.channel("payments", "operator"))
    stats = stub.GetCallbackStats(payments_pb2.GetCallbackStatsRequest(), timeout=10)
    return Counter({(c.provider, c.outcome): c.count for c in stats.counts})


def db_rows(mesh, query: str, **params) -> list[Any]:
    """Rows from the mesh's database (as the owner), for checks the API cannot express."""
    async def fetch(_, engine):
        async with engine.connect() as conn:
            return (await conn.execute(sa.text(query), params)).all()
    return run(_with_store(mesh.database_url, fetch))


class PaymentsShop:
    def __init__(self, mesh, outlets: int = 2, currency: str = "KES"):
        self.mesh = mesh
        self.merchant = provision(mesh, outlets=outlets, terminals=1, currency=currency)
        self.currency = currency
        self.lines, self.total = SALE_LINES[currency]
        self.http = httpx.Client(base_url=mesh.gateway_url, timeout=30, trust_env=False)
        self.sims = httpx.Client(timeout=10, trust_env=False)

    def __enter__(self) -> PaymentsShop:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        self.sims.close()

    @property
    def merchant_id(self) -> str:
        return self.merchant["merchant"]["id"]

    def outlet(self, index: int = 0) -> dict:
        return self.merchant["outlets"][index]

    def pos_key(self, index: int = 0) -> str:
        return self.merchant["pos_keys"][self.outlet(index)["id"]]

    # ------------------------------------------------------------------ sales

    def sale(self, index: int = 0, client_invoice_id: str | None = None, **overrides) -> dict:
        outlet = self.outlet(index)
        overrides.setdefault("lines", [dict(line) for line in self.lines])
        return sale(outlet, self.merchant["terminals"][outlet["id"]][0], self.merchant["cashiers"][outlet["id"]][0],
                    client_invoice_id=client_invoice_id, **overrides)

    def seal(self, index: int = 0, body: dict | None = None) -> dict:
        body = body or self.sale(index)
        answer = self.http.post("/v1/invoices", json=body, headers=auth(self.pos_key(index)))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def invoice(self, invoice_id: str) -> dict:
        answer = self.http.get(f"/v1/invoices/{invoice_id}", headers=auth(self.merchant["admin_key"]))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def invoices_with_client_id(self, client_invoice_id: str) -> list[Any]:
        return db_rows(self.mesh, "SELECT id::text FROM ledger.invoices WHERE merchant_id = :m "
                       "AND client_invoice_id = :c", m=self.merchant_id, c=client_invoice_id)

    # ------------------------------------------------------------------ payments

    def create_payment(self, provider: str, amount: str, phone: str, *, key: str | None = None, index: int = 0,
                       **fields) -> httpx.Response:
        body = {"outlet_id": self.outlet(index)["id"], "provider": provider, "amount": amount,
                "currency": self.outlet(index)["currency"], "phone": phone,
                "client_payment_id": str(uuid.uuid4()), **fields}
        return self.http.post("/v1/payments", json=body, headers=auth(key or self.pos_key(index)))

    def pay(self, provider: str, amount: str, phone: str, **fields) -> dict:
        answer = self.create_payment(provider, amount, phone, **fields)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def payment(self, payment_id: str, key: str | None = None) -> dict:
        answer = self.http.get(f"/v1/payments/{payment_id}", headers=auth(key or self.merchant["admin_key"]))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def payments(self, **query) -> list[dict]:
        """Every payment matching the query (admin key), following the pages."""
        found: list[dict] = []
        token = ""
        for _ in range(1000):
            params = {**query, "page_size": 200, **({"page_token": token} if token else {})}
            answer = self.http.get("/v1/payments", params=params, headers=auth(self.merchant["admin_key"]))
            assert answer.status_code == 200, answer.text
            page = answer.json()
            found += page.get("payments", [])
            token = page.get("next_page_token", "")
            if not token:
                return found
        raise AssertionError("more than 1000 pages of payments")

    def wait_payment(self, payment_id: str, done=lambda p: p["status"] in FINAL, timeout: float = 30.0) -> dict:
        """Polls GET /v1/payments/{id} until `done` holds; fails after `timeout` with the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            payment = self.payment(payment_id)
            if done(payment):
                return payment
            if time.monotonic() > deadline:
                raise AssertionError(f"payment never reached the expected state within {timeout} s: {payment}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ simulators

    def sim(self, provider: str) -> str:
        return simulator_url(self.mesh, provider)

    def behave(self, provider: str, phone: str, **behaviour) -> None:
        """Sets how the simulator treats the next initiations from `phone`. Orange's web payment carries
        no phone number: its simulator matches by order_id (unknown before the payment exists) or "*", so
        for Orange this sets the default for the next initiation only (the tests run one at a time)."""
        if provider == "orange_money":
            phone, behaviour = "*", {"times": 1, **behaviour}
        answer = self.sims.post(f"{self.sim(provider)}/__sim/behaviour", json={"phone": phone, **behaviour})
        assert answer.status_code == 200, answer.text

    def sim_log(self, provider: str) -> dict:
        answer = self.sims.get(f"{self.sim(provider)}/__sim/requests")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def callbacks_sent(self, provider: str, payment: dict) -> list[dict]:
        """The callbacks the simulator sent about this payment: matched by the provider's request id
        (CheckoutRequestID, Airtel's transaction id) or, for Orange, whose notification names neither, by
        the receipt (txnid) once the payment knows it."""
        current = self.payment(payment["id"])
        keys = {current["provider_request_id"], current["provider_reference"]} - {""}
        if provider == "orange_money":
            keys.discard(current["provider_request_id"])
        return [sent for sent in self.sim_log(provider)["sent"] if any(key in sent["body"] for key in keys)]

    def provider_queries(self, provider: str, payment: dict) -> list[dict]:
        """The status queries (reconciliation) the simulator received about this payment."""
        marker = {"mpesa": "stkpushquery", "airtel_money": "/standard/v1/payments/",
                  "orange_money": "transactionstatus"}[provider]
        request_id = payment["provider_request_id"]
        return [r for r in self.sim_log(provider)["received"]
                if marker in r["path"] and request_id in r["path"] + r["body"]]

    def wait_callbacks_sent(self, provider: str, payment: dict, count: int, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            sent = self.callbacks_sent(provider, payment)
            if len(sent) >= count:
                return sent
            if time.monotonic() > deadline:
                raise AssertionError(f"the {provider} simulator sent {len(sent)} callbacks, not {count}")
            time.sleep(0.1)

    def post_callback(self, url: str, body: bytes | str | dict, headers: dict | None = None) -> httpx.Response:
        """POSTs a provider's callback to the gateway as the provider would (no API key)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        with httpx.Client(timeout=30, trust_env=False) as client:
            return client.post(url, content=body, headers={"content-type": "application/json", **(headers or {})})

    # ------------------------------------------------------------------ provider settings

    def callback_urls(self, provider: str, index: int = 0) -> dict:
        """The outlet's callback URLs for `provider` (they carry the merchant's token), from the settings API:
        enabling the provider with the deployment's default base URL and credentials of the simulator."""
        settings = self.provider_settings(index)
        for entry in settings:
            if entry["provider"] == provider and entry.get("callback_urls"):
                return entry["callback_urls"]
        raise AssertionError(f"no callback URLs for {provider}: {settings}")

    def provider_settings(self, index: int = 0) -> list[dict]:
        answer = self.http.get(f"/v1/outlets/{self.outlet(index)['id']}/payment-providers",
                               headers=auth(self.merchant["admin_key"]))
        assert answer.status_code == 200, answer.text
        return answer.json().get("providers", [])

    def row_counts(self) -> dict[str, int]:
        """How many payments, ledger payment rows and payment events this merchant has."""
        payments = db_rows(self.mesh, "SELECT count(*) FROM payments.payments WHERE merchant_id = :m",
                           m=self.merchant_id)[0][0]
        recorded = db_rows(self.mesh, "SELECT count(*) FROM ledger.invoice_payments WHERE merchant_id = :m",
                           m=self.merchant_id)[0][0]
        events = db_rows(self.mesh, "SELECT count(*) FROM payments.outbox WHERE merchant_id = :m",
                         m=self.merchant_id)[0][0]
        return {"payments": payments, "invoice_payments": recorded, "events": events}
