"""`nexus loadtest`: Locust, headless, against a served model; then one summary with Triton's own statistics.

Locust runs in a process of its own (it patches the standard library with gevent) on the
locustfiles in `loadtest/` (a wheel carries copies: `nexus/shipped.py`). Its CSVs go to a results
folder; the summary adds what Triton measured over the same run: executed batch size, queue time
and compute time per request, from the difference of `/v2/models/MODEL/stats` before and after.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.errors import LoadTestError, TritonError
from nexus.loadtest.openloop import PriorityShare
from nexus.names import validate_model_name
from nexus.serving.admin import ModelCounters, TritonAdmin
from nexus.serving.endpoints import grpc_target, http_url
from nexus.shipped import shipped

_DURATION = re.compile(r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """`30s`, `2m`, `1h30m` or a number of seconds -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise LoadTestError(f"cannot read the duration {text!r}; write e.g. 30s, 2m or 1h30m")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    seconds = parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)
    if seconds <= 0:
        raise LoadTestError(f"the duration {text!r} is not positive; write e.g. 30s")
    return seconds


@dataclass(frozen=True)
class LoadTestSettings:
    """What `nexus loadtest` runs. ``step_users`` switches to the step-load shape."""

    model: str
    server: str = "http://127.0.0.1:8000"
    users: int = 16
    spawn_rate: float | None = None  # default: all users at once
    duration: float = 30.0
    batch_size: int = 1
    binary: bool = False
    protocol: str = "http"
    grpc_address: str | None = None
    step_users: int | None = None
    step_time: float = 10.0
    results: Path = Path("loadtest-results")
    #: requests per second: the open-loop client (:mod:`nexus.loadtest.rate`) instead of Locust's users
    rate: float | None = None
    #: every request's priority (1: Triton's highest; 0 or None: the model's default level)
    priority: int | None = None
    #: with ``rate``: shares of the requests sent at other priorities
    priority_mix: tuple[PriorityShare, ...] = ()

    def check(self) -> None:
        if self.protocol not in ("http", "grpc"):
            raise LoadTestError(f"unknown protocol {self.protocol!r}; use http or grpc")
        if self.users < 1 or self.batch_size < 1:
            raise LoadTestError("--users and --batch-size must be at least 1")
        if self.spawn_rate is not None and self.spawn_rate <= 0:
            raise LoadTestError("--spawn-rate must be positive")
        if self.step_users is not None and (self.step_users < 1 or self.step_time <= 0):
            raise LoadTestError("--step-users must be at least 1 and --step-time positive")
        if self.rate is not None and self.protocol == "grpc":
            raise LoadTestError("--rate drives the open-loop client, which speaks HTTP only; drop --protocol grpc")
        if self.rate is not None and (not self.rate > 0 or self.step_users is not None):
            raise LoadTestError("--rate takes a positive number of requests per second, and no --step-users")
        if self.priority is not None and self.priority < 0:
            raise LoadTestError("--priority is 0 (the model's default level) or more; 1 is the highest")
        if self.priority_mix and self.rate is None:
            raise LoadTestError("--priority-mix needs --rate (the open-loop client); Locust's users take --priority")
        validate_model_name(self.model)  # it becomes a URL path segment
        http_url(self.server)
        if self.grpc_address is not None:
            grpc_target(self.grpc_address)


@dataclass(frozen=True)
class Step:
    """One level of a step load: its users and what they got."""

    users: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    failures_per_s: float


