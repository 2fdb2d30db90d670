"""Forged, unknown, tampered and malformed provider callbacks, POSTed to the gateway the way a provider (or
an attacker who found the route) would: each is refused with a 4xx, changes neither the payment nor the
invoice, and is counted under its outcome in the operator's callback statistics (PaymentOpsService,
called over mTLS as the operator)."""

from __future__ import annotations

import json
import secrets
import uuid

import pytest

from simulators.airtel import sign as airtel_sign
from stack.mesh import SIMULATORS
from tests.harness import auth
from tests.payments_shop import callback_counts, db_rows, new_phone


class Target:
    """A merchant's pending payment (its callback never comes) and a genuine callback of the same provider
    to copy from: the route (with the merchant's token) and the provider's body shape."""

    def __init__(self, shop, provider: str, **pay_fields):
        self.shop = shop
        self.provider = provider
        genuine_phone, self.phone = new_phone(), new_phone()
        genuine_invoice = shop.seal()
        genuine = shop.pay(provider, genuine_invoice["total"], genuine_phone, invoice_id=genuine_invoice["id"])
        assert shop.wait_payment(genuine["id"])["status"] == "confirmed"
        self.genuine = genuine
        self.genuine_callback = shop.wait_callbacks_sent(provider, genuine, 1)[0]
        self.url = self.genuine_callback["url"]
        self.body = json.loads(self.genuine_callback["body"])

        shop.behave(provider, self.phone, callback="never")
        if "sale" not in pay_fields:
            self.invoice = shop.seal()
            pay_fields = {"invoice_id": self.invoice["id"], **pay_fields}
        else:
            self.invoice = None
        self.payment = shop.pay(provider, shop.total, self.phone, **pay_fields)
        assert self.payment["status"] == "pending", self.payment

    def snapshot(self) -> tuple:
        invoice = self.shop.invoice(self.invoice["id"]) if self.invoice else None
        if invoice is not None:
            invoice.pop("sync", None)  # the DGI upload moves on its own schedule; no callback touches it
        return self.shop.payment(self.payment["id"]), invoice, self.shop.row_counts()

    def refused(self, outcome: str, url: str, body, headers: dict | None = None) -> dict:
        """POSTs the callback; asserts it was refused with a JSON 4xx, changed nothing and was counted."""
        before_counts, before = callback_counts(self.shop.mesh), self.snapshot()
        answer = self.shop.post_callback(url, body, headers)
        assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/json"), answer.headers
        after_counts, after = callback_counts(self.shop.mesh), self.snapshot()
        assert after == before, "a refused callback changed something"
        provider = self.provider
        grew = {key: after_counts[key] - before_counts[key] for key in after_counts
                if after_counts[key] != before_counts[key]}
        assert grew == {(provider, outcome): 1}, grew
        return answer.json()


def _with_token(url: str, token: str) -> str:
    """The same callback route with another merchant token: /v1/callbacks/<provider>/<token>[/...]."""
    parts = url.split("/")
    index = parts.index("callbacks") + 2
    parts[index] = token
    return "/".join(parts)


def _stk(body: dict) -> dict:
    return body["Body"]["stkCallback"]


def _stk_item(body: dict, name: str) -> dict:
    return next(item for item in _stk(body)["CallbackMetadata"]["Item"] if item["Name"] == name)


def _stk_for(target: Target, amount=None) -> dict:
    """A successful STK callback about the target's pending payment (a fresh receipt number)."""
    body = json.loads(json.dumps(target.body))
    _stk(body)["CheckoutRequestID"] = target.payment["provider_request_id"]
    _stk_item(body, "MpesaReceiptNumber")["Value"] = "S" + secrets.token_hex(5).upper()
    if amount is not None:
        _stk_item(body, "Amount")["Value"] = amount
    return body


def _airtel_for(target: Target, **changes) -> dict:
    body = json.loads(json.dumps(target.body))
    body["transaction"]["id"] = target.payment["provider_request_id"]
    body["transaction"]["airtel_money_id"] = "MP" + secrets.token_hex(6).upper()
    body["transaction"]["status_code"] = "TS"
    body.update(changes)
    return body


@pytest.mark.parametrize("provider", ["mpesa", "airtel_money", "orange_money"])
def test_a_wrong_route_token_is_refused_and_counted(shop_for, provider):
    pay_shop = shop_for(provider)
    target = Target(pay_shop, provider)
    forged_body = _stk_for(target) if provider == "mpesa" else target.body
    target.refused("forged_token", _with_token(target.url, secrets.token_urlsafe(32)), forged_body)
    # The genuine route with a genuine (already applied) body is still fine: the token was the problem.
    assert pay_shop.post_callback(target.url, target.genuine_callback["body"]).status_code == 200


def test_an_unknown_checkout_request_id_is_refused(pay_shop):
    target = Target(pay_shop, "mpesa")
    body = _stk_for(target)
    _stk(body)["CheckoutRequestID"] = f"ws_CO_{uuid.uuid4().hex[:20]}"
    target.refused("unknown_transaction", target.url, body)


