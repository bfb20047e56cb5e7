"""Chaos suite fixtures: the outcome recorder behind docs/reliability.md.

Every scenario iteration records what was tried and what happened with the ``record`` fixture.
With ``$NEXUS_CHAOS_RECORD`` set (``make reliability`` sets it), each record is appended to that
file as one JSON line; ``tests/chaos/report.py`` renders the lines into docs/reliability.md.
Without it (CI), records stay in memory and cost nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from backends import Backend, gcs_backend, s3_backend
from conftest import GCSServer, S3Server

RECORD_ENV = "NEXUS_CHAOS_RECORD"

Recorder = Callable[..., None]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Recorder:
    """``record(group, scenario, outcome, violations={...}, faults={...}, **extra)``: one tried case.

    Args (of the returned function):
        group: the report section ("storage faults", "concurrency", ...).
        scenario: what was tried, the same words for every iteration of it.
        outcome: what happened ("stored", "clean failure", ...).
        violations: guarantee name -> how often it was broken in this iteration (zeros included,
            so the report can say "0 corrupt objects").
        faults: fault name -> how often the proxy injected it.
    """
    target = os.environ.get(RECORD_ENV)
    path = request.config.rootpath / target if target else None  # tests change the working folder

    def write(
        group: str,
        scenario: str,
        outcome: str,
        *,
        violations: dict[str, int] | None = None,
        faults: dict[str, int] | None = None,
        **extra: Any,
    ) -> None:
        line = {
            "test": request.node.nodeid,
            "group": group,
            "scenario": scenario,
            "outcome": outcome,
            "violations": violations or {},
            "faults": {k: v for k, v in (faults or {}).items() if v and k != "pass"},
            "at": time.time(),
            **extra,
        }
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")

    return write


@dataclass
class Remote:
    """A test storage server (moto S3 or the GCS emulator), with raw access that bypasses NexusML."""

    backend: Backend
    port: int
    #: The environment that points NexusML at the server itself, past any proxy.
    direct_env: dict[str, str]


@pytest.fixture(params=["s3", "gcs"])
def remote(request: pytest.FixtureRequest) -> Remote:
    """Each remote backend in turn, with a fresh bucket."""
    if request.param == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        backend = s3_backend(s3.endpoint, request.getfixturevalue("s3_bucket"), s3.client())
        return Remote(backend, s3.port, {"NEXUS_STORAGE": backend.uri, "NEXUS_ENDPOINT_URL": s3.endpoint})
    gcs: GCSServer = request.getfixturevalue("gcs_server")
    backend = gcs_backend(request.getfixturevalue("gcs_bucket"), gcs.client())
    port = int(gcs.endpoint.rsplit(":", 1)[1])
    return Remote(backend, port, {"NEXUS_STORAGE": backend.uri, "STORAGE_EMULATOR_HOST": gcs.endpoint})
