"""`nexus quickstart` end to end, as a user runs it: a subprocess, a new folder, real training and a real Triton."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NEXUS = str(Path(sys.executable).with_name("nexus"))


def test_quickstart_trains_stores_serves_queries_and_load_tests(tmp_path: Path) -> None:
    folder = tmp_path / "qs"
    env = {**os.environ, "NEXUS_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "120"}
    result = subprocess.run(
        [NEXUS, "quickstart", str(folder), "--duration", "4s"], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr

    summary = json.loads((folder / "quickstart.json").read_text())
    assert summary["version"] == 1
    assert summary["predictions_match"] is True
    assert summary["max_abs_difference"] < 1e-4
    assert summary["trained_accuracy"] > 0.9
    assert summary["served_accuracy"] == summary["trained_accuracy"]
    assert summary["failures"] == 0
    assert summary["requests"] > 100
    assert summary["average_batch"] > 1
    # what the summary says was stored is in the store, and in the metadata git tracks
    meta = json.loads((folder / ".nexus_meta.json").read_text())
    (record,) = meta["models"]["digits"]["versions"]
    assert record["commit_hash"] == summary["commit"]
    assert (folder / ".nexus" / "storage" / "digits" / f"{summary['commit']}.pt2").is_file()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=folder, capture_output=True, text=True).stdout
    assert log.splitlines() == [f"nexus: store digits v1 ({summary['commit'][:8]})", "Train a digit classifier"]
    # each step shows the command that repeats it by hand
    for command in ("python train.py", "nexus store model.pt2 digits --commit", "nexus publish digits"):
        assert f"$ {command}" in result.stdout
    assert "NexusML quickstart" in result.stdout
    # the server was stopped
    assert not (folder / ".nexus" / "server.json").exists()


def test_quickstart_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([NEXUS, "quickstart", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {tmp_path} is not an empty folder; give a new one: nexus quickstart DIR"
    assert (tmp_path / "keep.txt").read_text() == "mine"
