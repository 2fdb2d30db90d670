"""`fiscal bench` smoke test: a 3 s open-loop run at a low rate and a 3 s floor against the shared mesh.

Checks the JSON report's fields and that every count adds up; never a time or a rate (benchmarks are
commands, not timed tests)."""

from __future__ import annotations

import json
import os
import shutil
import socket

import pytest

from cli.bench import sweep_rates
from cli.bench_chart import write_sweep_chart
from cli.bench_cpu import stack_pids_from_ports
from cli.main import main


def test_open_loop_and_floor_report_adds_up(mesh, tmp_path):
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