def test_a_malformed_callback_is_refused(pay_shop):
    target = Target(pay_shop, "mpesa")
    target.refused("malformed", target.url, "{not json")
    target.refused("malformed", target.url, {"Body": {"stkCallback": {"ResultCode": "zero"}}})


def test_a_tampered_stk_amount_is_flagged_and_never_seals_the_sale(pay_shop):
    # M-Pesa's STK callback has no signature: a body with the right CheckoutRequestID but another amount
    # is counted as amount_tampered and recorded flagged (docs/payments.md), never as a clean payment, and a
    # pay-first sale is not sealed on it.
    sale = pay_shop.sale()
    target = Target(pay_shop, "mpesa", sale=sale)
    before = callback_counts(pay_shop.mesh)
    answer = pay_shop.post_callback(target.url, _stk_for(target, amount=1))
    after = callback_counts(pay_shop.mesh)
    assert after[("mpesa", "amount_tampered")] - before[("mpesa", "amount_tampered")] == 1, (before, after)
    payment = pay_shop.wait_payment(target.payment["id"], lambda p: p["sale_state"] != "waiting", timeout=10)
    assert payment["sale_state"] == "not_sealed", payment
    assert not pay_shop.invoices_with_client_id(sale["client_invoice_id"])
    if answer.status_code < 400:  # accepted as a flagged payment: recorded as paid 1, flagged
        assert payment["amount_mismatch"] is True and payment["confirmed_amount"] in ("1", "1.00"), payment
    else:  # refused outright: the payment is as it was
        assert payment["status"] == "pending", payment


def test_airtel_with_a_wrong_hash_is_refused(pay_shop):
    # The outlet turns on Airtel's callback hash: from then on a callback whose `hash` is not the HMAC of
    # the transaction with that secret is forged, even on the right route and about a real transaction.
    target = Target(pay_shop, "airtel_money")
    hash_secret = secrets.token_urlsafe(24)
    outlet_id = pay_shop.outlet()["id"]
    answer = pay_shop.http.put(
        f"/v1/outlets/{outlet_id}/payment-providers/airtel_money", headers=auth(pay_shop.merchant["admin_key"]),
        json={"enabled": True, "airtel": {**SIMULATORS["airtel"], "callback_hash_secret": hash_secret}})
    assert answer.status_code == 200, answer.text
    settings = answer.json()
    assert settings["callback_urls"] and all(url.startswith(pay_shop.mesh.gateway_url)
                                              for url in settings["callback_urls"].values()), settings
    assert target.url in settings["callback_urls"].values(), (target.url, settings["callback_urls"])
    # Write-only secrets: never whole in the answer, nor in the list.
    assert hash_secret not in answer.text and SIMULATORS["airtel"]["client_secret"] not in answer.text
    assert hash_secret not in json.dumps(pay_shop.provider_settings())

    target.refused("forged_signature", target.url, _airtel_for(target, hash="not-the-hmac"))
    target.refused("forged_signature", target.url, {k: v for k, v in _airtel_for(target).items() if k != "hash"})
    # The right hash (the simulator's own signing, as Airtel documents it) is accepted: the check is real.
    genuine = _airtel_for(target)
    genuine["hash"] = airtel_sign(hash_secret, genuine["transaction"])
    assert pay_shop.post_callback(target.url, genuine).status_code == 200
    assert pay_shop.payment(target.payment["id"])["status"] == "confirmed"


def test_orange_with_a_wrong_notif_token_is_refused(shop_for):
    pay_shop = shop_for("orange_money")
    # Orange's notification names no order: its notif_token is what ties it to a payment (looked up by its
    # hash), so a wrong one finds no payment of this merchant: unknown_transaction.
    target = Target(pay_shop, "orange_money")
    forged = {**target.body, "status": "SUCCESS", "notif_token": secrets.token_hex(16),
              "txnid": "MP" + secrets.token_hex(6).upper()}
    queries_before = len(pay_shop.provider_queries("orange_money", target.payment))
    target.refused("unknown_transaction", target.url, forged)
    # Nor was Orange asked about the pending payment on the forged word.
    assert len(pay_shop.provider_queries("orange_money", target.payment)) == queries_before


def test_refused_callbacks_are_logged_without_secrets(pay_shop):
    target = Target(pay_shop, "mpesa")
    wrong_token = secrets.token_urlsafe(32)
    target.refused("forged_token", _with_token(target.url, wrong_token), _stk_for(target))
    token = target.url.split("/")[target.url.split("/").index("callbacks") + 2]
    logs = "".join(path.read_text(errors="replace") for path in pay_shop.mesh.log_dir.glob("payments*.log"))
    assert logs, "no payments log"
    for secret in (token, wrong_token, target.phone):
        assert secret not in logs
    rows = db_rows(pay_shop.mesh, "SELECT count(*) FROM payments.merchants WHERE merchant_id = :m",
                   m=pay_shop.merchant_id)
    assert rows[0][0] == 1
