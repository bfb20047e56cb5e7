"""What a fleet serves: a project on moto S3 with two releases of model ``m`` (v1 and v2, other weights)
and a broken one, and what each answers to one fixed input, from the model run in-process.

Used by the pytest fixtures (tests/fleet/conftest.py) and by the long run (tests/fleet/report.py), which
has no fixtures, so everything here is plain functions.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from helpers import GitRepo, make_torch_export
from nexus.registry import Project
from nexus.release import MANIFEST, Release, ReleaseFile, create_release, list_releases, open_root
from nexus.release.manifest import release_id
from nexus.serving.repository import CONFIG

MODEL = "m"
INPUT = "input"
BUCKET = "nexus-fleet"
#: What every request sends: one fixed batch, so each answer can be checked against the release's own.
SAMPLE = np.random.default_rng(14).standard_normal((2, 4)).astype(np.float32)
#: The Secret the pods read the bucket's keys from, and the API key's (what `kubectl create secret` would hold).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
API_KEY = "fleet-k3y"


@dataclass(frozen=True)
class World:
    """The releases a fleet rolls between, on one moto S3 endpoint."""

    endpoint: str
    project: Project
    old: Release
    new: Release
    broken: Release
    #: release id -> the output bytes its model gives for :data:`SAMPLE` (run in-process).
    expected: dict[str, np.ndarray[Any, Any]]
    output: str

    def release_of(self, values: np.ndarray[Any, Any]) -> str | None:
        """Which release's model gave ``values`` for :data:`SAMPLE` (None: neither's)."""
        for rid, want in self.expected.items():
            if values.shape == want.shape and np.allclose(values, want, rtol=1e-5, atol=1e-5):
                return rid
        return None


def build_world(root: Path, endpoint: str) -> World:
    """A git project under ``root`` storing ``m`` twice in the bucket ``BUCKET`` at ``endpoint`` (which must
    exist), a release of each version, and a broken release (see :func:`write_broken_release`)."""
    import torch

    repo = GitRepo.create(root / "project")
    repo.gen(
        {
            "train.py": "v1\n",
            ".nexusrc": f'[storage]\nuri = "s3://{BUCKET}/store"\nendpoint_url = "{endpoint}"\n'
            f'[release]\nroot = "s3://{BUCKET}/releases"\n',
        },
        commit="v1",
    )
    project = Project.open(repo.root, env={})
    artifacts = [make_torch_export(root / "m1.pt2", seed=0), make_torch_export(root / "m2.pt2", seed=7)]
    project.store(artifacts[0], MODEL)
    old = create_release(project, [(MODEL, 1)]).release
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(artifacts[1], MODEL)
    new = create_release(project, [(MODEL, 2)]).release
    broken = write_broken_release(project, old)
    expected = {}
    with torch.inference_mode():
        for release, artifact in [(old, artifacts[0]), (new, artifacts[1])]:
            expected[release.id] = torch.export.load(str(artifact)).module()(torch.from_numpy(SAMPLE)).numpy()
    return World(endpoint, project, old, new, broken, expected, output=_output_name(project, old))


def write_broken_release(project: Project, like: Release) -> Release:
    """A complete release (manifest last, every sha256 right, so `nexus release list` lists it) whose
    ``config.pbtxt`` Triton cannot parse: a model that fails to load, as a hand-edited release would be."""
    where = open_root(project)
    with tempfile.TemporaryDirectory(prefix="nexus-broken-") as tmp:
        files: list[tuple[ReleaseFile, Path]] = []
        for f in like.files:
            local = Path(tmp) / f.path
            local.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "wb") as out:
                where.storage.download(f"{like.id}/{f.path}", out)
            if f.path.endswith(f"/{CONFIG}"):
                local.write_text(local.read_text(encoding="utf-8") + "\nthis is { not a config field\n")
            data = local.read_bytes()
            files.append((ReleaseFile(f.path, hashlib.sha256(data).hexdigest(), len(data)), local))
        listed = [f for f, _ in files]
        rid = release_id(datetime.now(UTC), listed)
        for f, local in files:
            where.storage.put_file(f"{rid}/{f.path}", local)
        release = Release(
            rid, where.uri, f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}", like.commit, like.models, tuple(listed)
        )
        manifest = Path(tmp) / MANIFEST
        manifest.write_text(release.to_json(), encoding="utf-8")
        where.storage.put_file(f"{rid}/{MANIFEST}", manifest)
    assert rid in {r.id for r in list_releases(project).complete}, "the broken release must list as complete"
    return release


def _output_name(project: Project, release: Release) -> str:
    """The model's output tensor, from the release's own config.pbtxt."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    buffer = io.BytesIO()
    open_root(project).storage.download(f"{release.id}/{MODEL}/{CONFIG}", buffer)
    config = text_format.Parse(buffer.getvalue().decode(), model_config_pb2.ModelConfig())
    return str(config.output[0].name)
