"""`fiscal export` writes an outlet's signed audit package for a period; `fiscal verify-export` checks one
offline (docs/export.md). The rows come through the ledger's own database role, the keys and the
package's signature from the signing service as the operator identity: the HSM stays the only signer."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cli.output import console
from cli.state import async_url, ledger_database_url, operator_channel, read_state
from services.ledger.export_package import OutletInfo, PackageWriter, check_package, utc_text
from services.runtime.faults import Fault, InvalidArgument

EXIT_BAD_INPUT = 2


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(f"--{name} must be a date (YYYY-MM-DD), got {text!r}", field=name) from None


def _progress(show: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not show)


class OperatorSigner:
    """ListPublicKeys and Sign on the signing service, presenting the operator certificate."""

    def __init__(self, args):
        self.args = args
        self.address = args.signing_addr or read_state(args.data_dir)["signing_addr"]

    def public_keys(self) -> list[dict]:
        from fiscal.v1 import signing_pb2, signing_pb2_grpc

        with operator_channel(self.args, "signing", self.address) as channel:
            keys = signing_pb2_grpc.SigningServiceStub(channel).ListPublicKeys(
                signing_pb2.ListPublicKeysRequest(), timeout=10).keys
        return [_jwk(key) for key in keys]

    def sign(self, statement: str) -> tuple[bytes, str]:
        from fiscal.v1 import signing_pb2, signing_pb2_grpc

        with operator_channel(self.args, "signing", self.address) as channel:
            answer = signing_pb2_grpc.SigningServiceStub(channel).Sign(
                signing_pb2.SignRequest(statement=statement), timeout=30)
        return answer.signature, answer.key_id


def _jwk(key) -> dict:
    """As GET /v1/keys publishes a key: the JWK and its lifecycle."""
    def when(name: str) -> str | None:
        return utc_text(getattr(key, name).ToDatetime(tzinfo=UTC)) if key.HasField(name) else None
    jwk = {"kid": key.kid, "kty": key.kty, "crv": key.crv, "x": key.x, "y": key.y, "alg": key.alg, "use": key.use,
           "status": key.status, "created_at": when("created_at"), "retired_at": when("retired_at"),
           "compromised_at": when("compromised_at")}
    if key.compromise_reason:
        jwk["compromise_reason"] = key.compromise_reason
    return {k: v for k, v in jwk.items() if v is not None}


async def write_package(db_url: str, outlet_id: str, first_day: date, last_day: date, target: Path, signer,
                        authority_id: str, show_progress: bool = True) -> dict:
    """Writes the package to `target` (through a temporary file, renamed once signed) and returns its manifest."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.export import ExportReader, period_of
    from services.ledger.request_bounds import require_uuid

    outlet_id = require_uuid(outlet_id, "outlet", "outlet")
    engine = create_async_engine(async_url(db_url))
    partial = target.with_name(target.name + ".partial")
    writer = None
    try:
        reader = ExportReader(engine)
        outlet = await reader.outlet(outlet_id)
        if outlet is None:
            raise InvalidArgument(f"outlet {outlet_id} not found", field="outlet")
        period = period_of(first_day, last_day, outlet.time_zone)
        ranges = await reader.number_ranges(outlet_id, period)
        keys = signer.public_keys()  # before the documents: every key that signed them is already listed
        info = OutletInfo(outlet.id, outlet.code, outlet.name, outlet.taxpayer_id, outlet.currency, outlet.time_zone)
        writer = PackageWriter(str(partial), info, period, authority_id)
        authority_read = False
        with _progress(show_progress) as progress:
            for series in sorted(ranges):
                first, last = ranges[series]
                task = progress.add_task(f"{outlet.code} {series}", total=last - first + 1)
                writer.set_link_before(series, await reader.entry(outlet_id, series, first - 1) if first > 1 else None)
                async for entry in reader.entries(outlet_id, series, first, last):
                    if not authority_read:  # the authority the documents were sealed for, not a guess
                        writer.authority_id = json.loads(entry.body)["fiscal_authority_id"]
                        authority_read = True
                    writer.add(entry)
                    progress.advance(task)
        manifest = writer.manifest_bytes(keys, utc_text(datetime.now(UTC)))
        signature, key_id = signer.sign(writer.statement())
        writer.add_signature(signature, key_id)
        writer = None
        os.replace(partial, target)
        return json.loads(manifest)
    finally:
        if writer is not None:
            writer.abandon()
        partial.unlink(missing_ok=True)
        await engine.dispose()


