"""A release served by a real Triton straight from where it lies (moto S3 through Triton's own S3 client, or a
folder), with nothing written into it; the answers are the model's own, run in-process."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import S3Server
from helpers import GitRepo, make_torch_export
from nexus.registry import Project
from nexus.release import create_release, verify_release
from nexus.serving.repository import ModelRepository
from test_serve import start_serve, wait_for_ready

pytestmark = pytest.mark.slow


def _snapshot(where: str, repo: GitRepo, s3: S3Server | None, bucket: str | None, release_id: str) -> dict[str, bytes]:
    if where == "local":
        folder = repo.root / "releases" / release_id
        return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}
    assert s3 is not None
    client = s3.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"releases/{release_id}/").get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


@pytest.mark.parametrize("where", ["s3", "local"])
def test_triton_serves_a_release_where_it_lies_and_nothing_is_written_into_it(
    where: str, repo: GitRepo, models: dict[str, Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import tritonclient.grpc as grpcclient

    s3: S3Server | None = None
    bucket: str | None = None
    if where == "s3":
        s3 = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        (repo.root / ".nexusrc").write_text(
            f'[storage]\nuri = "s3://{bucket}/store"\nendpoint_url = "{s3.endpoint}"\n'
            f'[release]\nroot = "s3://{bucket}/releases"\n'
        )
    project = Project.open()
    project.store(models["torch_export"], "m")
    release = create_release(project).release
    # a newer version stored after the release: serving the release must not publish it into the release
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(make_torch_export(tmp_path / "second.pt2", seed=5), "m")
    before = _snapshot(where, repo, s3, bucket, release.id)
    target = release.uri
    if where == "s3":
        assert s3 is not None
        triton_path = ModelRepository.resolve(project, target).triton_path
        assert triton_path == f"s3://http://127.0.0.1:{s3.port}/{bucket}/releases/{release.id}"

    process, ports = start_serve(repo, "-r", target)
    try:
        lines, _ = wait_for_ready(process)
        assert [line.split() for line in lines if line.split()[:1] == ["m"]] == [["m", "1", "READY"]]
        assert not any(line.startswith("Published") for line in lines)
        record = json.loads((repo.root / ".nexus" / "server.json").read_text())
        # a bucket is served where it lies; a folder from a fresh copy (Triton's stubs write __pycache__)
        assert record["repository"] == (target if where == "s3" else str(repo.root / ".nexus" / "release-copy"))
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        inputs = [grpcclient.InferInput("input", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
        response = client.infer("m", inputs)
        (output,) = response.get_response().outputs
        served = response.as_numpy(output.name)
        assert served is not None
        with torch.inference_mode():
            expected = torch.export.load(str(models["torch_export"])).module()(torch.from_numpy(x))
        torch.testing.assert_close(torch.tensor(served), expected)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert "is an immutable release: serving it as it is" in err
    assert _snapshot(where, repo, s3, bucket, release.id) == before  # no __pycache__, no re-publish
    verify_release(project, release)
