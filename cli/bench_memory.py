"""Resident memory of the stack's processes and of the load generator over a run, from /proc (Linux).

A background thread reads VmRSS from /proc/<pid>/status every few seconds while the load runs. For each
process the report gives start, end and max, and the slope in MB per minute: a least-squares line through
the samples of the second half of the run, so the warm-up (caches filling, pools opening, the allocator
finding its working set) does not read as growth. A flat process has a slope near 0 whatever its size.

PostgreSQL is one entry made of many processes that share memory: summing their VmRSS would count
shared_buffers once per backend that touched a page, and would grow as backends touch more of it without
any leak. So its figure is the private and file-backed RSS of the postmaster and each of its children
(VmRSS - RssShmem) plus the largest RssShmem of any one of them (shared memory counted once), and the
number of its processes is kept next to it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cli.bench_cpu import children_of

PROC = Path("/proc")
MAX_SAMPLES = 100_000   # a bound on the series whatever the interval and the run's length
LOAD_GENERATOR = "load generator"


def status_kb(pid: int, fields: tuple[str, ...] = ("VmRSS",)) -> dict[str, int] | None:
    """The named kB fields of /proc/<pid>/status (missing ones as 0), or None if the process is gone."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    found = dict.fromkeys(fields, 0)
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0])
    return found


def process_rss_mb(pid: int) -> float | None:
    found = status_kb(pid)
    return None if found is None else found["VmRSS"] / 1024


def backend_role(pid: int) -> str:
    """A PostgreSQL child's role from its process title ("postgres: <role> <database> …"), or "server"
    for the postmaster's own helpers (checkpointer, WAL writer, …)."""
    try:
        title = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return "gone"
    return title[1] if len(title) >= 4 and title[0] == "postgres:" and title[1].startswith("fiscal") else "server"


def postgres_rss(postmaster: int, roles: Counter[str] | None = None,
                 parts: dict[str, float] | None = None) -> tuple[float, int] | None:
    """(MB, processes) of a PostgreSQL server: private + file RSS of each process, shared memory once.
    With `roles`, counts its processes by role (which service's connections they are); with `parts`,
    fills in the two terms ("private_mb": the sum over processes, "shared_mb": the largest one's)."""
    private_kb = shared_kb = processes = 0
    for pid in [postmaster, *children_of(postmaster)]:
        found = status_kb(pid, ("VmRSS", "RssShmem"))
        if found is None:
            if pid == postmaster:
                return None
            continue  # a backend that exited between the listing and the read
        private_kb += found["VmRSS"] - found["RssShmem"]
        shared_kb = max(shared_kb, found["RssShmem"])
        processes += 1
        if roles is not None and pid != postmaster:
            roles[backend_role(pid)] += 1
    if parts is not None:
        parts.update(private_mb=round(private_kb / 1024, 2), shared_mb=round(shared_kb / 1024, 2))
    return (private_kb + shared_kb) / 1024, processes


def slope_mb_per_min(times_s: list[float], values_mb: list[float | None]) -> float | None:
    """Least-squares slope (MB per minute) of the samples in the second half of the series' time span;
    None when fewer than 3 such samples were read (too short a run, or the process was gone)."""
    points = [(t, v) for t, v in zip(times_s, values_mb, strict=True) if v is not None]
    if not points:
        return None
    half = points[0][0] + (points[-1][0] - points[0][0]) / 2
    tail = [(t, v) for t, v in points if t >= half]
    if len(tail) < 3:
        return None
    mean_t = sum(t for t, _ in tail) / len(tail)
    mean_v = sum(v for _, v in tail) / len(tail)
    spread = sum((t - mean_t) ** 2 for t, _ in tail)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in tail) / spread * 60


def interval_for(duration_s: float) -> float:
    """Every few seconds: about 60 samples per run, between every 0.5 s (short runs) and every 5 s."""
    return min(5.0, max(0.5, duration_s / 60))


class RssSampler:
    """`with RssSampler(pids, postmaster, interval) as sampler: …` samples in a daemon thread until the
    block ends (or MAX_SAMPLES); `sampler.report()` then gives the figures and the series."""

    def __init__(self, processes: dict[str, int], postmaster: int | None, interval_s: float):
        if interval_s <= 0:
            raise ValueError("the sampling interval must be positive")
        self.interval_s = interval_s
        self.readers: dict[str, Callable[[], float | None]] = {
            name: functools.partial(process_rss_mb, pid) for name, pid in sorted(processes.items())}
        self.postmaster = postmaster
        self.readers[LOAD_GENERATOR] = lambda: process_rss_mb(os.getpid())
        self.times_s: list[float] = []
        self.series: dict[str, list[float | None]] = {name: [] for name in self.readers}
        if postmaster is not None:
            self.series["postgresql"] = []
        self.postgres_processes: list[int | None] = []
        self.postgres_roles: list[dict[str, int]] = []  # processes by role at each sample
        self.postgres_parts: dict[str, list[float | None]] = {"private_mb": [], "shared_mb": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0

    def sample(self) -> None:
        self.times_s.append(round(time.monotonic() - self._started, 2))
        for name, read in self.readers.items():
            value = read()
            self.series[name].append(None if value is None else round(value, 2))
        if self.postmaster is not None:
            roles: Counter[str] = Counter()
            parts: dict[str, float] = {}
            found = postgres_rss(self.postmaster, roles, parts)
            for name, values in self.postgres_parts.items():
                values.append(parts.get(name))
            self.series["postgresql"].append(None if found is None else round(found[0], 2))
            self.postgres_processes.append(None if found is None else found[1])
            self.postgres_roles.append(dict(sorted(roles.items())))

    def _run(self) -> None:
        while len(self.times_s) < MAX_SAMPLES:
            self.sample()
            if self._stop.wait(self.interval_s):
                break
        if len(self.times_s) < MAX_SAMPLES:
            self.sample()  # the end of the window, whatever the phase of the interval

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def report(self) -> dict:
        processes: dict[str, dict] = {}
        for name, values in self.series.items():
            read = [v for v in values if v is not None]
            slope = slope_mb_per_min(self.times_s, values)
            processes[name] = {
                "start_mb": read[0] if read else None, "end_mb": read[-1] if read else None,
                "max_mb": max(read) if read else None,
                "slope_mb_per_min": None if slope is None else round(slope, 3),
                "samples": len(read), "mb": values}
        if self.postmaster is not None:
            processes["postgresql"]["processes"] = self.postgres_processes
            processes["postgresql"]["processes_by_role"] = self.postgres_roles
            processes["postgresql"].update(self.postgres_parts)
        return {"interval_s": self.interval_s, "t_s": self.times_s,
                "slope_over": "least squares over the second half of the window (after warm-up)",
                "source": "/proc/<pid>/status VmRSS; postgresql: sum of (VmRSS - RssShmem) over its processes "
                          "+ the largest RssShmem", "processes": processes}
