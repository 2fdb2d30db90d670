"""The counter service as real processes on a real PostgreSQL, with a stand-in ledger (its
LedgerInternalService.GetChainHead) served from this test process so each test controls the chain head."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import psycopg
import pytest
from fiscal.v1 import counter_pb2, counter_pb2_grpc, ledger_pb2, ledger_pb2_grpc

from stack.processes import free_port, service_process, wait_serving

LEASE_SECONDS = 1.0
SERIES = "F"


class FakeLedger(ledger_pb2_grpc.LedgerInternalServiceServicer):
    """The ledger's chain heads, as the test decides; `down` answers UNAVAILABLE."""

    def __init__(self):
        self.heads: dict[tuple[str, str], int] = {}
        self.down = False
        self.calls = 0

    def wrote(self, outlet_id: str, number: int, series: str = SERIES) -> None:
        key = (outlet_id, series)
        self.heads[key] = max(self.heads.get(key, 0), number)

    async def GetChainHead(self, request, context):
        self.calls += 1
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ledger down (test)")
        return ledger_pb2.ChainHead(last_number=self.heads.get((request.outlet_id, request.series), 0))


@pytest.fixture(scope="module")
async def ledger(mesh_certificates):
    fake = FakeLedger()
    server = grpc.aio.server()
    ledger_pb2_grpc.add_LedgerInternalServiceServicer_to_server(fake, server)
    # It serves as "ledger" over the mesh's mutual TLS, as the counter's client expects.
    fake.port = server.add_secure_port("127.0.0.1:0", mesh_certificates.material("ledger").server_credentials())
    await server.start()
    yield fake
    await server.stop(0)


@pytest.fixture(scope="module")
def counter_env(database_url, ledger, mesh_certificates) -> dict[str, str]:
    return {
        **mesh_certificates.env("counter"),
        "DATABASE_URL": database_url,
        "FISCAL_LEDGER_ADDR": f"127.0.0.1:{ledger.port}",
        "FISCAL_LEASE_SECONDS": str(LEASE_SECONDS),
        "FISCAL_RPC_TIMEOUT_SECONDS": "2",
        "FISCAL_DB_POOL_SIZE": "5",
        # Slow polling (the production default too), so a prompt wake-up across replicas can only be NOTIFY's.
        "FISCAL_COUNTER_POLL_SECONDS": "0.5",
    }


@pytest.fixture(scope="module")
def processes(counter_env, work_dir):
    """Replicas a and b (sharing the database), and c whose ledger address answers nothing."""
    dead_ledger = f"127.0.0.1:{free_port()}"
    started = {}
    try:
        for replica, (name, env) in enumerate(
                [("a", counter_env), ("b", counter_env), ("c", {**counter_env, "FISCAL_LEDGER_ADDR": dead_ledger})],
                start=1):
            started[name] = spawn(env, free_port(), work_dir, replica)
        yield started
    finally:
        for process in started.values():
            process.stop()


@pytest.fixture(scope="module")
async def stubs(processes, mesh_certificates):
    # The test calls the counter as the ledger does: the only identity it serves Allocate/Commit/Release to.
    channels = {name: mesh_certificates.aio_channel(f"127.0.0.1:{p.port}", "ledger", "counter")
                for name, p in processes.items()}
    yield {name: counter_pb2_grpc.CounterServiceStub(channel) for name, channel in channels.items()}
    for channel in channels.values():
        await channel.close()


def spawn(name_env: dict[str, str], port: int, work_dir, replica: int, attempts: int = 3):
    """Start a counter process and wait until it serves. This process runs gRPC while it forks, and
    gRPC's fork handling occasionally aborts the child before it execs (GRPC_ENABLE_FORK_SUPPORT=false
    in the environment of pytest avoids it): such a start is retried."""
    for attempt in range(attempts):
        process = service_process("counter", port, name_env, work_dir / "logs", replica=replica).start()
        try:
            wait_serving(process)
            return process
        except RuntimeError:  # exited during start
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def new_outlet() -> str:
    return f"outlet-{uuid.uuid4().hex[:12]}"


async def allocate(stub, outlet_id: str, timeout: float = 5.0, series: str = SERIES) -> counter_pb2.Lease:
    return await stub.Allocate(counter_pb2.AllocateRequest(outlet_id=outlet_id, series=series, holder="test"),
                               timeout=timeout)


async def commit(stub, lease: counter_pb2.Lease | str) -> int:
    lease_id = lease if isinstance(lease, str) else lease.lease_id
    return (await stub.Commit(counter_pb2.CommitRequest(lease_id=lease_id), timeout=5)).last_committed


async def state(stub, outlet_id: str, series: str = SERIES) -> counter_pb2.CounterState:
    return await stub.GetCounter(counter_pb2.GetCounterRequest(outlet_id=outlet_id, series=series), timeout=5)


