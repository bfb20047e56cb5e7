"""`nexus serve` as a user runs it: a subprocess on free ports, Ctrl-C, a killed parent, a busy port."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import GitRepo, free_port
from nexus.registry import Project
from nexus.serving.model_config import ServingOptions, parse_config
from nexus.serving.publish import publish
from nexus.serving.repository import ModelRepository, open_repository
from nexus.serving.serve import sync_latest

pytestmark = pytest.mark.slow


def start_serve(repo: GitRepo, *args: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    exe = Path(sys.executable).with_name("nexus")
    process = subprocess.Popen(
        [str(exe), "serve", "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
         "--metrics-port", str(ports["metrics"]), *args],
        cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, ports


def wait_for_ready(process: subprocess.Popen[str], timeout: float = 180) -> tuple[list[str], int]:
    """Read `nexus serve`'s output until its Ready line; return the lines and Triton's pid."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(
                f"nexus serve ended early:\n{''.join(lines)}\n{process.stderr.read() if process.stderr else ''}"
            )
        lines.append(line)
        if line.startswith("Ready: tritonserver pid "):
            return lines, int(line.split("pid ")[1].split(".")[0])
    raise AssertionError(f"nexus serve was not ready in {timeout}s:\n{''.join(lines)}")


def gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_serve_publishes_latest_serves_it_and_stops_cleanly_on_ctrl_c(repo: GitRepo, models: dict[str, Path]) -> None:
    Project.open().store(models["torch_export"], "m")
    process, ports = start_serve(repo)
    try:
        lines, triton_pid = wait_for_ready(process)
        text = "".join(lines)
        assert f"Published m v1 (commit {repo.head[:8]})" in text
        assert [line.split() for line in lines if line.split()[:1] == ["m"]] == [["m", "1", "READY"]]
        assert f"HTTP    http://127.0.0.1:{ports['http']}" in text

        x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": x.flatten().tolist()}]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['http']}/v2/models/m/infer", data=json.dumps(body).encode()
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            output = json.loads(r.read())["outputs"][0]
        with torch.inference_mode():
            expected = torch.export.load(str(models["torch_export"])).module()(torch.from_numpy(x))
        torch.testing.assert_close(torch.tensor(output["data"]).reshape(output["shape"]).float(), expected)

        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert "Triton stopped." in out
        assert gone(triton_pid), "tritonserver outlived nexus serve"
    finally:
        process.kill()


def test_a_second_signal_does_not_cut_the_shutdown_short(repo: GitRepo) -> None:
    """`timeout`, docker and supervisors forward a SIGTERM of their own: Triton is still stopped cleanly."""
    process, _ = start_serve(repo, "--no-publish")
    try:
        _, triton_pid = wait_for_ready(process)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "Triton stopped." in out
        assert "Error" not in err
        assert gone(triton_pid), "tritonserver outlived nexus serve"
        assert not (repo.root / ".nexus" / "server.json").exists()
    finally:
        process.kill()


