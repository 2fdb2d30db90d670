"""The audit package of `fiscal export` and its offline check, `fiscal verify-export` (docs/export.md).

Pure packaging: a zip holding every document of one outlet and period (each canonical body exactly as
signed, and its receipt fields), the chain, the public keys and a manifest of SHA-256 hashes; the
manifest is vouched for by one signature over an "FCX1" export statement made by the signing service.
Imports neither gRPC nor SQLAlchemy: services/ledger/export.py reads the rows, cli/export.py signs.
The check rebuilds everything from docs/receipts.md with the shared ES256 code only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any, Protocol

from services.runtime.es256 import b64url, b64url_decode, thumbprint, verify_raw

FORMAT = "fiscal-export/1"
EXPORT_STATEMENT_VERSION = "FCX1"  # services/signing/statement.py
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig.json"
KEYS = "keys.json"
CHAIN = "chain.json"
DOCUMENTS = "documents/"
REPORTS = "reports/"  # X/Z reports do not exist yet: the place is kept, empty, in format 1
GENESIS = bytes(32)
SERIES_KINDS = {"INV": "invoice", "CN": "credit_note"}
_DOCUMENT_PATH = re.compile(r"documents/([A-Za-z0-9_]{1,16})/([A-Za-z0-9._-]+-([A-Za-z0-9_]{1,16})-([0-9]{10}))"
                            r"(\.receipt)?\.json")
MAX_MEMBERS = 2_000_000  # a package is read member by member: bounded so a crafted zip cannot run away
MAX_MEMBER_BYTES = 64 * 1024 * 1024


class SealedEntry(Protocol):
    """What the package needs of a sealed invoice or credit note (services.ledger.model.InvoiceRecord)."""

    id: str
    kind: str
    series: str
    number: int
    fiscal_number: str
    pos_terminal_id: str
    cashier_id: str
    currency: str
    total: Any
    sealed_at: datetime
    original_invoice_id: str | None
    body: str
    statement: str
    body_digest: bytes
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str
    auth_code: str


@dataclass(frozen=True)
class OutletInfo:
    id: str
    code: str
    name: str
    taxpayer_id: str
    currency: str
    time_zone: str


@dataclass(frozen=True)
class Period:
    first_day: date
    last_day: date  # inclusive
    time_zone: str
    sealed_from: datetime  # UTC instants of the outlet's local midnights
    sealed_before: datetime


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc_text(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as statements spell times (a naive time is taken as UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _pretty(value: Any) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def auth_code(signature: bytes) -> str:
    code = base64.b32encode(hashlib.sha256(signature).digest()).decode("ascii")[:12]
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"


def export_statement(authority_id: str, outlet_code: str, first_day: date, last_day: date, created_at: str,
                     manifest: bytes) -> str:
    """The seven lines the signing service signs for a package (checked by its statement module)."""
    return "\n".join([EXPORT_STATEMENT_VERSION, authority_id, outlet_code, first_day.isoformat(),
                      last_day.isoformat(), created_at, b64url(hashlib.sha256(manifest).digest())])


def document_paths(series: str, fiscal_number: str) -> tuple[str, str]:
    """(canonical body, receipt fields) of one document inside the package."""
    return f"{DOCUMENTS}{series}/{fiscal_number}.json", f"{DOCUMENTS}{series}/{fiscal_number}.receipt.json"


def receipt_fields(entry: SealedEntry) -> dict:
    signed = json.loads(entry.body)  # total and currency spelt as signed (the row keeps 3 decimals)
    return {
        "id": entry.id, "kind": entry.kind, "series": entry.series, "number": entry.number,
        "fiscal_number": entry.fiscal_number, "pos_terminal_id": entry.pos_terminal_id,
        "cashier_id": entry.cashier_id, "total": signed["total"], "currency": signed["currency"],
        "sealed_at": utc_text(entry.sealed_at), "original_invoice_id": entry.original_invoice_id,
        "statement": entry.statement, "body_digest": b64url(entry.body_digest), "prev_hash": b64url(entry.prev_hash),
        "hash": b64url(entry.hash), "signature": b64url(entry.signature), "key_id": entry.key_id,
        "auth_code": entry.auth_code,
    }


# --- writing -----------------------------------------------------------------------------------------

@dataclass
class _SeriesSummary:
    count: int = 0
    first: str | None = None
    last: str | None = None
    before: dict | None = None
    entries: list[dict] = field(default_factory=list)


class PackageWriter:
    """Writes one package in a single pass: documents as they come (in chain order per series), then the
    chain, the keys, the manifest; `manifest_bytes()` is what gets signed, `add_signature` closes the zip."""

    def __init__(self, target: str | IO[bytes], outlet: OutletInfo, period: Period, authority_id: str):
        self.zip = zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self.outlet, self.period, self.authority_id = outlet, period, authority_id
        self.files: list[dict] = []
        self.series: dict[str, _SeriesSummary] = {}
        self._manifest: bytes | None = None
        self.created_at = ""
        self.zip.writestr(zipfile.ZipInfo(REPORTS, date_time=(1980, 1, 1, 0, 0, 0)), b"")

    def _write(self, path: str, data: bytes) -> None:
        self.zip.writestr(path, data)
        self.files.append({"path": path, "sha256": sha256_hex(data), "size": len(data)})

    def set_link_before(self, series: str, entry: SealedEntry | None) -> None:
        """The entry just before the period's first (None when the period starts at number 1): its statement
        and signature make the first link checkable."""
        self.series.setdefault(series, _SeriesSummary()).before = None if entry is None else {
            "number": entry.number, "fiscal_number": entry.fiscal_number, "statement": entry.statement,
            "hash": b64url(entry.hash), "signature": b64url(entry.signature), "key_id": entry.key_id}

    def add(self, entry: SealedEntry) -> None:
        summary = self.series.setdefault(entry.series, _SeriesSummary())
        body_path, receipt_path = document_paths(entry.series, entry.fiscal_number)
        self._write(body_path, entry.body.encode("utf-8"))  # exactly the bytes whose SHA-256 was signed
        self._write(receipt_path, _pretty(receipt_fields(entry)))
        summary.count += 1
        summary.first = summary.first or entry.fiscal_number
        summary.last = entry.fiscal_number
        summary.entries.append({"number": entry.number, "fiscal_number": entry.fiscal_number,
                                "prev_hash": b64url(entry.prev_hash), "hash": b64url(entry.hash)})

    def manifest_bytes(self, keys: list[dict], created_at: str) -> bytes:
        """Writes the chain and the keys, then returns the manifest (written by add_signature)."""
        chain = {s: {"before": v.before, "entries": v.entries} for s, v in sorted(self.series.items())}
        self._write(CHAIN, _pretty({"series": chain}))
        self._write(KEYS, _pretty({"keys": keys}))
        counts = {"invoices": 0, "credit_notes": 0, "reports": 0}
        for series, summary in self.series.items():
            counts[SERIES_KINDS.get(series, series) + "s"] = counts.get(SERIES_KINDS.get(series, series) + "s", 0) \
                + summary.count
        self.created_at = created_at
        self._manifest = _pretty({
            "format": FORMAT, "created_at": created_at, "fiscal_authority_id": self.authority_id,
            "outlet": self.outlet.__dict__,
            "period": {"from": self.period.first_day.isoformat(), "to": self.period.last_day.isoformat(),
                       "time_zone": self.period.time_zone, "sealed_from": utc_text(self.period.sealed_from),
                       "sealed_before": utc_text(self.period.sealed_before)},
            "series": {s: {"kind": SERIES_KINDS.get(s, s), "count": v.count, "first": v.first, "last": v.last}
                       for s, v in sorted(self.series.items())},
            "counts": counts,
            "reports": {"path": REPORTS, "files": [], "note": "X/Z reports are not implemented yet"},
            "files": self.files,
        })
        return self._manifest

    def statement(self) -> str:
        assert self._manifest is not None, "manifest_bytes() first"
        return export_statement(self.authority_id, self.outlet.code, self.period.first_day, self.period.last_day,
                                self.created_at, self._manifest)

    def add_signature(self, signature: bytes, key_id: str) -> None:
        assert self._manifest is not None, "manifest_bytes() first"
        self.zip.writestr(MANIFEST, self._manifest)
        self.zip.writestr(SIGNATURE, _pretty({"statement": self.statement(), "algorithm": "ES256",
                                              "key_id": key_id, "signature": b64url(signature)}))
        self.zip.close()

    def abandon(self) -> None:
        self.zip.close()


# --- checking ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    what: str
    path: str = ""
    fiscal_number: str = ""

    def __str__(self) -> str:
        where = " ".join(part for part in (self.fiscal_number, f"({self.path})" if self.path else "") if part)
        return f"{where}: {self.what}" if where else self.what


@dataclass
class PackageCheck:
    problems: list[Problem] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    documents: int = 0
    signing_key_ids: set[str] = field(default_factory=set)
    manifest_key_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_document_problem(self) -> Problem | None:
        return next((p for p in self.problems if p.fiscal_number), None)


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _signature_problem(keys: dict[str, dict], key_id: str, digest: bytes, signature_text: str,
                       signed_at: str) -> str | None:
    """Why a signature is not valid under the packaged keys and their lifecycle (None: it is)."""
    jwk = keys.get(key_id)
    if jwk is None:
        return f"signed by key {key_id}, which is not in {KEYS}"
    try:
        signature = b64url_decode(signature_text, 64)
    except ValueError:
        return "signature is not 64 bytes of unpadded base64url"
    if not verify_raw(jwk.get("x", ""), jwk.get("y", ""), digest, signature):
        return f"signature does not verify with key {key_id} (or is not in low-S form)"
    if jwk.get("status") == "compromised":
        return f"key {key_id} is marked compromised ({jwk.get('compromise_reason', '')})"
    if jwk.get("status") == "retired" and jwk.get("retired_at") and _moment(signed_at) > _moment(jwk["retired_at"]):
        return f"signed at {signed_at}, after key {key_id} was retired on {jwk['retired_at']}"
    return None


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    info = archive.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES:
        raise ValueError(f"{name} is larger than {MAX_MEMBER_BYTES} bytes")
    return archive.read(info)


def check_package(source: str | IO[bytes], trusted_keys: Iterable[dict] | None = None,
                  on_document=lambda: None, on_total=lambda count: None) -> PackageCheck:
    """Every check of docs/export.md, offline. Problems come in a fixed order: the package as a whole
    (manifest, signature, files), then each series' documents in number order, so the first problem
    naming a fiscal number is the first altered document."""
    check = PackageCheck()
    add = check.problems.append
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
        add(Problem(f"not a readable zip package: {error}"))
        return check
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            add(Problem(f"more than {MAX_MEMBERS} members"))
            return check
        names = [i.filename for i in infos]
        duplicates = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
        for name in duplicates:
            add(Problem("the package holds this name twice", name))
        try:
            manifest_bytes = _read(archive, MANIFEST)
            manifest = json.loads(manifest_bytes)
            signed = json.loads(_read(archive, SIGNATURE))
        except (KeyError, ValueError) as error:
            add(Problem(f"manifest refused: {MANIFEST} or {SIGNATURE} missing or not JSON ({error})"))
            return check
        check.manifest = manifest if isinstance(manifest, dict) else {}
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(signed, dict):
            add(Problem(f"manifest refused: not a {FORMAT} manifest"))
            return check
        on_total(sum(1 for n in names if n.startswith(DOCUMENTS) and n.endswith(".receipt.json")))

        # 1. Every listed file against its hash; nothing unlisted.
        listed: dict[str, str] = {}
        for entry in manifest.get("files", []):
            listed[str(entry.get("path"))] = str(entry.get("sha256"))
        altered: dict[str, str] = {}  # path -> what is wrong with the file itself
        present = set(names)
        for path, expected in listed.items():
            if path not in present:
                altered[path] = "listed in the manifest but missing from the package"
            elif sha256_hex(_read(archive, path)) != expected:
                altered[path] = "SHA-256 differs from the manifest"
        for name in sorted(present - listed.keys() - {MANIFEST, SIGNATURE, REPORTS}):
            add(Problem("not listed in the manifest", name))

        # 2. The keys (each kid is its JWK thumbprint; optionally pinned by the caller).
        keys: dict[str, dict] = {}
        if KEYS in altered:
            add(Problem(f"{altered[KEYS]}", KEYS))
        try:
            for jwk in json.loads(_read(archive, KEYS)).get("keys", []):
                if jwk.get("kid") != thumbprint(jwk.get("x", ""), jwk.get("y", "")):
                    add(Problem(f"key {jwk.get('kid')} is not named by its thumbprint", KEYS))
                    continue
                keys[jwk["kid"]] = jwk
        except (KeyError, ValueError, AttributeError, TypeError) as error:
            add(Problem(f"unreadable key set ({error})", KEYS))
        if trusted_keys is not None:
            trusted = {(k.get("kid"), k.get("x"), k.get("y")) for k in trusted_keys}
            for kid, jwk in list(keys.items()):
                if (kid, jwk.get("x"), jwk.get("y")) not in trusted:
                    add(Problem(f"key {kid} is not one of the trusted keys given", KEYS))
                    del keys[kid]

        # 3. The manifest's signature: over the export statement rebuilt from the manifest itself.
        try:
            period = manifest["period"]
            expected_statement = export_statement(
                manifest["fiscal_authority_id"], manifest["outlet"]["code"], date.fromisoformat(period["from"]),
                date.fromisoformat(period["to"]), manifest["created_at"], manifest_bytes)
        except (KeyError, TypeError, ValueError) as error:
            add(Problem(f"manifest refused: incomplete ({error})", MANIFEST))
            return check
        check.manifest_key_id = str(signed.get("key_id", ""))
        if signed.get("statement") != expected_statement:
            add(Problem("manifest refused: it is not the manifest that was signed (its hash or fields differ "
                        "from the signed export statement)", MANIFEST))
        else:
            why = _signature_problem(keys, check.manifest_key_id,
                                     hashlib.sha256(expected_statement.encode("utf-8")).digest(),
                                     str(signed.get("signature", "")), manifest["created_at"])
            if why:
                add(Problem(f"manifest refused: {why}", SIGNATURE))
        if CHAIN in altered:
            add(Problem(altered[CHAIN], CHAIN))
        for path, what in altered.items():
            if not path.startswith(DOCUMENTS) and path not in (KEYS, CHAIN):
                add(Problem(what, path))

        # 4. The documents, series by series in number order: what is in the package, not what the
        # manifest or chain.json claim (a removed document is a gap even if they were edited to match).
        try:
            chain = json.loads(_read(archive, CHAIN)).get("series", {})
        except (KeyError, ValueError, AttributeError) as error:
            add(Problem(f"unreadable chain ({error})", CHAIN))
            chain = {}
        found: dict[str, dict[int, dict[str, str]]] = {}
        outlet_code = str(manifest["outlet"].get("code", ""))
        for name in names:
            match = _DOCUMENT_PATH.fullmatch(name)
            if match is None:
                if name.startswith(DOCUMENTS):
                    add(Problem("not a document name this format uses", name))
                continue
            series, fiscal_number, fn_series, number = match.group(1), match.group(2), match.group(3), match.group(4)
            if fn_series != series or not fiscal_number.startswith(f"{outlet_code}-{series}-"):
                add(Problem(f"file name is not a fiscal number of outlet {outlet_code} series {series}", name))
                continue
            found.setdefault(series, {}).setdefault(int(number), {})["receipt" if match.group(5) else "body"] = name
        every_series = found.keys() | (manifest.get("series") or {}).keys() | chain.keys()
        for series in sorted(every_series, key=lambda s: (list(SERIES_KINDS).index(s) if s in SERIES_KINDS
                                                          else len(SERIES_KINDS), s)):  # invoices first
            _check_series(archive, check, series, found.get(series, {}), chain.get(series) or {},
                          (manifest.get("series") or {}).get(series) or {}, manifest, keys, altered, on_document)
    return check


def _check_series(archive, check: PackageCheck, series: str, documents: dict[int, dict[str, str]], chain: dict,
                  summary: dict, manifest: dict, keys: dict[str, dict], altered: dict[str, str],
                  on_document) -> None:
    add = check.problems.append
    code = manifest["outlet"]["code"]
    outlet_id = manifest["outlet"].get("id")
    before = chain.get("before")
    numbers = sorted(documents)
    fiscal = lambda n: f"{code}-{series}-{n:010d}"  # noqa: E731
    # The link into the period: the entry before it, itself a signed statement.
    previous_hash: bytes | None
    if numbers:
        previous_number, previous_hash = numbers[0] - 1, GENESIS
        if before is not None:
            try:
                statement = str(before["statement"])
                previous_hash = hashlib.sha256(statement.encode("utf-8")).digest()
                if before.get("number") != numbers[0] - 1 or statement.split("\n")[1:2] != [fiscal(numbers[0] - 1)]:
                    add(Problem(f"the link before the period is not number {numbers[0] - 1}", CHAIN,
                                fiscal(numbers[0])))
                why = _signature_problem(keys, str(before["key_id"]), previous_hash, str(before["signature"]),
                                         statement.split("\n")[3] if statement.count("\n") == 6 else "")
                if why:
                    add(Problem(f"the entry before the period: {why}", CHAIN, fiscal(numbers[0] - 1)))
            except (KeyError, TypeError, ValueError) as error:
                add(Problem(f"unreadable link before the period ({error})", CHAIN, fiscal(numbers[0])))
        elif numbers[0] != 1:
            add(Problem(f"numbers 1..{numbers[0] - 1} are missing and no link before the period is given", CHAIN,
                        fiscal(numbers[0])))
    else:
        previous_number, previous_hash = 0, GENESIS
    chained = {e.get("number"): e for e in chain.get("entries", []) if isinstance(e, dict)}
    for number in numbers:
        check.documents += 1
        on_document()
        fn = fiscal(number)
        paths = documents[number]
        body_path, receipt_path = paths.get("body"), paths.get("receipt")
        if number != previous_number + 1:
            missing = f"{fiscal(previous_number + 1)}" + (f" .. {fiscal(number - 1)}" if number - 1 > previous_number + 1
                                                         else "")
            add(Problem(f"gap: {missing} missing from the package (numbers jump from {previous_number} to {number})",
                        "", fiscal(previous_number + 1)))
            previous_hash = None  # the missing entry's hash is unknown: the gap is the finding, not the link
        problem = _check_document(archive, fn, number, series, outlet_id, body_path, receipt_path, previous_hash,
                                  keys, altered, chained.get(number))
        if problem:
            add(problem)
        try:
            previous_hash = b64url_decode(json.loads(_read(archive, receipt_path))["hash"], 32) if receipt_path \
                else previous_hash
        except (KeyError, ValueError, TypeError):
            pass  # already named by _check_document
        previous_number = number
    if chained.keys() - set(numbers):
        gone = min(n for n in chained.keys() - set(numbers) if isinstance(n, int))
        add(Problem("in chain.json but missing from the package", "", fiscal(gone)))
    if summary.get("count") != len(numbers) or summary.get("first") != (fiscal(numbers[0]) if numbers else None) \
            or summary.get("last") != (fiscal(numbers[-1]) if numbers else None):
        add(Problem(f"series {series}: the manifest says {summary.get('count')} documents "
                    f"{summary.get('first')}..{summary.get('last')}, the package holds {len(numbers)}", MANIFEST))


def _check_document(archive, fn: str, number: int, series: str, outlet_id, body_path: str | None,
                    receipt_path: str | None, previous_hash: bytes | None, keys: dict[str, dict], altered: dict[str, str],
                    chained: dict | None) -> Problem | None:
    """The first thing wrong with one document (None: it verifies and links to `previous_hash`)."""
    if body_path is None or receipt_path is None:
        return Problem(f"{'body' if body_path is None else 'receipt'} file missing", body_path or receipt_path or "",
                       fn)
    for path in (body_path, receipt_path):
        if path in altered:
            return Problem(altered[path], path, fn)
    if chained is None:
        return Problem("not in chain.json", CHAIN, fn)
    body_bytes = _read(archive, body_path)
    try:
        receipt = json.loads(_read(archive, receipt_path))
        body = json.loads(body_bytes)
    except ValueError:
        return Problem("not JSON", body_path, fn)
    try:
        digest = hashlib.sha256(body_bytes).digest()
        if b64url(digest) != receipt["body_digest"]:
            return Problem("the body's SHA-256 is not the signed body digest (the body was altered)", body_path, fn)
        if body.get("fiscal_number") != fn or body.get("number") != number or body.get("series") != series \
                or body.get("outlet_id") != outlet_id or receipt.get("fiscal_number") != fn:
            return Problem(f"the signed body is {body.get('fiscal_number')} of outlet {body.get('outlet_id')}",
                           body_path, fn)
        statement = "\n".join(["FC1", fn, body["fiscal_authority_id"], body["sealed_at"], body["total"],
                               body["currency"], b64url(digest)])
        if statement != receipt["statement"]:
            return Problem("the receipt's statement is not the one rebuilt from the body", receipt_path, fn)
        entry_hash = hashlib.sha256(statement.encode("utf-8")).digest()
        if b64url(entry_hash) != receipt["hash"]:
            return Problem("the entry hash is not SHA-256(statement)", receipt_path, fn)
        why = _signature_problem(keys, receipt["key_id"], entry_hash, receipt["signature"], body["sealed_at"])
        if why:
            return Problem(why, receipt_path, fn)
        if auth_code(b64url_decode(receipt["signature"], 64)) != receipt["auth_code"]:
            return Problem("the auth code is not derived from the signature", receipt_path, fn)
        if previous_hash is not None and (body.get("prev_hash") != b64url(previous_hash)
                                          or receipt["prev_hash"] != b64url(previous_hash)):
            return Problem("broken link: prev_hash is not the previous entry's hash", body_path, fn)
        if Decimal(receipt["total"]) != Decimal(body["total"]) or receipt["currency"] != body["currency"]:
            return Problem(f"receipt says {receipt['total']} {receipt['currency']}, signed "
                           f"{body['total']} {body['currency']}", receipt_path, fn)
        if (chained.get("fiscal_number"), chained.get("prev_hash"), chained.get("hash")) != (
                fn, receipt["prev_hash"], receipt["hash"]):
            return Problem("chain.json differs from the document", CHAIN, fn)
    except (KeyError, TypeError, ValueError, ArithmeticError) as error:
        return Problem(f"incomplete or malformed ({type(error).__name__}: {error})", receipt_path, fn)
    return None

