"""DGI simulator: the tax authority's invoice intake in the shape of the published e-MECeF / e-MCF API
(Benin's DGI, "SyGMEF e-MCF"), on 127.0.0.1, so the DGI sync worker and its tests have something real
to talk to. docs/dgi-simulator.md says what it implements, where the shapes come from and where it departs.

  python -m simulators.dgi --port P [--token T] [--ifu IFU] [--nim NIM]

Endpoints (all under /api, all need "Authorization: Bearer <token>", 401 without):
  GET  /api/invoice                 status: token validity, taxpayer IFU and NIM, server time, pending invoices
  GET  /api/info/status             the same
  GET  /api/info/taxGroups | invoiceTypes | paymentTypes   the simulator's reference tables
  POST /api/invoice                 submit a document -> its uid and the totals per tax group it computed
  PUT  /api/invoice/{uid}/confirm   -> codeMECeFDGI, counters, NIM, dateTime, qrCode
  PUT  /api/invoice/{uid}/cancel    drop a pending document
  GET  /api/invoice/{uid}           the document as submitted, its status and (once confirmed) its security elements
Errors answer {"errorCode", "errorDesc"} with the published codes (ERRORS) and a 4xx status.

Control API (JSON, loopback like the rest):
  POST /__sim/dgi  {"mode": "ok"}
                   {"mode": "slow", "delay_seconds": 30}          sleep before answering each /api request
                   {"mode": "down", "how": "503" | "close"}       503 to everything, or close the connection unanswered
                   {"mode": "reject", "count": N | "number_pattern": "regex",
                    "error_code": "99", "error_desc": "..."}      refuse the next N submissions (then back to ok),
                                                                  or every submission whose documentNumber matches
  GET  /__sim/dgi   the knobs and counters now
  plus common.py's GET /__sim/requests and POST /__sim/reset (which here also forgets invoices, counters, knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from services.runtime.currencies import MINOR_UNITS
from simulators.common import SLOW_SECONDS, SimulatorState, serve

PORTO_NOVO = ZoneInfo("Africa/Porto-Novo")  # the DGI's clock (UTC+1)
VERSION = "1.0-sim"
DEFAULT_TOKEN = "sim-dgi-token"
DEFAULT_IFU = "0000000000000"  # 13 digits, like an IFU; obviously not a real taxpayer's
DEFAULT_NIM = "SM01000001"
TOKEN_VALID_DAYS = 365

# Tax groups of the e-MECeF API and their VAT rates (percent); None: no VAT in the group.
# A exempt, B taxable 18 %, C export, D taxable 18 % (exception regime), E TPS regime, F reserved.
TAX_RATES: dict[str, Decimal | None] = {"A": None, "B": Decimal(18), "C": None, "D": Decimal(18),
                                        "E": None, "F": None}
AIB_RATES = {"A": Decimal(1), "B": Decimal(5)}  # advance on profit tax, percent of the HT amount of B and D
INVOICE_TYPES = {"FV": "Facture de vente", "EV": "Facture de vente à l'exportation",
                 "FA": "Facture d'avoir", "EA": "Facture d'avoir à l'exportation"}
CREDIT_OF = {"FA": "FV", "EA": "EV"}  # a credit note and the type of invoice it must reference
PAYMENT_TYPES = ("ESPECES", "VIREMENT", "CARTEBANCAIRE", "MOBILEMONEY", "CHEQUES", "CREDIT", "AUTRE")

# The published error codes (e-MCF API), and their texts.
ERRORS = {
    "1": "Le nombre maximum de factures en attente est dépassé",
    "3": "Type de facture n'est pas valide",
    "4": "La référence de la facture originale est manquante",
    "5": "La référence de la facture originale ne comporte pas 24 caractères",
    "6": "La valeur de l'AIB n'est pas valide",
    "7": "Le type de paiement n'est pas valide",
    "8": "La facture doit contenir les articles",
    "9": "Le groupe de taxation au niveau des articles n'est pas valide",
    "11": "La référence de la facture originale n'est pas valide (la facture originale est introuvable)",
    "12": "La référence de la facture originale n'est pas valide (le montant sur la facture d'avoir "
          "dépasse le montant de la facture originale)",
    "20": "La facture n'existe pas ou elle est déjà finalisée / annulée",
    "99": "Erreur lors du traitement de la demande",
}

# Bounds: everything the simulator keeps or accepts is limited.
MAX_BODY_BYTES = 1 << 20
MAX_PENDING = 1_000
MAX_INVOICES = 200_000
MAX_ITEMS = 1_000
MAX_PAYMENTS = 20
MAX_TEXT = 200
MAX_DOCUMENT_NUMBER = 64
MAX_QUANTITY_DECIMALS = 3
# Amounts go back as JSON numbers (floats): below 10^12 with at most 3 decimals they stay exact.
MAX_AMOUNT = Decimal(10) ** 12
MAX_DELAY_SECONDS = 600.0
MAX_PATTERN = 200
IFU = re.compile(r"[0-9]{13}", re.ASCII)
CODE_ALPHABET = string.ascii_uppercase + string.digits
MODES = ("ok", "slow", "down", "reject")


class DgiError(Exception):
    """A refusal in the API's shape: {"errorCode", "errorDesc"} with an HTTP status."""

    def __init__(self, code: str, detail: str | None = None, status: int = 400, *, verbatim: bool = False) -> None:
        base = "" if verbatim else ERRORS.get(code, "")
        self.code = code
        self.desc = f"{base}: {detail}" if base and detail else (detail or base)
        self.status = status
        super().__init__(self.desc)


