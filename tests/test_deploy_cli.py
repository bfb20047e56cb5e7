"""`nexus deploy k8s|kserve` as a user runs them: a release made on a real S3 server (moto), rendered into a
folder, built by the real `kubectl kustomize`, rolled to a new release by a re-render, kept by prune."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from conftest import S3Server
from deploy_objects import crds
from helpers import GitRepo, make_torch_export
from nexus.cli import app
from nexus.deploy.labels import RELEASE_LABEL
from nexus.deploy.validate import validate_objects
from nexus.registry import Project
from nexus.release import list_releases

KUBECTL = Path(sys.executable).with_name("kubectl")


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    built = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    return [o for o in yaml.safe_load_all(built.stdout) if o]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


@pytest.fixture
def project(repo: GitRepo, models: dict[str, Path], s3_server: S3Server, s3_bucket: str) -> Project:
    rc = (
        f'[storage]\nuri = "s3://{s3_bucket}/store"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'[release]\nroot = "s3://{s3_bucket}/releases"\n'
    )
    repo.gen({".nexusrc": rc}, commit="use moto")
    project = Project.open()
    project.store(models["torch_export"], "m")
    return project


def test_a_release_deploys_to_kubernetes_and_a_new_release_rolls_out_by_re_rendering(
    repo: GitRepo, project: Project, s3_bucket: str, tmp_path: Path
) -> None:
    assert run("release", "create").exit_code == 0
    (first,) = list_releases(project).complete

    out = run("deploy", "k8s", "latest", "--s3-endpoint", "http://minio.storage:9000", "--namespace", "ml")
    assert out.exit_code == 0, out.output
    assert "kubectl apply -k deploy/k8s" in out.stdout
    folder = repo.root / "deploy" / "k8s"
    built = kustomize(folder)
    validate_objects(built, crds())  # what kubectl would apply, not just what nexus wrote
    kinds = by_kind(built)
    assert set(kinds) >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodMonitor", "NetworkPolicy"}
    assert all(o["metadata"]["namespace"] == "ml" for o in built)
    pod = kinds["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"][RELEASE_LABEL] == first.id
    args = pod["spec"]["containers"][0]["args"]
    assert f"--model-repository=s3://http://minio.storage:9000/{s3_bucket}/releases/{first.id}" in args
    assert "replicas" not in kinds["Deployment"]["spec"]  # the HPA owns the count
    assert (folder / "prometheus-adapter-values.yaml").is_file()

    # a new version, a new release, a re-render: only the release changes in the pod template
    repo.git("add", "-A")
    repo.git("commit", "-qm", "deploy the first release")
    project.store(make_torch_export(tmp_path / "retrained.pt2", seed=1), "m")
    made = run("release", "create")
    assert made.exit_code == 0, made.output
    second = list_releases(project).complete[-1]
    assert second.id != first.id
    # a unique prefix: the time and part of the digest (two releases can be made within one second)
    rolled_out = run("deploy", "k8s", second.id[:20], "--s3-endpoint", "http://minio.storage:9000", "--namespace", "ml")
    assert rolled_out.exit_code == 0, rolled_out.output
    rolled = by_kind(kustomize(folder))
    assert rolled["Deployment"]["spec"]["template"]["metadata"]["labels"][RELEASE_LABEL] == second.id
    assert rolled["Deployment"]["spec"]["selector"] == kinds["Deployment"]["spec"]["selector"]
    repo.git("add", "-A")
    repo.git("commit", "-qm", "deploy the second release")

    # prune keeps the deployed release even with --keep 0, and deletes the other
    pruned = run("release", "prune", "--keep", "0")
    assert pruned.exit_code == 0, pruned.output
    assert [r.id for r in list_releases(project).complete] == [second.id]


def test_a_release_deploys_to_kserve_with_keys_only_from_a_git_ignored_file(
    repo: GitRepo, project: Project, s3_bucket: str
) -> None:
    assert run("release", "create").exit_code == 0
    (release,) = list_releases(project).complete
    out = run("deploy", "kserve", "latest", "--s3-endpoint", "http://minio.storage:9000")
    assert out.exit_code == 0, out.output
    folder = repo.root / "deploy" / "kserve"
    assert "s3-credentials.env" in (folder / ".gitignore").read_text()
    missing = subprocess.run([str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, check=False)
    assert missing.returncode != 0  # nothing applies without the keys

    (folder / "s3-credentials.env").write_text("AWS_ACCESS_KEY_ID=test-id\nAWS_SECRET_ACCESS_KEY=test-secret\n")
    built = kustomize(folder)
    validate_objects(built, crds())
    kinds = by_kind(built)
    assert kinds["InferenceService"]["spec"]["predictor"]["model"]["storageUri"] == f"{release.uri}/"
    assert set(kinds["Secret"]["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert kinds["Secret"]["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.storage:9000"
    for written in folder.iterdir():  # the keys are in the git-ignored file only
        if written.name != "s3-credentials.env":
            assert "test-secret" not in written.read_text()


def test_deploy_errors_are_one_line_and_write_nothing(repo: GitRepo, project: Project) -> None:
    unknown = run("deploy", "k8s", "20990101")
    assert unknown.exit_code == 1
    assert "no release '20990101'" in unknown.output
    assert "Traceback" not in unknown.output
    assert run("release", "create").exit_code == 0
    bad = run("deploy", "k8s", "latest", "--name", "Not_A_Name")
    assert bad.exit_code == 1
    assert len(bad.output.strip().splitlines()) == 1
    assert "is not a Kubernetes name" in bad.output
    mode = run("deploy", "kserve", "latest", "--mode", "serverless")
    assert mode.exit_code == 1
    assert "--mode must be one of Standard, Knative" in mode.output
    assert not (repo.root / "deploy").exists()
