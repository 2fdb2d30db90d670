"""The DGI simulator (python -m simulators.dgi) as a process on 127.0.0.1: the bearer token, totals computed
from the items, confirm (code, counters, QR), idempotent re-submission, malformed documents refused with
the published error codes, and each knob (slow, down, reject). No database, no mesh."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.processes import free_port

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-dgi-token"
IFU = "1234567890123"
NIM = "TS99000042"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def postgres_server():
    """Overrides tests/conftest.py's session database: the simulator tests need none."""
    return None


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("dgi-sim") / "simulator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "simulators.dgi", "--port", str(port), "--token", TOKEN,
                                    "--ifu", IFU, "--nim", NIM], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/__sim/dgi", timeout=1, trust_env=False).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"simulator did not start: {log_path.read_text()}") from None
                time.sleep(0.1)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a "slow" handler still sleeping
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
def dgi(simulator):
    """A client on a freshly reset simulator."""
    with httpx.Client(base_url=simulator, timeout=5, trust_env=False) as client:
        client.post("/__sim/reset").raise_for_status()
        yield client
        client.post("/__sim/reset").raise_for_status()


def document(number: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "documentNumber": number or f"INV-{uuid.uuid4().hex[:10]}", "ifu": IFU, "type": "FV",
        "operator": {"id": "c-1", "name": "Cashier One"},
        "client": {"name": "Walk-in", "contact": "+22997000000"},
        "items": [{"name": "Riz 25kg", "price": 15000, "quantity": 2, "taxGroup": "B"}],
        "payment": [{"name": "ESPECES", "amount": 30000}],
    }
    body.update(overrides)
    return body


