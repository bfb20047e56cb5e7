"""Branch merges of `.nexus_meta.json` through the merge driver `nexus init` installs, in real git repositories.

Each branch stores real models with `nexus store --commit`; `git merge` runs the driver; `nexus list`,
`nexus history` and `nexus load` (bytes compared with the stored file) read the result.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import GitRepo
from nexus.registry.metadata import META_FILE

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def project(repo: GitRepo, run_nexus: RunNexus, models: dict[str, Path]) -> GitRepo:
    """`nexus init` committed on main, and clf v1 (the ONNX model) stored there."""
    run_nexus("init", cwd=repo.root, check=True)
    repo.git("add", ".nexusrc", ".gitattributes")
    repo.git("commit", "-q", "-m", "nexus init")
    run_nexus("store", str(models["onnx"]), "clf", "--commit", cwd=repo.root, check=True)
    return repo


def on_branch(repo: GitRepo, run_nexus: RunNexus, branch: str, *args: str, start: str = "main") -> None:
    """On a new branch from ``start``: a code commit, then `nexus ARGS --commit` (a store or a rollback)."""
    repo.git("checkout", "-q", "-b", branch, start)
    repo.gen({f"{branch}.py": f"print({branch!r})\n"}, commit=f"work on {branch}")
    run_nexus(*args, "--commit", cwd=repo.root, check=True)


def merge(repo: GitRepo, into: str, other: str) -> subprocess.CompletedProcess[str]:
    repo.git("checkout", "-q", into)
    return subprocess.run(["git", "merge", "--no-edit", other], cwd=repo.root, capture_output=True, text=True)


def listed(run_nexus: RunNexus, repo: GitRepo) -> list[dict[str, Any]]:
    return json.loads(run_nexus("list", "clf", "--json", cwd=repo.root, check=True).stdout)  # type: ignore[no-any-return]


def history(run_nexus: RunNexus, repo: GitRepo) -> list[dict[str, Any]]:
    return json.loads(run_nexus("history", "clf", "--json", cwd=repo.root, check=True).stdout)  # type: ignore[no-any-return]


def loaded_bytes(run_nexus: RunNexus, repo: GitRepo, version: int, tmp_path: Path) -> bytes:
    out = tmp_path / f"loaded-v{version}"
    run_nexus("load", "clf", "--version", str(version), "-o", str(out), "--force", cwd=repo.root, check=True)
    return out.read_bytes()


@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_two_branches_storing_a_version_merge_with_both_kept_and_the_renumbering_recorded(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path], tmp_path: Path, into: str, other: str
) -> None:
    files = {"a": models["torchscript"], "b": models["torchscript_b"]}
    for branch, model in files.items():
        on_branch(project, run_nexus, branch, "store", str(model), "clf")
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONFLICT" not in result.stdout
    assert "clf: theirs' v2 (commit" in result.stderr
    assert "is v3 after the merge" in result.stderr
    assert project.status() == ""

    versions = listed(run_nexus, project)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert len({(v["commit_hash"], v["sha256"]) for v in versions}) == 3
    # ours keeps its v2; theirs' v2 is v3
    assert loaded_bytes(run_nexus, project, 2, tmp_path) == files[into].read_bytes()
    assert loaded_bytes(run_nexus, project, 3, tmp_path) == files[other].read_bytes()
    assert loaded_bytes(run_nexus, project, 1, tmp_path) == models["onnx"].read_bytes()
    events = history(run_nexus, project)
    renumber = [e for e in events if e["action"] == "renumber"]
    assert [(e["from_version"], e["to_version"]) for e in renumber] == [(2, 3)]
    assert events[-1]["action"] == "merge"
    assert [e["at"] for e in events if e["action"] == "store"] == sorted(
        e["at"] for e in events if e["action"] == "store"
    )
    # the later store (b's) is latest either way
    assert [v["version"] for v in versions if v["is_latest"]] == [3 if into == "a" else 2]


@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_a_cherry_picked_version_on_both_sides_merges_into_one(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path], into: str, other: str
) -> None:
    on_branch(project, run_nexus, "a", "store", str(models["torchscript"]), "clf")
    project.git("checkout", "-q", "-b", "b", "main")
    project.git("cherry-pick", "a")  # the store's metadata commit: b now records a's v2 too
    project.gen({"b.py": "print('b')\n"}, commit="work on b")
    run_nexus("store", str(models["torchscript_b"]), "clf", "--commit", cwd=project.root, check=True)
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(run_nexus, project)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert len({v["sha256"] for v in versions}) == 3  # a's version is there once
    assert not [e for e in history(run_nexus, project) if e["action"] == "renumber"]


@pytest.mark.parametrize("rollback_first", [True, False])
@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_a_rollback_on_one_side_and_a_store_on_the_other_keep_the_later_as_latest(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path], rollback_first: bool, into: str, other: str
) -> None:
    run_nexus("store", str(models["torchscript"]), "clf", "--commit", cwd=project.root, check=True)  # v2 on main
    steps = {"a": ("rollback", "clf", "--to", "1"), "b": ("store", str(models["torchscript_b"]), "clf")}
    for branch in ("a", "b") if rollback_first else ("b", "a"):
        on_branch(project, run_nexus, branch, *steps[branch])
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(run_nexus, project)
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["version"] for v in versions if v["is_latest"]] == [3 if rollback_first else 1]
    actions = [e["action"] for e in history(run_nexus, project)]
    assert actions.count("rollback") == 1
    assert actions.count("store") == 3


def test_three_branches_merged_in_sequence_keep_every_version_with_its_own_bytes(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path], tmp_path: Path
) -> None:
    files = {"a": models["torchscript"], "b": models["torchscript_b"], "c": models["torch_export"]}
    for branch, model in files.items():
        on_branch(project, run_nexus, branch, "store", str(model), "clf")
    for branch in files:
        result = merge(project, "main", branch)
        assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(run_nexus, project)
    assert [v["version"] for v in versions] == [1, 2, 3, 4]
    for number, branch in zip((2, 3, 4), files, strict=True):
        assert loaded_bytes(run_nexus, project, number, tmp_path) == files[branch].read_bytes()
    renumbers = [(e["from_version"], e["to_version"]) for e in history(run_nexus, project) if e["action"] == "renumber"]
    assert renumbers == [(2, 3), (2, 4)]


def test_two_rollbacks_to_different_versions_are_a_conflict_resolved_by_the_command_it_names(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path]
) -> None:
    for model in ("torchscript", "torchscript_b"):  # v2, v3 on main
        run_nexus("store", str(models[model]), "clf", "--commit", cwd=project.root, check=True)
    on_branch(project, run_nexus, "a", "rollback", "clf", "--to", "2")
    on_branch(project, run_nexus, "b", "rollback", "clf", "--to", "1")
    result = merge(project, "a", "b")
    assert result.returncode == 1
    assert f"CONFLICT (content): Merge conflict in {META_FILE}" in result.stdout
    assert "both branches rolled it back since they diverged, ours to v2" in result.stderr
    assert "theirs to v1" in result.stderr

    refused = run_nexus("list", cwd=project.root)
    assert refused.returncode == 1
    assert "merge-conflict markers" in refused.stderr  # nothing reads a guess
    command = next(c for c in re.findall(r"`([^`]+)`", result.stderr) if c.startswith("nexus merge-meta"))
    resolved = run_nexus(*shlex.split(command.replace("clf=ours", "clf=theirs"))[1:], cwd=project.root)
    assert resolved.returncode == 0, resolved.stderr
    project.git("add", META_FILE)
    project.git("commit", "-q", "--no-edit")

    versions = listed(run_nexus, project)
    assert [v["version"] for v in versions if v["is_latest"]] == [1]
    assert history(run_nexus, project)[-1] | {"at": None, "by": None} == {
        "action": "merge",
        "at": None,
        "by": None,
        "from_version": 2,
        "to_version": 1,
    }


def test_a_clone_without_the_driver_conflicts_as_before_and_nexus_says_how_to_install_it(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path], tmp_path: Path
) -> None:
    clone = GitRepo(tmp_path / "clone")
    subprocess.run(["git", "clone", "-q", str(project.root), str(clone.root)], check=True)
    hint = run_nexus("list", cwd=clone.root)
    assert hint.returncode == 0
    assert "`nexus init --merge-driver` installs it" in hint.stderr

    for branch, model in (("a", "torchscript"), ("b", "torchscript_b")):
        on_branch(clone, run_nexus, branch, "store", str(models[model]), "clf")
    result = merge(clone, "a", "b")
    assert result.returncode == 1
    assert "<<<<<<< " in (clone.root / META_FILE).read_text()  # git's own text merge, as before
    refused = run_nexus("list", cwd=clone.root)
    line = refused.stderr.strip()
    assert refused.returncode == 1
    assert len(line.splitlines()) == 1
    assert "merge-conflict markers" in line
    assert "`nexus init --merge-driver` installs it" in line

    run_nexus("init", "--merge-driver", cwd=clone.root, check=True)
    clone.git("checkout", "-m", "--", META_FILE)  # redo this file's merge, now with the driver
    clone.git("add", META_FILE)
    assert [v["version"] for v in listed(run_nexus, clone)] == [1, 2, 3]
    assert "merge driver" not in run_nexus("list", cwd=clone.root).stderr


def test_nexus_init_merge_driver_is_idempotent_and_keeps_other_attributes(repo: GitRepo, run_nexus: RunNexus) -> None:
    repo.gen({".gitattributes": "*.bin binary"}, commit="attributes")
    first = run_nexus("init", "--merge-driver", cwd=repo.root, check=True)
    assert "Installed" in first.stdout
    again = run_nexus("init", "--merge-driver", cwd=repo.root, check=True)
    assert "already installed" in again.stdout
    assert (repo.root / ".gitattributes").read_text() == f"*.bin binary\n{META_FILE} merge=nexus-meta\n"
    assert not (repo.root / ".nexusrc").exists()
    driver = repo.git("config", "merge.nexus-meta.driver")
    assert driver.endswith("-m nexus merge-driver %O %A %B %P")
    assert Path(shlex.split(driver)[0]).is_file()
