"""`nexus release` as a user types it: what each command prints, and one-line errors with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import GitRepo
from nexus.cli import app
from nexus.registry import Project
from nexus.release import MANIFEST, list_releases


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def stored(repo: GitRepo, models: dict[str, Path]) -> Project:
    project = Project.open()
    project.store(models["torch_export"], "m")
    project.store(models["onnx"], "o")
    return project


def test_create_list_show_verify_and_prune_through_the_cli(repo: GitRepo, stored: Project) -> None:
    created = run("release", "create", "m")
    assert created.exit_code == 0, created.output
    (release,) = list_releases(stored).complete
    assert [m.name for m in release.models] == ["m"]
    assert f"Created release {release.id} (3 files)" in created.stdout
    assert f"uri: {release.uri}" in created.stdout

    again = run("release", "create", "m:1")
    assert again.exit_code == 0, again.output
    assert f"Unchanged: the same content is already released as release {release.id}" in again.stdout

    listed = run("release", "list", "--json")
    assert listed.exit_code == 0, listed.output
    body = json.loads(listed.stdout)
    assert [r["id"] for r in body["releases"]] == [release.id]
    assert body["releases"][0]["uri"] == release.uri
    assert body["incomplete"] == []
    table = run("release", "list")
    assert release.id in table.stdout
    assert "m:1" in table.stdout

    shown = run("release", "show", release.id[:12])
    assert shown.exit_code == 0, shown.output
    for f in release.files:
        assert f.path in shown.stdout
        assert f.sha256 in shown.stdout
    shown_json = json.loads(run("release", "show", "latest", "--json").stdout)
    assert shown_json["files"][0]["sha256"] == release.files[0].sha256

    verified = run("release", "verify", "latest")
    assert verified.exit_code == 0, verified.output
    assert f"Verified release {release.id}: 3 files" in verified.stdout

    both = run("release", "create")  # every model at its latest version
    assert both.exit_code == 0, both.output
    (incomplete_dir := Path(release.root) / "20200101-000000-0123abcd" / "m").mkdir(parents=True)
    (incomplete_dir / "config.pbtxt").write_text("half a release\n")
    assert "incomplete" in run("release", "list").stdout

    dry = run("release", "prune", "--keep", "1", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would delete {release.id}" in dry.stdout
    assert "would delete 20200101-000000-0123abcd  (incomplete)" in dry.stdout
    assert (Path(release.uri) / MANIFEST).is_file()
    pruned = run("release", "prune", "--keep", "1", "--json")
    assert pruned.exit_code == 0, pruned.output
    result = json.loads(pruned.stdout)
    assert result["deleted"] == [release.id]
    assert result["incomplete"] == ["20200101-000000-0123abcd"]
    assert result["kept"][0]["reason"] == "newest 1"
    assert not Path(release.uri).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "show", "nope"], "no release 'nope' under "),
        (["release", "verify", "2099"], "no release '2099' under "),
        (["release", "create", "m:x"], "'m:x' is not MODEL or MODEL:VERSION; write a model name"),
        (["release", "create", "m:0"], "'m:0' is not MODEL or MODEL:VERSION"),
        (["release", "create", "m:1", "m"], "'m' is named twice"),
        (["release", "create", "nope"], "no model named 'nope'"),
        (["release", "create", "m:9"], "model 'm' has no version 9; available versions: 1"),
        (["release", "create", "--root", "ftp://host/x"], "unsupported storage scheme 'ftp://'"),
        (["release", "prune", "--keep", "-1"], "--keep must be 0 or more, not -1"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_1(stored: Project, args: list[str], message: str) -> None:
    result = run(*args)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_an_empty_project_has_nothing_to_release(repo: GitRepo) -> None:
    result = run("release", "create")
    assert result.exit_code == 1
    assert "no model is stored yet" in result.stderr
    assert "nexus store" in result.stderr
    assert not (repo.root / "releases").exists()


def test_a_root_inside_a_release_is_a_one_line_error(repo: GitRepo, stored: Project) -> None:
    assert run("release", "create").exit_code == 0
    (release,) = list_releases(stored).complete
    result = run("release", "create", "--root", release.uri)
    assert result.exit_code == 1
    assert f"lies inside the release {release.uri}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_publish_into_a_release_is_a_one_line_error(repo: GitRepo, stored: Project) -> None:
    assert run("release", "create").exit_code == 0
    (release,) = list_releases(stored).complete
    result = run("publish", "m", "-r", release.uri)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: {release.uri} is a published release, and releases are never rewritten; "
        "make a new one with `nexus release create`"
    )
