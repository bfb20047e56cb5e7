"""Shared fixtures: sealed git repositories, real torch models, real S3 and GCS servers on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

# Never let a cloud SDK look for credentials on a metadata server: those live on link-local addresses,
# outside this machine. Set before any SDK is imported (google-auth reads these at import time).
os.environ.update(
    # git identity for repositories made by module- and session-scoped fixtures too (before sealed_env)
    GIT_CONFIG_NOSYSTEM="1",
    GIT_AUTHOR_NAME="Test User",
    GIT_AUTHOR_EMAIL="test@example.com",
    GIT_COMMITTER_NAME="Test User",
    GIT_COMMITTER_EMAIL="test@example.com",
    AWS_EC2_METADATA_DISABLED="true",
    NO_GCE_CHECK="True",
    GCE_METADATA_HOST="127.0.0.1:9",
    GCE_METADATA_IP="127.0.0.1:9",
)

from backends import Backend, gcs_backend, local_backend, s3_backend
from helpers import GitRepo, free_port, make_onnx, make_torch_export, make_torchscript, nexus_cli

# --- sealed environment ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def sealed_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake HOME with its own git config; no user, system or cloud settings leak into a test."""
    return seal_env(tmp_path_factory.mktemp("home"), monkeypatch)


def seal_env(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What :func:`sealed_env` sets, with ``home`` as HOME: for module-scoped fixtures too (they run before it)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Test User\n\temail = test@example.com\n[init]\n\tdefaultBranch = main\n"
        "[commit]\n\tgpgsign = false\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("NEXUS_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    for var in list(os.environ):
        if var.startswith(("NEXUS_STORAGE", "NEXUS_ENDPOINT", "NEXUS_REGION", "AWS_", "GOOGLE_", "STORAGE_EMULATOR")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    return home


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    """A git repository with one commit (`train.py`), as the current folder."""
    r = GitRepo.create(tmp_path / "project")
    r.gen({"train.py": "print('training')\n"}, commit="initial")
    monkeypatch.chdir(r.root)
    return r


# --- models ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small real model per format, plus the torch.save files that must be refused."""
    import torch

    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    files = {
        "torchscript": make_torchscript(folder / "model.pt", seed=0),
        "torchscript_b": make_torchscript(folder / "model_b.pt", seed=1),
        "torch_export": make_torch_export(folder / "model.pt2"),
        "onnx": make_onnx(folder / "model.onnx"),
    }
    module = torch.nn.Linear(4, 2)
    torch.save(module, folder / "pickled_module.pt")
    torch.save(module.state_dict(), folder / "state_dict.pt")
    files["pickled_module"] = folder / "pickled_module.pt"
    files["state_dict"] = folder / "state_dict.pt"
    return files


@pytest.fixture
def backend_module(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The backend's model.py as Triton loads it, with tests/fake_pb_utils.py as Triton's utils module."""
    import importlib.util

    import fake_pb_utils

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils)
    template = Path(__file__).parents[1] / "model_repository_templates" / "python_backend" / "model.py"
    spec = importlib.util.spec_from_file_location("nexus_backend_model", template)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- storage servers ------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str
    port: int

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A moto S3 server over real HTTP on loopback, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield S3Server(endpoint=f"http://{host}:{port}", port=port)
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A fresh empty bucket; the server's state is reset afterwards."""
    import requests

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    s3_server.client().create_bucket(Bucket="nexus-test")
    yield "nexus-test"
    requests.post(f"{s3_server.endpoint}/moto-api/reset", timeout=10)


@dataclass
class GCSServer:
    endpoint: str
    server: object

    def client(self):  # type: ignore[no-untyped-def]
        from google.cloud import storage

        return storage.Client(project="test")


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    """gcp-storage-emulator (GCS JSON API) over real HTTP on loopback, for the whole session."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server._api.daemon = True  # never keep the test process alive
    server.start()
    yield GCSServer(endpoint=f"http://127.0.0.1:{port}", server=server)
    server.stop()


@pytest.fixture
def gcs_bucket(gcs_server: GCSServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.endpoint)
    gcs_server.client().create_bucket("nexus-test")
    yield "nexus-test"
    gcs_server.server.wipe()  # type: ignore[attr-defined]


# --- CLI in a subprocess --------------------------------------------------------------------


@pytest.fixture
def run_nexus() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `nexus` console script in a subprocess (for tests that need separate processes)."""
    return nexus_cli


@pytest.fixture(params=["local", "s3", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Each storage backend in turn, configured through NEXUS_* environment variables."""
    if request.param == "local":
        b = local_backend(tmp_path / "store")
    elif request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        b = s3_backend(server.endpoint, request.getfixturevalue("s3_bucket"), server.client())
    else:
        gcs: GCSServer = request.getfixturevalue("gcs_server")
        b = gcs_backend(request.getfixturevalue("gcs_bucket"), gcs.client())
    for key, value in b.env.items():
        monkeypatch.setenv(key, value)
    return b
