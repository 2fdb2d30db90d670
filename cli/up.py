"""`fiscal up`: the whole system on this machine, a demo merchant, until Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from pathlib import Path

from cli.output import console
from cli.state import async_url, write_state
from services.runtime.private_files import private_dir, write_private
from stack.mesh import SERVICES, Mesh, MeshOptions


async def _seed(database_url: str, gateway_url: str) -> dict:
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.ledger.store import LedgerStore
    from stack.seed import provision_merchant

    engine = create_async_engine(async_url(database_url))
    try:
        demo = await provision_merchant(LedgerStore(engine), name="Duka Demo", code_prefix="DEMO", outlets=2,
                                        terminals=3, public_url=gateway_url)
    finally:
        await engine.dispose()
    return demo


def signing_env(backend: str, data_dir: Path) -> dict[str, str]:
    if backend == "software":
        return {"FISCAL_SIGNING_BACKEND": "software"}
    from services.signing.softhsm import init_softhsm_token

    # A development token in the data directory; production points FISCAL_PKCS11_* at the real HSM.
    return init_softhsm_token(data_dir / "softhsm", label="fiscal", pin="1234", so_pin="5678")


def run_up(args) -> int:
    data_dir: Path = args.data_dir.resolve()
    private_dir(data_dir)
    options = MeshOptions(data_dir=data_dir, port=args.port, replicas=args.replicas,
                          service_env={"signing": signing_env(args.signing_backend, data_dir)},
                          otlp_endpoint=args.otlp_endpoint)
    mesh = Mesh(options)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with console.status("starting…") as status:
            mesh.start(on_step=lambda message: status.update(message + "…"))
            status.update("seeding the demo merchant…")
            demo_path = data_dir / "demo.json"
            if demo_path.exists():
                demo = json.loads(demo_path.read_text())
                demo["gateway_url"] = mesh.gateway_url
            else:
                demo = asyncio.run(_seed(mesh.database_url, mesh.gateway_url))
            write_private(demo_path, json.dumps(demo, indent=2))
        state = {"gateway_url": mesh.gateway_url, "database_url": mesh.database_url,
                 "admin_url": f"http://127.0.0.1:{mesh.admin_port}",
                 **{f"{s}_addr": mesh.address(s) for s in SERVICES},
                 **{f"simulator_{name}_url": mesh.simulator_url(name) for name in mesh.simulator_ports},
                 **({"simulator_dgi_url": mesh.dgi_url} if mesh.dgi_port else {})}
        write_state(data_dir, state | {"pids": _pids(mesh)})
        _print_ready(mesh, demo, demo_path)
        while not stop.wait(1.0):
            for process in mesh.all_processes():
                if not process.alive:
                    console.print(f"[yellow]{process.name} exited ({process.popen.returncode}); restarting[/]")
                    process.start()
                    write_state(data_dir, state | {"pids": _pids(mesh)})  # `fiscal bench` reads CPU by pid
        console.print("stopping…")
        return 0
    finally:
        mesh.stop()
        (data_dir / "stack.json").unlink(missing_ok=True)
        console.print("stopped; nothing left running")


def _pids(mesh: Mesh) -> dict[str, int]:
    """Each process's pid by name (envoy, ledger, ledger-1, …): `fiscal bench` samples their CPU."""
    return {process.name: process.popen.pid for process in mesh.all_processes() if process.popen}


def _started(mesh: Mesh) -> list[str]:
    """Each service with its address(es), Envoy, and the payment provider simulators: what `fiscal up` is
    running."""
    return [f"{service} ({mesh.address(service)})" for service in SERVICES] + [
        f"envoy ({mesh.gateway_url}, admin http://127.0.0.1:{mesh.admin_port})"] + [
        f"simulator-{name} ({mesh.simulator_url(name)})" for name in mesh.simulator_ports] + (
        [f"simulator-dgi ({mesh.dgi_url})"] if mesh.dgi_port else [])