@dataclass
class LoadTestReport:
    settings: LoadTestSettings
    requests: int
    failures: int
    requests_per_s: float
    average_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    #: Triton's statistics over the run, or why there are none
    triton: ModelCounters | str
    results: Path
    csv_files: list[Path]
    #: (count, method, name, reason), most frequent first
    failure_reasons: list[tuple[int, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)


def locustfiles() -> Path:
    """The folder holding `locustfile.py`, `locustfile_grpc.py` and `stepload.py`."""
    return shipped("loadtest")


def locust_command(settings: LoadTestSettings, prefix: Path) -> list[str]:
    """The headless Locust command line for ``settings``, writing CSVs under ``prefix``."""
    folder = locustfiles()
    files = [folder / ("locustfile_grpc.py" if settings.protocol == "grpc" else "locustfile.py")]
    if settings.step_users is not None:
        files.append(folder / "stepload.py")
    command = [
        sys.executable, "-m", "locust",
        "-f", ",".join(str(f) for f in files),
        "--headless", "--host", http_url(settings.server),
        "--model", settings.model,
        "--batch-size", str(settings.batch_size),
        "--csv", str(prefix), "--csv-full-history",
        "--json-file", str(prefix),  # the final totals: the CSVs are written every second, the last one lags
        "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10",
    ]  # fmt: skip
    if settings.binary:
        command.append("--binary")
    if settings.priority is not None:
        command += ["--priority", str(settings.priority)]
    if settings.protocol == "grpc" and settings.grpc_address:
        command += ["--grpc-address", grpc_target(settings.grpc_address)]
    if settings.step_users is None:
        rate = settings.spawn_rate or settings.users
        command += ["--users", str(settings.users), "--spawn-rate", str(rate), "--run-time", f"{settings.duration:g}s"]
    else:
        command += [
            "--step-users", str(settings.step_users),
            "--step-time", f"{settings.step_time:g}",
            "--max-users", str(settings.users),
        ]  # fmt: skip
    return command


def check_model(admin: TritonAdmin, settings: LoadTestSettings) -> dict[str, Any]:
    """The config of the model under test, once it is ready and takes ``settings.batch_size`` samples a request."""
    config = admin.ready_config(settings.model)
    if config is None:
        raise LoadTestError(
            f"model {settings.model!r} is not ready on {admin.url}; publish it and check `nexus status`"
        )
    max_batch = int(config.get("max_batch_size", 0))
    if settings.batch_size > max(max_batch, 1):
        raise LoadTestError(
            f"--batch-size {settings.batch_size} is above {settings.model}'s max_batch_size {max_batch}; lower it"
        )
    return config


def run_loadtest(settings: LoadTestSettings, timestamp: str) -> LoadTestReport:
    """Run Locust against a served model and collect its results and Triton's statistics.

    Args:
        timestamp: names the results folder, `<results>/<model>-<timestamp>/`.
    """
    settings.check()
    admin = TritonAdmin(settings.server)
    check_model(admin, settings)
    folder = settings.results / f"{settings.model}-{timestamp}"
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / "locust"
    log = folder / "locust.log"
    before = admin.stats(settings.model)
    timeout = _expected_seconds(settings) + 120
    with open(log, "wb") as out:
        try:
            process = subprocess.run(
                locust_command(settings, prefix), stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise LoadTestError(f"Locust did not finish in {timeout:.0f}s; see {log}") from e
    try:
        triton: ModelCounters | str = admin.stats(settings.model) - before
    except TritonError as e:  # the model went away during the run: Locust's figures still stand
        triton = f"Triton's statistics are unavailable after the run ({e})"
    totals = prefix.with_suffix(".json")
    if not totals.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise LoadTestError(f"Locust wrote no results (exit code {process.returncode}): {' | '.join(tail)}")
    return _report(settings, folder, totals, triton)


def _expected_seconds(settings: LoadTestSettings) -> float:
    if settings.step_users is None:
        return settings.duration
    return (math.ceil(settings.users / settings.step_users) + 1) * settings.step_time


def _float(row: dict[str, str], key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", "N/A") else math.nan


def percentile(histogram: dict[float, int], fraction: float) -> float:
    """The response time below which ``fraction`` of the requests fall, from Locust's histogram (ms -> count)."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    seen = 0
    for value, count in sorted(histogram.items()):
        seen += count
        if seen >= fraction * total:
            return value
    return max(histogram)


def _report(settings: LoadTestSettings, folder: Path, totals: Path, triton: ModelCounters | str) -> LoadTestReport:
    entries: list[dict[str, Any]] = json.loads(totals.read_text(encoding="utf-8"))
    requests = sum(int(e["num_requests"]) for e in entries)
    if not requests:
        raise LoadTestError(f"Locust sent no requests; see {folder / 'locust.log'}")
    histogram: dict[float, int] = {}
    for entry in entries:
        for value, count in entry["response_times"].items():
            histogram[float(value)] = histogram.get(float(value), 0) + int(count)
    start = min(float(e["start_time"]) for e in entries)
    end = max(float(e["last_request_timestamp"] or start) for e in entries)
    reasons: list[tuple[int, str]] = []
    failures_csv = folder / "locust_failures.csv"
    if failures_csv.is_file():
        with open(failures_csv, newline="") as f:
            reasons = sorted(((int(r["Occurrences"]), _reason(r["Error"])) for r in csv.DictReader(f)), reverse=True)
    return LoadTestReport(
        settings=settings,
        requests=requests,
        failures=sum(int(e["num_failures"]) for e in entries),
        requests_per_s=requests / max(end - start, 1e-9),
        average_ms=sum(float(e["total_response_time"]) for e in entries) / requests,
        p50_ms=percentile(histogram, 0.50),
        p95_ms=percentile(histogram, 0.95),
        p99_ms=percentile(histogram, 0.99),
        triton=triton,
        results=folder,
        csv_files=sorted(folder.glob("*.csv")),
        failure_reasons=reasons,
        steps=_steps(folder / "locust_stats_history.csv") if settings.step_users is not None else [],
    )


def _reason(error: str) -> str:
    """Locust's repr of a failure (`CatchResponseError('HTTP 404: ...')`) -> the message inside."""
    match = re.fullmatch(r"\w+\((['\"])(?P<text>.*)\1\)", error.strip(), re.DOTALL)
    return match["text"].replace("\\'", "'") if match else error


def _steps(history: Path) -> list[Step]:
    """Per user count: requests/s and failures/s over the step, and the latency percentiles at its end.

    Locust's history has a row a second with running totals; a step's rate is the difference of its
    totals over its time. Its percentiles cover Locust's last 10 s, so they are read at the step's end.
    """
    if not history.is_file():
        return []
    with open(history, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("Name") == "Aggregated"]
    by_users: dict[int, list[dict[str, str]]] = {}
    for row in rows:
        users = int(row.get("User Count") or 0)
        if users:
            by_users.setdefault(users, []).append(row)
    steps = []
    previous: dict[str, str] | None = None
    for users, group in sorted(by_users.items()):
        first, last = previous or group[0], group[-1]
        seconds = max(float(last["Timestamp"]) - float(first["Timestamp"]), 1.0)
        requests = float(last["Total Request Count"]) - float(first["Total Request Count"])
        failures = float(last["Total Failure Count"]) - float(first["Total Failure Count"])
        steps.append(Step(users, requests / seconds, _float(last, "50%"), _float(last, "95%"), failures / seconds))
        previous = last
    return steps
