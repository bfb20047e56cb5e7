"""`nexus status`: what git says is latest, what the repository publishes, what Triton serves.

Any disagreement between the three is drift, and is reported model by model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nexus.errors import NexusError
from nexus.registry import Project
from nexus.serving.serve import _http, backend_stubs, find_triton_pid, open_repository, read_published


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

    @property
    def drift(self) -> list[str]:
        """What disagrees, in words; empty when git, repository and server agree."""
        problems = []
        if self.published != self.latest:
            problems.append(f"repository publishes {_v(self.published)}, metadata says v{self.latest}")
        if self.live is not None and self.live != [self.latest]:
            live = ", ".join(f"v{v}" for v in self.live) or "nothing"
            problems.append(f"server runs {live}, metadata says v{self.latest}")
        if self.dead_stubs:
            problems.append(
                f"backend stub of {', '.join(self.dead_stubs)} is not running: the requests Triton sends to it fail "
                "until the model is reloaded (nexus serve reloads it)"
            )
        return problems


def _v(version: int | None) -> str:
    return "nothing" if version is None else f"v{version}"


def _live(server: str, model: str) -> tuple[list[int], dict[str, Any] | None]:
    status, body = _http(f"{server}/v2/models/{model}")
    if status != 200:
        return [], None
    versions = sorted(int(v) for v in json.loads(body).get("versions", []))
    ready = [v for v in versions if _http(f"{server}/v2/models/{model}/versions/{v}/ready")[0] == 200]
    status, body = _http(f"{server}/v2/models/{model}/stats")
    stats = json.loads(body)["model_stats"] if status == 200 else []
    return ready, {"model_stats": stats}


def _averages(stats: dict[str, Any] | None) -> tuple[float | None, float | None, float | None]:
    """Average executed batch size, queue and compute time (ms per request) over all versions."""
    if not stats:
        return None, None, None
    inferences = executions = queue_ns = compute_ns = 0
    for entry in stats["model_stats"]:
        inferences += int(entry.get("inference_count", 0))
        executions += int(entry.get("execution_count", 0))
        queue_ns += int(entry.get("inference_stats", {}).get("queue", {}).get("ns", 0))
        compute_ns += int(entry.get("inference_stats", {}).get("compute_infer", {}).get("ns", 0))
    if not executions:
        return None, None, None
    return inferences / executions, queue_ns / inferences / 1e6, compute_ns / inferences / 1e6


def model_status(project: Project, server: str | None = None, repository: str | None = None) -> list[ModelStatus]:
    """The status of every model in `.nexus_meta.json`; ``server`` adds what Triton serves."""
    folder = open_repository(project, repository)
    triton_pid = find_triton_pid(project, server) if server is not None else None
    statuses = []
    for name, record in sorted(project.read_metadata().models.items()):
        latest = record.current()
        live: list[int] | None = None
        averages: tuple[float | None, float | None, float | None] = (None, None, None)
        failed: int | None = None
        dead: list[str] | None = None
        if server is not None:
            live, stats = _live(server, name)
            averages = _averages(stats)
            failed = _failed(stats)
            if triton_pid is not None and live:
                dead = _dead_stubs(server, name, triton_pid)
        published = read_published(folder, name)
        version = published.version if published else None
        statuses.append(ModelStatus(name, latest.version, latest.commit_hash, version, live, *averages, failed, dead))
    if server is not None and statuses and all(s.live == [] for s in statuses):
        status, _ = _http(f"{server}/v2/health/live")
        if status != 200:
            raise NexusError(f"Triton at {server} is not live; start it with `nexus serve`")
    return statuses


def _failed(stats: dict[str, Any] | None) -> int | None:
    if stats is None:
        return None
    return sum(int(e.get("inference_stats", {}).get("fail", {}).get("count", 0)) for e in stats["model_stats"])


def _dead_stubs(server: str, model: str, triton_pid: int) -> list[str]:
    """Instances the model's config asks for whose Python-backend stub does not run."""
    status, body = _http(f"{server}/v2/models/{model}/config")
    if status != 200:
        return []
    config = json.loads(body)
    if config.get("backend") != "python":
        return []
    expected = [
        f"{model}_{g}_{i}" for g, group in enumerate(config.get("instance_group", [])) for i in range(group["count"])
    ]
    running = backend_stubs(triton_pid)
    return [name for name in expected if name not in running]
