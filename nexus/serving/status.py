"""`nexus status`: what git says is latest, what the repository publishes, what Triton serves.

Any disagreement between the three is drift, and is reported model by model: another version number,
or the right number for another artifact (a stale number, left by a branch merge that renumbered a
version: :mod:`nexus.serving.drift`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nexus.errors import TritonError
from nexus.registry import Project
from nexus.serving.admin import ModelCounters, TritonAdmin
from nexus.serving.discovery import find_triton_pid
from nexus.serving.drift import REPOSITORY, SERVER, Served, stale_number
from nexus.serving.repository import ModelRepository
from nexus.serving.supervisor import dead_stubs


@dataclass(frozen=True)
class ModelStatus:
    model_name: str
    #: The latest version in `.nexus_meta.json`, and its commit.
    latest: int
    commit: str
    #: The version the repository's `config.pbtxt` serves (None: not published).
    published: int | None
    #: The versions Triton has loaded and READY (None: no server was asked).
    live: list[int] | None
    #: From Triton's statistics, since the server started (None without a server or requests).
    avg_batch_size: float | None = None
    avg_queue_ms: float | None = None
    avg_compute_ms: float | None = None
    #: Requests Triton failed since the model was loaded (None without a server).
    failed: int | None = None
    #: Model instances whose Python-backend stub is not running (None: the server is not local).
    dead_stubs: list[str] | None = None
    #: The published or loaded version numbers that serve another artifact than the metadata's, in words.
    stale: list[str] = field(default_factory=list)

    @property
    def drift(self) -> list[str]:
        """What disagrees, in words; empty when git, repository and server agree."""
        problems = []
        if self.published != self.latest:
            problems.append(f"repository publishes {_v(self.published)}, metadata says v{self.latest}")
        if self.live is not None and self.live != [self.latest]:
            live = ", ".join(f"v{v}" for v in self.live) or "nothing"
            problems.append(f"server runs {live}, metadata says v{self.latest}")
        problems += self.stale
        if self.dead_stubs:
            problems.append(
                f"backend stub of {', '.join(self.dead_stubs)} is not running: the requests Triton sends to it fail "
                "until the model is reloaded (nexus serve reloads it)"
            )
        return problems


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


def _averages(counters: ModelCounters) -> tuple[float | None, float | None, float | None]:
    """Average executed batch size, queue and compute time (ms per request) over all versions."""
    if not counters.executions or not counters.inferences:
        return None, None, None
    per_request = counters.inferences * 1e6
    return counters.average_batch, counters.queue_ns / per_request, counters.infer_ns / per_request


def model_status(
    project: Project, server: str | None = None, repository: ModelRepository | Path | str | None = None
) -> list[ModelStatus]:
    """The status of every model in `.nexus_meta.json`; ``server`` (`host:port` or a URL) adds what Triton serves."""
    repo = ModelRepository.resolve(project, repository)
    admin = TritonAdmin(server) if server is not None else None
    triton_pid = find_triton_pid(project, admin.url) if admin is not None else None
    statuses = []
    for name, record in sorted(project.read_metadata().models.items()):
        latest = record.current()
        live: list[int] | None = None
        averages: tuple[float | None, float | None, float | None] = (None, None, None)
        failed: int | None = None
        dead: list[str] | None = None
        published = repo.read_published(name)
        stale = [stale_number(record, REPOSITORY, published.served if published else None)]
        if admin is not None:
            live = admin.ready_versions(name)
            serving = admin.ready_config(name) if live else None
            if serving is not None:
                stale.append(stale_number(record, SERVER, Served.from_triton(serving)))
            if admin.model_versions(name) is not None:
                counters = admin.stats(name)
                averages, failed = _averages(counters), counters.failure
                if triton_pid is not None and serving is not None:
                    dead = dead_stubs(serving, name, triton_pid)
        version = published.version if published else None
        problems = [s.describe() for s in stale if s is not None]
        statuses.append(
            ModelStatus(name, latest.version, latest.commit_hash, version, live, *averages, failed, dead, problems)
        )
    if admin is not None and statuses and all(s.live == [] for s in statuses) and not admin.is_live():
        raise TritonError(f"Triton at {admin.url} is not live; start it with `nexus serve`")
    return statuses
