"""`fiscal bench --client wrk`: the closed-loop saturation test driven by wrk (a C client, ~0.01 ms of CPU
per request) instead of aiohttp (~0.5-0.7 ms), so the load generator takes less of the cores it shares with
the stack. A Lua script makes every body distinct (a unique client_invoice_id per request, each to a till
chosen at random across the outlets) and reports status counts and latency percentiles as one JSON line.

`apt-get install -y wrk` (Debian's wrk 4.1) provides it. wrk is closed loop: each connection sends its
next request when the previous one answered, so latency is from the send; the open loop stays with the
built-in generator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

MARKER = "FISCAL-WRK-JSON "

LUA = r"""
local tills = %(tills)s
local run_id = "%(run_id)s"
local counter = 0
statuses = {}  -- a global: done() reads it from each thread with thread:get
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(os.time() + tid * 7919)  -- threads must not walk the same sequence of tills
end

-- Each request goes to a till at random. Not in turn: wrk cannot tie a connection to a till, and taking
-- the tills in order sends runs of consecutive requests to the same outlet (its terminals are adjacent),
-- which measures that outlet's serial path rather than the stack.
function request()
  counter = counter + 1
  local t = tills[math.random(#tills)]
  local body = '{"outlet_id":"' .. t[1] .. '","client_invoice_id":"' .. run_id .. '-' .. tid .. '-' .. counter ..
    '","pos_terminal_id":"' .. t[3] .. '","cashier_id":"' .. t[4] .. '","currency":"' .. t[5] ..
    '","lines":[{"description":"Bread 400g","quantity":"2","unit_price":"65.00","tax_group":"A"},' ..
    '{"description":"Milk 500ml","quantity":"1","unit_price":"60.00","tax_group":"C"},' ..
    '{"description":"Item ' .. (counter %% 97) .. '","quantity":"1.5","unit_price":"99.99","tax_group":"E"}],' ..
    '"payments":[{"method":"cash","amount":"500.00"}]}'
  return wrk.format("POST", "/v1/invoices",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. t[2]}, body)
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function done(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("statuses")) do parts[k] = (parts[k] or 0) + v end
  end
  local codes = {}
  for k, v in pairs(parts) do table.insert(codes, '"' .. k .. '":' .. v) end
  local e = summary.errors
  io.write(string.format('%(marker)s{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status_errors":%%d,"timeout":%%d,"p50_us":%%d,"p95_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%d,' ..
    '"statuses":{%%s}}\n', summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    table.concat(codes, ",")))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("--client wrk needs wrk on the PATH: `apt-get install -y wrk` (or use the default client)")
    return found


def _lua_string(text: str) -> str:
    if not text.isascii() or any(c in text for c in "\"\\\n\r'"):
        raise ValueError(f"unexpected character in {text!r} for the wrk script")
    return f'"{text}"'


def lua_script(merchant: dict, run_id: str) -> str:
    rows = []
    for outlet in merchant["outlets"]:
        cashiers = merchant["cashiers"][outlet["id"]]
        for i, terminal in enumerate(merchant["terminals"][outlet["id"]]):
            fields = [outlet["id"], merchant["pos_keys"][outlet["id"]], terminal, cashiers[i % len(cashiers)],
                      outlet["currency"]]
            rows.append("{" + ",".join(_lua_string(str(f)) for f in fields) + "}")
    return LUA % {"tills": "{\n" + ",\n".join(rows) + "\n}", "run_id": run_id, "marker": MARKER}


def run_wrk(gateway_url: str, merchant: dict, duration: float, *, connections: int, threads: int,
            timeout: float) -> dict:
    """Run wrk for `duration` s (it stops by itself; killed if it overruns by 30 s) and parse its report."""
    binary = wrk_binary()
    if urlsplit(gateway_url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"fiscal bench sends load only to this machine; the gateway is at {gateway_url}")
    connections = max(connections, threads)
    with tempfile.TemporaryDirectory(prefix="fiscal-wrk-") as directory:
        script = Path(directory) / "seal.lua"
        script.write_text(lua_script(merchant, uuid.uuid4().hex[:12]))
        argv = [binary, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
                "--timeout", f"{max(1, round(timeout))}s", "-s", str(script), gateway_url]
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout + 30)
        elapsed = time.monotonic() - started
    line = next((line for line in done.stdout.splitlines() if line.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    raw = json.loads(line[len(MARKER):])
    seconds = raw["duration_us"] / 1e6 or elapsed
    statuses = {str(k): v for k, v in raw["statuses"].items()}
    for error in ("timeout", "connect", "read", "write"):
        if raw[error]:
            statuses[error if error == "timeout" else f"{error} error"] = raw[error]
    sealed = statuses.get("200", 0)
    return {
        "mode": "closed", "client": "wrk", "think_time_s": 0.0, "duration_s": round(seconds, 2),
        "connections": connections, "wrk_threads": threads,
        "sent": sum(statuses.values()), "sealed": sealed, "seals_per_s": round(sealed / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 1), "p95_ms": round(raw["p95_us"] / 1000, 1),
        "p99_ms": round(raw["p99_us"] / 1000, 1), "max_ms": round(raw["max_us"] / 1000, 1),
        "mean_ms": round(raw["mean_us"] / 1000, 1), "responses": statuses, "timeouts": raw["timeout"],
        "latency_from": "send time, every answer (wrk, closed loop)",
    }
