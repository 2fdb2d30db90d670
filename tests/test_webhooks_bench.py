"""`fiscal bench-webhooks` smoke test: 20 seals against the webhook test mesh. Checks the report's fields
and that its counts add up; never a time or a rate."""

from __future__ import annotations

import json

from cli.main import main
from stack.mesh import SERVICES


def test_bench_webhooks_delivers_every_seal_and_reports_latency_and_cpu(webhook_mesh, tmp_path):
    mesh = webhook_mesh
    # A stack.json like `fiscal up` writes, without "pids": the bench finds the processes by their ports.
    (tmp_path / "stack.json").write_text(json.dumps({
        "gateway_url": mesh.gateway_url, "database_url": mesh.database_url,
        **{f"{s}_addr": mesh.address(s) for s in SERVICES}}))
    out = tmp_path / "bench.json"
    code = main(["bench-webhooks", "--data-dir", str(tmp_path), "--seals", "20", "--outlets", "1",
                 "--terminals", "2", "--drain-timeout", "60", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["sent"] == report["seals"] == 20
    assert report["sealed"] == report["responses"].get("200") == 20
    assert report["delivered"] == 20 and report["undelivered"] == 0
    assert report["receiver"]["bad_signatures"] == 0
    receiver = report["receiver"]
    assert receiver["requests"] == receiver["events_received"] + receiver["duplicates"] + receiver["other_events"]
    assert receiver["events_received"] == 20 + receiver["not_measured_events"]
    assert report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"] <= report["max_ms"]
    assert report["deliveries_per_s"] > 0
    for process in ("envoy", "ledger", "webhooks", "postgresql"):
        assert process in report["cpu"]["ms_per_delivered_event"], (process, report["cpu"])
    # The bench's endpoint is gone afterwards: a running stack keeps no endpoint on a dead port.
    import psycopg

    with psycopg.connect(mesh.database_url) as conn:
        live = conn.execute("SELECT count(*) FROM webhooks.endpoints WHERE url LIKE '%%/bench-webhooks' "
                            "AND deleted_at IS NULL").fetchone()
    assert live == (0,)
