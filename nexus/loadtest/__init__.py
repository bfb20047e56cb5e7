"""Load tests against a served model, with Triton's own statistics for the same run: Locust's closed-loop users
(:mod:`nexus.loadtest.runner`), or open-loop arrivals at a fixed rate (:mod:`nexus.loadtest.openloop`,
:mod:`nexus.loadtest.rate`)."""

from nexus.loadtest.openloop import (
    ClassResult,
    Latency,
    OpenLoopResult,
    OpenLoopSettings,
    PriorityShare,
    run_open_loop,
)
from nexus.loadtest.rate import RateReport, parse_priority_mix, run_rate_test
from nexus.loadtest.runner import LoadTestReport, LoadTestSettings, locustfiles, parse_duration, run_loadtest

__all__ = [
    "ClassResult",
    "Latency",
    "LoadTestReport",
    "LoadTestSettings",
    "OpenLoopResult",
    "OpenLoopSettings",
    "PriorityShare",
    "RateReport",
    "locustfiles",
    "parse_duration",
    "parse_priority_mix",
    "run_loadtest",
    "run_open_loop",
    "run_rate_test",
]
