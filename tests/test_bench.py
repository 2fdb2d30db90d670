"""`fiscal bench` smoke test: a 3 s open-loop run at a low rate and a 3 s floor against the shared mesh,
and the resident-memory sampler (cli/bench_memory.py) on this test process.

Checks the JSON report's fields and that every count adds up; never a time or a rate (benchmarks are
commands, not timed tests)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter

import pytest

from cli.bench import sweep_rates
from cli.bench_chart import write_sweep_chart
from cli.bench_cpu import stack_pids_from_ports
from cli.bench_memory import RssSampler, postgres_rss, process_rss_mb, slope_mb_per_min
from cli.main import main


def test_open_loop_and_floor_report_adds_up(mesh, tmp_path, capsys):
    # A stack.json like `fiscal up` writes, without "pids": the bench finds the processes by their ports.
    (tmp_path / "stack.json").write_text(json.dumps({
        "gateway_url": mesh.gateway_url, "database_url": mesh.database_url,
        **{f"{s}_addr": mesh.address(s) for s in ("counter", "signing", "ledger")}}))
    out = tmp_path / "bench.json"
    code = main(["bench", "--data-dir", str(tmp_path), "--outlets", "2", "--terminals", "2", "--rate", "15",
                 "--duration", "3", "--floor", "--floor-connections", "2", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["machine"]["cpus"] and report["outlets"] == 2 and report["terminals_per_outlet"] == 2

    [run] = report["runs"]
    assert run["mode"] == "open" and run["rate_per_s"] == 15
    for field in ("offered_per_s", "seals_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "timeouts",
                  "retry_after_503s", "all_answers", "latency_from", "peak_inflight"):
        assert field in run, field
    assert run["arrivals"] > 0
    assert run["arrivals"] == run["sent"] + run["skipped_inflight_cap"]
    assert sum(run["responses"].values()) == run["sent"]
    assert run["sealed"] == run["responses"].get("200", 0) > 0
    assert run["timeouts"] == run["responses"].get("timeout", 0)
    assert run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"] <= run["max_ms"]

    cpu = run["cpu"]
    for process in ("envoy", "ledger", "counter", "signing", "postgresql"):
        assert process in cpu["ms_per_seal"], (process, cpu)
    assert cpu["stack_ms_per_seal"] == pytest.approx(sum(cpu["ms_per_seal"].values()), abs=0.01)
    assert cpu["load_generator_ms_per_request"] > 0  # the generator did work: its CPU was measured

    # Resident memory of every stack process and of the generator, sampled over the run and printed.
    memory = report["memory"]
    assert len(memory["t_s"]) >= 2 and memory["t_s"] == sorted(memory["t_s"])
    for process in ("envoy", "ledger", "counter", "signing", "postgresql", "load generator"):
        figures = memory["processes"][process]
        assert len(figures["mb"]) == len(memory["t_s"]), process
        assert figures["samples"] > 0 and figures["max_mb"] > 0, (process, figures)
        assert figures["start_mb"] <= figures["max_mb"] and figures["end_mb"] <= figures["max_mb"]
        assert figures["max_mb"] == max(v for v in figures["mb"] if v is not None)
    postgresql = memory["processes"]["postgresql"]
    assert all(count is None or count >= 2 for count in postgresql["processes"])
    # Its two terms add up to its figure; its connections are counted by role.
    for total, private, shared in zip(postgresql["mb"], postgresql["private_mb"], postgresql["shared_mb"], strict=True):
        assert total == pytest.approx(private + shared, abs=0.02)
    assert any(roles.get("fiscal_ledger", 0) >= 1 for roles in postgresql["processes_by_role"])
    printed = capsys.readouterr().out
    assert "resident memory (RSS)" in printed and "MB/min (2nd half)" in printed
    assert "shared buffers touched" in printed
    for process in ("envoy", "ledger", "load generator"):
        assert process in printed.split("resident memory (RSS)", 1)[1], process

    floor = report["floor"]
    assert floor["sealed"] > 0 and floor["gapless"] is True and floor["connections"] == 2
    # The report rounds the ratio to 3 decimals.
    assert report["ratio_gateway_to_floor"] == pytest.approx(run["seals_per_s"] / floor["seals_per_s"], abs=0.0006)
    # The floor's throwaway schema is gone; it never touched the ledger's tables.
    import psycopg

    with psycopg.connect(mesh.database_url) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (floor["schema"],)).fetchone()
    assert left == (0,)


def test_sweep_chart_is_svg(tmp_path):
    points = [{"offered_per_s": 100, "seals_per_s": 99, "p50_ms": 8, "p99_ms": 30},
              {"offered_per_s": 200, "seals_per_s": 150, "p50_ms": 900, "p99_ms": 2500}]
    chart = tmp_path / "sweep.svg"
    write_sweep_chart(points, chart, "test")
    assert "<svg" in chart.read_text()[:2000]


def test_bad_sweep_and_exclusive_modes_are_refused_readably(capsys):
    with pytest.raises(SystemExit, match="positive"):
        sweep_rates("100,-5")
    with pytest.raises(SystemExit, match="separated by commas"):
        sweep_rates("100;200")
    with pytest.raises(SystemExit):
        main(["bench", "--rate", "10", "--sweep", "10,20"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_pids_found_by_listening_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert stack_pids_from_ports({"me": port}) == {"me": os.getpid()}


def test_wrk_script_has_every_till_and_refuses_odd_text():
    from cli.bench_wrk import lua_script

    merchant = {"outlets": [{"id": "o1", "currency": "KES"}], "pos_keys": {"o1": "fk_abc"},
                "terminals": {"o1": ["T1", "T2"]}, "cashiers": {"o1": ["C1"]}}
    script = lua_script(merchant, "run1")
    assert '{"o1","fk_abc","T1","C1","KES"}' in script and '{"o1","fk_abc","T2","C1","KES"}' in script
    merchant["terminals"]["o1"] = ['T"1']
    with pytest.raises(ValueError):
        lua_script(merchant, "run1")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_wrk_client_counts_add_up(mesh, tmp_path):
    (tmp_path / "stack.json").write_text(json.dumps({
        "gateway_url": mesh.gateway_url, "database_url": mesh.database_url,
        **{f"{s}_addr": mesh.address(s) for s in ("counter", "signing", "ledger")}}))
    out = tmp_path / "wrk.json"
    assert main(["bench", "--data-dir", str(tmp_path), "--client", "wrk", "--outlets", "2", "--terminals", "2",
                 "--duration", "2", "--json", str(out)]) == 0
    [run] = json.loads(out.read_text())["runs"]
    assert run["client"] == "wrk" and run["connections"] == 4
    assert sum(run["responses"].values()) == run["sent"] and run["sealed"] == run["responses"]["200"] > 0
    assert run["cpu"]["load_generator_ms_per_request"] >= 0


def test_slope_is_fitted_over_the_second_half_only():
    times = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    # A warm-up jump in the first half, then +1 MB every 10 s: 6 MB per minute.
    values: list[float | None] = [50.0, 90.0, 100.0, 103.0, 104.0, 105.0, 106.0]
    assert slope_mb_per_min(times, values) == pytest.approx(6.0)
    assert slope_mb_per_min(times, [80.0] * 7) == pytest.approx(0.0)
    # Samples of a process that was gone are skipped; too few left in the second half: no slope.
    assert slope_mb_per_min(times, [80.0, 80.0, 80.0, None, None, None, 80.0]) is None
    assert slope_mb_per_min([0.0, 1.0], [1.0, 2.0]) is None
    assert slope_mb_per_min([], []) is None


def test_sampler_sees_this_process_grow_and_counts_children_once():
    assert (process_rss_mb(os.getpid()) or 0) > 0
    assert process_rss_mb(2**22 + 12345) is None  # no such process
    sampler = RssSampler({}, None, interval_s=60)
    sampler._started = 0.0
    sampler.sample()
    held = b"x" * (64 * 1024 * 1024)  # written, so its pages are resident
    sampler.sample()
    start, end = sampler.series["load generator"]
    assert end is not None and start is not None and end - start >= 48, (start, end)
    del held
    # As for PostgreSQL: the parent and each child, shared memory counted once.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        roles: Counter[str] = Counter()
        found = postgres_rss(os.getpid(), roles)
        assert found is not None
        total, processes = found
        assert processes >= 2 and total > (process_rss_mb(os.getpid()) or 0) - 1
        # Children whose title is not a PostgreSQL backend's are counted as the server's own helpers.
        assert roles["server"] == processes - 1
    finally:
        child.kill()
        child.wait(timeout=10)


def test_sampler_thread_stops_with_the_block():
    with RssSampler({"me": os.getpid()}, None, interval_s=0.05) as sampler:
        pass
    report = sampler.report()
    assert not sampler._thread.is_alive()
    assert report["processes"]["me"]["samples"] == len(report["t_s"]) >= 2
