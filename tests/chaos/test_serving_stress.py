"""Serving under stress, against `nexus serve` as users run it: Triton or a backend stub killed under load,
requests far beyond capacity, and malformed requests. The server must keep (or come back to) serving."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from helpers import GitRepo, free_port
from nexus.registry import Project
from nexus.serve import backend_stubs

pytestmark = pytest.mark.slow

X = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
GOOD = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X.ravel().tolist()}]})


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def triton_pid(self) -> int:
        record = json.loads((Path.cwd() / ".nexus" / "server.json").read_text())
        return int(record["triton_pid"])

    def read_until(self, text: str, timeout: float = 120) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(f"nexus serve never printed {text!r}:\n{''.join(self.lines)}")


def post(url: str, body: bytes, timeout: float = 30) -> int:
    request = urllib.request.Request(f"{url}/v2/models/m/infer", data=body)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0  # refused or reset: the server is down


@pytest.fixture
def served(repo: GitRepo, models: dict[str, Path]) -> Iterator[Served]:
    Project.open().store(models["torch_export"], "m")
    http = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("nexus")), "serve", "--http-port", str(http),
         "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    s = Served(f"http://127.0.0.1:{http}", process)
    try:
        s.read_until("Ready: tritonserver pid")
        yield s
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def recovers(url: str, timeout: float = 120) -> float:
    """Seconds until a good request succeeds again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if post(url, GOOD.encode(), timeout=10) == 200:
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"the server did not serve again within {timeout}s")


def test_a_killed_backend_stub_is_detected_and_the_model_reloaded(served: Served) -> None:
    assert post(served.url, GOOD.encode()) == 200
    stubs = backend_stubs(served.triton_pid())
    assert list(stubs) == ["m_0_0"]
    os.kill(stubs["m_0_0"], signal.SIGKILL)
    served.read_until("the Python-backend stub of m died; reloading m")
    served.read_until("reloaded m;")
    assert recovers(served.url) < 30
    assert backend_stubs(served.triton_pid()).keys() == {"m_0_0"}


def test_a_killed_triton_is_restarted_on_the_same_ports(served: Served) -> None:
    pid = served.triton_pid()
    os.kill(pid, signal.SIGKILL)
    served.read_until("tritonserver exited unexpectedly (exit code -9); restarting it.")
    served.read_until("Restarted: tritonserver pid")
    assert recovers(served.url) < 60
    assert served.triton_pid() != pid
    crash_logs = list((Path.cwd() / ".nexus").glob("triton.crash-*.log"))
    assert len(crash_logs) == 1


def test_a_huge_request_never_takes_the_server_down_for_good(served: Served) -> None:
    """Triton 2.51's HTTP frontend can die on a JSON body of 64 MB (fixed upstream with
    --http-max-input-size); `nexus serve` brings it back."""
    huge = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4}],
                       "padding": "x" * (64 << 20)}).encode()  # fmt: skip
    status = post(served.url, huge, timeout=60)
    assert status != 200
    assert recovers(served.url) < 60


def test_requests_keep_flowing_while_a_stub_is_killed_under_load(served: Served) -> None:
    results: list[int] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            results.append(post(served.url, GOOD.encode()))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    os.kill(backend_stubs(served.triton_pid())["m_0_0"], signal.SIGKILL)
    served.read_until("reloaded m;")
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    after = results[-20:]
    assert len(after) == 20
    assert all(code == 200 for code in after), after
    failed = sum(code != 200 for code in results)
    print(f"stub killed under load: {len(results)} requests, {failed} failed")


def test_status_shows_a_dead_stub_and_the_failed_requests(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    """Without `nexus serve` to reload it, a model with a dead stub stays READY and fails every request:
    `nexus status` says so."""
    from nexus.serve import open_repository, sync_latest, write_server_file
    from nexus.status import model_status
    from nexus.triton_server import TritonServer

    project = Project.open()
    project.store(models["torch_export"], "m")
    repository = open_repository(project, str(tmp_path / "repository"))
    sync_latest(project, repository)
    server = TritonServer(
        repository=str(tmp_path / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        write_server_file(project, server, repository)  # as `nexus serve` does
        (healthy,) = model_status(project, server.url, str(tmp_path / "repository"))
        assert (healthy.dead_stubs, healthy.failed, healthy.drift) == ([], 0, [])

        assert server.pid is not None
        os.kill(backend_stubs(server.pid)["m_0_0"], signal.SIGKILL)
        time.sleep(1)
        assert post(server.url, GOOD.encode()) == 500
        (broken,) = model_status(project, server.url, str(tmp_path / "repository"))
    assert broken.live == [1], "Triton still calls the model READY"
    assert broken.dead_stubs == ["m_0_0"]
    assert broken.failed == 1
    assert broken.drift == [
        "backend stub of m_0_0 is not running: every request fails until the model is reloaded (nexus serve reloads it)"
    ]
