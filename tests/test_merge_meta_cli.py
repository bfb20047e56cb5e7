"""`nexus merge-meta` outside git's driver: for CI (REV:PATH sides) and for a conflict already checked out."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import GitRepo
from nexus.registry.metadata import META_FILE

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def branches(repo: GitRepo, run_nexus: RunNexus, models: dict[str, Path]) -> GitRepo:
    """No merge driver: clf v1 on main; branches a and b each store a v2 of clf; b is checked out."""
    run_nexus("store", str(models["onnx"]), "clf", "--commit", cwd=repo.root, check=True)
    for branch, model in (("a", "torchscript"), ("b", "torchscript_b")):
        repo.git("checkout", "-q", "-b", branch, "main")
        repo.gen({f"{branch}.py": "x = 1\n"}, commit=f"work on {branch}")
        run_nexus("store", str(models[model]), "clf", "--commit", cwd=repo.root, check=True)
    return repo


def numbers(text: str) -> list[tuple[int, str, bool]]:
    return [(v["version"], v["commit_hash"], v["is_latest"]) for v in json.loads(text)["models"]["clf"]["versions"]]


def test_ci_merges_two_branches_files_by_revision_and_prints_the_result(branches: GitRepo, run_nexus: RunNexus) -> None:
    base = branches.git("merge-base", "a", "b")
    result = run_nexus(
        "merge-meta", f"a:{META_FILE}", f"b:{META_FILE}", "--base", f"{base}:{META_FILE}", cwd=branches.root
    )
    assert result.returncode == 0, result.stderr
    a_commit, b_commit = branches.git("rev-parse", "a~1"), branches.git("rev-parse", "b~1")
    assert [n[:2] for n in numbers(result.stdout)][1:] == [(2, a_commit), (3, b_commit)]
    assert "clf: theirs' v2" in result.stderr
    assert branches.status() == ""  # printed only


def test_a_conflict_checked_out_without_the_driver_is_resolved_by_the_command_nexus_names(
    branches: GitRepo, run_nexus: RunNexus
) -> None:
    merge = subprocess.run(["git", "merge", "a"], cwd=branches.root, capture_output=True, text=True)
    assert merge.returncode == 1
    line = run_nexus("list", cwd=branches.root).stderr
    command = next(c for c in re.findall(r"`([^`]+)`", line) if c.startswith("nexus merge-meta"))
    run_nexus(*shlex.split(command)[1:], cwd=branches.root, check=True)
    branches.git("add", META_FILE)
    listed = json.loads(run_nexus("list", "clf", "--json", cwd=branches.root, check=True).stdout)
    assert [v["version"] for v in listed] == [1, 2, 3]
    assert listed[1]["commit_hash"] == branches.git("rev-parse", "b~1")  # ours (b) keeps its v2


def test_in_place_writes_over_ours(branches: GitRepo, run_nexus: RunNexus, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    ours.write_text(branches.git("show", f"b:{META_FILE}") + "\n")
    theirs.write_text(branches.git("show", f"a:{META_FILE}") + "\n")
    run_nexus("merge-meta", str(ours), str(theirs), "--in-place", cwd=branches.root, check=True)
    assert [n[0] for n in numbers(ours.read_text())] == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope.json", f"a:{META_FILE}"], "nope.json: no such file"),
        ([f"a:{META_FILE}", f"b:{META_FILE}", "--in-place"], "is not a file to write over"),
        (["broken.json", f"b:{META_FILE}", "--in-place", "-o", "out.json"], "cannot be given with --output"),
        ([f"a:{META_FILE}", f"b:{META_FILE}", "--resolve", "clf"], "'clf' is not MODEL=SIDE"),
        ([f"a:{META_FILE}", f"b:{META_FILE}", "--resolve", "clf=ours"], "'clf' has no conflict to resolve"),
        ([f"a:{META_FILE}", f"b:{META_FILE}", "--resolve", "clf=mine"], "the side must be ours or theirs"),
        ([f"nobranch:{META_FILE}", f"b:{META_FILE}"], "`git show nobranch:.nexus_meta.json` failed"),
        (["broken.json", f"b:{META_FILE}"], "broken.json is not valid NexusML metadata (invalid JSON at line 1)"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    branches: GitRepo, run_nexus: RunNexus, args: list[str], message: str
) -> None:
    (branches.root / "broken.json").write_text("{nope")
    output = [] if "--in-place" in args else ["-o", "out.json"]
    result = run_nexus("merge-meta", *args, *output, cwd=branches.root)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (branches.root / "out.json").exists()
    assert (branches.root / "broken.json").read_text() == "{nope"
