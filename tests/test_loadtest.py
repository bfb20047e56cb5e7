"""`nexus loadtest` and loadtest/locustfile.py against a real Triton: HTTP (JSON and binary), gRPC, step load,
failures counted, and the response checks themselves."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port, serve_one_model
from nexus.errors import LoadTestError
from nexus.loadtest import LoadTestSettings, parse_duration, run_loadtest
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
NEXUS = str(Path(sys.executable).with_name("nexus"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    triton, _ = serve_one_model(tmp_path_factory.mktemp("loadtest"), ServingOptions(max_queue_delay_us=2000))
    with triton:
        yield triton


def settings(server: TritonServer, tmp_path: Path, **kwargs: object) -> LoadTestSettings:
    base: dict[str, object] = {"model": "m", "server": server.url, "users": 4, "duration": 3.0, "results": tmp_path}
    base.update(kwargs)
    return LoadTestSettings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("label", "extra"),
    [("json", {}), ("binary", {"binary": True, "batch_size": 4}), ("grpc", {"protocol": "grpc"})],
)
def test_every_request_is_answered_and_triton_counts_the_same_run(
    server: TritonServer, tmp_path: Path, label: str, extra: dict[str, object]
) -> None:
    if label == "grpc":
        extra = {**extra, "grpc_address": f"127.0.0.1:{server.grpc_port}"}
    report = run_loadtest(settings(server, tmp_path, **extra), label)

    assert report.failures == 0, report.failure_reasons
    assert report.requests > 20
    assert report.requests_per_s > 0
    assert 0 < report.p50_ms <= report.p95_ms <= report.p99_ms
    # Locust drops the requests in flight when it stops; Triton still answers them
    assert not isinstance(report.triton, str)
    assert report.requests <= report.triton.success <= report.requests + 4
    samples = report.triton.inferences
    assert samples == report.triton.success * int(extra.get("batch_size", 1))
    assert report.triton.average_batch is not None
    assert report.triton.average_batch >= 1
    with open(report.results / "locust_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert int(next(r for r in rows if r["Name"] == "Aggregated")["Request Count"]) > 0


def test_a_step_load_reports_each_step(server: TritonServer, tmp_path: Path) -> None:
    report = run_loadtest(settings(server, tmp_path, users=4, step_users=2, step_time=2.0), "steps")

    assert report.failures == 0, report.failure_reasons
    assert [s.users for s in report.steps] == [2, 4]
    assert all(s.requests_per_s > 0 for s in report.steps)


def test_cli_prints_the_summary_and_fails_when_requests_fail(server: TritonServer, tmp_path: Path) -> None:
    """The model is unloaded mid-run: Locust counts the failed requests, the command says why and exits 1."""
    admin = TritonAdmin(server.url)
    before = admin.stats("m").success

    def unload() -> None:
        """Once Locust's users are answered (not at a fixed time: Locust's start-up takes seconds on a busy machine)."""
        deadline = time.monotonic() + 60
        while admin.stats("m").success < before + 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        admin.unload("m")

    unloader = threading.Thread(target=unload)
    unloader.start()
    try:
        result = subprocess.run(
            [NEXUS, "loadtest", "m", "--server", server.url, "-u", "2", "-t", "6s", "--results", str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        unloader.join()
        load = urllib.request.Request(f"{server.url}/v2/repository/models/m/load", data=b"{}", method="POST")
        urllib.request.urlopen(load, timeout=120).close()

    assert result.returncode == 1, result.stdout + result.stderr
    assert "m: Locust" in result.stdout
    assert "Triton's statistics are unavailable after the run" in result.stdout
    assert re.search(r"\d+ x HTTP 404: .*has no available versions", result.stdout), result.stdout
    (folder,) = tmp_path.iterdir()
    assert f"Results: {folder}" in result.stdout.replace("\n", "")
    assert (folder / "locust_failures.csv").read_text().count("\n") >= 2


def test_cli_json_summary(server: TritonServer, tmp_path: Path) -> None:
    result = subprocess.run(
        [NEXUS, "loadtest", "m", "--server", server.url, "-u", "2", "-t", "2s", "--results", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failures"] == 0
    assert report["requests"] > 0
    assert report["triton"]["success"] >= report["requests"]
    assert report["settings"]["users"] == 2


def test_cli_errors_are_one_line(server: TritonServer, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NEXUS, "loadtest", *args, "--results", str(tmp_path)], capture_output=True, text=True, timeout=60
        )

    missing = run("nope", "--server", server.url, "-t", "2s")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: model 'nope' is not ready on ")
    too_big = run("m", "--server", server.url, "--batch-size", "64")
    assert too_big.stderr.strip() == "Error: --batch-size 64 is above m's max_batch_size 32; lower it"
    unreachable = run("m", "--server", f"http://127.0.0.1:{free_port()}", "-t", "2s")
    assert unreachable.returncode == 1
    assert "cannot reach Triton at" in unreachable.stderr
    assert "Traceback" not in missing.stderr + too_big.stderr + unreachable.stderr
    bad_duration = run("m", "-t", "soon")
    assert bad_duration.stderr.strip() == "Error: cannot read the duration 'soon'; write e.g. 30s, 2m or 1h30m"


def test_durations() -> None:
    assert [parse_duration(t) for t in ("30s", "2m", "1h30m", "45", "1.5s")] == [30, 120, 5400, 45, 1.5]
    for bad in ("", "0s", "soon", "5x"):
        with pytest.raises(LoadTestError):
            parse_duration(bad)


def test_the_locustfile_checks_catch_wrong_answers() -> None:
    """The response checks, run where Locust can be imported (it patches the standard library)."""
    code = textwrap.dedent(
        """
        import json
        from locustfile import build_payload, check_binary_response, check_json_response

        metadata = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}
        p = build_payload("m", metadata, {"max_batch_size": 8}, batch_size=2)
        assert p.inputs["x"].shape == (2, 3)
        good = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [0.0] * 4}]}
        assert check_json_response(p, json.dumps(good).encode()) is None
        short = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [0.0] * 3}]}
        print(check_json_response(p, json.dumps(short).encode()))
        shape = {"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.0] * 2}]}
        print(check_json_response(p, json.dumps(shape).encode()))
        print(check_json_response(p, b'{"outputs": []}'))
        header = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [2, 2],
                                          "parameters": {"binary_data_size": 16}}]}).encode()
        ok = check_binary_response(p, {"Inference-Header-Content-Length": str(len(header))}, header + bytes(16))
        assert ok is None, ok
        cut = check_binary_response(p, {"Inference-Header-Content-Length": str(len(header))}, header + bytes(12))
        print(cut.replace(str(len(header) + 12), "N").replace(str(len(header) + 16), "N+4"))
        try:
            build_payload("m", metadata, {"max_batch_size": 8}, batch_size=9)
        except Exception as e:
            print(e)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "loadtest", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "output 'y' has 3 values for shape [2, 2]",
        "output 'y' has shape [1, 2], expected [2, 2]",
        "outputs ['y'] are missing",
        "the response has N bytes, its header accounts for N+4",
        "--batch-size 9 is above m's max_batch_size 8; lower it",
    ]
