"""Branch merges of `.nexus_meta.json` through the merge driver `nexus init` installs, in real git repositories.

Every merge is a real `git merge` running the driver installed in the clone's git config (a subprocess of
git). The project each test starts from is made once per module through the console script (`nexus init`,
`nexus store --commit`) and copied; branches store real models and roll back through the library
(:class:`nexus.registry.Project`, what the CLI calls), and the merged result is read back through it too:
versions, history, and each version's bytes loaded from storage and compared with the stored file. The CLI
is run where its own output is what is checked: refusals, hints, and the resolution command it names.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import seal_env
from helpers import GitRepo, nexus_cli
from nexus.registry import Project
from nexus.registry.metadata import META_FILE, HistoryEvent, ModelVersion

RunNexus = Callable[..., subprocess.CompletedProcess[str]]
Step = Callable[[Project], object]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Path:
    """`nexus init` committed on main and clf v1 (the ONNX model) stored with `nexus store --commit`, both
    through the console script; made once per module (its own sealed environment), copied by :func:`project`."""
    root = tmp_path_factory.mktemp("merge-template")
    with pytest.MonkeyPatch.context() as env:
        seal_env(root / "home", env)
        repo = GitRepo.create(root / "project")
        repo.gen({"train.py": "print('training')\n"}, commit="initial")
        nexus_cli("init", cwd=repo.root, check=True)
        repo.git("add", ".nexusrc", ".gitattributes")
        repo.git("commit", "-q", "-m", "nexus init")
        nexus_cli("store", str(models["onnx"]), "clf", "--commit", cwd=repo.root, check=True)
        assert repo.status() == ""
    return repo.root


@pytest.fixture
def project(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GitRepo:
    """A copy of :func:`template` (its clone-local driver config and `.nexus/storage` included), as cwd."""
    root = tmp_path / "project"
    shutil.copytree(template, root, symlinks=True)
    monkeypatch.chdir(root)
    return GitRepo(root)


def store(model: Path) -> Step:
    return lambda p: p.store(model, "clf", commit=True)


def rollback(to: int) -> Step:
    return lambda p: p.rollback("clf", to, commit=True)


def cli(run_nexus: RunNexus, *args: str) -> Step:
    """`nexus ARGS --commit` through the console script, in the project's folder."""
    return lambda p: run_nexus(*args, "--commit", cwd=p.root, check=True)


def on_branch(repo: GitRepo, branch: str, step: Step, start: str = "main") -> None:
    """On a new branch from ``start``: a code commit, then ``step`` (a store or a rollback, committed)."""
    repo.git("checkout", "-q", "-b", branch, start)
    repo.gen({f"{branch}.py": f"print({branch!r})\n"}, commit=f"work on {branch}")
    step(Project.open(repo.root))


def merge(repo: GitRepo, into: str, other: str) -> subprocess.CompletedProcess[str]:
    repo.git("checkout", "-q", into)
    return subprocess.run(["git", "merge", "--no-edit", other], cwd=repo.root, capture_output=True, text=True)


def listed(repo: GitRepo) -> list[ModelVersion]:
    return Project.open(repo.root).versions("clf")


def history(repo: GitRepo) -> list[HistoryEvent]:
    return Project.open(repo.root).model("clf").history


def loaded_bytes(repo: GitRepo, version: int, tmp_path: Path) -> bytes:
    out = tmp_path / f"loaded-v{version}"
    return Project.open(repo.root).load("clf", version=version, output=out, force=True).path.read_bytes()