def malformed(detail: str) -> DgiError:
    return DgiError("99", detail)


@dataclass(frozen=True)
class DgiConfig:
    token: str = DEFAULT_TOKEN
    ifu: str = DEFAULT_IFU
    nim: str = DEFAULT_NIM


@dataclass
class Knobs:
    mode: str = "ok"
    delay_seconds: float = SLOW_SECONDS
    how: str = "503"
    reject_remaining: int | None = None
    reject_pattern: re.Pattern[str] | None = None
    error_code: str = "99"
    error_desc: str = "Rejet simulé"

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "delay_seconds": self.delay_seconds, "how": self.how,
                "reject_remaining": self.reject_remaining,
                "number_pattern": self.reject_pattern.pattern if self.reject_pattern else None,
                "error_code": self.error_code, "error_desc": self.error_desc}


def parse_knobs(data: Any) -> Knobs:
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    allowed = {"mode", "delay_seconds", "how", "count", "number_pattern", "error_code", "error_desc"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown knob(s): {sorted(unknown)}")
    mode = data.get("mode")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}")
    knobs = Knobs(mode=mode)
    if mode == "slow":
        delay = data.get("delay_seconds", SLOW_SECONDS)
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY_SECONDS:
            raise ValueError(f"delay_seconds must be a number from 0 to {MAX_DELAY_SECONDS:g}")
        knobs.delay_seconds = float(delay)
    if mode == "down":
        how = data.get("how", "503")
        if how not in ("503", "close"):
            raise ValueError('how must be "503" or "close"')
        knobs.how = how
    if mode == "reject":
        count, pattern = data.get("count"), data.get("number_pattern")
        if (count is None) == (pattern is None):
            raise ValueError("reject needs exactly one of count or number_pattern")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_INVOICES:
                raise ValueError(f"count must be an integer from 1 to {MAX_INVOICES}")
            knobs.reject_remaining = count
        else:
            if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN:
                raise ValueError(f"number_pattern must be a regular expression of at most {MAX_PATTERN} characters")
            try:
                knobs.reject_pattern = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"number_pattern is not a regular expression: {exc}") from None
        code, desc = data.get("error_code", "99"), data.get("error_desc", "Rejet simulé")
        if not isinstance(code, str) or not 0 < len(code) <= 16:
            raise ValueError("error_code must be a string of 1 to 16 characters")
        if not isinstance(desc, str) or not 0 < len(desc) <= 500:
            raise ValueError("error_desc must be a string of 1 to 500 characters")
        knobs.error_code, knobs.error_desc = code, desc
    elif set(data) & {"count", "number_pattern", "error_code", "error_desc"}:
        raise ValueError("count, number_pattern, error_code and error_desc go with mode reject")
    return knobs


# --- the document and its arithmetic (no HTTP here) ---

@dataclass(frozen=True)
class Item:
    name: str
    price: Decimal  # unit price, tax included
    quantity: Decimal
    tax_group: str
    tax_specific: Decimal  # a specific tax for the whole line, added to the total


@dataclass(frozen=True)
class Document:
    document_number: str
    ifu: str
    type: str
    currency: str
    items: tuple[Item, ...]
    aib: str | None
    reference: str | None
    payments: tuple[tuple[str, Decimal], ...]


