"""Rollback moves `latest` and appends to an append-only history that answers "latest at time T"."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backends import Backend, full_key
from helpers import GitRepo
from nexus.errors import ModelNotFoundError, ObjectMissingError, RollbackError, VersionNotFoundError
from nexus.registry import Project
from nexus.registry.metadata import META_FILE, parse_time


@pytest.fixture
def three_versions(repo: GitRepo, models: dict[str, Path]) -> Project:
    project = Project.open()
    for i, kind in enumerate(["torchscript", "torchscript_b", "torch_export"]):
        if i:
            repo.gen({"train.py": f"print({i})\n"}, commit=f"v{i + 1}")
        project.store(models[kind], "m")
    return project


def history(repo: GitRepo) -> list[dict]:  # type: ignore[type-arg]
    return json.loads((repo.root / META_FILE).read_text())["models"]["m"]["history"]


def test_rollback_moves_latest_to_the_previous_version_each_time(three_versions: Project, repo: GitRepo) -> None:
    first = three_versions.rollback("m")
    second = three_versions.rollback("m")

    assert (first.from_version, first.to_version) == (3, 2)
    assert (second.from_version, second.to_version) == (2, 1)
    assert three_versions.resolve("m").version == 1
    with pytest.raises(RollbackError, match="oldest version"):
        three_versions.rollback("m")


def test_rollback_to_a_version_or_commit(three_versions: Project, repo: GitRepo) -> None:
    v1 = three_versions.resolve("m", 1)
    assert three_versions.rollback("m", to="1").to_version == 1
    assert three_versions.rollback("m", to="v3").to_version == 3
    assert three_versions.rollback("m", to=v1.commit_hash[:10]).to_version == 1
    with pytest.raises(VersionNotFoundError, match="available versions: 1, 2, 3"):
        three_versions.rollback("m", to="9")
    with pytest.raises(VersionNotFoundError, match="commit prefix"):
        three_versions.rollback("m", to="not-a-ref")
    with pytest.raises(RollbackError, match="already the latest"):
        three_versions.rollback("m", to="1")


def test_history_is_append_only_and_records_who_when_from_to(three_versions: Project, repo: GitRepo) -> None:
    before = history(repo)
    three_versions.rollback("m", to="1")
    after = history(repo)

    assert after[: len(before)] == before
    assert [(e["action"], e["from_version"], e["to_version"]) for e in after] == [
        ("store", None, 1),
        ("store", 1, 2),
        ("store", 2, 3),
        ("rollback", 3, 1),
    ]
    assert all(e["by"] == "Test User <test@example.com>" for e in after)
    times = [parse_time(e["at"]) for e in after]
    assert times == sorted(times)


def test_latest_at_answers_which_version_was_latest_at_a_time(three_versions: Project, repo: GitRepo) -> None:
    three_versions.rollback("m", to="1")
    record = three_versions.model("m")
    events = record.history
    assert record.latest_at(parse_time(events[0].at) - timedelta(seconds=1)) is None
    for event in events:
        assert record.latest_at(parse_time(event.at)) == event.to_version
    assert record.latest_at(datetime.now(UTC)) == 1


def test_rollback_refuses_a_target_missing_from_storage(
    repo: GitRepo, backend: Backend, models: dict[str, Path]
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m")
    first = repo.head
    repo.gen({"train.py": "v2\n"}, commit="v2")
    project.store(models["torchscript_b"], "m")
    before = (repo.root / META_FILE).read_bytes()
    key = full_key(backend, f"m/{first}.pt")
    if backend.name == "local":
        assert backend._folder is not None
        (backend._folder / key).unlink()
    elif backend.name == "s3":
        backend._raw.delete_object(Bucket=backend._bucket, Key=key)
    else:
        backend._raw.bucket(backend._bucket).blob(key).delete()

    with pytest.raises(ObjectMissingError, match="missing from storage"):
        project.rollback("m")
    assert (repo.root / META_FILE).read_bytes() == before


def test_rollback_of_an_unknown_model_lists_the_known_ones(three_versions: Project) -> None:
    with pytest.raises(ModelNotFoundError, match="known models: m"):
        three_versions.rollback("other")