def run_export(args) -> int:
    import grpc

    target = Path(args.file)
    try:
        first_day, last_day = _day(args.from_day, "from"), _day(args.to_day, "to")
        if target.exists() and not args.force:
            raise InvalidArgument(f"{target} exists (pass --force to replace it)", field="FILE")
        authority_id = os.environ.get("FISCAL_AUTHORITY_ID", "FC-DEV-0001")
        manifest = asyncio.run(write_package(ledger_database_url(args), args.outlet, first_day, last_day, target,
                                             OperatorSigner(args), authority_id, show_progress=not args.quiet))
    except Fault as fault:
        print(f"fiscal export: error: {fault.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except grpc.RpcError as error:
        code = error.code().name if isinstance(error, grpc.Call) else "error"
        details = error.details() if isinstance(error, grpc.Call) else str(error)
        print(f"fiscal export: the signing service refused: {code}: {details}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    console.print(f"[green]✔[/] {target}: {counts['invoices']} invoices, {counts['credit_notes']} credit notes of "
                  f"{manifest['outlet']['code']} from {manifest['period']['from']} to {manifest['period']['to']}"
                  f" ({target.stat().st_size:,} bytes), signed", highlight=False)
    for series, summary in manifest["series"].items():
        console.print(f"   {series}: {summary['first']} .. {summary['last']}", highlight=False)
    return 0


def run_verify_export(args) -> int:
    trusted = None
    if args.keys:
        try:
            trusted = json.loads(Path(args.keys).read_text())["keys"]
        except (OSError, ValueError, KeyError) as error:
            print(f"fiscal verify-export: error: --keys must be a JWK set (GET /v1/keys): {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if not Path(args.file).is_file():
        print(f"fiscal verify-export: error: no such file {args.file}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with _progress(not args.quiet) as progress:
        task = progress.add_task("documents", total=None)
        check = check_package(args.file, trusted, on_document=lambda: progress.advance(task),
                              on_total=lambda count: progress.update(task, total=count))
    manifest = check.manifest
    if check.ok:
        outlet, period = manifest["outlet"], manifest["period"]
        console.print(f"[green]✔[/] {args.file}: {check.documents} documents of outlet {outlet['code']} "
                      f"({outlet['name']}) from {period['from']} to {period['to']}: every file matches the "
                      "manifest, the manifest's signature, every document's signature, the chain and the numbering "
                      "verify", highlight=False)
        for series, summary in manifest["series"].items():
            console.print(f"   {series}: {summary['count']} documents, {summary['first']} .. {summary['last']}",
                          highlight=False)
        console.print(f"   signed by key {check.manifest_key_id}" + (
            " (one of the trusted keys given)" if trusted is not None else
            ": compare it with the fiscal authority's published keys (GET /v1/keys), or pass --keys"),
            highlight=False)
        return 0
    first = check.first_document_problem
    if first is not None:
        console.print(f"[red]✘[/] first altered document: {first.fiscal_number}"
                      f"{f' ({first.path})' if first.path else ''}: {first.what}", highlight=False)
    package_problems = [p for p in check.problems if not p.fiscal_number]
    for problem in package_problems[:10]:
        console.print(f"[red]✘[/] {problem}", highlight=False)
    console.print(f"{len(check.problems)} problem(s) in {check.documents} documents", highlight=False)
    for problem in [p for p in check.problems if p.fiscal_number and p is not first][:20]:
        console.print(f"   {problem}", highlight=False)
    return 1
