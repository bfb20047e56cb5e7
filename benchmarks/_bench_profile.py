"""``bench.py --profile``: how long `model.py` spends in the forward pass and around it, inside the stub.

The bench appends :data:`HOOK` to the `model.py` copies of its throwaway repository (never to the
template). The hook times every ``execute`` call and the forward pass inside it; a thread of the stub
writes the running totals to ``$NEXUS_BENCH_PROFILE_DIR/<model>.<pid>.json`` every 20 ms when they
changed (one file per instance). :func:`read_totals` waits for the next write and sums a model's
files; the difference of two readings taken around a measured window is what that window cost.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "NEXUS_BENCH_PROFILE_DIR"

HOOK = """

# --- appended by benchmarks/bench_batching.py --profile (benchmark repositories only) ---------------------------
import os as _bench_os
import threading as _bench_threading
import time as _bench_time

_bench_totals = {"executions": 0, "requests": 0, "execute_ns": 0, "forward_ns": 0}
_bench_initialize = TritonPythonModel.initialize
_bench_execute = TritonPythonModel.execute


def _bench_writer(path):
    written = None
    while True:
        _bench_time.sleep(0.02)
        totals = dict(_bench_totals)
        if totals != written:
            with open(path + ".tmp", "w") as f:
                json.dump(totals, f)
            _bench_os.replace(path + ".tmp", path)
            written = totals


def _bench_profiled_initialize(self, args):
    _bench_initialize(self, args)
    run = self.run

    def timed(*a):
        start = _bench_time.perf_counter_ns()
        try:
            return run(*a)
        finally:
            _bench_totals["forward_ns"] += _bench_time.perf_counter_ns() - start

    self.run = timed
    folder = _bench_os.environ["NEXUS_BENCH_PROFILE_DIR"]
    path = _bench_os.path.join(folder, f"{self.name}.{_bench_os.getpid()}.json")
    _bench_threading.Thread(target=_bench_writer, args=(path,), daemon=True).start()


def _bench_profiled_execute(self, requests):
    start = _bench_time.perf_counter_ns()
    try:
        return _bench_execute(self, requests)
    finally:
        _bench_totals["execute_ns"] += _bench_time.perf_counter_ns() - start
        _bench_totals["executions"] += 1
        _bench_totals["requests"] += len(requests)


TritonPythonModel.initialize = _bench_profiled_initialize
TritonPythonModel.execute = _bench_profiled_execute
"""


@dataclass(frozen=True)
class ExecuteTotals:
    executions: int = 0
    requests: int = 0
    execute_ns: int = 0
    forward_ns: int = 0

    def minus(self, other: ExecuteTotals) -> ExecuteTotals:
        return ExecuteTotals(
            self.executions - other.executions,
            self.requests - other.requests,
            self.execute_ns - other.execute_ns,
            self.forward_ns - other.forward_ns,
        )

    @property
    def forward_ms_per_execute(self) -> float:
        return self.forward_ns / self.executions / 1e6 if self.executions else 0.0

    @property
    def python_us_per_request(self) -> float:
        """Time in `execute` outside the forward pass, per request."""
        return (self.execute_ns - self.forward_ns) / self.requests / 1e3 if self.requests else 0.0


def read_totals(folder: Path, model: str) -> ExecuteTotals:
    """The running totals of every instance of ``model``, summed, once the stubs have written them."""
    time.sleep(0.1)  # the stubs write every 20 ms
    totals = ExecuteTotals()
    for path in folder.glob(f"{model}.*.json"):
        raw = json.loads(path.read_text(encoding="utf-8"))
        totals = ExecuteTotals(
            totals.executions + raw["executions"],
            totals.requests + raw["requests"],
            totals.execute_ns + raw["execute_ns"],
            totals.forward_ns + raw["forward_ns"],
        )
    return totals
