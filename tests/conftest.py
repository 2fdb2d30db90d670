"""Shared fixtures: one real PostgreSQL per test session (embedded unless DATABASE_URL is set), a fresh
database per fixture that asks for one, and whole meshes (services as processes behind Envoy)."""

from __future__ import annotations

import os

# The tests start service processes while gRPC runs in this process; gRPC's fork handlers then
# occasionally abort the child. The children exec straight away and need none of them.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import shutil
import tempfile
from pathlib import Path

import pytest

from services.runtime.config import sqlalchemy_url
from services.runtime.database import migrate
from stack.mesh import SERVICES, Mesh, MeshOptions
from stack.mesh_certs import MeshCertificates
from stack.postgres import start_database

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"

# At session end, every log of the run is searched for every secret the run used (tests/secrets_audit.py).
pytest_plugins = ["tests.secrets_audit"]


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fiscal")


@pytest.fixture(scope="session", autouse=True)
def postgres_server(tmp_path_factory):
    """The session's PostgreSQL server. Every database the tests make lives on it and is dropped after."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # Outside pytest's own temp tree: pytest prunes old run directories, even under a live server.
    pg_root = Path(tempfile.mkdtemp(prefix="fiscal-pg-"))
    server = start_database(pg_root)
    os.environ["DATABASE_URL"] = server.url
    try:
        yield server.url
    finally:
        del os.environ["DATABASE_URL"]
        server.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server, work_dir) -> str:
    """A fresh database with every service schema migrated."""
    database = start_database(work_dir, fresh_database="fiscal_test")
    sa_url = sqlalchemy_url(database.url)
    for service in SERVICES:
        if (SERVICES_DIR / service / "migrations").exists():
            migrate(service, sa_url)
    yield database.url
    database.stop()


@pytest.fixture(scope="session")
def mesh_certificates(tmp_path_factory) -> MeshCertificates:
    """A mesh CA and a certificate per identity, for services started one by one (service_process):
    `.env(identity)` for a service's environment, `.channel(address, identity, service)` for a client."""
    return MeshCertificates(tmp_path_factory.mktemp("tls") / "mesh-tls").ensure()


class MeshFactory:
    """Starts whole meshes, each on its own fresh database. A mesh started for one test module is
    stopped when that module ends (every mesh holds a few dozen PostgreSQL connections, and the session's
    one server allows 100); a shared one (`shared=True`: the session fixtures) at the end of the session."""

    def __init__(self, tmp_path_factory):
        self.tmp_path_factory = tmp_path_factory
        self.shared: list[Mesh] = []
        self.of_module: list[Mesh] = []

    def __call__(self, *, shared: bool = False, **options) -> Mesh:
        mesh = Mesh(MeshOptions(data_dir=self.tmp_path_factory.mktemp("mesh"), fresh_database="fiscal_mesh",
                                **options))
        (self.shared if shared else self.of_module).append(mesh)
        return mesh.start()

    def stop_module_meshes(self) -> None:
        while self.of_module:
            self.of_module.pop().stop()

    def stop_all(self) -> None:
        self.stop_module_meshes()
        while self.shared:
            self.shared.pop().stop()


_MESH_FACTORIES: list[MeshFactory] = []  # the session's, once a test asked for start_mesh


@pytest.fixture(scope="session")
def start_mesh(postgres_server, tmp_path_factory):
    """`start_mesh(**MeshOptions)`: a whole mesh on its own fresh database, stopped at the end of the test
    module that started it (`shared=True`: at the end of the session)."""
    factory = MeshFactory(tmp_path_factory)
    _MESH_FACTORIES.append(factory)
    yield factory
    factory.stop_all()
    _MESH_FACTORIES.remove(factory)


@pytest.fixture(scope="module", autouse=True)
def _stop_the_modules_meshes():
    # No fixture dependency: a module that overrides postgres_server (no database) must not pull in
    # the session's mesh factory.
    yield
    for factory in _MESH_FACTORIES:
        factory.stop_module_meshes()


@pytest.fixture(scope="session")
def mesh(start_mesh) -> Mesh:
    """The shared single-replica mesh most tests use (each test provisions its own merchant)."""
    return start_mesh(shared=True)


