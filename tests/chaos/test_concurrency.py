"""Concurrency: several processes store, roll back, list and load against one checkout and one bucket.

Each worker process (tests/chaos/concurrent_worker.py) runs its own shuffled list of operations on
its own model and on one model they all share, some stores with `--commit` (so HEAD moves under
the others). Afterwards the metadata must hold every version a worker was told it stored, exactly
once, with a history whose every step starts where the previous one ended; every object in the
bucket must be recorded and hash to what was recorded; no worker may have seen a broken file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from chaos.checks import seeds
from chaos.conftest import Recorder
from conftest import S3Server
from helpers import GitRepo, make_onnx, make_torchscript
from nexus.registry.metadata import META_FILE, Metadata

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

WORKER = Path(__file__).with_name("concurrent_worker.py")
#: Refusals a worker may meet by arriving early or late: nothing stored yet, nothing older to go back to.
REFUSALS = {"ModelNotFoundError", "RollbackError"}
WORKERS_MAX = 8
GUARANTEES = (
    "lost versions",  # a store reported done whose version is missing or different in the metadata
    "duplicate versions",  # one object recorded twice
    "history breaks",  # an event that does not start where the previous one ended, or a missing event
    "corrupt objects",  # an object whose sha256 is not the recorded one, or a recorded object missing
    "unrecorded objects",  # an object in the bucket that no version records
    "broken reads",  # a list that saw a model without exactly one latest, or a load with other bytes
    "unexpected errors",  # an operation that failed other than by a refusal above
    "broken commits",  # a git commit of .nexus_meta.json that does not parse
)


@pytest.fixture(scope="module")
def worker_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("workers")
    files = {
        "shared_ts": make_torchscript(folder / "shared.pt", seed=100),
        "shared_onnx": make_onnx(folder / "shared.onnx", 100),
    }
    for w in range(WORKERS_MAX):
        files[f"ts{w}"] = make_torchscript(folder / f"w{w}.pt", seed=w)
        files[f"onnx{w}"] = make_onnx(folder / f"w{w}.onnx", seed=w)
    return files


def _plan(w: int, rng: random.Random, files: dict[str, Path], out: Path) -> list[dict[str, Any]]:
    """Three stores and a list in random order, then two rollbacks, two loads and a list (so that
    most rollbacks find something to roll back to); half of the stores and rollbacks commit."""
    own = f"own{w}"
    shared = files["shared_ts" if w % 2 == 0 else "shared_onnx"]
    first: list[dict[str, Any]] = [
        {"op": "store", "file": str(files[f"ts{w}"]), "model": own, "commit": rng.random() < 0.5},
        {"op": "store", "file": str(files[f"onnx{w}"]), "model": own, "commit": rng.random() < 0.5},
        {"op": "store", "file": str(shared), "model": "shared", "commit": rng.random() < 0.5},
        {"op": "list"},
    ]
    then: list[dict[str, Any]] = [
        {"op": "rollback", "model": own, "commit": rng.random() < 0.5},
        {"op": "rollback", "model": "shared", "commit": rng.random() < 0.5},
        {"op": "list"},
        {"op": "load", "model": own, "output": str(out / f"w{w}-own")},
        {"op": "load", "model": "shared", "output": str(out / f"w{w}-shared")},
    ]
    rng.shuffle(first)
    rng.shuffle(then)
    return first + then


def _run_workers(root: Path, plans: list[list[dict[str, Any]]], tmp: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    start_at = time.time() + 4.0  # every worker has imported nexus by then
    processes = []
    for w, ops in enumerate(plans):
        log = tmp / f"worker{w}.jsonl"
        plan_file = tmp / f"plan{w}.json"
        plan_file.write_text(json.dumps({"ops": ops, "log": str(log), "start_at": start_at}))
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(plan_file)],
                cwd=root,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for p in processes:
        _out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    entries = []
    for w in range(len(plans)):
        for line in (tmp / f"worker{w}.jsonl").read_text().splitlines():
            entries.append({**json.loads(line), "worker": w})
    return entries


def _violations(
    repo: GitRepo, entries: list[dict[str, Any]], objects: dict[str, bytes]
) -> tuple[Counter[str], list[str]]:
    """Each guarantee broken, how often, and how."""
    found: Counter[str] = Counter()
    details: list[str] = []

    def fail(what: str, detail: str) -> None:
        found[what] += 1
        details.append(f"{what}: {detail}")

    meta = Metadata.from_json((repo.root / META_FILE).read_text(), repo.root / META_FILE)  # validates it too
    for e in entries:
        if "error" in e and e["error"] not in REFUSALS:
            fail("unexpected errors", f"worker {e['worker']} {e['op']}: {e['error']}: {e['message']}")
    # every store a worker was told about, recorded once with the same number, uri and bytes
    for e in (e for e in entries if e["op"] == "store" and "result" in e):
        r = e["result"]
        record = meta.models.get(e["model"])
        match = [v for v in (record.versions if record else []) if v.storage_uri == r["uri"]]
        if len(match) != 1 or (match[0].version, match[0].sha256) != (r["version"], r["sha256"]):
            fail("lost versions", f"{e['model']} v{r['version']} {r['uri']} -> {match}")
    for name, record in meta.models.items():
        uris = Counter(v.storage_uri for v in record.versions)
        for uri, n in uris.items():
            if n > 1:
                fail("duplicate versions", f"{name}: {uri} recorded {n} times")
        # the history: a chain from nothing to the latest, one store per version, every rollback seen
        previous = None
        for event in record.history:
            if event.from_version != previous:
                fail("history breaks", f"{name}: {event} after v{previous}")
            previous = event.to_version
        if previous != record.current().version:
            fail("history breaks", f"{name}: history ends at v{previous}, latest is v{record.current().version}")
        stores = sorted(e.to_version for e in record.history if e.action == "store")
        if stores != [v.version for v in record.versions]:
            fail(
                "history breaks", f"{name}: store events for {stores}, versions {[v.version for v in record.versions]}"
            )
        rollbacks = Counter((e.from_version, e.to_version) for e in record.history if e.action == "rollback")
        reported = Counter(
            (e["result"]["from"], e["result"]["to"])
            for e in entries
            if e["op"] == "rollback" and e["model"] == name and "result" in e
        )
        if rollbacks != reported:
            fail("history breaks", f"{name}: rollbacks in history {dict(rollbacks)}, reported {dict(reported)}")
        for v in record.versions:
            data = objects.pop(v.storage_uri, None)
            if data is None or hashlib.sha256(data).hexdigest() != v.sha256:
                fail("corrupt objects", f"{v.storage_uri}: {'missing' if data is None else 'other bytes'}")
    for uri in objects:
        fail("unrecorded objects", uri)
    for e in entries:
        if e["op"] == "list" and "result" in e:
            for name, latest in e["result"]["latest"].items():
                if len(latest) != 1:
                    fail("broken reads", f"worker {e['worker']} listed {name} with latest {latest}")
        if e["op"] == "load" and "result" in e and e["result"]["sha256"] != e["result"]["expected"]:
            fail("broken reads", f"worker {e['worker']} loaded other bytes for {e['model']}")
    for sha in repo.git("log", "--format=%H", "--", META_FILE).split():
        text = repo.git("show", f"{sha}:{META_FILE}")
        try:
            Metadata.from_json(text, repo.root / META_FILE)
        except Exception as err:  # noqa: BLE001 - any failure to parse is the violation
            fail("broken commits", f"{sha[:8]}: {err}")
    return found, details


def test_concurrent_processes_store_roll_back_list_and_load_without_losing_anything(
    s3_server: S3Server, s3_bucket: str, worker_files: dict[str, Path], tmp_path: Path, record: Recorder
) -> None:
    workers = int(os.environ.get("NEXUS_CHAOS_WORKERS", "6"))
    assert 2 <= workers <= WORKERS_MAX
    client = s3_server.client()
    for i, seed in enumerate(seeds(quick=1)):
        rng = random.Random(seed)
        repo = GitRepo.create(tmp_path / f"round{i}" / "project")
        repo.gen({"train.py": "print('training')\n"}, commit="initial")
        prefix = f"round{i}"
        out = tmp_path / f"round{i}" / "out"
        out.mkdir()
        plans = [_plan(w, rng, worker_files, out) for w in range(workers)]
        env = {"NEXUS_STORAGE": f"s3://{s3_bucket}/{prefix}", "NEXUS_ENDPOINT_URL": s3_server.endpoint}
        started = time.monotonic()
        entries = _run_workers(repo.root, plans, tmp_path / f"round{i}", env)
        seconds = time.monotonic() - started
        listing = client.list_objects_v2(Bucket=s3_bucket, Prefix=f"{prefix}/").get("Contents", [])
        objects = {
            f"s3://{s3_bucket}/{o['Key']}": client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
            for o in listing
        }
        ops = Counter(e["op"] + (" refused" if "error" in e else "") for e in entries)
        actions = Counter(e["result"]["action"] for e in entries if e["op"] == "store" and "result" in e)
        violations, details = _violations(repo, entries, objects)
        record(
            "Concurrency",
            f"{workers} processes × {len(plans[0])} store/rollback/list/load, half of the stores and rollbacks "
            "with --commit, one checkout, one S3 bucket",
            "all recorded, history consistent",
            violations={g: violations[g] for g in GUARANTEES},
            operations=dict(ops),
            store_actions=dict(actions),
            seconds=round(seconds, 1),
            seed=seed,
        )
        assert not details, f"seed {seed}:\n" + "\n".join(details)


def test_store_commit_waits_for_another_commit_instead_of_failing_on_git_index_lock(
    repo: GitRepo, worker_files: dict[str, Path], record: Recorder
) -> None:
    """Process A is inside `git commit` (held there by a pre-commit hook, with git's index lock
    taken) when process B stores with `--commit`: B waits for A, then both are committed. Without
    the work-tree lock around git, B's `git add` fails on index.lock after recording its version."""
    hook = repo.root / ".git" / "hooks" / "pre-commit"
    release = repo.root / ".git" / "release"
    entered = repo.root / ".git" / "entered"
    hook.write_text(f"#!/bin/sh\ntouch {entered}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    hook.chmod(0o755)
    exe = Path(sys.executable).with_name("nexus")

    def store(file: Path, name: str) -> subprocess.Popen[str]:
        args = [str(exe), "store", str(file), name, "--commit"]
        return subprocess.Popen(args, cwd=repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    a = store(worker_files["ts0"], "a")
    deadline = time.monotonic() + 60
    while not entered.exists() and a.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entered.exists(), a.communicate()
    b = store(worker_files["ts1"], "b")
    with contextlib.suppress(subprocess.TimeoutExpired):
        b.wait(timeout=4)  # B's start-up, its upload and its `git add` fit in this, if it does not wait
    b_waited = b.poll() is None
    release.touch()
    results = [(*p.communicate(timeout=60), p.returncode) for p in (a, b)]
    subjects = repo.git("log", "--format=%s").splitlines()
    record(
        "Concurrency",
        "`store --commit` while another process is inside `git commit` (held by a hook)",
        "waited, both committed" if b_waited and all(r[2] == 0 for r in results) else "failed",
        violations={"unexpected errors": sum(r[2] != 0 for r in results)},
    )
    assert [r[2] for r in results] == [0, 0], results
    assert b_waited, "B finished while A held the work tree"
    assert [s.split(" v")[0] for s in subjects[:2]] == ["nexus: store b", "nexus: store a"]
    assert sorted(Metadata.from_json((repo.root / META_FILE).read_text(), repo.root / META_FILE).models) == ["a", "b"]