def test_triton_dies_with_a_killed_nexus_serve(repo: GitRepo, models: dict[str, Path]) -> None:
    process, _ = start_serve(repo, "--no-publish")
    try:
        _, triton_pid = wait_for_ready(process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert gone(triton_pid), "tritonserver outlived its killed parent"
    finally:
        process.kill()


def test_a_busy_port_is_a_one_line_error(repo: GitRepo) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        exe = Path(sys.executable).with_name("nexus")
        result = subprocess.run(
            [str(exe), "serve", "--http-port", str(port)], cwd=repo.root, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is in use (another Triton or nexus serve?); stop it or pass --http-port PORT"
    )


def test_sync_keeps_the_serving_options_of_an_earlier_publish(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    out = tmp_path / "repo"
    publish(project, "m", repository=out, options=ServingOptions(max_batch_size=8, instances=2))
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(models["onnx"], "other")
    project.store(make_second_export(tmp_path), "m")

    synced = sync_latest(project, open_repository(project, str(out)))

    assert sorted((r.model_name, r.version.version) for r in synced.published) == [("m", 2), ("other", 1)]
    config = parse_config((out / "m" / "config.pbtxt").read_text())
    assert list(config.version_policy.specific.versions) == [2]
    assert (config.max_batch_size, config.instance_group[0].count) == (8, 2)
    assert sync_latest(project, open_repository(project, str(out))).up_to_date == ["m", "other"]


def make_second_export(folder: Path) -> Path:
    from helpers import make_torch_export

    return make_torch_export(folder / "second.pt2", seed=1)


def test_the_same_port_twice_is_a_one_line_error(repo: GitRepo) -> None:
    port = str(free_port())
    exe = Path(sys.executable).with_name("nexus")
    result = subprocess.run(
        [str(exe), "serve", "--http-port", port, "--grpc-port", port], cwd=repo.root, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: --http-port and --grpc-port are both {port}; give each a port of its own"


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_serve_runs_triton_on_a_bucket_repository_and_hot_swaps_there(
    scheme: str, repo: GitRepo, models: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The repository lives in a bucket (moto S3 / the GCS emulator over HTTP); Triton reads it from there."""
    import tritonclient.grpc as grpcclient

    fixture = {"s3": "s3", "gs": "gcs"}[scheme]
    bucket = request.getfixturevalue(f"{fixture}_bucket")
    endpoint = request.getfixturevalue(f"{fixture}_server").endpoint
    (repo.root / ".nexusrc").write_text(
        f'[storage]\nuri = "{scheme}://{bucket}/store"\nendpoint_url = "{endpoint}"\n'
        f'[publish]\nrepository = "{scheme}://{bucket}/repository"\n'
    )
    project = Project.open()
    project.store(models["torch_export"], "m")
    process, ports = start_serve(repo)
    try:
        lines, _ = wait_for_ready(process)
        assert [line.split() for line in lines if line.split()[:1] == ["m"]] == [["m", "1", "READY"]]
        x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")

        def infer() -> np.ndarray:
            inputs = [grpcclient.InferInput("input", list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x)
            response = client.infer("m", inputs)
            (output,) = response.get_response().outputs
            result = response.as_numpy(output.name)
            assert result is not None
            return result

        with torch.inference_mode():
            expected = torch.export.load(str(models["torch_export"])).module()(torch.from_numpy(x))
        torch.testing.assert_close(torch.tensor(infer()), expected)

        # a new version, published to the bucket and swapped in through the running server
        second = make_second_export(tmp_path)
        repo.gen({"train.py": "v2\n"}, commit="v2")
        project.store(second, "m")
        published = subprocess.run(
            [str(Path(sys.executable).with_name("nexus")), "publish", "m"],
            cwd=repo.root, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        assert "Published m v2 and switched" in published.stdout
        with torch.inference_mode():
            expected = torch.export.load(str(second)).module()(torch.from_numpy(x))
        torch.testing.assert_close(torch.tensor(infer()), expected)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)


def test_a_model_that_fails_to_load_is_a_clear_error_with_tritons_reason(
    repo: GitRepo, models: dict[str, Path]
) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    result = publish(project, "m")
    artifact = Path(result.repository) / "m" / "1" / "model.pt2"
    artifact.chmod(0o644)
    artifact.write_bytes(b"not a model")  # damaged after publishing
    process, _ = start_serve(repo, "--no-publish")
    out, err = process.communicate(timeout=180)
    assert process.returncode == 1, out + err
    assert err.startswith("Error: "), err
    assert "m v1 failed to load: Internal: BadZipFile" in err
    assert "NVML" not in err, "harmless CPU-only log lines are left out"
    assert f"(Triton's log: {repo.root / '.nexus' / 'triton.log'})" in err
    assert "Traceback" not in err
    assert "Ready:" not in out


class _RecordingTriton(http.server.BaseHTTPRequestHandler):
    """Answers 200 to every POST and keeps the paths, as Triton's repository API would."""

    paths: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("repository", ["local", "s3://bucket/repository"])
def test_reload_model_makes_triton_load_an_unchanged_model_again(repository: str, tmp_path: Path) -> None:
    """Triton skips a load of a model whose version folders did not change: a local repository's are
    touched first, and a bucket's model is unloaded first, so that the load starts new backend stubs."""
    from nexus.serving.admin import TritonAdmin
    from nexus.serving.supervisor import reload_model

    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    os.utime(version, (1_000_000, 1_000_000))
    handler = type("Handler", (_RecordingTriton,), {"paths": []})
    with socketserver.TCPServer(("127.0.0.1", 0), handler) as fake:
        threading.Thread(target=fake.serve_forever, daemon=True).start()
        where = (
            ModelRepository(tmp_path, str(tmp_path))
            if repository == "local"
            else ModelRepository(repository, repository)
        )
        reload_model(TritonAdmin(f"127.0.0.1:{fake.server_address[1]}"), where, "m")  # raises unless Triton says 200
        fake.shutdown()
    if repository == "local":
        assert handler.paths == ["/v2/repository/models/m/load"]
        assert version.stat().st_mtime > time.time() - 60
    else:
        assert handler.paths == ["/v2/repository/models/m/unload", "/v2/repository/models/m/load"]
