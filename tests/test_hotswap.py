"""Hot swap under steady load: publish a new version and roll back while clients keep sending requests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from helpers import GitRepo, free_port, make_torch_export
from nexus.cli import app
from nexus.errors import HotSwapError
from nexus.registry import Project
from nexus.serving.admin import API_KEY_HEADER, GRPC_API_KEY_HEADER, TritonAdmin
from nexus.serving.discovery import api_key, restricted_api_args, write_server_file
from nexus.serving.hotswap import load_version, swap
from nexus.serving.model_config import parse_config
from nexus.serving.predict import predict
from nexus.serving.publish import publish
from nexus.serving.repository import open_repository
from nexus.serving.serve import sync_latest
from nexus.serving.server import TritonServer
from nexus.tensors import Signature, TensorSpec

pytestmark = pytest.mark.slow

X = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)


@dataclass
class Load:
    """Clients that send the same request in a loop and record every answer."""

    url: str
    answers: list[tuple[float, int, list[float] | str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def client(self) -> None:
        body = json.dumps(
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": X.flatten().tolist()}]}
        ).encode()
        while not self.stop.is_set():
            request = urllib.request.Request(f"{self.url}/v2/models/m/infer", data=body)
            try:
                with urllib.request.urlopen(request, timeout=30) as r:
                    self.answers.append((time.monotonic(), r.status, json.loads(r.read())["outputs"][0]["data"]))
            except urllib.error.HTTPError as e:
                self.answers.append((time.monotonic(), e.code, e.read().decode()))
            except OSError as e:
                self.answers.append((time.monotonic(), 0, str(e)))


@pytest.fixture
def serving(repo: GitRepo, tmp_path: Path) -> Iterator[tuple[Project, TritonServer, Path]]:
    project = Project.open()
    project.store(make_torch_export(tmp_path / "v1.pt2", seed=0), "m")
    repository = tmp_path / "repository"
    sync_latest(project, open_repository(project, str(repository)))
    server = TritonServer(
        repository=str(repository),
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_args=restricted_api_args(api_key(project)),  # as `nexus serve` runs it
    )
    with server:
        yield project, server, repository


def expected(artifact: Path) -> list[float]:
    with torch.inference_mode():
        out: list[float] = torch.export.load(str(artifact)).module()(torch.from_numpy(X)).flatten().tolist()
        return out


def test_publish_and_rollback_under_load_fail_no_request(
    serving: tuple[Project, TritonServer, Path], repo: GitRepo, tmp_path: Path
) -> None:
    project, server, repository = serving
    v1 = expected(tmp_path / "v1.pt2")
    v2_file = make_torch_export(tmp_path / "v2.pt2", seed=1)
    v2 = expected(v2_file)
    load = Load(server.url)
    clients = [threading.Thread(target=load.client) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        time.sleep(1)
        repo.gen({"train.py": "v2\n"}, commit="v2")
        project.store(v2_file, "m")
        sync_latest(project, open_repository(project, str(repository)))  # publishes v2, keeping the options
        load_version(server.url, "m", 2, key=api_key(project))
        swapped = time.monotonic()
        time.sleep(1)
        project.rollback("m")
        publish(project, "m", repository=repository)
        load_version(server.url, "m", 1, key=api_key(project))
        rolled_back = time.monotonic()
        time.sleep(1)
    finally:
        load.stop.set()
        for c in clients:
            c.join()

    failures = [a for a in load.answers if a[1] != 200]
    assert failures == [], f"{len(failures)} of {len(load.answers)} requests failed, e.g. {failures[:3]}"
    assert len(load.answers) > 50
    by_time = [(t, data) for t, _, data in load.answers]
    assert by_time[0][1] == pytest.approx(v1, rel=1e-5)
    after_swap = [d for t, d in by_time if swapped + 0.3 < t < rolled_back - 1.2]
    assert after_swap
    assert all(d == pytest.approx(v2, rel=1e-5) for d in after_swap)
    assert by_time[-1][1] == pytest.approx(v1, rel=1e-5)


class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2


class FailsAlone(torch.nn.Module):
    """Passes publish's check (a batch of 3) but fails the smoke request (a batch of 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("cannot serve a batch of one")
        return x * 3


