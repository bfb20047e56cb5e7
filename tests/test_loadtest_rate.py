"""`nexus loadtest --rate`: the open-loop client against a real Triton through the CLI, its report and
Triton's split of the same run; `--priority` for Locust's users; the one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import serve_one_model
from nexus.errors import LoadTestError
from nexus.loadtest import PriorityShare, parse_priority_mix
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer

pytestmark = pytest.mark.slow

NEXUS = str(Path(sys.executable).with_name("nexus"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    triton, _ = serve_one_model(tmp_path_factory.mktemp("rate"), ServingOptions(max_queue_delay_us=2000))
    with triton:
        yield triton


def nexus(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NEXUS, "loadtest", *args], capture_output=True, text=True, timeout=timeout)


def row(stdout: str, title: str) -> list[str]:
    """The cells of the first data row of the table titled ``title``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    return lines[start + 2].split()


def test_an_open_loop_run_prints_offered_and_achieved_rate_and_tritons_split(server: TritonServer) -> None:
    result = nexus("m", "--server", server.url, "--rate", "50", "--duration", "3s")

    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[result.stdout.splitlines().index("m: open loop") + 1].split()
    assert header[:6] == ["offered", "req/s", "scheduled", "req/s", "achieved", "req/s"]
    offered, scheduled, achieved, requests, late, _, errors, p50, p90, p99, _ = row(result.stdout, "m: open loop")
    assert float(offered) == 50.0
    assert float(scheduled) == pytest.approx(int(requests) / 3, abs=0.1)
    assert float(achieved) == pytest.approx(float(scheduled), rel=0.2)
    assert 90 <= int(requests) <= 210  # Poisson around 150
    assert errors == "0"
    assert int(late) <= int(requests) * 0.1
    assert 0 < float(p50) <= float(p90) <= float(p99)
    triton_requests, avg_batch, *_ = row(result.stdout, "Triton, same run")
    assert int(triton_requests) == int(requests)
    assert float(avg_batch) >= 1
    assert "By priority" not in result.stdout


def test_the_json_report_has_the_client_and_triton_sides(server: TritonServer) -> None:
    result = nexus("m", "--server", server.url, "--rate", "40", "-t", "2s", "--batch-size", "4", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    r = report["result"]
    assert r["offered_rate"] == 40
    assert r["errors"] == 0
    assert r["completed"] == r["scheduled"] > 0
    assert report["triton"]["success"] == r["completed"]
    assert report["triton"]["inferences"] == 4 * r["completed"]
    assert report["settings"]["rate"] == 40
    assert set(r["latency"]) == {"p50", "p90", "p99", "max", "others"}


def test_a_priority_mix_reports_each_class(server: TritonServer) -> None:
    result = nexus("m", "--server", server.url, "--rate", "60", "-t", "2s", "--priority-mix", "25%:1")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("By priority")
    classes = {cells[0]: cells for cells in (line.split() for line in lines[start + 2 : start + 4])}
    assert set(classes) == {"default", "1"}
    assert all(cells[2] == "0" for cells in classes.values())  # no errors
    total = int(row(result.stdout, "m: open loop")[3])
    assert int(classes["default"][1]) + int(classes["1"][1]) == total
    assert int(classes["1"][1]) < int(classes["default"][1])


def test_errors_are_reported_and_the_command_fails(server: TritonServer) -> None:
    """The model is unloaded mid-run: the open loop counts the failed requests, names the first, exits 1."""
    admin = TritonAdmin(server.url)
    timer = threading.Timer(1.5, admin.unload, ("m",))
    timer.start()
    try:
        result = nexus("m", "--server", server.url, "--rate", "40", "-t", "3s")
    finally:
        timer.join()
        admin.load("m")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = int(row(result.stdout, "m: open loop")[6])
    assert errors > 0
    assert re.search(rf"{errors} errors, the first: HTTP 4\d\d: .*m", result.stdout), result.stdout
    assert "Triton's statistics are unavailable after the run" in result.stdout


def test_locust_users_send_a_priority_triton_accepts(server: TritonServer, tmp_path: Path) -> None:
    result = nexus("m", "--server", server.url, "-u", "2", "-t", "2s", "--priority", "1", "--results", str(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "m: Locust" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0"], "Error: --rate takes a positive number of requests per second, and no --step-users"),
        (["--rate", "10", "--protocol", "grpc"], "Error: --rate drives the open-loop client, which speaks HTTP only"),
        (["--priority-mix", "5%:1"], "Error: --priority-mix needs --rate (the open-loop client)"),
        (["--rate", "10", "--priority-mix", "5:1"], "Error: cannot read the priority mix '5:1'; write SHARE%:PRIORITY"),
        (["--rate", "10", "--priority-mix", "60%:1,40%:2"], "Error: the shares of '60%:1,40%:2' must each be above"),
        (["--rate", "10", "--priority", "-1"], "Error: --priority is 0 (the model's default level) or more"),
    ],
)
def test_bad_rate_and_priority_options_are_one_line_errors(server: TritonServer, args: list[str], message: str) -> None:
    result = nexus("m", "--server", server.url, "-t", "2s", *args, timeout=60)

    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_priority_mixes_parse() -> None:
    assert parse_priority_mix("5%:1") == (PriorityShare(0.05, 1),)
    assert parse_priority_mix(" 2.5%:1, 10%:3") == (PriorityShare(0.025, 1), PriorityShare(0.1, 3))
    for bad in ("", "5%", "5%:-1", "0%:1", "100%:1", "x%:1"):
        with pytest.raises(LoadTestError):
            parse_priority_mix(bad)
