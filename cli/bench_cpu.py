"""CPU time of the stack's processes and of the load generator, from /proc/<pid>/stat (Linux).

A sample is utime+stime per named process, in seconds; the difference of two samples over a measured
window, divided by the seals in it, is the CPU per seal per process. PostgreSQL is one entry: the
postmaster's own time, the time of the children it has reaped (cutime+cstime: backends that ended in the
window) and the time of its live children (the backends, walwriter, checkpointer, …), so a backend that
exits between the two samples moves from one term to the other without being lost or counted twice.
"""

from __future__ import annotations

import functools
import os
import resource
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may contain spaces), or None."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text[text.rindex(")") + 2:].split()


def process_cpu(pid: int, with_reaped_children: bool = False) -> float | None:
    """utime+stime of a process in seconds (plus cutime+cstime when asked); None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def children_of(parent: int) -> list[int]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def postgres_cpu(postmaster: int) -> float | None:
    own = process_cpu(postmaster, with_reaped_children=True)
    if own is None:
        return None
    return own + sum(process_cpu(child) or 0.0 for child in children_of(postmaster))


def self_cpu() -> float:
    """The load generator's own CPU: this process (all its threads) and the children it waited for (wrk)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's postmaster, when it runs on this machine: the parent of our own backend."""
    import psycopg

    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
            # Read while the connection is open: once it closes, the backend exits and its pid is gone.
            fields = _stat_fields(int(row[0])) if row else None
    except psycopg.Error:
        return None
    return int(fields[1]) if fields else None  # a remote server's backend pid is not ours to read


class CpuMeter:
    """Samples named processes; `per_seal(before, after, seals)` gives ms of CPU per seal per process."""

    def __init__(self, processes: dict[str, int], postmaster: int | None):
        self.readers: dict[str, Callable[[], float | None]] = {
            name: functools.partial(process_cpu, pid) for name, pid in sorted(processes.items())}
        if postmaster is not None:
            self.readers["postgresql"] = lambda: postgres_cpu(postmaster)
        self.readers["load generator"] = self_cpu

    def sample(self) -> dict[str, float | None]:
        return {name: read() for name, read in self.readers.items()}

    @staticmethod
    def per_seal(before: dict[str, float | None], after: dict[str, float | None], seals: int,
                 requests: int) -> dict:
        """ms of CPU per seal for each stack process (and the total of the stack), and the load
        generator's own ms per request sent; a process that died in the window is left out."""
        rows: dict[str, float] = {}
        missing: dict[str, str] = {}
        stack_total = 0.0
        for name, start in before.items():
            end = after.get(name)
            if name == "load generator":
                continue
            if start is None or end is None or end < start:
                missing[name] = "not readable before the window" if start is None else (
                    "gone by the end of the window" if end is None else "restarted in the window")
                continue
            spent = (end - start) * 1000
            stack_total += spent
            rows[name] = round(spent / seals, 3) if seals else 0.0
        generator = after["load generator"] - before["load generator"]  # type: ignore[operator]
        return {"ms_per_seal": rows, "stack_ms_per_seal": round(stack_total / seals, 3) if seals else 0.0,
                "stack_cpu_s": round(stack_total / 1000, 3),
                "load_generator_ms_per_request": round(generator * 1000 / requests, 3) if requests else 0.0,
                "load_generator_cpu_s": round(generator, 3), "not_measured": missing}


def running_stack_pids(state: dict) -> dict[str, int]:
    """The processes of a stack `fiscal up` runs, by name, from its stack.json: its "pids" map, or else
    whoever listens on its gateway's and services' ports."""
    if state.get("pids"):
        return {name: int(pid) for name, pid in state["pids"].items()}
    from stack.mesh import SERVICES

    ports: dict[str, int] = {"envoy": urlsplit(state["gateway_url"]).port or 80}
    for service in SERVICES:
        for replica, address in enumerate((state.get(f"{service}_addr") or "").split(",")):
            if address:
                ports[f"{service}-{replica}" if replica else service] = int(address.rsplit(":", 1)[1])
    return stack_pids_from_ports(ports)


def stack_pids_from_ports(ports: dict[str, int]) -> dict[str, int]:
    """For a running stack without a "pids" map: which process listens on each 127.0.0.1 port, found
    through /proc/net/tcp (socket inode) and /proc/<pid>/fd (who holds it). Only our own processes
    (or all, as root) can be seen."""
    inodes: dict[int, str] = {}
    wanted = {port: name for name, port in ports.items()}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if parts[3] == "0A" and port in wanted:  # 0A: LISTEN
                inodes[int(parts[9])] = wanted[port]
    found: dict[str, int] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    name = inodes.get(int(target[8:-1]))
                    if name:
                        found.setdefault(name, int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found
