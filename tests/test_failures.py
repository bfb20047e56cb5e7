"""Failures: cut connections, killed processes, concurrent writers, unreachable or refusing servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import nexus.storage.gcs
from conftest import GCSServer, S3Server
from cutting_proxy import CuttingProxy
from helpers import GitRepo, free_port
from nexus.errors import EndpointUnreachableError, StorageError
from nexus.registry import Project
from nexus.registry.metadata import META_FILE

pytestmark = pytest.mark.slow

BIG = 40 << 20  # above the S3 multipart and GCS resumable thresholds


def _model_of_size(path: Path, nbytes: int) -> Path:
    """A real TorchScript model of about ``nbytes``."""
    import torch

    class Big(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(nbytes // 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight[: x.shape[-1]]

    torch.jit.script(Big()).save(str(path))
    return path


@pytest.fixture(scope="session")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_of_size(tmp_path_factory.mktemp("big") / "big.pt", BIG)


@pytest.fixture(scope="session")
def mid_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Below the multipart threshold: one PUT, but big enough to cut in the middle."""
    return _model_of_size(tmp_path_factory.mktemp("mid") / "mid.pt", 6 << 20)


@pytest.fixture
def small_model(models: dict[str, Path]) -> Path:
    return models["torchscript"]


def s3_keys(server: S3Server, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in listing.get("Contents", [])]


