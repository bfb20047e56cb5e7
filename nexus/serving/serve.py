"""`nexus serve` as one library call: sync the repository, run Triton on it, supervise it, clean up.

:func:`serve` publishes each model's latest version unless the repository already serves it (a model
published before keeps its serving options, read back from its `config.pbtxt`), starts `tritonserver`
in explicit model-control mode with the model-repository API restricted to the project's key, records
it in `.nexus/server.json` for publish and rollback to find, keeps it and its models up
(:mod:`nexus.serving.supervisor`), and on Ctrl-C or SIGTERM stops it and removes the record.

An immutable release (a repository holding `nexus-release.json`) is served as it is: nothing is
published into it. A local one is served from a fresh copy in `.nexus/release-copy`, as Triton serves a
bucket from its own download: the Python backend's stub writes `__pycache__` beside `model.py`, and
its interpreter runs isolated, so no environment variable stops it.
"""

from __future__ import annotations

import shutil
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nexus.errors import PortClashError, PortInUseError, SignatureError
from nexus.registry import Project
from nexus.serving.admin import IndexEntry, TritonAdmin
from nexus.serving.discovery import api_key, restricted_api_args, server_file, write_server_file
from nexus.serving.drift import REPOSITORY, stale_number
from nexus.serving.publish import PublishResult, render_version
from nexus.serving.repository import ModelRepository
from nexus.serving.server import TritonServer
from nexus.serving.supervisor import supervise


@dataclass
class SyncResult:
    """What :func:`sync_latest` did to the repository, model by model."""

    published: list[PublishResult] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    #: (model, reason) for models that could not be published.
    skipped: list[tuple[str, str]] = field(default_factory=list)


def sync_latest(project: Project, repository: ModelRepository) -> SyncResult:
    """Publish every model's latest version that the repository does not serve yet.

    A repository that serves the latest version's number as another artifact (a number a branch merge
    renumbered, :mod:`nexus.serving.drift`) does not serve it: the version is written again.
    """
    result = SyncResult()
    for name, record in sorted(project.read_metadata().models.items()):
        latest = record.current()
        published = repository.read_published(name)
        stale = published is not None and stale_number(record, REPOSITORY, published.served) is not None
        if published is not None and published.version == latest.version and not stale:
            result.up_to_date.append(name)
            continue
        try:
            options, signature = (published.options, published.signature) if published else (None, None)
            result.published.append(render_version(project, latest, repository, options, signature))
        except SignatureError as e:
            result.skipped.append((name, str(e)))
    return result


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`PortInUseError` for the first port that cannot be bound, or one given twice."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port in seen:
            raise PortClashError(seen[port], option, port)
        seen[port] = option
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                raise PortInUseError(host, port, option) from None


@dataclass(frozen=True)
class Running:
    """A ready server, as :func:`serve` reports it."""

    server: TritonServer
    repository: ModelRepository
    models: list[IndexEntry]

    @property
    def grpc(self) -> str:
        return f"{self.server.host}:{self.server.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"http://{self.server.host}:{self.server.metrics_port}/metrics"


def _ignore(*_: object) -> None:
    pass


@dataclass(frozen=True)
class ServeHooks:
    """What :func:`serve` tells its caller as it goes; each defaults to nothing (the library never prints)."""

    synced: Callable[[SyncResult], None] = _ignore
    ready: Callable[[Running], None] = _ignore
    #: Restarts, reloads and why.
    message: Callable[[str], None] = _ignore
    restarted: Callable[[int], None] = _ignore
    stopping: Callable[[], None] = _ignore


def serve(
    project: Project,
    *,
    repository: ModelRepository | Path | str | None = None,
    host: str = "127.0.0.1",
    http_port: int = 8000,
    grpc_port: int = 8001,
    metrics_port: int = 8002,
    sync: bool = True,
    tritonserver: Path | None = None,
    log_file: Path | None = None,
    hooks: ServeHooks | None = None,
) -> None:
    """Serve the project's models on a local Triton until Ctrl-C or SIGTERM (then return).

    Args:
        repository: default `[publish] repository` in `.nexusrc`.
        sync: publish each model's latest version first (False: serve the repository as it is, as
            always for a release).
        tritonserver: a binary; default the one in `nvidia-pytriton`.
        log_file: Triton's log; default `.nexus/triton.log`.
    """
    hooks = hooks or ServeHooks()
    repo = ModelRepository.resolve(project, repository)
    if repo.release is not None:
        hooks.message(f"{repo.release} is an immutable release: serving it as it is, publishing nothing into it")
        sync = False
        if repo.folder is not None:
            repo = _private_copy(project, repo.folder)
    if sync:
        hooks.synced(sync_latest(project, repo))
    if repo.folder is not None:
        repo.folder.mkdir(parents=True, exist_ok=True)
    check_ports(host, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    log = log_file or project.root / ".nexus" / "triton.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    key = api_key(project)
    server = TritonServer(
        repository=repo.triton_path,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        log_file=log,
        binary=tritonserver,
        extra_args=restricted_api_args(key),
        env=repo.env,
    )
    with _stop_on_signals():
        try:
            server.start()
            server.wait_ready(timeout=300)
            write_server_file(project, server, repo)
            hooks.ready(Running(server, repo, TritonAdmin(server.url, key=key).index()))

            def restarted(pid: int) -> None:
                write_server_file(project, server, repo)
                hooks.restarted(pid)

            supervise(server, repo, on_message=hooks.message, on_restarted=restarted, key=key)
        except KeyboardInterrupt:
            hooks.stopping()
        finally:
            _ignore_signals()
            server_file(project).unlink(missing_ok=True)
            server.stop()


def _private_copy(project: Project, folder: Path) -> ModelRepository:
    """A fresh copy of the local release ``folder`` for Triton to load from (and write `__pycache__` into)."""
    copy = project.root / ".nexus" / "release-copy"
    shutil.rmtree(copy, ignore_errors=True)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, copy)
    return ModelRepository(copy, str(copy))


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the server (as KeyboardInterrupt); the handlers are restored afterwards.

    The first signal starts the shutdown; later ones (`timeout`, or a supervisor forwarding its own) must
    not cut it short and leave Triton running, so they are ignored until the server has stopped, which
    takes at most 20 s.
    """

    def terminate(signum: int, frame: object) -> None:
        _ignore_signals()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, terminate), signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
