"""docker-compose.yml and triton/: validated offline (no Docker engine is needed or used)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_file_matches_the_compose_spec() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert exe, "check-jsonschema is a test dependency"
    result = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(ROOT / "docker-compose.yml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_triton_service_runs_the_gpu_image_with_the_published_repository(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    assert triton["build"]["dockerfile"] == "triton/Dockerfile"
    assert (ROOT / "triton" / "Dockerfile").is_file()
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert "./.nexus/model_repository:/models:ro" in triton["volumes"]
    assert [p.split(":", 1)[1] for p in triton["ports"]] == ["8000:8000", "8001:8001", "8002:8002"]
    assert triton["shm_size"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_minio_creates_its_bucket_and_credentials_come_only_from_the_environment(compose: dict[str, Any]) -> None:
    minio, init = compose["services"]["minio"], compose["services"]["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in " ".join(init["entrypoint"])
    for service in (minio, init):
        for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
            assert service["environment"][key].startswith(f"${{{key}:?"), "no default secrets in the compose file"
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line[0] != "#"
    )
    assert {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(example)


def test_dockerfile_pins_what_the_python_backend_needs() -> None:
    text = (ROOT / "triton" / "Dockerfile").read_text()
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3" in text
    assert "torch==${TORCH_VERSION}" in text
    assert '"numpy<2"' in text
    assert "--model-control-mode=explicit" in text
