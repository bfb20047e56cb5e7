"""Immutable releases: complete repositories under never-rewritten prefixes, in local folders and real moto S3."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import S3Server
from helpers import GitRepo, make_torch_export
from nexus.errors import (
    DeployRecordError,
    ReleaseImmutableError,
    ReleaseIntegrityError,
    ReleaseNotFoundError,
    ReleaseRootError,
)
from nexus.registry import Project
from nexus.release import (
    MANIFEST,
    Release,
    create_release,
    find_release,
    list_releases,
    prune_releases,
    verify_release,
)
from nexus.serving.publish import publish
from nexus.serving.repository import RELEASE_MANIFEST, ModelRepository
from nexus.storage.s3 import S3Storage


def _project(repo: GitRepo, models: dict[str, Path], *names: str) -> Project:
    project = Project.open()
    for name, kind in zip(names, ("torch_export", "onnx"), strict=False):
        project.store(models[kind], name)
    return project


def _folder(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bucket(s3: S3Server, bucket: str, prefix: str = "") -> dict[str, bytes]:
    client = s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in sorted(keys)}


def _use_s3(repo: GitRepo, s3: S3Server, bucket: str) -> str:
    (repo.root / ".nexusrc").write_text(
        f'[storage]\nuri = "s3://{bucket}/store"\nendpoint_url = "{s3.endpoint}"\n'
        f'[release]\nroot = "s3://{bucket}/releases"\n'
    )
    return f"s3://{bucket}/releases"


def test_the_manifest_file_name_is_the_one_serving_refuses_to_write_into() -> None:
    assert RELEASE_MANIFEST == MANIFEST == "nexus-release.json"


def test_a_release_holds_a_complete_repository_and_its_manifest_lists_every_file(
    repo: GitRepo, models: dict[str, Path]
) -> None:
    project = _project(repo, models, "m", "o")
    result = create_release(project)

    release = result.release
    assert result.created
    folder = repo.root / "releases" / release.id
    assert release.root == str(repo.root / "releases")
    assert release.uri == str(folder)
    assert release.commit == repo.head
    on_disk = _folder(folder)
    assert sorted(on_disk) == sorted(
        ["m/config.pbtxt", "m/1/model.py", "m/1/model.pt2", "o/config.pbtxt", "o/1/model.py", "o/1/model.onnx",
         MANIFEST]
    )  # fmt: skip
    assert {f.path: (f.sha256, f.size) for f in release.files} == {
        path: (hashlib.sha256(data).hexdigest(), len(data)) for path, data in on_disk.items() if path != MANIFEST
    }
    assert Release.from_json(on_disk[MANIFEST].decode(), "manifest") == release
    # each model exactly as `nexus publish` renders it
    for name in ("m", "o"):
        dry = publish(project, name, repository=repo.root / "elsewhere", dry_run=True)
        assert on_disk[f"{name}/config.pbtxt"].decode() == dry.config_text
    assert on_disk["m/1/model.pt2"] == models["torch_export"].read_bytes()
    m = release.model("m")
    assert m is not None
    assert (m.version, m.commit, m.instances, m.kind, m.policy, m.max_batch_size) == (
        1, repo.head, 2, "auto", "adaptive", 32
    )  # fmt: skip
    assert m.sample_bytes == (4 + 3) * 4  # float32 [4] in, [3] out, per sample
    assert list_releases(project).complete == [release]
    assert find_release(project, "latest") == find_release(project, release.id[:10]) == release


def test_the_manifest_is_the_last_object_written(
    repo: GitRepo, models: dict[str, Path], s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_s3(repo, s3_server, s3_bucket)
    project = _project(repo, models, "m", "o")
    written: list[str] = []
    put = S3Storage.put_file

    def recording(self: S3Storage, key: str, *args: Any, **kwargs: Any) -> Any:
        assert kwargs.get("overwrite") is False  # create-only, every one
        digest = put(self, key, *args, **kwargs)
        written.append(key)
        return digest

    monkeypatch.setattr(S3Storage, "put_file", recording)
    release = create_release(project).release

    assert written[-1] == f"{release.id}/{MANIFEST}"
    assert sorted(written[:-1]) == sorted(f"{release.id}/{f.path}" for f in release.files)
    assert sorted(_bucket(s3_server, s3_bucket, "releases/")) == sorted(f"releases/{k}" for k in written)


def test_a_create_cut_off_midway_is_listed_as_incomplete_with_no_manifest_and_prune_removes_it(
    repo: GitRepo, models: dict[str, Path], s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_s3(repo, s3_server, s3_bucket)
    project = _project(repo, models, "m", "o")
    put = S3Storage.put_file

    def failing(self: S3Storage, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.endswith("o/1/model.onnx"):
            raise OSError("connection lost")
        return put(self, key, *args, **kwargs)

    monkeypatch.setattr(S3Storage, "put_file", failing)
    with pytest.raises(OSError, match="connection lost"):
        create_release(project)
    monkeypatch.setattr(S3Storage, "put_file", put)

    left = _bucket(s3_server, s3_bucket, "releases/")
    assert left
    assert not any(k.endswith(MANIFEST) for k in left)
    releases = list_releases(project)
    assert releases.complete == []
    (incomplete,) = releases.incomplete
    assert incomplete.reason == "no manifest"
    assert sorted(f"releases/{k}" for k in incomplete.keys) == sorted(left)
    with pytest.raises(ReleaseNotFoundError):
        find_release(project, "latest")

    # the next create succeeds beside it, and prune removes the incomplete one only
    release = create_release(project).release
    pruned = prune_releases(project, keep=5)
    assert [i.id for i in pruned.incomplete] == [incomplete.id]
    assert [k.release.id for k in pruned.kept] == [release.id]
    assert sorted(_bucket(s3_server, s3_bucket, "releases/")) == sorted(
        f"releases/{release.id}/{p}" for p in [*(f.path for f in release.files), MANIFEST]
    )


def test_recreating_identical_content_writes_nothing(repo: GitRepo, models: dict[str, Path]) -> None:
    project = _project(repo, models, "m")
    first = create_release(project).release
    before = {p: p.stat().st_mtime_ns for p in (repo.root / "releases").rglob("*")}
    repo.gen({"train.py": "unrelated change\n"}, commit="another commit")  # HEAD moves; the content does not

    again = create_release(project)

    assert not again.created
    assert again.release == first
    assert {p: p.stat().st_mtime_ns for p in (repo.root / "releases").rglob("*")} == before


def test_a_new_store_makes_a_new_release_and_the_first_is_unchanged_byte_for_byte(
    repo: GitRepo, models: dict[str, Path], s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    _use_s3(repo, s3_server, s3_bucket)
    project = _project(repo, models, "m")
    first = create_release(project).release
    snapshot = _bucket(s3_server, s3_bucket, f"releases/{first.id}/")

    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(make_torch_export(tmp_path / "second.pt2", seed=7), "m")
    second = create_release(project).release

    assert second.id != first.id
    assert [(m.name, m.version) for m in second.models] == [("m", 2)]
    assert _bucket(s3_server, s3_bucket, f"releases/{first.id}/") == snapshot
    assert [r.id for r in list_releases(project).complete] == [first.id, second.id]
    assert find_release(project, "latest") == second
    # an older version on request: MODEL:VERSION
    pinned = create_release(project, [("m", 1)]).release
    assert pinned.id == first.id  # the same content as the first release


def test_publish_into_a_release_is_refused_and_nothing_changes(
    repo: GitRepo, models: dict[str, Path], s3_server: S3Server, s3_bucket: str
) -> None:
    project = _project(repo, models, "m")
    local = create_release(project).release
    before = _folder(Path(local.uri))
    for target in (local.uri, f"{local.uri}/m", "releases/" + local.id):
        with pytest.raises(ReleaseImmutableError, match="never rewritten"):
            publish(project, "m", repository=target)
    assert _folder(Path(local.uri)) == before

    root = _use_s3(repo, s3_server, s3_bucket)
    project = Project.open()
    project.store(models["torch_export"], "m")
    remote = create_release(project).release
    snapshot = _bucket(s3_server, s3_bucket)
    for target in (remote.uri, f"{root}/{remote.id}/m"):
        with pytest.raises(ReleaseImmutableError):
            publish(project, "m", repository=target)
        assert ModelRepository.resolve(project, target).release == remote.uri
    assert _bucket(s3_server, s3_bucket) == snapshot
    # beside the release, a plain repository is still published to
    publish(project, "m", repository=f"{root}-not-a-release")


def test_a_root_inside_a_release_is_refused(repo: GitRepo, models: dict[str, Path]) -> None:
    project = _project(repo, models, "m")
    release = create_release(project).release
    before = _folder(repo.root / "releases")
    for root in (release.uri, f"{release.uri}/m"):
        with pytest.raises(ReleaseRootError, match="lies inside the release"):
            create_release(project, root=root)
    assert _folder(repo.root / "releases") == before


def test_the_releases_root_comes_from_nexusrc_or_the_environment(
    repo: GitRepo, models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (repo.root / ".nexusrc").write_text('[release]\nroot = "shipped/releases"\n')
    project = _project(repo, models, "m")
    release = create_release(project).release
    assert release.root == str(repo.root / "shipped" / "releases")
    assert (repo.root / "shipped" / "releases" / release.id / MANIFEST).is_file()
    monkeypatch.setenv("NEXUS_RELEASE_ROOT", str(tmp_path / "env-root"))
    assert create_release(Project.open()).release.root == str(tmp_path / "env-root")


def _releases(repo: GitRepo, project: Project, tmp_path: Path, count: int) -> list[Release]:
    made = [create_release(project).release]
    for i in range(1, count):
        repo.gen({"train.py": f"v{i + 1}\n"}, commit=f"v{i + 1}")
        project.store(make_torch_export(tmp_path / f"v{i}.pt2", seed=10 + i), "m")
        made.append(create_release(project).release)
    return made


def test_prune_keeps_the_newest_n_and_every_deployed_release(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = _project(repo, models, "m")
    r1, r2, r3, r4 = _releases(repo, project, tmp_path, 4)
    record = {"format": 1, "target": "k8s", "root": r1.root, "uri": r1.uri, "files": [], "nexus": "0"}
    repo.gen({"deploy/prod/nexus-deploy.json": json.dumps({**record, "release": r1.id})}, commit="deploy r1")
    repo.gen({"deploy/canary/nexus-deploy.json": json.dumps({**record, "release": r2.id})})  # untracked
    (repo.root / "releases" / "notes.txt").write_text("not a release\n")
    before = _folder(repo.root / "releases")

    dry = prune_releases(project, keep=1, dry_run=True)
    assert [r.id for r in dry.deleted] == [r3.id]
    assert _folder(repo.root / "releases") == before

    result = prune_releases(project, keep=1)
    assert {k.release.id: k.reason for k in result.kept} == {
        r1.id: "deployed by deploy/prod/nexus-deploy.json",
        r2.id: "deployed by deploy/canary/nexus-deploy.json",
        r4.id: "newest 1",
    }
    assert [r.id for r in result.deleted] == [r3.id]
    assert result.objects == len(r3.files) + 1
    assert not (repo.root / "releases" / r3.id).exists()
    assert [r.id for r in list_releases(project).complete] == [r1.id, r2.id, r4.id]
    assert (repo.root / "releases" / "notes.txt").is_file()  # not a release: never touched
    for kept in (r1, r2, r4):
        verify_release(project, kept)


def test_prune_deletes_a_release_manifest_first(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nexus.storage.local import LocalStorage

    project = _project(repo, models, "m")
    old, _ = _releases(repo, project, tmp_path, 2)
    deleted: list[str] = []
    delete = LocalStorage.delete
    monkeypatch.setattr(LocalStorage, "delete", lambda self, key: (deleted.append(key), delete(self, key))[1])
    prune_releases(project, keep=1)
    assert deleted[0] == f"{old.id}/{MANIFEST}"
    assert sorted(deleted[1:]) == sorted(f"{old.id}/{f.path}" for f in old.files)


def test_prune_refuses_while_a_deploy_record_cannot_be_read(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = _project(repo, models, "m")
    _releases(repo, project, tmp_path, 2)
    repo.gen({"k8s/nexus-deploy.json": "{not json"})
    before = _folder(repo.root / "releases")
    with pytest.raises(DeployRecordError, match=r"k8s/nexus-deploy\.json"):
        prune_releases(project, keep=0)
    assert _folder(repo.root / "releases") == before


@pytest.mark.parametrize("where", ["local", "s3"])
def test_verify_catches_a_tampered_file(
    where: str, repo: GitRepo, models: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    if where == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        _use_s3(repo, s3, bucket)
    project = _project(repo, models, "m")
    release = create_release(project).release
    assert verify_release(project, release).files == len(release.files) == 3

    if where == "s3":
        s3.client().put_object(Bucket=bucket, Key=f"releases/{release.id}/m/config.pbtxt", Body=b"tampered")
    else:
        path = Path(release.uri) / "m" / "config.pbtxt"
        path.chmod(0o644)
        path.write_bytes(path.read_bytes().replace(b"32", b"64"))
    with pytest.raises(ReleaseIntegrityError, match=r"m/config\.pbtxt has"):
        verify_release(project, release)


def test_verify_catches_a_file_added_to_a_release(repo: GitRepo, models: dict[str, Path]) -> None:
    project = _project(repo, models, "m")
    release = create_release(project).release
    (Path(release.uri) / "m" / "2").mkdir()
    (Path(release.uri) / "m" / "2" / "model.pt2").write_bytes(b"smuggled")
    with pytest.raises(ReleaseIntegrityError, match=r"m/2/model\.pt2 is not in the manifest"):
        verify_release(project, find_release(project, release.id))
