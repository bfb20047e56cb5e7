"""Load tests: Locust, headless, against a served model, with Triton's own statistics for the same run."""

from nexus.loadtest.runner import LoadTestReport, LoadTestSettings, locustfiles, parse_duration, run_loadtest

__all__ = ["LoadTestReport", "LoadTestSettings", "locustfiles", "parse_duration", "run_loadtest"]
