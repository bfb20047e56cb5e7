"""A number a branch merge renumbered is never served stale: status finds it, publish and serve rewrite it.

Real git repositories with the merge driver `nexus init` installs: branch b stores v2 and publishes it;
branch a stores its own v2 later; merging b into a keeps a's v2 and makes b's v3. The repository (and a
server) that got b's v2 then serve the right number for the wrong artifact.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import GitRepo, free_port, make_torch_export
from nexus.cli import app
from nexus.registry import Project
from nexus.serving.admin import TritonAdmin
from nexus.serving.discovery import api_key, restricted_api_args
from nexus.serving.predict import predict
from nexus.serving.publish import publish
from nexus.serving.repository import open_repository
from nexus.serving.serve import sync_latest
from nexus.serving.server import TritonServer
from nexus.serving.status import model_status
from test_hotswap import Load, X, expected


@dataclass
class Branches:
    repo: GitRepo
    #: v1 (main), a (branch a's v2), b (branch b's v2): real torch.export models
    files: dict[str, Path]
    repository: Path
    #: the commit each branch's version was stored at
    commits: dict[str, str]


@pytest.fixture
def branches(repo: GitRepo, tmp_path: Path) -> Branches:
    """`nexus init` (with the merge driver) committed on main, and m v1 stored there."""
    init = CliRunner().invoke(app, ["init"])
    assert init.exit_code == 0, init.output
    repo.git("add", ".nexusrc", ".gitattributes")
    repo.git("commit", "-q", "-m", "nexus init")
    files = {name: make_torch_export(tmp_path / f"{name}.pt2", seed=seed) for seed, name in enumerate(["v1", "a", "b"])}
    Project.open().store(files["v1"], "m", commit=True)
    return Branches(repo, files, tmp_path / "repository", {})


def store_on(b: Branches, branch: str) -> None:
    """On a new branch from main: a code commit, then branch's model stored as m's next version, committed."""
    b.repo.git("checkout", "-q", "-b", branch, "main")
    b.repo.gen({f"{branch}.py": f"print({branch!r})\n"}, commit=f"work on {branch}")
    b.commits[branch] = b.repo.head
    Project.open().store(b.files[branch], "m", commit=True)


def merge(b: Branches, into: str, other: str) -> None:
    b.repo.git("checkout", "-q", into)
    result = subprocess.run(["git", "merge", "--no-edit", other], cwd=b.repo.root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def publish_b_then_merge_into_a(b: Branches) -> Project:
    """b's v2 published; a's v2 stored later; b merged into a: a's v2 stays v2, b's becomes v3."""
    store_on(b, "b")
    publish(Project.open(), "m", repository=b.repository)
    store_on(b, "a")
    merge(b, "a", "b")
    project = Project.open()
    assert project.resolve("m").version == 2
    assert project.resolve("m", 2).commit_hash == b.commits["a"]
    assert project.resolve("m", 3).commit_hash == b.commits["b"]
    return project


def stale_line(b: Branches, where: str) -> str:
    subject = "repository's v2 is" if where == "repository" else "server runs v2 as"
    fix = "republish with" if where == "repository" else "switch it with"
    return (
        f"{subject} commit {b.commits['b'][:8]}'s artifact, but .nexus_meta.json's v2 is commit "
        f"{b.commits['a'][:8]}'s (renumbered to v3 by a branch merge): {fix} `nexus publish m`"
    )


def status_json(b: Branches, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["status", "--repository", str(b.repository), "--json", *extra])
    assert result.exit_code == 0, result.output
    (m,) = json.loads(result.stdout)
    return m  # type: ignore[no-any-return]


def test_a_published_number_a_merge_renumbered_is_drift_until_publish_replaces_it(
    branches: Branches, tmp_path: Path
) -> None:
    b = branches
    project = publish_b_then_merge_into_a(b)

    (s,) = model_status(project, repository=b.repository)
    assert (s.latest, s.published) == (2, 2)
    assert s.drift == [stale_line(b, "repository")]
    m = status_json(b)
    assert m["drift"] == [stale_line(b, "repository")]
    table = CliRunner().invoke(app, ["status", "--repository", str(b.repository)])
    assert f"drift m: {stale_line(b, 'repository')}" in " ".join(table.stdout.split())

    published = CliRunner().invoke(app, ["publish", "m", "--repository", str(b.repository)])
    assert published.exit_code == 0, published.output
    assert (
        f"Replaced the repository's stale v2 (commit {b.commits['b'][:8]}'s artifact, renumbered to v3 by a branch "
        "merge)" in " ".join(published.stdout.split())
    )
    loaded = CliRunner().invoke(app, ["load", "m", "--version", "2", "-o", str(tmp_path / "loaded"), "--force"])
    assert loaded.exit_code == 0, loaded.output
    served = (b.repository / "m" / "2" / "model.pt2").read_bytes()
    assert served == (tmp_path / "loaded").read_bytes() == b.files["a"].read_bytes()
    assert status_json(b)["drift"] == []


def test_serve_sync_rewrites_a_stale_number_and_then_leaves_it(branches: Branches) -> None:
    b = branches
    project = publish_b_then_merge_into_a(b)
    repository = open_repository(project, str(b.repository))

    synced = sync_latest(project, repository)

    assert [(r.model_name, r.version.version) for r in synced.published] == [("m", 2)]
    replaced = synced.published[0].replaced
    assert replaced is not None
    assert (replaced.served.commit, replaced.now, replaced.renumbered) == (b.commits["b"], 3, True)
    assert (b.repository / "m" / "2" / "model.pt2").read_bytes() == b.files["a"].read_bytes()
    assert sync_latest(project, repository).up_to_date == ["m"]
    assert model_status(project, repository=b.repository)[0].drift == []


@pytest.mark.parametrize("case", ["b merged alone: nothing renumbered", "a's own v2 published: b's v2 renumbered"])
def test_no_drift_when_the_published_number_was_not_renumbered(branches: Branches, case: str) -> None:
    b = branches
    store_on(b, "b")
    if case.startswith("b merged alone"):
        publish(Project.open(), "m", repository=b.repository)
        merge(b, "main", "b")
        expected_bytes = b.files["b"]
    else:
        store_on(b, "a")
        publish(Project.open(), "m", repository=b.repository)
        merge(b, "a", "b")
        expected_bytes = b.files["a"]
    project = Project.open()
    assert (project.resolve("m").version, len(project.read_metadata().models["m"].versions)) == (
        (2, 2) if case.startswith("b merged alone") else (2, 3)
    )

    (s,) = model_status(project, repository=b.repository)
    assert (s.published, s.drift) == (2, [])
    assert status_json(b)["drift"] == []
    assert sync_latest(project, open_repository(project, str(b.repository))).up_to_date == ["m"]
    assert (b.repository / "m" / "2" / "model.pt2").read_bytes() == expected_bytes.read_bytes()


@pytest.mark.slow
def test_a_server_on_a_renumbered_version_is_drift_and_is_hot_swapped_to_the_right_artifact_under_load(
    branches: Branches,
) -> None:
    b = branches
    store_on(b, "b")
    publish(Project.open(), "m", repository=b.repository)
    server = TritonServer(
        repository=str(b.repository),
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        extra_args=restricted_api_args(api_key(Project.open())),  # as `nexus serve` runs it
    )
    with server:
        store_on(b, "a")
        merge(b, "a", "b")
        project = Project.open()
        assert status_json(b, "--server", server.url)["drift"] == [stale_line(b, "repository"), stale_line(b, "server")]
        publish(project, "m", repository=b.repository)  # the repository is right now, the server is not
        m = status_json(b, "--server", server.url)
        assert (m["published"], m["live"], m["drift"]) == (2, [2], [stale_line(b, "server")])

        load = Load(server.url)
        clients = [threading.Thread(target=load.client) for _ in range(4)]
        for c in clients:
            c.start()
        try:
            time.sleep(1)
            swapping = time.monotonic()
            result = publish(project, "m", repository=b.repository, server=server.url)
            swapped = time.monotonic()
            time.sleep(1)
        finally:
            load.stop.set()
            for c in clients:
                c.join()

        assert result.server == server.url
        failures = [a for a in load.answers if a[1] != 200]
        assert failures == [], f"{len(failures)} of {len(load.answers)} requests failed, e.g. {failures[:3]}"
        before = [d for t, _, d in load.answers if t < swapping]
        after = [d for t, _, d in load.answers if t > swapped + 0.1]
        assert before
        assert after
        assert all(d == pytest.approx(expected(b.files["b"]), rel=1e-5) for d in before)
        assert all(d == pytest.approx(expected(b.files["a"]), rel=1e-5) for d in after)
        out = predict("m", {"input": X}, server=server.url)["output"]
        np.testing.assert_allclose(out.flatten(), expected(b.files["a"]), rtol=1e-5)
        assert TritonAdmin(server.url).ready_versions("m") == [2]
        m = status_json(b, "--server", server.url)
        assert (m["published"], m["live"], m["drift"]) == (2, [2], [])
