"""`--server` as Triton users type it: `host:port` (tritonclient's and perf_analyzer's form), `http://`
URLs, and `grpc://` for gRPC, in every command that talks to a server, against a real `nexus serve`."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import GitRepo, make_torch_export
from nexus.registry import Project
from nexus.serving.endpoints import grpc_target, http_url
from test_serve import start_serve, wait_for_ready

pytestmark = pytest.mark.slow

Run = Callable[..., subprocess.CompletedProcess[str]]


def in_process(artifact: Path, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = torch.export.load(str(artifact)).module()(torch.from_numpy(x)).numpy()
        return out


def test_every_command_takes_host_port_for_a_running_server(repo: GitRepo, tmp_path: Path, run_nexus: Run) -> None:
    v1 = make_torch_export(tmp_path / "v1.pt2", seed=0)
    v2 = make_torch_export(tmp_path / "v2.pt2", seed=1)
    Project.open().store(v1, "m")
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    process, ports = start_serve(repo)
    try:
        wait_for_ready(process)
        http, grpc = f"127.0.0.1:{ports['http']}", f"127.0.0.1:{ports['grpc']}"
        (repo.root / ".nexus" / "server.json").unlink()  # nothing to discover: every command is told

        def answer(*server: str) -> np.ndarray:
            result = run_nexus(
                "predict", "m", "--input", f"input={tmp_path / 'x.npy'}", *server, "--json", cwd=repo.root
            )
            assert result.returncode == 0, result.stderr
            (output,) = json.loads(result.stdout).values()
            return np.array(output["data"], dtype=np.float32)

        np.testing.assert_allclose(answer("--server", http), in_process(v1, x), rtol=1e-5)
        np.testing.assert_allclose(answer("--server", f"http://{http}/"), in_process(v1, x), rtol=1e-5)
        np.testing.assert_allclose(answer("--protocol", "grpc", "--server", grpc), in_process(v1, x), rtol=1e-5)
        np.testing.assert_allclose(
            answer("--protocol", "grpc", "--server", f"grpc://{grpc}"), in_process(v1, x), rtol=1e-5
        )

        repo.gen({"train.py": "v2\n"}, commit="v2")
        Project.open().store(v2, "m")
        published = run_nexus("publish", "m", "--server", http, cwd=repo.root)
        assert published.returncode == 0, published.stderr
        assert f"switched http://{http} to it" in published.stdout
        np.testing.assert_allclose(answer("--server", http), in_process(v2, x), rtol=1e-5)

        status = run_nexus("status", "--server", http, "--json", cwd=repo.root)
        assert status.returncode == 0, status.stderr
        (m,) = json.loads(status.stdout)
        assert (m["latest"], m["published"], m["live"], m["drift"]) == (2, 2, [2], [])

        rolled = run_nexus("rollback", "m", "--server", f"localhost:{ports['http']}", cwd=repo.root)
        assert rolled.returncode == 0, rolled.stderr
        assert f"Switched http://localhost:{ports['http']} to m v1." in rolled.stdout
        np.testing.assert_allclose(answer("--server", http), in_process(v1, x), rtol=1e-5)

        for protocol in ("http", "grpc"):
            load = run_nexus(
                "loadtest", "m", "-u", "2", "-t", "2s", "--server", http, "--protocol", protocol,
                "--grpc-address", grpc, "--json", cwd=repo.root,
            )  # fmt: skip
            assert load.returncode == 0, load.stdout + load.stderr
            report = json.loads(load.stdout)
            assert report["requests"] > 0
            assert report["failures"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["predict", "m", "--random", "--server", "ftp://host:8000"], "'ftp://host:8000' is not a Triton address"),
        (["status", "--server", "localhost:99999"], "write a port between 1 and 65535"),
        (["loadtest", "m", "--server", "http://h:8000/v2"], "write HOST:PORT, http://HOST:PORT or https://HOST:PORT"),
        (["predict", "m", "--random", "--protocol", "grpc", "--server", "http://h:8001"], "HOST:PORT or grpc://"),
    ],
)
def test_an_address_that_is_no_triton_address_is_a_one_line_error(
    repo: GitRepo, run_nexus: Run, models: dict[str, Path], args: list[str], shown: str
) -> None:
    Project.open().store(models["torch_export"], "m")
    result = run_nexus(*args, cwd=repo.root)
    assert result.returncode == 1
    assert shown in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_addresses_are_normalised_in_one_place() -> None:
    assert http_url("localhost:8000") == "http://localhost:8000"
    assert http_url("https://triton.example:443/") == "https://triton.example:443"
    assert http_url(" 10.0.0.1:8000 ") == "http://10.0.0.1:8000"
    assert grpc_target("grpc://localhost:8001") == "localhost:8001"
    assert grpc_target("localhost:8001") == "localhost:8001"
