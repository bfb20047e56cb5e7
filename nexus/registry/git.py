"""The little NexusML needs from git: the repository root, HEAD's commit, a dirty check, the author."""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nexus.errors import DirtyTreeError, GitError, NoCommitsError, NotAGitRepoError


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, encoding="utf-8")
    except FileNotFoundError as e:
        raise GitError("git is not installed or not on PATH; install git") from e


def find_root(path: Path | None = None) -> Path:
    """The top folder of the git work tree that holds ``path`` (default: the current folder)."""
    start = Path.cwd() if path is None else Path(path)
    if not start.is_dir():
        raise NotAGitRepoError(start)
    result = _git(start, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        raise NotAGitRepoError(start.resolve())
    return Path(result.stdout.strip())


def git_dir(root: Path) -> Path:
    """The repository's private folder (`.git`, or the worktree's folder under it)."""
    result = _git(root, "rev-parse", "--absolute-git-dir")
    if result.returncode != 0:
        raise NotAGitRepoError(root)
    return Path(result.stdout.strip())


def head_commit(root: Path) -> str:
    """HEAD's full 40-hex commit hash."""
    result = _git(root, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if result.returncode != 0:
        raise NoCommitsError(root)
    return result.stdout.strip()


def dirty_files(root: Path, ignore: Sequence[str] = ()) -> list[str]:
    """Tracked files that are modified, staged, deleted or renamed; untracked files do not count.

    Args:
        root: the work tree's top folder.
        ignore: paths relative to ``root`` that never make the tree dirty (NexusML's own metadata).
    """
    result = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    if result.returncode != 0:
        raise GitError(f"`git status` failed in {root}: {result.stderr.strip()}; check the repository")
    entries = result.stdout.split("\0")
    files: list[str] = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        status, name = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            i += 1  # a rename/copy is followed by its source path
        if name not in ignore:
            files.append(name)
    return files


def ls_files(root: Path, pathspec: str) -> list[str]:
    """Files matching ``pathspec`` (`*nexus-deploy.json`) in the work tree, tracked or not (ignored ones too),
    relative to ``root``, sorted."""
    found: set[str] = set()
    for extra in ((), ("--others",)):
        result = _git(root, "ls-files", "-z", *extra, "--", pathspec)
        if result.returncode != 0:
            raise GitError(f"`git ls-files` failed in {root}: {result.stderr.strip()}; check the repository")
        found.update(name for name in result.stdout.split("\0") if name)
    return sorted(found)


def require_clean(root: Path, ignore: Sequence[str] = ()) -> None:
    """Raise :class:`DirtyTreeError` listing the changed tracked files, if there are any."""
    files = dirty_files(root, ignore)
    if files:
        raise DirtyTreeError(files)


def author(root: Path) -> str:
    """`Name <email>` as git would record it for a commit; the login name where git has none."""
    result = _git(root, "var", "GIT_AUTHOR_IDENT")
    if result.returncode == 0 and result.stdout.strip():
        # "Name <email> 1700000000 +0000": drop the timestamp and zone
        return result.stdout.strip().rsplit(" ", 2)[0]
    return getpass.getuser()


def commit_paths(root: Path, paths: Sequence[str], message: str) -> str:
    """Stage ``paths`` and commit only them; return the new commit's hash."""
    for args in (["add", "--", *paths], ["commit", "--quiet", "-m", message, "--", *paths]):
        result = _git(root, *args)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise GitError(
                f"`git {args[0]}` failed: {detail[-1] if detail else 'no output'}; commit .nexus_meta.json by hand"
            )
    return head_commit(root)


def config_get(root: Path, key: str) -> str | None:
    """The repository's value of git config ``key`` (any scope git reads), or None."""
    result = _git(root, "config", "--get", key)
    return result.stdout.strip() if result.returncode == 0 else None


def config_set(root: Path, key: str, value: str) -> None:
    """Set ``key`` in the repository's own config (`.git/config`)."""
    result = _git(root, "config", "--local", key, value)
    if result.returncode != 0:
        raise GitError(f"`git config {key}` failed: {result.stderr.strip()}; check that .git/config is writable")


def attribute(root: Path, name: str, path: str) -> str | None:
    """The git attribute ``name`` of ``path`` (relative to ``root``) as `.gitattributes` set it, or None."""
    result = _git(root, "check-attr", name, "--", path)
    value = result.stdout.strip().rsplit(": ", 1)[-1] if result.returncode == 0 else ""
    return None if value in ("", "unspecified") else value


def show(cwd: Path, spec: str) -> str:
    """`git show SPEC`'s text: a file at a revision (`main:.nexus_meta.json`) or a merge stage (`:2:FILE`)."""
    result = _git(cwd, "show", spec)
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise GitError(f"`git show {spec}` failed: {detail}; name a file, REV:PATH or a merge stage like :2:PATH")
    return result.stdout
