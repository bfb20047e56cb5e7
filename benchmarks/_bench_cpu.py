"""Where the benchmark's CPU time goes: per request for the client, tritonserver and the backend stubs,
and how busy the machine was outside them (Linux ``/proc``; zeros elsewhere).

On a 2-core machine these figures say what bounds a row: the stub runs the model and the per-request
Python work in one thread, tritonserver parses HTTP and moves tensors, and the client shares the same
cores. "Other" is every other process plus kernel work charged to no process; more than a few
percent means something else competed for the cores and the row is skewed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text(encoding="ascii").split()]
    except OSError:
        pass
    return found


def _machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


@dataclass(frozen=True)
class CpuSnapshot:
    client: float
    server: float
    stubs: float
    busy: float
    total: float

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSnapshot:
        times = os.times()
        server = _process_seconds(server_pid) if server_pid else 0.0
        stubs = sum(_process_seconds(p) for p in _children(server_pid)) if server_pid else 0.0
        busy, total = _machine_seconds()
        return cls(times.user + times.system, server, stubs, busy, total)


@dataclass(frozen=True)
class CpuUse:
    """CPU microseconds per request by process, and the share of all cores used by anything else."""

    client_us: float
    server_us: float
    stub_us: float
    #: Share of all cores busy outside the client, tritonserver and its stubs.
    other: float
    #: Share of all cores busy, everything included.
    busy: float

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot, requests: int) -> CpuUse:
        n = max(requests, 1)
        client, server, stubs = after.client - before.client, after.server - before.server, after.stubs - before.stubs
        total = after.total - before.total
        busy = after.busy - before.busy
        if total <= 0:
            return cls(client / n * 1e6, server / n * 1e6, stubs / n * 1e6, 0.0, 0.0)
        other = max(busy - client - server - stubs, 0.0) / total
        return cls(client / n * 1e6, server / n * 1e6, stubs / n * 1e6, other, busy / total)


def wait_until_quiet(threshold: float = 0.1, timeout: float = 300.0, window: float = 1.0) -> bool:
    """Wait until the cores are less than ``threshold`` busy over three windows in a row; False on timeout."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        busy0, total0 = _machine_seconds()
        time.sleep(window)
        busy1, total1 = _machine_seconds()
        if total1 <= total0:
            return True  # no /proc: nothing to wait for
        quiet = quiet + 1 if (busy1 - busy0) / (total1 - total0) < threshold else 0
        if quiet >= 3:
            return True
    return False
