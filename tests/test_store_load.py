"""`Project.store` / `Project.load` against every backend, with real git repositories and models."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from backends import Backend, full_key
from helpers import GitRepo
from nexus.errors import (
    ArtifactNotFoundError,
    DirtyTreeError,
    IntegrityError,
    InvalidModelNameError,
    NoCommitsError,
    NotAGitRepoError,
    ObjectConflictError,
    OutputExistsError,
    PickledModelError,
    StorageError,
    VersionNotFoundError,
)
from nexus.hashing import CHUNK
from nexus.registry import Project
from nexus.registry.cache import ObjectCache
from nexus.registry.metadata import META_FILE


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def meta(repo: GitRepo) -> dict:  # type: ignore[type-arg]
    return json.loads((repo.root / META_FILE).read_text())


def test_store_uploads_to_model_commit_key_and_records_the_version(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    result = Project.open().store(models["torchscript"], "prod_model")

    v = result.version
    assert result.action == "stored"
    key = f"prod_model/{repo.head}.pt"
    assert backend.read(full_key(backend, key)) == models["torchscript"].read_bytes()
    record = meta(repo)["models"]["prod_model"]["versions"][0]
    assert record["storage_uri"] == v.storage_uri == f"{backend.uri}/{key}"
    assert record["model_name"] == "prod_model"
    assert record["commit_hash"] == repo.head
    assert len(repo.head) == 40
    assert record["is_latest"] is True
    assert record["version"] == 1
    assert record["sha256"] == sha(models["torchscript"])
    assert record["size"] == models["torchscript"].stat().st_size
    assert record["format"] == "torchscript"
    assert record["author"] == "Test User <test@example.com>"
    assert record["dirty"] is False
    assert record["created_at"].endswith("Z")


def test_load_returns_the_stored_model_which_computes_the_same_outputs(
    repo: GitRepo, backend: Backend, models: dict[str, Path], tmp_path: Path
) -> None:
    Project.open().store(models["torchscript"], "prod_model")

    out = tmp_path / "loaded.pt"
    result = Project.open().load("prod_model", output=out)

    assert result.path == out
    assert not result.from_cache
    assert sha(out) == sha(models["torchscript"])
    x = torch.randn(5, 4)
    expected = torch.jit.load(str(models["torchscript"]))(x)
    assert torch.equal(torch.jit.load(str(out))(x), expected)


def test_second_load_is_served_from_the_verified_cache(
    repo: GitRepo, backend: Backend, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    project.load("m", output=tmp_path / "a.pt")
    backend.write(full_key(backend, f"m/{repo.head}.pt"), b"the remote changed")  # a cache hit never reads it

    second = project.load("m", output=tmp_path / "b.pt")

    assert second.from_cache
    assert sha(tmp_path / "b.pt") == sha(models["torchscript"])


def test_corrupted_remote_object_is_refused_and_leaves_no_file(
    repo: GitRepo, backend: Backend, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    good = models["torchscript"].read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    backend.write(full_key(backend, f"m/{repo.head}.pt"), bytes(bad))

    out = tmp_path / "out" / "m.pt"
    out.parent.mkdir()
    with pytest.raises(IntegrityError, match=rf"m/{repo.head}\.pt failed verification \(sha256"):
        project.load("m", output=out)

    assert list(out.parent.iterdir()) == []
    assert not project.cache.has(sha(models["torchscript"]), len(good))
    cache_files = [p for p in project.cache.root.rglob("*") if p.is_file()]
    assert cache_files == []


def test_truncated_remote_object_is_refused_with_its_size(
    repo: GitRepo, backend: Backend, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    backend.write(full_key(backend, f"m/{repo.head}.pt"), models["torchscript"].read_bytes()[:100])

    with pytest.raises(IntegrityError, match=r"size 100 != recorded"):
        project.load("m", output=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_identical_bytes_at_the_same_commit_are_a_no_op(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    before = (repo.root / META_FILE).read_bytes()

    again = project.store(models["torchscript"], "m")

    assert again.action == "unchanged"
    assert again.version.version == 1
    assert (repo.root / META_FILE).read_bytes() == before


def test_different_bytes_at_the_same_commit_are_refused_and_the_original_kept(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    before = (repo.root / META_FILE).read_bytes()

    with pytest.raises(ObjectConflictError, match="never overwritten; commit your changes"):
        project.store(models["torchscript_b"], "m")

    assert backend.read(full_key(backend, f"m/{repo.head}.pt")) == models["torchscript"].read_bytes()
    assert (repo.root / META_FILE).read_bytes() == before


def test_object_already_in_storage_but_not_recorded_is_verified_then_recorded(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    backend.write(full_key(backend, f"m/{repo.head}.pt"), models["torchscript"].read_bytes())

    result = Project.open().store(models["torchscript"], "m")

    assert result.action == "recorded"
    assert meta(repo)["models"]["m"]["versions"][0]["sha256"] == sha(models["torchscript"])


def test_object_in_storage_with_other_bytes_and_not_recorded_is_refused(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    backend.write(full_key(backend, f"m/{repo.head}.pt"), b"someone else's bytes")

    with pytest.raises(ObjectConflictError):
        Project.open().store(models["torchscript"], "m")
    assert not (repo.root / META_FILE).exists()


def test_new_commits_give_increasing_versions_and_move_latest(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    project = Project.open()
    first = project.store(models["torchscript"], "m").version
    repo.gen({"train.py": "print('v2')\n"}, commit="v2")
    second = project.store(models["torchscript_b"], "m").version

    assert (first.version, second.version) == (1, 2)
    versions = meta(repo)["models"]["m"]["versions"]
    assert [v["is_latest"] for v in versions] == [False, True]
    assert versions[1]["commit_hash"] == repo.head != versions[0]["commit_hash"]
    assert project.resolve("m").version == 2
    assert project.resolve("m", commit=first.commit_hash[:7]).version == 1


def test_store_refuses_dirty_tree_and_uploads_nothing(repo: GitRepo, backend: Backend, models: dict[str, Path]) -> None:
    repo.gen({"train.py": "print('changed')\n"})
    repo.gen({"staged.py": "x = 1\n"})
    repo.git("add", "staged.py")

    with pytest.raises(DirtyTreeError) as info:
        Project.open().store(models["torchscript"], "m")

    assert sorted(info.value.files) == ["staged.py", "train.py"]
    assert "--allow-dirty" in str(info.value)
    assert backend.keys() == []
    assert not (repo.root / META_FILE).exists()


def test_allow_dirty_stores_and_records_dirty(repo: GitRepo, backend: Backend, models: dict[str, Path]) -> None:
    repo.gen({"train.py": "print('changed')\n"})

    result = Project.open().store(models["torchscript"], "m", allow_dirty=True)

    assert result.version.dirty
    assert meta(repo)["models"]["m"]["versions"][0]["dirty"] is True


def test_untracked_files_and_the_metadata_file_do_not_make_the_tree_dirty(
    repo: GitRepo, models: dict[str, Path]
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "a")
    repo.gen({"notes.txt": "untracked\n"})
    # .nexus_meta.json is now modified-or-new: storing another model must still work
    repo.git("add", META_FILE)
    assert project.store(models["torch_export"], "b").action == "stored"


def test_commit_option_commits_only_the_metadata(repo: GitRepo, models: dict[str, Path]) -> None:
    repo.gen({"scratch.py": "x = 1\n"})
    repo.git("add", "scratch.py")
    result = Project.open().store(models["torchscript"], "m", allow_dirty=True, commit=True)

    assert result.metadata_commit == repo.head
    assert repo.git("show", "--name-only", "--format=%s", "HEAD").splitlines() == [
        f"nexus: store m v1 ({result.version.short_commit})",
        "",
        META_FILE,
    ]
    assert repo.status() == "A  scratch.py"


@pytest.mark.parametrize(("kind", "fmt", "ext"), [("torch_export", "torch_export", "pt2"), ("onnx", "onnx", "onnx")])
def test_formats_with_a_signature_record_it(
    repo: GitRepo, models: dict[str, Path], kind: str, fmt: str, ext: str
) -> None:
    v = Project.open().store(models[kind], "m").version

    assert v.format == fmt
    assert v.storage_uri.endswith(f"m/{repo.head}.{ext}")
    record = meta(repo)["models"]["m"]["versions"][0]
    assert record["signature"]["inputs"][0]["dtype"] == "float32"
    assert record["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert record["signature"]["outputs"][0]["shape"] == [-1, 3]


@pytest.mark.parametrize("kind", ["pickled_module", "state_dict"])
def test_pickled_torch_objects_are_refused_with_how_to_export(
    repo: GitRepo, backend: Backend, models: dict[str, Path], kind: str
) -> None:
    with pytest.raises(PickledModelError, match=r"torch\.jit\.script\(model\)\.save"):
        Project.open().store(models[kind], "m")
    assert backend.keys() == []


@pytest.mark.parametrize("name", ["a/b", "../up", "", "-dash", "x" * 65, "sp ace", "dot."])
def test_bad_model_names_are_refused(repo: GitRepo, models: dict[str, Path], name: str) -> None:
    with pytest.raises(InvalidModelNameError):
        Project.open().store(models["torchscript"], name)


def test_missing_file_is_refused(repo: GitRepo) -> None:
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        Project.open().store(repo.root / "nope.pt", "m")


def test_outside_a_git_repo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAGitRepoError, match="git init"):
        Project.open(tmp_path / "plain")


def test_repo_without_commits_is_refused(tmp_path: Path, models: dict[str, Path]) -> None:
    GitRepo.create(tmp_path / "empty")
    with pytest.raises(NoCommitsError, match="no commits yet"):
        Project.open(tmp_path / "empty").store(models["torchscript"], "m")


def test_load_refuses_to_replace_an_output_with_other_content(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")

    with pytest.raises(OutputExistsError, match="--force"):
        project.load("m", output=out)
    assert out.read_bytes() == b"precious"

    project.load("m", output=out, force=True)
    assert sha(out) == sha(models["torchscript"])


def test_load_by_version_and_commit(repo: GitRepo, models: dict[str, Path], tmp_path: Path) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    first_commit = repo.head
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(models["torchscript_b"], "m")

    assert sha(project.load("m", version=1, output=tmp_path / "1.pt").path) == sha(models["torchscript"])
    by_commit = project.load("m", commit=first_commit[:8], output=tmp_path / "c.pt").path
    assert sha(by_commit) == sha(models["torchscript"])
    assert sha(project.load("m", output=tmp_path / "latest.pt").path) == sha(models["torchscript_b"])
    with pytest.raises(VersionNotFoundError, match="available versions: 1, 2"):
        project.load("m", version=7)


def test_load_default_output_is_model_name_in_the_current_folder(repo: GitRepo, models: dict[str, Path]) -> None:
    project = Project.open()
    project.store(models["torch_export"], "m")
    assert project.load("m").path == repo.root / "m.pt2"
    assert sha(repo.root / "m.pt2") == sha(models["torch_export"])


def test_bytes_already_stored_at_an_earlier_commit_are_not_stored_twice(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    project = Project.open()
    first = project.store(models["torchscript"], "m", commit=True).version  # HEAD moves to the metadata commit
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(models["torchscript_b"], "m", commit=True)
    keys = backend.keys()

    again = project.store(models["torchscript"], "m")

    assert again.action == "unchanged"
    assert again.version == project.resolve("m", 1)
    assert again.version.commit_hash == first.commit_hash != repo.head
    assert backend.keys() == keys
    assert [v.version for v in project.versions("m")] == [1, 2]


def test_a_file_that_changes_while_it_is_stored_locally_is_refused(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("NEXUS_STORAGE", str(store))
    model = tmp_path / "changing.pt"
    model.write_bytes(models["torchscript"].read_bytes())

    def keep_training(_: int) -> None:
        with model.open("ab") as f:
            f.write(b"more bytes from a training run still writing")

    with pytest.raises(StorageError, match="changed while it was stored"):
        Project.open().store(model, "m", progress=keep_training)
    assert [p for p in store.rglob("*") if p.is_file()] == []
    assert not (repo.root / META_FILE).exists()


def _cache_entry(tmp_path: Path, data: bytes) -> tuple[ObjectCache, str, Path]:
    cache = ObjectCache(tmp_path / "cache")
    sha = hashlib.sha256(data).hexdigest()
    entry = cache.path(sha)
    entry.parent.mkdir(parents=True)
    entry.write_bytes(data)
    return cache, sha, entry


def test_a_cache_entry_replaced_by_another_process_while_it_is_copied_out_is_still_copied(tmp_path: Path) -> None:
    # Two processes loading the same version both fetch it and rename their download onto the one
    # cache entry; a copy out of the first file must not take the second rename for a change.
    data = bytes(range(256)) * (3 * CHUNK // 256)  # three hashing chunks
    cache, sha, entry = _cache_entry(tmp_path, data)
    first_inode = entry.stat().st_ino
    replaced: list[int] = []

    def another_process_fetches(_: int) -> None:
        if not replaced:
            fresh = entry.with_name(".tmp-other")
            fresh.write_bytes(data)
            os.utime(fresh, ns=(1, 1))  # a different mtime, as a later download has
            fresh.replace(entry)
            replaced.append(entry.stat().st_ino)

    out = tmp_path / "model.pt"
    cache.copy_out(sha, len(data), out, progress=another_process_fetches)

    assert replaced
    assert replaced[0] != first_inode
    assert out.read_bytes() == data


def test_a_cache_entry_written_in_place_while_it_is_copied_out_is_refused(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256)
    cache, sha, entry = _cache_entry(tmp_path, data)

    def damage(_: int) -> None:
        with entry.open("ab") as f:
            f.write(b"appended in place")

    out = tmp_path / "model.pt"
    with pytest.raises(StorageError, match="written to while it was read, so it was dropped; load again"):
        cache.copy_out(sha, len(data), out, progress=damage)
    assert not out.exists()
    assert not entry.exists()


def test_a_cache_hit_never_opens_storage(
    repo: GitRepo, backend: Backend, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    project.load("m", output=tmp_path / "a.pt")

    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cache hit must not open the storage backend")

    monkeypatch.setattr("nexus.registry.project.open_storage", unreachable)
    assert project.load("m", output=tmp_path / "b.pt").from_cache
    assert sha(tmp_path / "b.pt") == sha(models["torchscript"])


def test_after_moving_to_another_store_the_same_bytes_are_stored_there(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEXUS_STORAGE", str(tmp_path / "old-store"))
    Project.open().store(models["torchscript"], "m")
    monkeypatch.setenv("NEXUS_STORAGE", str(tmp_path / "new-store"))

    moved = Project.open().store(models["torchscript"], "m")

    assert moved.action == "stored"
    assert moved.version.version == 2
    assert moved.version.storage_uri == f"{tmp_path / 'new-store'}/m/{repo.head}.pt"
    assert (tmp_path / "new-store" / "m" / f"{repo.head}.pt").read_bytes() == models["torchscript"].read_bytes()
    assert Project.open().store(models["torchscript"], "m").action == "unchanged"