@pytest.mark.parametrize("which", ["single", "multipart"])
def test_s3_upload_cut_midway_leaves_no_object_and_no_metadata(
    repo: GitRepo,
    s3_server: S3Server,
    s3_bucket: str,
    big_model: Path,
    mid_model: Path,
    which: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = big_model if which == "multipart" else mid_model
    monkeypatch.setenv("NEXUS_STORAGE", f"s3://{s3_bucket}/models")
    with CuttingProxy(s3_server.port, budget=model.stat().st_size // 2) as proxy:
        monkeypatch.setenv("NEXUS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises((EndpointUnreachableError, StorageError)):
            Project.open().store(model, "m")
        assert proxy.cut.is_set()

    assert s3_keys(s3_server, s3_bucket) == []
    assert not (repo.root / META_FILE).exists()
    # nothing left behind blocks the next attempt
    monkeypatch.setenv("NEXUS_ENDPOINT_URL", s3_server.endpoint)
    assert Project.open().store(model, "m").action == "stored"
    assert s3_keys(s3_server, s3_bucket) == [f"models/m/{repo.head}.pt"]


@pytest.mark.parametrize("which", ["single", "resumable"])
def test_gcs_upload_cut_midway_leaves_no_object_and_no_metadata(
    repo: GitRepo,
    gcs_server: GCSServer,
    gcs_bucket: str,
    big_model: Path,
    mid_model: Path,
    which: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = big_model if which == "resumable" else mid_model
    monkeypatch.setattr(nexus.storage.gcs, "RETRY_TIMEOUT_S", 2.0)
    monkeypatch.setenv("NEXUS_STORAGE", f"gs://{gcs_bucket}/models")
    port = int(gcs_server.endpoint.rsplit(":", 1)[1])
    with CuttingProxy(port, budget=model.stat().st_size // 2) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
        with pytest.raises((EndpointUnreachableError, StorageError)):
            Project.open().store(model, "m")
        assert proxy.cut.is_set()

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    assert [b.name for b in gcs_server.client().list_blobs(gcs_bucket)] == []
    assert not (repo.root / META_FILE).exists()
    assert Project.open().store(model, "m").action == "stored"


def test_local_store_interrupted_midway_leaves_no_file(
    repo: GitRepo, big_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("NEXUS_STORAGE", str(store))

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Project.open().store(big_model, "m", progress=interrupt)

    assert [p for p in store.rglob("*") if p.is_file()] == []
    assert not (repo.root / META_FILE).exists()


def test_killed_store_process_records_nothing_and_can_be_rerun(
    repo: GitRepo,
    s3_server: S3Server,
    s3_bucket: str,
    big_model: Path,
    run_nexus: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    with CuttingProxy(s3_server.port, budget=1 << 40, throttle_s=0.002) as proxy:
        env = {**os.environ, "NEXUS_STORAGE": f"s3://{s3_bucket}/models", "NEXUS_ENDPOINT_URL": proxy.endpoint}
        exe = Path(sys.executable).with_name("nexus")
        process = subprocess.Popen(
            [str(exe), "store", str(big_model), "m"],
            cwd=repo.root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while proxy.sent < (8 << 20) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, "the upload finished before it could be interrupted"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    assert s3_keys(s3_server, s3_bucket) == []
    assert not (repo.root / META_FILE).exists()
    result = run_nexus(
        "store",
        str(big_model),
        "m",
        cwd=repo.root,
        env={"NEXUS_STORAGE": f"s3://{s3_bucket}/models", "NEXUS_ENDPOINT_URL": s3_server.endpoint},
    )
    assert result.returncode == 0, result.stderr
    assert s3_keys(s3_server, s3_bucket) == [f"models/m/{repo.head}.pt"]


def test_concurrent_store_processes_on_one_checkout_lose_nothing(repo: GitRepo, models: dict[str, Path]) -> None:
    jobs = [
        ("torchscript", "a"),
        ("onnx", "b"),
        ("torchscript_b", "c"),
        ("torchscript", "m"),
        ("torch_export", "m"),
        ("onnx", "m"),
    ]
    exe = Path(sys.executable).with_name("nexus")
    processes = [
        subprocess.Popen(
            [str(exe), "store", str(models[kind]), name],
            cwd=repo.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind, name in jobs
    ]
    for p in processes:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err

    data = json.loads((repo.root / META_FILE).read_text())["models"]
    assert sorted(data) == ["a", "b", "c", "m"]
    assert sorted(v["format"] for v in data["m"]["versions"]) == ["onnx", "torch_export", "torchscript"]
    assert [v["version"] for v in data["m"]["versions"]] == [1, 2, 3]
    assert sum(v["is_latest"] for v in data["m"]["versions"]) == 1
    assert [e["to_version"] for e in data["m"]["history"]] == [1, 2, 3]
    assert all(len(rec["versions"]) == 1 for name, rec in data.items() if name != "m")


def test_unreachable_endpoint_is_a_one_line_error(
    repo: GitRepo, small_model: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    port = free_port()
    result = run_nexus(
        "store",
        str(small_model),
        "m",
        cwd=repo.root,
        env={"NEXUS_STORAGE": "s3://bucket/models", "NEXUS_ENDPOINT_URL": f"http://127.0.0.1:{port}"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert f"Error: cannot reach storage endpoint http://127.0.0.1:{port}" in result.stderr
    assert not (repo.root / META_FILE).exists()


def test_missing_s3_credentials_say_where_credentials_belong(
    repo: GitRepo,
    s3_server: S3Server,
    s3_bucket: str,
    small_model: Path,
    run_nexus: Callable[..., subprocess.CompletedProcess[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_nexus(
        "store",
        str(small_model),
        "m",
        cwd=repo.root,
        env={"NEXUS_STORAGE": f"s3://{s3_bucket}/models", "NEXUS_ENDPOINT_URL": s3_server.endpoint},
    )
    assert result.returncode == 1
    assert "Error: no usable credentials for s3://nexus-test/models" in result.stderr
    assert "AWS_ACCESS_KEY_ID" in result.stderr


def test_missing_gcs_credentials_say_where_credentials_belong(
    repo: GitRepo, small_model: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_nexus("store", str(small_model), "m", cwd=repo.root, env={"NEXUS_STORAGE": "gs://bucket/models"})
    assert result.returncode == 1, result.stderr
    assert "Error: no usable credentials for gs://bucket/models" in result.stderr
    assert "GOOGLE_APPLICATION_CREDENTIALS" in result.stderr


def test_missing_bucket_is_a_one_line_error(
    repo: GitRepo, s3_server: S3Server, small_model: Path, run_nexus: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = run_nexus(
        "store",
        str(small_model),
        "m",
        cwd=repo.root,
        env={"NEXUS_STORAGE": "s3://no-such-bucket/models", "NEXUS_ENDPOINT_URL": s3_server.endpoint},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: bucket for s3://no-such-bucket does not exist; create it")