def submit(dgi: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return dgi.post("/api/invoice", json=body, headers=AUTH)


def submitted(dgi: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = submit(dgi, body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def confirm(dgi: httpx.Client, uid: str) -> dict[str, Any]:
    answer = dgi.put(f"/api/invoice/{uid}/confirm", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.json()


def knob(dgi: httpx.Client, **settings: Any) -> None:
    dgi.post("/__sim/dgi", json=settings).raise_for_status()


def expected_totals(items: list[dict[str, Any]], decimals: int, aib_rate: Decimal = Decimal(0)) -> dict[str, Decimal]:
    """The sums worked out here, independently: tax-inclusive prices, VAT per group (B and D at 18 %)."""
    step = Decimal(1).scaleb(-decimals)
    gross = dict.fromkeys("ABCDEF", Decimal(0))
    specific = Decimal(0)
    for item in items:
        gross[item["taxGroup"]] += (Decimal(str(item["quantity"])) * Decimal(str(item["price"]))).quantize(
            step, rounding=ROUND_HALF_UP)
        specific += Decimal(str(item.get("taxSpecific", 0)))
    vat = {g: (gross[g] * 18 / 118).quantize(step, rounding=ROUND_HALF_UP) for g in "BD"}
    aib = ((gross["B"] - vat["B"] + gross["D"] - vat["D"]) * aib_rate / 100).quantize(step, rounding=ROUND_HALF_UP)
    return {**{f"ta{g.lower()}": gross[g] for g in "ABCDEF"}, "vab": vat["B"], "vad": vat["D"],
            "hab": gross["B"] - vat["B"], "had": gross["D"] - vat["D"], "aib": aib, "ts": specific,
            "total": sum(gross.values(), Decimal(0)) + aib + specific}


def as_decimals(answer: dict[str, Any], keys: list[str]) -> dict[str, Decimal]:
    return {key: Decimal(str(answer[key])) for key in keys}


# --- the token ---

def test_every_api_call_needs_the_bearer_token(dgi):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert dgi.get("/api/invoice", headers=headers).status_code == 401
        assert submit_with(dgi, headers).status_code == 401
    status = dgi.get("/api/invoice", headers=AUTH)
    assert status.status_code == 200
    body = status.json()
    assert body["status"] is True and body["ifu"] == IFU and body["nim"] == NIM
    assert body["tokenValid"] > body["serverDateTime"] and body["pendingRequestsCount"] == 0
    assert dgi.get("/api/info/status", headers=AUTH).json()["nim"] == NIM
    # nothing was recorded as an invoice by the refused calls
    assert dgi.get("/__sim/dgi").json()["invoices"] == 0


def submit_with(dgi: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return dgi.post("/api/invoice", json=document(), headers=headers)


def test_the_request_log_keeps_calls_without_the_token(dgi):
    submitted(dgi, document())
    received = dgi.get("/__sim/requests").json()["received"]
    assert [r["path"] for r in received] == ["/api/invoice"]
    assert received[0]["headers"]["Authorization"] == "<redacted>"
    assert TOKEN not in str(received)


# --- submit: totals ---

def test_the_published_example_totals(dgi):
    """10 000 TTC in group B: HT 8 475 and VAT 1 525, as in the e-MECeF documentation's example."""
    answer = submitted(dgi, document(items=[{"name": "Article 1", "price": 5000, "quantity": 2, "taxGroup": "B"}]))
    assert uuid.UUID(answer["uid"])
    assert (answer["ta"], answer["tb"], answer["tc"], answer["td"]) == (0, 18, 0, 18)
    assert (answer["tab"], answer["hab"], answer["vab"], answer["total"]) == (10000, 8475, 1525, 10000)
    assert answer["taa"] == answer["tad"] == answer["aib"] == answer["ts"] == 0


def test_a_line_is_rounded_half_up_to_the_minor_unit(dgi):
    """2.5 XOF is 3 (half-up), 0.125 KES is 0.13: the line total, before any group sum."""
    xof = submitted(dgi, document(items=[{"name": "x", "price": 5, "quantity": 0.5, "taxGroup": "A"}], payment=[]))
    assert (xof["taa"], xof["total"]) == (3, 3)
    kes = submitted(dgi, document(items=[{"name": "x", "price": 0.25, "quantity": 0.5, "taxGroup": "A"}],
                                  currency="KES", payment=[]))
    assert Decimal(str(kes["total"])) == Decimal("0.13")


@pytest.mark.parametrize(("currency", "decimals", "items", "aib", "aib_rate"), [
    ("XOF", 0, [{"name": "Riz", "price": 15000, "quantity": 2, "taxGroup": "B"},
                {"name": "Huile", "price": 3499, "quantity": 3, "taxGroup": "B"},
                {"name": "Pain", "price": 250, "quantity": 7, "taxGroup": "A"},
                {"name": "Ciment", "price": 4333, "quantity": 1.5, "taxGroup": "D", "taxSpecific": 120},
                {"name": "Export", "price": 999, "quantity": 1, "taxGroup": "C"},
                {"name": "TPS", "price": 1001, "quantity": 0.333, "taxGroup": "E"},
                {"name": "Half", "price": 5, "quantity": 0.5, "taxGroup": "B"}], "B", Decimal(5)),
    ("KES", 2, [{"name": "Milk", "price": 61.99, "quantity": 3, "taxGroup": "B"},
                {"name": "Bread", "price": 55.5, "quantity": 1.25, "taxGroup": "D"},
                {"name": "Maize", "price": 0.07, "quantity": 0.5, "taxGroup": "F"}], "A", Decimal(1)),
    ("XOF", 0, [{"name": "Exempt", "price": 1, "quantity": 1, "taxGroup": "A"}], None, Decimal(0)),
])
def test_submit_computes_the_totals_per_group_to_the_minor_unit(dgi, currency, decimals, items, aib, aib_rate):
    extra = {"aib": aib} if aib else {}
    answer = submitted(dgi, document(items=items, currency=currency, payment=[], **extra))
    expected = expected_totals(items, decimals, aib_rate)
    assert as_decimals(answer, list(expected)) == expected
    # the invoice's totals add up: every group's gross, the AIB and the specific taxes
    gross = sum((Decimal(str(answer[f"ta{g}"])) for g in "abcdef"), Decimal(0))
    assert Decimal(str(answer["total"])) == gross + Decimal(str(answer["aib"])) + Decimal(str(answer["ts"]))


# --- confirm, cancel, get ---

CODE = re.compile(r"[A-Z0-9]{4}(?:-[A-Z0-9]{4}){5}")


def test_confirm_gives_the_code_and_counters_that_count_confirmed_invoices(dgi):
    first = submitted(dgi, document())
    second = submitted(dgi, document())
    never = submitted(dgi, document())
    assert dgi.get("/api/invoice", headers=AUTH).json()["pendingRequestsCount"] == 3

    one = confirm(dgi, first["uid"])
    assert CODE.fullmatch(one["codeMECeFDGI"]) and one["nim"] == NIM and one["counters"] == "1/1 FV"
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", one["dateTime"])
    marker, nim, code, ifu, stamp = one["qrCode"].split(";")
    assert (marker, nim, code, ifu) == ("F", NIM, one["codeMECeFDGI"].replace("-", ""), IFU)
    assert re.fullmatch(r"\d{14}", stamp)

    cancelled = dgi.put(f"/api/invoice/{never['uid']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["codeMECeFDGI"] is None

    two = confirm(dgi, second["uid"])
    assert two["counters"] == "2/2 FV" and two["codeMECeFDGI"] != one["codeMECeFDGI"]

    # a credit note on the first invoice: its own type counter, the overall counter goes on
    credit = submitted(dgi, document(type="FA", reference=code, items=[
        {"name": "Riz 25kg", "price": 15000, "quantity": 1, "taxGroup": "B"}]))
    assert credit["total"] == 15000
    assert confirm(dgi, credit["uid"])["counters"] == "1/3 FA"

    # confirming again answers as the first time and counts nothing
    assert confirm(dgi, first["uid"]) == one
    assert confirm(dgi, submitted(dgi, document())["uid"])["counters"] == "3/4 FV"

    details = dgi.get(f"/api/invoice/{first['uid']}", headers=AUTH).json()
    assert details["status"] == "confirmed" and details["securityElements"] == one
    assert details["items"] == document()["items"] and details["ifu"] == IFU
    assert dgi.get(f"/api/invoice/{never['uid']}", headers=AUTH).json()["status"] == "cancelled"
    assert dgi.get("/api/invoice", headers=AUTH).json()["pendingRequestsCount"] == 0


def test_finalised_or_unknown_invoices_answer_error_20(dgi):
    confirmed = submitted(dgi, document())["uid"]
    confirm(dgi, confirmed)
    cancelled = submitted(dgi, document())["uid"]
    dgi.put(f"/api/invoice/{cancelled}/cancel", headers=AUTH).raise_for_status()
    for method, path, status in [("PUT", f"/api/invoice/{confirmed}/cancel", 409),
                                 ("PUT", f"/api/invoice/{cancelled}/confirm", 409),
                                 ("PUT", f"/api/invoice/{cancelled}/cancel", 409),
                                 ("PUT", f"/api/invoice/{uuid.uuid4()}/confirm", 404),
                                 ("GET", f"/api/invoice/{uuid.uuid4()}", 404)]:
        answer = dgi.request(method, path, headers=AUTH)
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.json()["errorCode"] == "20" and answer.json()["errorDesc"]


# --- duplicates ---

def test_the_same_document_number_twice_answers_as_the_first_time(dgi):
    body = document("INV-000042")
    first = submitted(dgi, body)
    again = submitted(dgi, body)
    assert again == first
    assert dgi.get("/api/invoice", headers=AUTH).json()["pendingRequestsCount"] == 1
    security = confirm(dgi, first["uid"])
    # a re-upload after a crash: same uid and totals, and confirming gives back the same code
    assert submitted(dgi, body) == first
    assert confirm(dgi, first["uid"]) == security
    assert dgi.get("/__sim/dgi").json()["confirmed"] == 1


def test_a_different_document_under_a_used_number_is_refused(dgi):
    submitted(dgi, document("INV-7"))
    clash = submit(dgi, document("INV-7", items=[{"name": "Other", "price": 1, "quantity": 1, "taxGroup": "A"}]))
    assert clash.status_code == 409 and clash.json()["errorCode"] == "99"
    assert "INV-7" in clash.json()["errorDesc"]


def test_a_cancelled_request_frees_its_number(dgi):
    body = document("INV-8")
    first = submitted(dgi, body)
    dgi.put(f"/api/invoice/{first['uid']}/cancel", headers=AUTH).raise_for_status()
    second = submitted(dgi, body)
    assert second["uid"] != first["uid"] and second["total"] == first["total"]


# --- malformed documents ---

def _without(key: str) -> dict[str, Any]:
    body = document()
    del body[key]
    return body


MALFORMED = [
    ("type", document(type="XX"), "3"),
    ("no items", document(items=[]), "8"),
    ("items missing", _without("items"), "8"),
    ("tax group", document(items=[{"name": "x", "price": 1, "quantity": 1, "taxGroup": "Z"}]), "9"),
    ("payment type", document(payment=[{"name": "BITCOIN", "amount": 1}]), "7"),
    ("aib", document(aib="C"), "6"),
    ("credit note without reference", document(type="FA"), "4"),
    ("reference length", document(type="FA", reference="ABC"), "5"),
    ("unknown original", document(type="FA", reference="SIMU" + "A" * 20), "11"),
    ("documentNumber missing", _without("documentNumber"), "99"),
    ("seller ifu", document(ifu="12345"), "99"),
    ("another taxpayer", document(ifu="9999999999999"), "99"),
    ("price as text", document(items=[{"name": "x", "price": "100", "quantity": 1, "taxGroup": "B"}]), "99"),
    ("negative price", document(items=[{"name": "x", "price": -5, "quantity": 1, "taxGroup": "B"}]), "99"),
    ("zero quantity", document(items=[{"name": "x", "price": 5, "quantity": 0, "taxGroup": "B"}]), "99"),
    ("decimals XOF has not", document(items=[{"name": "x", "price": 5.5, "quantity": 1, "taxGroup": "B"}]), "99"),
    ("huge amount", document(items=[{"name": "x", "price": 10**13, "quantity": 1, "taxGroup": "B"}]), "99"),
    ("no operator", _without("operator"), "99"),
    ("client ifu", document(client={"ifu": "12"}), "99"),
    ("currency", document(currency="ABC"), "99"),
]


@pytest.mark.parametrize(("body", "code"), [(b, c) for _, b, c in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_documents_are_refused_with_the_published_codes(dgi, body, code):
    answer = submit(dgi, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errorCode"] == code and answer.json()["errorDesc"]
    assert dgi.get("/api/invoice", headers=AUTH).json()["pendingRequestsCount"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(dgi, raw):
    answer = dgi.post("/api/invoice", content=raw, headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == 400 and answer.json()["errorCode"] == "99"


def test_a_credit_note_may_not_exceed_its_original(dgi):
    original = submitted(dgi, document(items=[{"name": "x", "price": 1000, "quantity": 3, "taxGroup": "B"}]))
    reference = confirm(dgi, original["uid"])["codeMECeFDGI"].replace("-", "")
    two = [{"name": "x", "price": 1000, "quantity": 2, "taxGroup": "B"}]
    confirm(dgi, submitted(dgi, document(type="FA", reference=reference, items=two))["uid"])
    too_much = submit(dgi, document(type="FA", reference=reference, items=two))  # 2 000 + 2 000 > 3 000
    assert too_much.status_code == 400 and too_much.json()["errorCode"] == "12"
    # an export credit note cannot reference a domestic sale
    wrong_type = submit(dgi, document(type="EA", reference=reference, items=two[:1]))
    assert wrong_type.json()["errorCode"] == "11"


# --- knobs ---

def test_slow_answers_after_the_delay_and_times_out_a_short_deadline(dgi):
    knob(dgi, mode="slow", delay_seconds=30)
    with pytest.raises(httpx.TimeoutException):
        dgi.get("/api/invoice", headers=AUTH, timeout=0.5)
    knob(dgi, mode="slow", delay_seconds=0.1)
    assert submitted(dgi, document())["total"] == 30000  # slow, but answers normally
    knob(dgi, mode="ok")
    assert dgi.get("/api/invoice", headers=AUTH).status_code == 200


def test_down_503_refuses_everything_until_ok(dgi):
    pending = submitted(dgi, document())["uid"]
    knob(dgi, mode="down")
    for method, path in [("GET", "/api/invoice"), ("POST", "/api/invoice"), ("PUT", f"/api/invoice/{pending}/confirm"),
                         ("GET", "/api/info/status")]:
        assert dgi.request(method, path, headers=AUTH, json=document()).status_code == 503
    assert dgi.get("/__sim/dgi").json()["knobs"]["mode"] == "down"  # the control API stays up
    knob(dgi, mode="ok")
    assert confirm(dgi, pending)["counters"] == "1/1 FV"


def test_down_close_drops_the_connection_unanswered(dgi):
    knob(dgi, mode="down", how="close")
    with pytest.raises(httpx.TransportError):
        dgi.post("/api/invoice", json=document(), headers=AUTH)
    knob(dgi, mode="ok")
    assert dgi.get("/__sim/dgi").json()["invoices"] == 0
    submitted(dgi, document())


def test_reject_the_next_n_with_the_given_reason(dgi):
    knob(dgi, mode="reject", count=2, error_code="14", error_desc="IFU du client non reconnu")
    bodies = [document() for _ in range(3)]
    for body in bodies[:2]:
        refused = submit(dgi, body)
        assert refused.status_code == 400
        assert refused.json() == {"errorCode": "14", "errorDesc": "IFU du client non reconnu"}
    submitted(dgi, bodies[2])
    assert dgi.get("/__sim/dgi").json()["knobs"]["mode"] == "ok"
    submitted(dgi, bodies[0])  # a rejected document was not kept: it goes through once the DGI accepts


def test_reject_every_document_whose_number_matches(dgi):
    knob(dgi, mode="reject", number_pattern=r"INV-BAD-\d+", error_code="99", error_desc="Document refusé")
    for _ in range(2):
        refused = submit(dgi, document("INV-BAD-17"))
        assert refused.json() == {"errorCode": "99", "errorDesc": "Document refusé"}
    submitted(dgi, document("INV-GOOD-18"))
    submitted(dgi, document("XINV-BAD-17"))  # the whole number must match
    assert dgi.get("/__sim/dgi").json()["knobs"]["mode"] == "reject"


@pytest.mark.parametrize("settings", [
    {"mode": "sideways"}, {"mode": "slow", "delay_seconds": 601}, {"mode": "slow", "delay_seconds": "1"},
    {"mode": "down", "how": "teapot"}, {"mode": "reject"}, {"mode": "reject", "count": 1, "number_pattern": "x"},
    {"mode": "reject", "count": 0}, {"mode": "reject", "number_pattern": "("}, {"mode": "ok", "count": 3},
    {"mode": "ok", "extra": 1}, [],
])
def test_bad_knobs_are_refused(dgi, settings):
    assert dgi.post("/__sim/dgi", json=settings).status_code == 400
    assert dgi.get("/__sim/dgi").json()["knobs"]["mode"] == "ok"


def test_reset_forgets_invoices_counters_and_knobs(dgi):
    confirm(dgi, submitted(dgi, document("INV-1"))["uid"])
    knob(dgi, mode="reject", count=5)
    dgi.post("/__sim/reset").raise_for_status()
    state = dgi.get("/__sim/dgi").json()
    assert (state["invoices"], state["confirmed"], state["knobs"]["mode"]) == (0, 0, "ok")
    assert confirm(dgi, submitted(dgi, document("INV-1"))["uid"])["counters"] == "1/1 FV"
