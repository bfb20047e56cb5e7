"""Nothing let in: names that try path traversal, hand-edited metadata that points elsewhere, credentials that
must never be written down, and the defaults that keep servers private."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers import GitRepo, free_port
from nexus.cli import app
from nexus.registry import Project
from nexus.registry.metadata import META_FILE

ROOT = Path(__file__).parents[1]
TRAVERSALS = ["../evil", "..", "a/../../b", "/etc/passwd", "a\\..\\b", "x/y", ".hidden", "a..b", "dot."]

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize(
    "command",
    [
        ["store", "{model}", "{name}"],
        ["load", "{name}"],
        ["publish", "{name}"],
        ["rollback", "{name}"],
        ["history", "{name}"],
        ["predict", "{name}", "--random", "--server", "http://127.0.0.1:9"],
        ["loadtest", "{name}", "--server", "http://127.0.0.1:9"],
    ],
)
def test_a_model_name_that_tries_path_traversal_is_refused_everywhere(
    repo: GitRepo, models: dict[str, Path], command: list[str], name: str
) -> None:
    Project.open().store(models["torch_export"], "m")
    before = {p: p.read_bytes() for p in repo.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    args = [a.format(model=models["torch_export"], name=name) for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("Error: "), result.stderr
    after = {p: p.read_bytes() for p in repo.root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before, "a refused command wrote something"
    assert not (repo.root.parent / "evil").exists()


def _meta(repo: GitRepo) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((repo.root / META_FILE).read_text())
    return data


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m, v: m["models"].update({"../evil": m["models"].pop("m")}), "model name '../evil' is not valid"),
        (lambda m, v: v.update(commit_hash="../../outside"), "is not a full git commit hash"),
        (lambda m, v: v.update(storage_uri="file:///etc/passwd"), "storage_uri does not end with /m/"),
        (lambda m, v: v.update(format="pickle"), "unknown format 'pickle'"),
        (lambda m, v: v.update(version="../1"), "a version number is not a positive integer"),
    ],
)
def test_hand_edited_metadata_that_points_elsewhere_is_refused(
    repo: GitRepo, models: dict[str, Path], run_nexus: RunNexus, tmp_path: Path, edit: Any, reason: str
) -> None:
    """`.nexus_meta.json` comes through git (a teammate's pull request): its names and keys are checked."""
    Project.open().store(models["torch_export"], "m")
    meta = _meta(repo)
    edit(meta, meta["models"]["m"]["versions"][0])
    (repo.root / META_FILE).write_text(json.dumps(meta))
    for args in (["list"], ["load", "m", "-o", str(tmp_path / "out.pt2")], ["publish", "m"]):
        result = run_nexus(*args, cwd=repo.root)
        assert result.returncode == 1, result.stdout
        assert reason.replace("is not valid", "is not a valid model name") in result.stderr or reason in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.pt2").exists()
    assert not (repo.root / ".nexus" / "model_repository").exists()


SECRET_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.slow
def test_no_credential_is_written_anywhere_after_a_full_run(
    repo: GitRepo, models: dict[str, Path], run_nexus: RunNexus, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Store, load, publish to a bucket and serve from it with credentials in the environment, then scan
    every file NexusML wrote (the repository, .nexus/, the cache, Triton's log) for them."""
    env = {"AWS_ACCESS_KEY_ID": SECRET_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "NEXUS_CACHE_DIR": str(tmp_path)}
    (repo.root / ".nexusrc").write_text(
        f'[storage]\nuri = "s3://{s3_bucket}/store"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'[publish]\nrepository = "s3://{s3_bucket}/repository"\n'
    )
    for args in (
        ["store", str(models["torch_export"]), "m"],
        ["load", "m", "-o", str(tmp_path / "loaded.pt2")],
        ["publish", "m"],
        ["publish", "m", "-r", str(tmp_path / "local_repository")],
        ["list", "--json"],
        ["status", "--json"],
    ):
        result = run_nexus(*args, cwd=repo.root, env=env)
        assert result.returncode == 0, result.stderr
        assert SECRET_KEY not in result.stdout + result.stderr
        assert SECRET_ID not in result.stdout + result.stderr
    # Triton itself reads the bucket with the same credentials: its log must not show them either
    serve = subprocess.Popen(
        [str(Path(sys.executable).with_name("nexus")), "serve", "--http-port", str(free_port()),
         "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
        cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **env},
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        output = [serve.stdout.readline()]
        while output[-1] and not output[-1].startswith("Ready: "):
            output.append(serve.stdout.readline())
        assert output[-1].startswith("Ready: "), "".join(output)
    finally:
        serve.send_signal(signal.SIGINT)
        rest, _ = serve.communicate(timeout=60)
    assert SECRET_KEY not in "".join(output) + rest
    assert (repo.root / ".nexus" / "triton.log").is_file()
    client = s3_server.client()
    objects = client.list_objects_v2(Bucket=s3_bucket)["Contents"]
    written = [p for p in (*repo.root.rglob("*"), *tmp_path.rglob("*")) if p.is_file() and ".git" not in p.parts]
    assert any(p.name == "config.pbtxt" for p in written)
    for path in written:
        data = path.read_bytes()
        assert SECRET_KEY.encode() not in data, path
        assert SECRET_ID.encode() not in data, path
    for obj in objects:
        body = client.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read()
        assert SECRET_KEY.encode() not in body, obj["Key"]


def test_the_compose_file_runs_nothing_privileged_and_keeps_consoles_on_loopback() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        assert not service.get("privileged"), name
        assert service.get("network_mode") != "host", name
        assert "cap_add" not in service, name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