async def expect_code(code: grpc.StatusCode, awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await awaitable
    assert caught.value.code() == code, caught.value.details()
    return caught.value


async def test_sequential_allocate_commit_gives_1_to_n(stubs, ledger):
    stub, outlet = stubs["a"], new_outlet()
    for expected in range(1, 6):
        lease = await allocate(stub, outlet)
        assert lease.number == expected and lease.outlet_id == outlet and lease.series == SERIES
        assert lease.expires_at.seconds > 0
        ledger.wrote(outlet, lease.number)
        assert await commit(stub, lease) == expected
    assert await commit(stub, lease) == 5  # a retried commit is fine
    current = await state(stubs["b"], outlet)
    assert current.last_committed == 5 and current.open_lease_id == "" and current.open_lease_number == 0
    # Series are independent counters.
    assert (await allocate(stub, outlet, series="CN")).number == 1


async def test_50_concurrent_sealers_across_two_replicas_get_1_to_50(stubs, ledger, database_url):
    outlet = new_outlet()
    latencies: list[float] = []

    async def seal(i: int) -> int:
        stub = stubs["a"] if i % 2 else stubs["b"]
        started = time.perf_counter()
        lease = await allocate(stub, outlet, timeout=30)
        ledger.wrote(outlet, lease.number)  # the ledger's insert, before the commit
        await commit(stub, lease)
        latencies.append(time.perf_counter() - started)
        return lease.number

    started = time.perf_counter()
    numbers = await asyncio.gather(*(seal(i) for i in range(50)))
    elapsed = time.perf_counter() - started
    assert sorted(numbers) == list(range(1, 51))
    assert (await state(stubs["a"], outlet)).last_committed == 50
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT number, status FROM counter.leases WHERE outlet_id = %s", (outlet,)).fetchall()
    assert sorted(n for n, s in rows if s == "committed") == list(range(1, 51))
    print(f"\n50 contended seals on one outlet over 2 replicas: {elapsed * 1000:.0f} ms total, "
          f"{elapsed / 50 * 1000:.1f} ms per number")


async def test_hundred_uncontended_rounds_count_one_to_a_hundred(stubs, ledger):
    stub, outlet = stubs["a"], new_outlet()
    for expected in range(1, 101):
        lease = await allocate(stub, outlet)
        assert lease.number == expected
        assert await commit(stub, lease) == expected
    ledger.wrote(outlet, 100)
    assert (await state(stub, outlet)).last_committed == 100


async def test_release_reissues_the_same_number(stubs):
    stub, outlet = stubs["a"], new_outlet()
    first = await allocate(stub, outlet)
    assert first.number == 1
    await stub.Release(counter_pb2.ReleaseRequest(lease_id=first.lease_id, reason="signing failed"), timeout=5)
    again = await allocate(stubs["b"], outlet)
    assert again.number == 1 and again.lease_id != first.lease_id
    # A second release of the old lease is a no-op; committing it is refused.
    await stub.Release(counter_pb2.ReleaseRequest(lease_id=first.lease_id), timeout=5)
    await expect_code(grpc.StatusCode.FAILED_PRECONDITION, commit(stub, first))
    assert await commit(stubs["b"], again) == 1


async def test_busy_counter_waits_then_is_woken_or_aborts(stubs):
    outlet = new_outlet()
    held = await allocate(stubs["a"], outlet)
    error = await expect_code(grpc.StatusCode.ABORTED, allocate(stubs["b"], outlet, timeout=0.3))
    assert "busy" in error.details()
    waiter = asyncio.create_task(allocate(stubs["b"], outlet, timeout=5))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await commit(stubs["a"], held)
    lease = await waiter
    assert lease.number == 2


async def test_a_commit_on_one_replica_wakes_a_waiter_on_another(counter_env, work_dir, mesh_certificates):
    """No clock: polling slower than the waiter's deadline and a lease longer than it, so the waiter on
    replica b can get the number in time only if replica a's commit notified it (LISTEN/NOTIFY)."""
    env = {**counter_env, "FISCAL_COUNTER_POLL_SECONDS": "60", "FISCAL_LEASE_SECONDS": "30"}
    replicas = [spawn(env, free_port(), work_dir, replica) for replica in (4, 5)]
    channels = [mesh_certificates.aio_channel(f"127.0.0.1:{p.port}", "ledger", "counter") for p in replicas]
    try:
        a, b = (counter_pb2_grpc.CounterServiceStub(channel) for channel in channels)
        outlet = new_outlet()
        held = await allocate(a, outlet)
        waiter = asyncio.create_task(allocate(b, outlet, timeout=10))
        await expect_code(grpc.StatusCode.ABORTED, allocate(b, outlet, timeout=0.3))  # b is really waiting
        assert not waiter.done()
        await commit(a, held)
        assert (await waiter).number == 2
    finally:
        for channel in channels:
            await channel.close()
        for process in replicas:
            process.stop()


async def test_expired_lease_the_ledger_wrote_is_reconciled_to_the_next_number(stubs, ledger):
    stub, outlet = stubs["a"], new_outlet()
    for _ in range(2):
        lease = await allocate(stub, outlet)
        ledger.wrote(outlet, lease.number)
        await commit(stub, lease)
    crashed = await allocate(stub, outlet)
    assert crashed.number == 3
    ledger.wrote(outlet, 3)  # written to the ledger, but its Commit never came
    await asyncio.sleep(LEASE_SECONDS + 0.1)
    calls = ledger.calls
    after = await allocate(stubs["b"], outlet)
    assert after.number == 4 and ledger.calls == calls + 1
    assert (await state(stub, outlet)).last_committed == 3
    # The late commit of the reconciled lease is recognised (the ledger has its number).
    assert await commit(stub, crashed) == 3
    assert await commit(stub, after) == 4


async def test_expired_lease_the_ledger_never_wrote_is_reissued(stubs, ledger):
    stub, outlet = stubs["a"], new_outlet()
    for _ in range(2):
        lease = await allocate(stub, outlet)
        ledger.wrote(outlet, lease.number)
        await commit(stub, lease)
    hung = await allocate(stub, outlet)
    assert hung.number == 3
    await asyncio.sleep(LEASE_SECONDS + 0.1)
    again = await allocate(stubs["b"], outlet)
    assert again.number == 3 and again.lease_id != hung.lease_id
    await expect_code(grpc.StatusCode.FAILED_PRECONDITION, commit(stub, hung))  # superseded
    assert await commit(stub, again) == 3


async def test_ledger_unreachable_during_reconciliation_issues_nothing(stubs, ledger):
    outlet = new_outlet()
    stale = await allocate(stubs["a"], outlet)
    await asyncio.sleep(LEASE_SECONDS + 0.1)
    ledger.down = True
    try:
        await expect_code(grpc.StatusCode.UNAVAILABLE, allocate(stubs["a"], outlet))
    finally:
        ledger.down = False
    current = await state(stubs["a"], outlet)
    assert current.open_lease_id == stale.lease_id and current.last_committed == 0  # nothing issued
    # Replica c's ledger address answers nothing at all: same outcome.
    await expect_code(grpc.StatusCode.UNAVAILABLE, allocate(stubs["c"], outlet))
    assert (await state(stubs["a"], outlet)).open_lease_id == stale.lease_id
    # Ledger back: reconciled (head 0), number 1 issued again.
    lease = await allocate(stubs["a"], outlet)
    assert lease.number == 1 and lease.lease_id != stale.lease_id


async def test_counter_killed_with_an_open_lease_continues_after_restart(counter_env, work_dir, ledger,
                                                                       mesh_certificates):
    port = free_port()
    process = spawn(counter_env, port, work_dir, replica=9)
    channel = mesh_certificates.aio_channel(f"127.0.0.1:{port}", "ledger", "counter")
    stub = counter_pb2_grpc.CounterServiceStub(channel)

    async def restart():
        nonlocal process
        process.kill()  # SIGKILL to its process group
        process = spawn(counter_env, port, work_dir, replica=9)
        await asyncio.wait_for(channel.channel_ready(), 10)  # past the channel's reconnect backoff

    outlet = new_outlet()
    try:
        for _ in range(2):
            lease = await allocate(stub, outlet)
            ledger.wrote(outlet, lease.number)
            await commit(stub, lease)
        open_lease = await allocate(stub, outlet)
        assert open_lease.number == 3
        await restart()
        # The holder's commit, retried after the restart, lands: the state was in PostgreSQL.
        ledger.wrote(outlet, 3)
        assert await commit(stub, open_lease) == 3
        orphan = await allocate(stub, outlet)
        assert orphan.number == 4
        await restart()  # again, and this time the holder never writes number 4
        replacement = await allocate(stub, outlet)  # waits out the lease, reconciles (head 3)
        assert replacement.number == 4 and replacement.lease_id != orphan.lease_id
        assert await commit(stub, replacement) == 4
    finally:
        await channel.close()
        process.stop()


async def test_bad_input_is_invalid_argument(stubs):
    stub = stubs["a"]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    await expect_code(invalid, stub.Allocate(counter_pb2.AllocateRequest(outlet_id="", series="F"), timeout=5))
    await expect_code(invalid, stub.Allocate(counter_pb2.AllocateRequest(outlet_id="o", series=""), timeout=5))
    await expect_code(invalid, stub.Allocate(counter_pb2.AllocateRequest(outlet_id="o" * 300, series="F"),
                                             timeout=5))
    await expect_code(invalid, stub.Commit(counter_pb2.CommitRequest(lease_id=""), timeout=5))
    await expect_code(invalid, stub.Commit(counter_pb2.CommitRequest(lease_id="not-a-uuid"), timeout=5))
    await expect_code(invalid, stub.Release(counter_pb2.ReleaseRequest(lease_id=""), timeout=5))
    await expect_code(invalid, stub.GetCounter(counter_pb2.GetCounterRequest(outlet_id="", series="F"), timeout=5))
    # Well-formed but unknown: commit refused, release a no-op, an unused counter reads as zero.
    unknown = str(uuid.uuid4())
    await expect_code(grpc.StatusCode.FAILED_PRECONDITION, commit(stub, unknown))
    await stub.Release(counter_pb2.ReleaseRequest(lease_id=unknown), timeout=5)
    assert (await state(stub, new_outlet())).last_committed == 0