def _text(value: Any, field_name: str, *, required: bool, limit: int = MAX_TEXT) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise malformed(f"{field_name} must be a non-empty string of at most {limit} characters")
    return value


def _number(value: Any, field_name: str, decimals: int, *, positive: bool) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise malformed(f"{field_name} must be a number")
    if value < 0 or (positive and value == 0):
        raise malformed(f"{field_name} must be {'greater than zero' if positive else 'zero or more'}")
    if value >= MAX_AMOUNT:
        raise malformed(f"{field_name} must be below {MAX_AMOUNT:,}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimals:
        raise malformed(f"{field_name} has more than {decimals} decimals")
    return value


def parse_document(data: Any, config: DgiConfig) -> Document:
    """Checks a submitted document the way the API does (published codes first, 99 for the rest)."""
    if not isinstance(data, dict):
        raise malformed("the body must be a JSON object")
    number = _text(data.get("documentNumber"), "documentNumber", required=True, limit=MAX_DOCUMENT_NUMBER)
    assert number is not None
    ifu = data.get("ifu")
    if not isinstance(ifu, str) or not IFU.fullmatch(ifu):
        raise malformed("ifu must be the seller's IFU, 13 digits")
    if ifu != config.ifu:
        raise malformed("ifu is not the taxpayer this token belongs to")
    kind = data.get("type")
    if kind not in INVOICE_TYPES:
        raise DgiError("3", f"{str(kind)[:20]!r} is not one of {sorted(INVOICE_TYPES)}")
    currency = data.get("currency", "XOF")
    if currency not in MINOR_UNITS:
        raise malformed(f"currency {str(currency)[:10]!r} is not supported")
    decimals = MINOR_UNITS[currency]
    operator = data.get("operator")
    if not isinstance(operator, dict):
        raise malformed("operator must be an object with a name")
    _text(operator.get("name"), "operator.name", required=True)
    client = data.get("client")
    if client is not None:
        if not isinstance(client, dict):
            raise malformed("client must be an object")
        client_ifu = client.get("ifu")
        if client_ifu is not None and (not isinstance(client_ifu, str) or not IFU.fullmatch(client_ifu)):
            raise malformed("client.ifu must be 13 digits")
        for key in ("name", "contact", "address"):
            _text(client.get(key), f"client.{key}", required=False)
    reference = data.get("reference")
    if kind in CREDIT_OF:
        if reference is None or reference == "":
            raise DgiError("4")
        if not isinstance(reference, str) or len(reference) != 24:
            raise DgiError("5")
    elif reference is not None:
        raise malformed(f"reference goes only with a credit note ({'/'.join(CREDIT_OF)})")
    aib = data.get("aib")
    if aib is not None and aib not in AIB_RATES:
        raise DgiError("6", f"{str(aib)[:10]!r} is not one of {sorted(AIB_RATES)}")
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise DgiError("8")
    if len(raw_items) > MAX_ITEMS:
        raise malformed(f"at most {MAX_ITEMS} items")
    items = []
    for index, raw in enumerate(raw_items):
        where = f"items[{index}]"
        if not isinstance(raw, dict):
            raise malformed(f"{where} must be an object")
        name = _text(raw.get("name"), f"{where}.name", required=True)
        group = raw.get("taxGroup")
        if group not in TAX_RATES:
            raise DgiError("9", f"{where}.taxGroup {str(group)[:10]!r} is not one of {sorted(TAX_RATES)}")
        price = _number(raw.get("price"), f"{where}.price", decimals, positive=False)
        quantity = _number(raw.get("quantity"), f"{where}.quantity", MAX_QUANTITY_DECIMALS, positive=True)
        specific = raw.get("taxSpecific")
        tax_specific = Decimal(0) if specific is None else _number(specific, f"{where}.taxSpecific", decimals,
                                                                   positive=False)
        items.append(Item(str(name), price, quantity, group, tax_specific))
    raw_payments = data.get("payment", [])
    if not isinstance(raw_payments, list) or len(raw_payments) > MAX_PAYMENTS:
        raise malformed(f"payment must be a list of at most {MAX_PAYMENTS} entries")
    payments = []
    for index, raw in enumerate(raw_payments):
        if not isinstance(raw, dict) or raw.get("name") not in PAYMENT_TYPES:
            shown_name = raw.get("name") if isinstance(raw, dict) else raw
            raise DgiError("7", f"payment[{index}].name {str(shown_name)[:20]!r} is not one of {list(PAYMENT_TYPES)}")
        payments.append((str(raw["name"]), _number(raw.get("amount"), f"payment[{index}].amount", decimals,
                                                   positive=False)))
    return Document(number, ifu, kind, currency, tuple(items), aib, reference, tuple(payments))


def round_to(amount: Decimal, decimals: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def compute_totals(document: Document) -> dict[str, Decimal]:
    """The response fields of POST /api/invoice. Prices include VAT. Per line: quantity x price rounded
    half-up to the currency's minor unit; per group: gross = sum of its lines (taa..taf), and for the VAT
    groups B and D: VAT = gross x rate / (100 + rate) rounded half-up (vab, vad), HT = gross - VAT (hab, had).
    AIB = (hab + had) x its rate, rounded; ts = the items' specific taxes; total = gross + AIB + ts."""
    decimals = MINOR_UNITS[document.currency]
    gross = dict.fromkeys(TAX_RATES, Decimal(0))
    specific = Decimal(0)
    for item in document.items:
        gross[item.tax_group] += round_to(item.quantity * item.price, decimals)
        specific += item.tax_specific
    vat, ht = {}, {}
    for group in ("B", "D"):
        rate = TAX_RATES[group]
        assert rate is not None
        vat[group] = round_to(gross[group] * rate / (100 + rate), decimals)
        ht[group] = gross[group] - vat[group]
    aib = Decimal(0)
    if document.aib is not None:
        aib = round_to((ht["B"] + ht["D"]) * AIB_RATES[document.aib] / 100, decimals)
    total = sum(gross.values(), Decimal(0)) + aib + specific
    if total >= MAX_AMOUNT:
        raise malformed(f"the total must be below {MAX_AMOUNT:,}")
    rates = {f"t{g.lower()}": (TAX_RATES[g] or Decimal(0)) for g in "ABCD"}
    return {**rates, **{f"ta{g.lower()}": gross[g] for g in TAX_RATES},
            "hab": ht["B"], "had": ht["D"], "vab": vat["B"], "vad": vat["D"],
            "aib": aib, "ts": specific, "total": total}


# --- the simulator's books ---

@dataclass
class Invoice:
    uid: str
    document: Document
    submitted: dict[str, Any]  # the body as received (parsed), echoed by GET /api/invoice/{uid}
    canonical: str  # to tell a re-submission of the same document from a different one under its number
    totals: dict[str, Decimal]
    submitted_at: datetime
    status: str = "pending"  # pending | confirmed | cancelled
    security: dict[str, Any] | None = None


@dataclass
class Books:
    invoices: dict[str, Invoice] = field(default_factory=dict)  # by uid
    by_number: dict[str, str] = field(default_factory=dict)  # documentNumber -> uid (not cancelled)
    by_code: dict[str, str] = field(default_factory=dict)  # codeMECeFDGI without dashes -> uid
    credited: dict[str, Decimal] = field(default_factory=dict)  # original's uid -> confirmed credit notes
    counters: dict[str, int] = field(default_factory=dict)  # confirmed per type
    confirmed_total: int = 0
    knobs: Knobs = field(default_factory=Knobs)

    def pending(self) -> list[Invoice]:
        return [i for i in self.invoices.values() if i.status == "pending"]


def dgi_time(moment: datetime) -> datetime:
    return moment.astimezone(PORTO_NOVO)


def new_code(books: Books) -> str:
    """24 characters, shown as 6 groups of 4; the simulator's start with SIMU (the test platform's with TEST)."""
    for _ in range(100):  # bounded; a collision among 36^20 codes does not happen
        raw = "SIMU" + "".join(secrets.choice(CODE_ALPHABET) for _ in range(20))
        if raw not in books.by_code:
            return raw
    raise RuntimeError("could not draw a fresh code")


def _to_json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def answer(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=partial(json.dumps, default=_to_json, ensure_ascii=False))


def refusal(error: DgiError) -> web.Response:
    return answer({"errorCode": error.code, "errorDesc": error.desc}, status=error.status)


def make_app(state: SimulatorState, config: DgiConfig, started: datetime | None = None) -> web.Application:
    books = Books()
    token_valid = (started or datetime.now(UTC)) + timedelta(days=TOKEN_VALID_DAYS)
    expected_auth = f"Bearer {config.token}".encode()

    @web.middleware
    async def dgi_front(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path == "/__sim/reset" and request.method == "POST":
            nonlocal books
            books = Books()  # common.py's reset forgets the request log; this forgets the DGI's books
            return await handler(request)
        if not request.path.startswith("/api/"):
            return await handler(request)
        body = await request.read()
        state.record(request, body)
        knobs = books.knobs
        if knobs.mode == "down":
            if knobs.how == "close" and request.transport is not None:
                request.transport.abort()  # the client sees the connection dropped, no answer
                raise asyncio.CancelledError
            return answer({"message": "Service Unavailable"}, status=503)
        if knobs.mode == "slow":
            await asyncio.sleep(knobs.delay_seconds)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected_auth):
            return web.json_response({"message": "a valid bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        try:
            return await handler(request)
        except DgiError as error:
            return refusal(error)

    def status_body() -> dict[str, Any]:
        now = datetime.now(UTC)
        pending = books.pending()
        return {"status": True, "version": VERSION, "ifu": config.ifu, "nim": config.nim,
                "tokenValid": dgi_time(token_valid).isoformat(timespec="seconds"),
                "serverDateTime": dgi_time(now).isoformat(timespec="seconds"),
                "pendingRequestsCount": len(pending),
                "pendingRequestsList": [{"date": dgi_time(i.submitted_at).isoformat(timespec="seconds"),
                                         "uid": i.uid} for i in pending[:100]]}

    async def status(_: web.Request) -> web.Response:
        return answer(status_body())

    async def tax_groups(_: web.Request) -> web.Response:
        return answer({**{g.lower(): (r or 0) for g, r in TAX_RATES.items()},
                       **{f"aib{g}": r for g, r in AIB_RATES.items()}})

    async def invoice_types(_: web.Request) -> web.Response:
        return answer([{"type": k, "description": v} for k, v in INVOICE_TYPES.items()])

    async def payment_types(_: web.Request) -> web.Response:
        return answer([{"type": p, "description": p} for p in PAYMENT_TYPES])

    def check_rejection(number: str) -> None:
        knobs = books.knobs
        if knobs.mode != "reject":
            return
        if knobs.reject_remaining is not None:
            knobs.reject_remaining -= 1
            if knobs.reject_remaining <= 0:
                books.knobs = Knobs()
        elif knobs.reject_pattern is None or not knobs.reject_pattern.fullmatch(number):
            return
        raise DgiError(knobs.error_code, knobs.error_desc, verbatim=True)  # the reason exactly as set

    async def submit(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read(), parse_float=Decimal, parse_int=Decimal)
        except (ValueError, UnicodeDecodeError):
            raise malformed("the body is not valid JSON") from None
        document = parse_document(data, config)
        canonical = json.dumps(data, sort_keys=True, default=str)
        known = books.by_number.get(document.document_number)
        if known is not None:
            first = books.invoices[known]
            if first.canonical != canonical:
                raise DgiError("99", f"documentNumber {document.document_number!r} was already submitted with "
                                     f"different content (uid {first.uid})", status=409)
            return answer({"uid": first.uid, **first.totals})  # idempotent: as the first time
        check_rejection(document.document_number)
        totals = compute_totals(document)
        if document.reference is not None:
            original_uid = books.by_code.get(document.reference)
            original = books.invoices.get(original_uid) if original_uid else None
            if original is None or original.document.type != CREDIT_OF[document.type]:
                raise DgiError("11")
            if books.credited.get(original.uid, Decimal(0)) + totals["total"] > original.totals["total"]:
                raise DgiError("12")
        if len(books.pending()) >= MAX_PENDING:
            raise DgiError("1", f"at most {MAX_PENDING}")
        if len(books.invoices) >= MAX_INVOICES:
            raise DgiError("99", f"the simulator keeps at most {MAX_INVOICES} invoices; reset it", status=503)
        uid = str(uuid.uuid4())
        books.invoices[uid] = Invoice(uid, document, data, canonical, totals, datetime.now(UTC))
        books.by_number[document.document_number] = uid
        return answer({"uid": uid, **totals})

    def find(uid: str) -> Invoice:
        invoice = books.invoices.get(uid)
        if invoice is None:
            raise DgiError("20", f"no invoice {uid[:40]!r}", status=404)
        return invoice

    async def confirm(request: web.Request) -> web.Response:
        invoice = find(request.match_info["uid"])
        if invoice.status == "confirmed":
            assert invoice.security is not None
            return answer(invoice.security)  # a repeated confirm answers as the first (no new counter)
        if invoice.status != "pending":
            raise DgiError("20", f"invoice {invoice.uid} is {invoice.status}", status=409)
        now = dgi_time(datetime.now(UTC))
        code = new_code(books)
        kind = invoice.document.type
        books.counters[kind] = books.counters.get(kind, 0) + 1
        books.confirmed_total += 1
        invoice.status = "confirmed"
        invoice.security = {
            "dateTime": now.strftime("%d/%m/%Y %H:%M:%S"),
            "qrCode": f"F;{config.nim};{code};{config.ifu};{now.strftime('%Y%m%d%H%M%S')}",
            "codeMECeFDGI": "-".join(code[i:i + 4] for i in range(0, 24, 4)),
            "counters": f"{books.counters[kind]}/{books.confirmed_total} {kind}",
            "nim": config.nim,
        }
        books.by_code[code] = invoice.uid
        if invoice.document.reference is not None:
            original = books.by_code[invoice.document.reference]
            books.credited[original] = books.credited.get(original, Decimal(0)) + invoice.totals["total"]
        return answer(invoice.security)

    async def cancel(request: web.Request) -> web.Response:
        invoice = find(request.match_info["uid"])
        if invoice.status != "pending":
            raise DgiError("20", f"invoice {invoice.uid} is {invoice.status}", status=409)
        invoice.status = "cancelled"
        # A cancelled request frees its number: the same document may be submitted again.
        books.by_number.pop(invoice.document.document_number, None)
        now = dgi_time(datetime.now(UTC))
        return answer({"dateTime": now.strftime("%d/%m/%Y %H:%M:%S"), "qrCode": None, "codeMECeFDGI": None,
                       "counters": None, "nim": config.nim})

    async def details(request: web.Request) -> web.Response:
        invoice = find(request.match_info["uid"])
        return answer({**invoice.submitted, "uid": invoice.uid, "status": invoice.status,
                       "totals": invoice.totals, "securityElements": invoice.security})

    async def set_knobs(request: web.Request) -> web.Response:
        try:
            books.knobs = parse_knobs(await request.json())
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "knobs": books.knobs.describe()})

    async def get_knobs(_: web.Request) -> web.Response:
        return answer({"knobs": books.knobs.describe(), "counters": books.counters,
                       "confirmed": books.confirmed_total, "invoices": len(books.invoices),
                       "pending": len(books.pending())})

    app = web.Application(middlewares=[dgi_front], client_max_size=MAX_BODY_BYTES)
    app.add_routes([
        web.get("/api/invoice", status),
        web.get("/api/info/status", status),
        web.get("/api/info/taxGroups", tax_groups),
        web.get("/api/info/invoiceTypes", invoice_types),
        web.get("/api/info/paymentTypes", payment_types),
        web.post("/api/invoice", submit),
        web.put("/api/invoice/{uid}/confirm", confirm),
        web.put("/api/invoice/{uid}/cancel", cancel),
        web.get("/api/invoice/{uid}", details),
        web.post("/__sim/dgi", set_knobs),
        web.get("/__sim/dgi", get_knobs),
    ])
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.dgi",
                                     description="DGI (e-MECeF style) simulator on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    # The environment first: a token on the command line would show in `ps` to every user.
    parser.add_argument("--token", default=os.environ.get("FISCAL_DGI_SIMULATOR_TOKEN") or DEFAULT_TOKEN,
                        help="the bearer token it accepts (default: $FISCAL_DGI_SIMULATOR_TOKEN, else sim-dgi-token)")
    parser.add_argument("--ifu", default=DEFAULT_IFU, help="the taxpayer's IFU the token belongs to (13 digits)")
    parser.add_argument("--nim", default=DEFAULT_NIM, help="the e-MCF's machine number (NIM)")
    args = parser.parse_args(argv)
    if not IFU.fullmatch(args.ifu):
        parser.error("--ifu must be 13 digits")
    if not args.token or len(args.token) > 4096:
        parser.error("--token must be 1 to 4096 characters")
    config = DgiConfig(token=args.token, ifu=args.ifu, nim=args.nim)
    started = datetime.now(UTC)
    serve("dgi", lambda state: make_app(state, config, started), ["--port", str(args.port)])


if __name__ == "__main__":
    main()