@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_two_branches_storing_a_version_merge_with_both_kept_and_the_renumbering_recorded(
    project: GitRepo, models: dict[str, Path], tmp_path: Path, into: str, other: str
) -> None:
    files = {"a": models["torchscript"], "b": models["torchscript_b"]}
    for branch, model in files.items():
        on_branch(project, branch, store(model))
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CONFLICT" not in result.stdout
    assert "clf: theirs' v2 (commit" in result.stderr
    assert "is v3 after the merge" in result.stderr
    assert project.status() == ""

    versions = listed(project)
    assert [v.version for v in versions] == [1, 2, 3]
    assert len({(v.commit_hash, v.sha256) for v in versions}) == 3
    # ours keeps its v2; theirs' v2 is v3
    assert loaded_bytes(project, 2, tmp_path) == files[into].read_bytes()
    assert loaded_bytes(project, 3, tmp_path) == files[other].read_bytes()
    assert loaded_bytes(project, 1, tmp_path) == models["onnx"].read_bytes()
    events = history(project)
    renumber = [e for e in events if e.action == "renumber"]
    assert [(e.from_version, e.to_version) for e in renumber] == [(2, 3)]
    assert events[-1].action == "merge"
    assert [e.at for e in events if e.action == "store"] == sorted(e.at for e in events if e.action == "store")
    # the later store (b's) is latest either way
    assert [v.version for v in versions if v.is_latest] == [3 if into == "a" else 2]


@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_a_cherry_picked_version_on_both_sides_merges_into_one(
    project: GitRepo, models: dict[str, Path], into: str, other: str
) -> None:
    on_branch(project, "a", store(models["torchscript"]))
    project.git("checkout", "-q", "-b", "b", "main")
    project.git("cherry-pick", "a")  # the store's metadata commit: b now records a's v2 too
    project.gen({"b.py": "print('b')\n"}, commit="work on b")
    store(models["torchscript_b"])(Project.open(project.root))
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(project)
    assert [v.version for v in versions] == [1, 2, 3]
    assert len({v.sha256 for v in versions}) == 3  # a's version is there once
    assert not [e for e in history(project) if e.action == "renumber"]


@pytest.mark.parametrize("rollback_first", [True, False])
@pytest.mark.parametrize(("into", "other"), [("a", "b"), ("b", "a")])
def test_a_rollback_on_one_side_and_a_store_on_the_other_keep_the_later_as_latest(
    project: GitRepo, models: dict[str, Path], rollback_first: bool, into: str, other: str
) -> None:
    store(models["torchscript"])(Project.open(project.root))  # v2 on main
    steps = {"a": rollback(1), "b": store(models["torchscript_b"])}
    for branch in ("a", "b") if rollback_first else ("b", "a"):
        on_branch(project, branch, steps[branch])
    result = merge(project, into, other)
    assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(project)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.version for v in versions if v.is_latest] == [3 if rollback_first else 1]
    actions = [e.action for e in history(project)]
    assert actions.count("rollback") == 1
    assert actions.count("store") == 3


def test_three_branches_merged_in_sequence_keep_every_version_with_its_own_bytes(
    project: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    files = {"a": models["torchscript"], "b": models["torchscript_b"], "c": models["torch_export"]}
    for branch, model in files.items():
        on_branch(project, branch, store(model))
    for branch in files:
        result = merge(project, "main", branch)
        assert result.returncode == 0, result.stdout + result.stderr

    versions = listed(project)
    assert [v.version for v in versions] == [1, 2, 3, 4]
    for number, branch in zip((2, 3, 4), files, strict=True):
        assert loaded_bytes(project, number, tmp_path) == files[branch].read_bytes()
    renumbers = [(e.from_version, e.to_version) for e in history(project) if e.action == "renumber"]
    assert renumbers == [(2, 3), (2, 4)]


def test_two_rollbacks_to_different_versions_are_a_conflict_resolved_by_the_command_it_names(
    project: GitRepo, run_nexus: RunNexus, models: dict[str, Path]
) -> None:
    for model in ("torchscript", "torchscript_b"):  # v2, v3 on main
        store(models[model])(Project.open(project.root))
    on_branch(project, "a", cli(run_nexus, "rollback", "clf", "--to", "2"))  # the console script's rollback
    on_branch(project, "b", cli(run_nexus, "rollback", "clf", "--to", "1"))
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

    versions = listed(project)
    assert [v.version for v in versions if v.is_latest] == [1]
    assert asdict(history(project)[-1]) | {"at": None, "by": None} == {
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
        on_branch(clone, branch, store(models[model]))
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
    assert [v.version for v in listed(clone)] == [1, 2, 3]
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
