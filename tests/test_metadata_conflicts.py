"""`.nexus_meta.json` left with git's conflict markers by a real merge: a one-line error whose advice works.

Two branches each store a different version of the same model and commit the metadata; merging one
into the other stops on `.nexus_meta.json`. Every nexus command that reads it then names the file,
the marker's line and the git commands that resolve it in the unmerged tree; running exactly those
commands makes nexus work again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import GitRepo
from nexus.errors import MergeConflictError
from nexus.registry.metadata import META_FILE, Metadata

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


def store_on_branch(repo: GitRepo, run_nexus: RunNexus, branch: str, model: Path) -> str:
    """On a new branch from main: commit a change of code, store ``model`` as `clf` with --commit; its commit."""
    repo.git("checkout", "-q", "-b", branch, "main")
    repo.gen({f"{branch}.py": f"print({branch!r})\n"}, commit=f"train on {branch}")
    code_commit = repo.head
    run_nexus("store", str(model), "clf", "--commit", cwd=repo.root, check=True)
    return code_commit


@pytest.fixture
def conflicted(repo: GitRepo, models: dict[str, Path], run_nexus: RunNexus) -> dict[str, str]:
    """The repository stopped in `git merge theirs` (on branch ours); the commit each side's v2 was stored at."""
    run_nexus("store", str(models["onnx"]), "clf", "--commit", cwd=repo.root, check=True)  # v1, on main
    commits = {
        "ours": store_on_branch(repo, run_nexus, "ours", models["torchscript"]),
        "theirs": store_on_branch(repo, run_nexus, "theirs", models["torchscript_b"]),
    }
    repo.git("checkout", "-q", "ours")
    merge = subprocess.run(["git", "merge", "theirs"], cwd=repo.root, capture_output=True, text=True)
    assert merge.returncode == 1, merge.stdout + merge.stderr
    assert f"CONFLICT (content): Merge conflict in {META_FILE}" in merge.stdout
    assert repo.git("ls-files", "--unmerged", META_FILE).strip()  # really unmerged in the index
    return commits


def first_marker_line(path: Path) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("<<<<<<< "))


def the_error(result: subprocess.CompletedProcess[str], meta: Path) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "merge-conflict markers" in lines[0]
    assert f"(line {first_marker_line(meta)})" in lines[0]
    assert "invalid JSON" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_a_merge_conflict_in_the_metadata_is_reported_with_advice_that_resolves_it(
    repo: GitRepo, conflicted: dict[str, str], run_nexus: RunNexus, side: str
) -> None:
    meta = repo.root / META_FILE
    conflicted_text = meta.read_text()

    line = the_error(run_nexus("list", cwd=repo.root), meta)
    assert the_error(run_nexus("list", "clf", "--json", cwd=repo.root), meta) == line
    # a command that would write the file refuses too, and writes nothing
    assert the_error(run_nexus("rollback", "clf", cwd=repo.root), meta) == line
    assert meta.read_text() == conflicted_text

    commands = re.findall(r"`([^`]+)`", line)
    checkout = next(c for c in commands if c.startswith("git checkout --ours"))
    add = next(c for c in commands if c.startswith("git add"))
    assert "`--theirs`" in line  # the other side, named next to it
    for command in (checkout.replace("--ours", f"--{side}"), add):
        subprocess.run(shlex.split(command), cwd=repo.root, check=True, capture_output=True)

    listed = run_nexus("list", "clf", "--json", cwd=repo.root, check=True)
    versions = json.loads(listed.stdout)
    assert [(v["version"], v["is_latest"]) for v in versions] == [(1, False), (2, True)]
    assert versions[1]["commit_hash"] == conflicted[side]
    # and the merge finishes as the message says
    env = {**os.environ, "GIT_EDITOR": "true"}
    subprocess.run(["git", "commit"], cwd=repo.root, check=True, capture_output=True, env=env)
    assert not (repo.root / ".git" / "MERGE_HEAD").exists()
    assert repo.status() == ""
    assert run_nexus("list", cwd=repo.root).returncode == 0


def test_the_advice_names_the_file_relative_to_the_current_folder(
    repo: GitRepo, conflicted: dict[str, str], run_nexus: RunNexus
) -> None:
    sub = repo.root / "sub"
    sub.mkdir()
    line = the_error(run_nexus("list", cwd=sub), repo.root / META_FILE)
    checkout = next(c for c in re.findall(r"`([^`]+)`", line) if c.startswith("git checkout --ours"))
    assert checkout == f"git checkout --ours -- ../{META_FILE}"
    subprocess.run(shlex.split(checkout), cwd=sub, check=True, capture_output=True)
    assert run_nexus("list", cwd=sub).returncode == 0


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{\n<<<<<<< HEAD\n  "a": 1\n=======\n  "a": 2\n>>>>>>> other\n}\n', 2),
        ('{\n  "a": 1\n||||||| base\n=======\n}\n', 3),  # diff3 style, "ours" part already gone
        ('{\r\n  "a": 1\r\n=======\r\n}\r\n', 3),
        ("=======\n", 1),
    ],
)
def test_conflict_markers_at_line_starts_are_found_before_json_parsing(text: str, line: int) -> None:
    with pytest.raises(MergeConflictError) as caught:
        Metadata.from_json(text, Path("/r/.nexus_meta.json"))
    assert caught.value.line == line


def test_marker_like_text_inside_a_json_string_is_not_a_conflict() -> None:
    text = json.dumps({"schema_version": 1, "models": {}, "note": "\n<<<<<<< x\n=======\n"}, indent=2)
    assert Metadata.from_json(text, Path("/r/.nexus_meta.json")).models == {}