def _dgi_lines(mesh: Mesh) -> list[str]:
    """Where sealed invoices are uploaded (the DGI sync worker, issue #10)."""
    if mesh.dgi_port:
        return ["", f"sealed invoices and credit notes are uploaded to the DGI simulator ({mesh.dgi_url}); its "
                    f"knobs and counters: {mesh.dgi_url}/__sim/dgi (docs/dgi-simulator.md); each invoice's `sync` "
                    "block shows its upload"]
    if mesh.dgi_url:
        return ["", f"sealed invoices and credit notes are uploaded to the DGI at {mesh.dgi_url}"]
    return []


def _payment_lines(mesh: Mesh, key: str, outlet: dict) -> list[str]:
    """How to try a mobile-money payment against the simulators (when this mesh runs them)."""
    if "mpesa" not in mesh.simulator_ports:
        return []
    simulators = ", ".join(f"{name} {mesh.simulator_url(name)}" for name in mesh.simulator_ports)
    return [
        "",
        f"mobile money goes to the provider simulators ({simulators}); each answers like the provider and"
        " takes knobs at POST /__sim/behaviour. An M-Pesa STK push for the sale above:",
        f"curl -s {mesh.gateway_url}/v1/payments -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d '{{\"outlet_id\":\"{outlet['id']}\",\"provider\":\"mpesa\","
        f"\"amount\":\"360.00\",\"currency\":\"{outlet['currency']}\",\"phone\":\"254712345678\","
        f"\"client_invoice_id\":\"demo-1\",\"client_payment_id\":\"{uuid.uuid4()}\"}}'",
    ]


def _print_ready(mesh: Mesh, demo: dict, demo_path: Path) -> None:
    outlet = demo["outlets"][0]
    key = demo["pos_keys"][outlet["id"]]
    terminal = demo["terminals"][outlet["id"]][0]
    cashier = demo["cashiers"][outlet["id"]][0]
    curl = (f"curl -s {mesh.gateway_url}/v1/invoices -H 'Authorization: Bearer {key}' "
            f"-H 'Content-Type: application/json' -d '{{\"outlet_id\":\"{outlet['id']}\","
            f"\"client_invoice_id\":\"demo-1\",\"pos_terminal_id\":\"{terminal}\",\"cashier_id\":\"{cashier}\","
            f"\"currency\":\"{outlet['currency']}\",\"lines\":[{{\"description\":\"Sugar 1kg\",\"quantity\":\"2\","
            f"\"unit_price\":\"180.00\",\"tax_group\":\"A\"}}]}}'")
    lines = [
        f"[bold green]Fiscal Cloud is up[/] at [bold]{mesh.gateway_url}[/]  (health: {mesh.gateway_url}/healthz)",
        f"demo merchant: {demo['merchant']['name']}  outlets: "
        + ", ".join(f"{o['code']} ({o['id']})" for o in demo["outlets"]),
        f"admin key:     {demo['admin_key']}",
        f"read-only key: {demo['read_key']}",
        f"POS key {outlet['code']}: {key}",
        f"everything as JSON: {demo_path}",
        f"logs: {mesh.log_dir}",
        "started: " + ", ".join(_started(mesh)),
        "",
        "seal an invoice:",
        curl,
        "",
        "a webhook endpoint for invoice.sealed events (answers its secret once; loopback receivers are allowed"
        " in development):",
        f"curl -s {mesh.gateway_url}/v1/webhook-endpoints -H 'Authorization: Bearer {demo['admin_key']}' "
        "-H 'Content-Type: application/json' "
        "-d '{\"url\":\"http://127.0.0.1:9000/hook\",\"event_types\":[\"invoice.sealed\"]}'",
        *_payment_lines(mesh, key, outlet),
        *_dgi_lines(mesh),
        "",
        "Ctrl-C stops everything.",
    ]
    # Plain lines, not a panel: the keys and the curl command must survive copy-paste at any width.
    console.print("\n".join(lines), soft_wrap=True, highlight=False)
