"""One of the processes of the concurrency scenario: runs a list of NexusML operations, logs each.

Usage: `python concurrent_worker.py PLAN.json` in the repository, with the storage configured by
the environment. PLAN is `{"ops": [...], "log": "PATH", "start_at": UNIX_TIME}`; each op is one of

    {"op": "store", "file": "PATH", "model": "NAME", "commit": false}
    {"op": "rollback", "model": "NAME", "commit": false}
    {"op": "list"}
    {"op": "load", "model": "NAME", "output": "PATH"}

and is logged as one JSON line with what it returned, or the error's type and message. The worker
waits for ``start_at`` so that all of them begin together, after their imports.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from nexus.errors import NexusError
from nexus.registry import Project


def run(op: dict[str, Any]) -> dict[str, Any]:
    project = Project.open()
    if op["op"] == "store":
        result = project.store(op["file"], op["model"], commit=op.get("commit", False))
        v = result.version
        return {"action": result.action, "version": v.version, "uri": v.storage_uri, "sha256": v.sha256}
    if op["op"] == "rollback":
        rolled = project.rollback(op["model"], commit=op.get("commit", False))
        return {"from": rolled.from_version, "to": rolled.to_version}
    if op["op"] == "list":
        versions = project.versions()
        latest: dict[str, list[int]] = {}
        for v in versions:
            latest.setdefault(v.model_name, [])
            if v.is_latest:
                latest[v.model_name].append(v.version)
        return {"versions": len(versions), "latest": latest}
    loaded = project.load(op["model"], output=op["output"], force=True)
    data = Path(loaded.path).read_bytes()
    return {
        "version": loaded.version.version,
        "sha256": hashlib.sha256(data).hexdigest(),
        "expected": loaded.version.sha256,
    }


def main() -> None:
    plan = json.loads(Path(sys.argv[1]).read_text())
    time.sleep(max(plan["start_at"] - time.time(), 0))
    with open(plan["log"], "a", encoding="utf-8") as log:
        for op in plan["ops"]:
            entry: dict[str, Any] = {**op, "started": time.time()}
            try:
                entry["result"] = run(op)
            except NexusError as e:
                entry["error"] = type(e).__name__
                entry["message"] = str(e)
            except Exception as e:  # noqa: BLE001 - logged for the test to judge: a bug, not a refusal
                entry["error"] = type(e).__name__
                entry["message"] = f"unexpected: {e}"
            entry["ended"] = time.time()
            log.write(json.dumps(entry) + "\n")
            log.flush()


if __name__ == "__main__":
    main()