def test_a_version_that_fails_after_loading_is_swapped_back_by_itself(repo: GitRepo, tmp_path: Path) -> None:
    signature = Signature([TensorSpec("x", "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 4])])
    torch.jit.script(Doubler()).save(str(tmp_path / "v1.pt"))
    torch.jit.script(FailsAlone()).save(str(tmp_path / "v2.pt"))
    project = Project.open()
    project.store(tmp_path / "v1.pt", "m", signature=signature)
    repository = tmp_path / "repository"
    sync_latest(project, open_repository(project, str(repository)))
    server = TritonServer(
        repository=str(repository), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        repo.gen({"train.py": "v2\n"}, commit="v2")
        project.store(tmp_path / "v2.pt", "m", signature=signature)

        with pytest.raises(HotSwapError, match=r"m v2 failed on .*: cannot serve a batch of one\); v1 is served again"):
            swap(project, "m", 2, server.url, open_repository(project, str(repository)))

        config = parse_config((repository / "m" / "config.pbtxt").read_text())
        assert list(config.version_policy.specific.versions) == [1]
        x = np.ones((1, 4), np.float32)
        np.testing.assert_allclose(predict("m", {"x": x}, server=server.url)["y"], x * 2)


def test_cli_publish_finds_the_running_server_and_switches_it(
    serving: tuple[Project, TritonServer, Path], repo: GitRepo, tmp_path: Path
) -> None:
    project, server, repository = serving
    (repo.root / ".nexusrc").write_text(f'[publish]\nrepository = "{repository}"\n')
    write_server_file(project, server, open_repository(project, str(repository)))  # as `nexus serve` does
    repo.gen({"train.py": "v2\n"}, commit="v2")
    v2_file = make_torch_export(tmp_path / "v2.pt2", seed=1)
    project.store(v2_file, "m")

    result = CliRunner().invoke(app, ["publish", "m"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Published m v2 and switched {server.url} to it")
    answer = predict("m", {"input": X}, server=server.url)["output"]
    np.testing.assert_allclose(answer.flatten(), expected(v2_file), rtol=1e-5)

    rolled = CliRunner().invoke(app, ["rollback", "m"])
    assert rolled.exit_code == 0, rolled.output
    assert f"Switched {server.url} to m v1." in rolled.stdout
    answer = predict("m", {"input": X}, server=server.url)["output"]
    np.testing.assert_allclose(answer.flatten(), expected(tmp_path / "v1.pt2"), rtol=1e-5)


def test_the_model_repository_api_refuses_requests_without_the_key(
    serving: tuple[Project, TritonServer, Path], repo: GitRepo
) -> None:
    project, server, _ = serving
    key_file = repo.root / ".nexus" / "api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() == api_key(project)

    def load(headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"{server.url}/v2/repository/models/m/load", data=b"{}", method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert load({}) == 403
    assert load({API_KEY_HEADER: "wrong"}) == 403
    assert load({API_KEY_HEADER: api_key(project)}) == 200
    # inference stays open
    assert predict("m", {"input": X}, server=server.url)["output"].shape == (1, 3)

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException, match="This protocol is restricted"):
        client.load_model("m")
    client.load_model("m", headers={GRPC_API_KEY_HEADER: api_key(project)})


def test_status_catches_drift_between_metadata_repository_and_server(
    serving: tuple[Project, TritonServer, Path], repo: GitRepo, tmp_path: Path
) -> None:
    project, server, repository = serving
    (repo.root / ".nexusrc").write_text(f'[publish]\nrepository = "{repository}"\n')
    predict("m", {"input": X}, server=server.url)
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(make_torch_export(tmp_path / "v2.pt2", seed=1), "m")  # stored, not published

    drifted = CliRunner().invoke(app, ["status", "--server", server.url, "--json"])
    assert drifted.exit_code == 0, drifted.output
    (m,) = json.loads(drifted.stdout)
    assert (m["latest"], m["published"], m["live"]) == (2, 1, [1])
    assert m["drift"] == ["repository publishes v1, metadata says v2", "server runs v1, metadata says v2"]
    assert m["avg_batch_size"] >= 1
    assert m["avg_compute_ms"] > 0

    table = CliRunner().invoke(app, ["status", "--server", server.url])
    assert "drift m: server runs v1, metadata says v2" in table.stdout

    swap(project, "m", 2, server.url, open_repository(project, str(repository)))
    (m,) = json.loads(CliRunner().invoke(app, ["status", "--server", server.url, "--json"]).stdout)
    assert (m["latest"], m["published"], m["live"], m["drift"]) == (2, 2, [2], [])


def test_status_without_a_server_compares_metadata_and_repository(repo: GitRepo, models: dict[str, Path]) -> None:
    Project.open().store(models["onnx"], "m")
    (m,) = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert (m["published"], m["live"], m["drift"]) == (None, None, ["repository publishes nothing, metadata says v1"])


def test_status_with_an_unreachable_server_is_a_one_line_error(repo: GitRepo, models: dict[str, Path]) -> None:
    Project.open().store(models["onnx"], "m")
    port = free_port()
    result = CliRunner().invoke(app, ["status", "--server", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach Triton at http://127.0.0.1:{port} (")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_python_caller_publishes_and_rolls_back_a_running_server_through_the_library(
    serving: tuple[Project, TritonServer, Path], repo: GitRepo, tmp_path: Path
) -> None:
    """`publish(..., server=)` and `rollback(..., server=)` hot-swap as the CLI does; `host:port` is a server."""
    from nexus.serving import rollback

    project, server, repository = serving
    address = f"127.0.0.1:{server.http_port}"
    repo.gen({"train.py": "v2\n"}, commit="v2")
    v2_file = make_torch_export(tmp_path / "v2.pt2", seed=1)
    project.store(v2_file, "m")

    published = publish(project, "m", repository=repository, server=address)

    assert published.server == server.url
    assert TritonAdmin(address).ready_versions("m") == [2]
    out = next(iter(predict("m", {"input": X}, server=address).values()))
    np.testing.assert_allclose(out.flatten(), expected(v2_file), rtol=1e-5)

    result, swapped = rollback(project, "m", server=address, repository=repository)

    assert (result.from_version, result.to_version) == (2, 1)
    assert swapped is not None
    assert swapped.server == server.url
    assert project.resolve("m").version == 1
    assert TritonAdmin(address).ready_versions("m") == [1]
    out = next(iter(predict("m", {"input": X}, server=address).values()))
    np.testing.assert_allclose(out.flatten(), expected(tmp_path / "v1.pt2"), rtol=1e-5)