# Webhooks (tests/test_webhooks_*.py): retries in seconds, not hours, so a delivery's whole life fits a test.
WEBHOOK_RETRY_SCHEDULE = (0.3, 0.6, 1.2, 2.4, 4.8)
WEBHOOK_SERVICE_ENV = {
    "FISCAL_WEBHOOK_RETRY_SCHEDULE": ",".join(str(step) for step in WEBHOOK_RETRY_SCHEDULE),
    "FISCAL_WEBHOOK_TIMEOUT_SECONDS": "2",
    "FISCAL_WEBHOOK_POLL_SECONDS": "0.2",
    "FISCAL_WEBHOOK_ALLOW_LOOPBACK": "1",  # the receiver is on 127.0.0.1
}
WEBHOOK_LEDGER_ENV = {"FISCAL_OUTBOX_POLL_SECONDS": "0.2"}


def start_webhook_mesh(start_mesh, **options) -> Mesh:
    service_env = {"webhooks": dict(WEBHOOK_SERVICE_ENV), "ledger": dict(WEBHOOK_LEDGER_ENV)}
    for service, extra in options.pop("service_env", {}).items():
        service_env.setdefault(service, {}).update(extra)
    return start_mesh(service_env=service_env, **options)


@pytest.fixture(scope="session")
def webhook_mesh(start_mesh) -> Mesh:
    """One mesh for the webhook tests (each test provisions its own merchant and endpoints)."""
    return start_webhook_mesh(start_mesh, shared=True)


@pytest.fixture(scope="session")
def webhook_receiver():
    """A real HTTP receiver on 127.0.0.1 shared by the webhook tests (each test uses its own paths)."""
    from tests.webhook_receiver import WebhookReceiver

    with WebhookReceiver() as receiver:
        yield receiver


# Payments (tests/test_payments_*.py): provider calls time out in 2 s (the simulators' "slow" sleeps 30),
# and the reconciler leaves pending payments alone for an hour on the shared mesh, so that what settles a
# payment there is a callback; payments_reconcile_mesh queries after 2 s instead.
PAYMENTS_SERVICE_ENV = {
    "FISCAL_PROVIDER_TIMEOUT_SECONDS": "2",
    "FISCAL_PAYMENTS_RECONCILE_AFTER_SECONDS": "3600",
    "FISCAL_PAYMENTS_RECONCILE_EVERY_SECONDS": "1",
    "FISCAL_PAYMENTS_SEAL_RETRY_SECONDS": "1",
    "FISCAL_OUTBOX_POLL_SECONDS": "0.2",
}
PAYMENTS_RECONCILE_ENV = {**PAYMENTS_SERVICE_ENV, "FISCAL_PAYMENTS_RECONCILE_AFTER_SECONDS": "2"}


@pytest.fixture(scope="session")
def payments_mesh(start_mesh) -> Mesh:
    """The payments tests' mesh: two payments replicas (one is killed mid-burst, then restarted), the
    provider simulators, callbacks settle payments (no reconciliation within a test)."""
    return start_mesh(shared=True, service_replicas={"payments": 2},
                      service_env={"payments": dict(PAYMENTS_SERVICE_ENV)})


@pytest.fixture(scope="session")
def payments_reconcile_mesh(start_mesh) -> Mesh:
    """A mesh whose reconciler queries the provider about any payment pending for 2 s."""
    return start_mesh(shared=True, service_env={"payments": dict(PAYMENTS_RECONCILE_ENV)})


@pytest.fixture
def pay_shop(payments_mesh):
    """A fresh merchant (two outlets) of the payments mesh, with helpers (tests/payments_shop.py)."""
    from tests.payments_shop import PaymentsShop

    with PaymentsShop(payments_mesh) as shop:
        yield shop


@pytest.fixture
def shop_for(payments_mesh):
    """shop_for(provider[, mesh]): a fresh merchant in a currency that provider collects (Orange: XOF)."""
    from tests.payments_shop import CURRENCY, PaymentsShop

    shops = []

    def make(provider: str = "mpesa", mesh: Mesh | None = None) -> PaymentsShop:
        shops.append(PaymentsShop(mesh or payments_mesh, currency=CURRENCY[provider]))
        return shops[-1]

    yield make
    for shop in shops:
        shop.close()
