"""A throwaway git project for a benchmark run: its own identity and cache, one commit to pin versions to."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nexus.registry import Project


def throwaway_project(workdir: Path, script: Path) -> Project:
    """``workdir/project``: a git repository holding ``script`` (what the run measured), artifacts ignored."""
    root = workdir / "project"
    root.mkdir()
    for key, value in {
        "GIT_AUTHOR_NAME": "NexusML Bench",
        "GIT_AUTHOR_EMAIL": "bench@nexusml.invalid",
        "GIT_COMMITTER_NAME": "NexusML Bench",
        "GIT_COMMITTER_EMAIL": "bench@nexusml.invalid",
        "NEXUS_CACHE_DIR": str(workdir / "cache"),
    }.items():
        os.environ[key] = value
    (root / ".gitignore").write_text("*.pt\n", encoding="utf-8")
    (root / "bench.py").write_bytes(script.read_bytes())
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "bench"]):
        subprocess.run(cmd, cwd=root, check=True)
    return Project.open(root, env={})
