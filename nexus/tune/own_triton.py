"""The tuner's own Triton: a stored version published into a temporary repository and served on free loopback ports.

The user's repository and running server are never touched. :func:`own_triton` yields a
:class:`~nexus.tune.session.Session` over that server, on which configurations are applied and measured
(:mod:`nexus.tune.probe`); `nexus tune` and the side-by-side comparison (:mod:`nexus.tune.side_by_side`)
both measure there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nexus.errors import TuneError
from nexus.registry import Project
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions
from nexus.serving.publish import render_version
from nexus.serving.repository import ModelRepository
from nexus.serving.server import TritonServer, free_ports
from nexus.tune.probe import Candidates, Workload
from nexus.tune.session import Session, TuneHooks
from nexus.tune.settings import TuneSettings


@contextmanager
def own_triton(
    project: Project,
    settings: TuneSettings,
    version: ModelVersion,
    first: ServingOptions,
    log_folder: Path,
    deadline: float,
    hooks: TuneHooks,
) -> Iterator[Session]:
    """Serve ``version`` with ``first`` applied on a `tritonserver` of its own (its log in ``log_folder``), and
    yield a session that measures it; the server is stopped and the repository removed on the way out.

    Raises:
        TuneError: the version could not be rendered, or Triton could not serve it.
    """
    with tempfile.TemporaryDirectory(prefix="nexus-tune-") as tmp:
        folder = Path(tmp) / "repository"
        published = render_version(project, version, ModelRepository(folder, str(folder)), first)
        signature = ModelRepository(folder, str(folder)).read_published(settings.model)
        if signature is None:  # pragma: no cover - it was just written
            raise TuneError(f"{folder} holds no config for {settings.model}")
        http_port, grpc_port, metrics_port = free_ports(3)
        server = TritonServer(
            repository=str(folder),
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            load_models=[settings.model],
            log_file=log_folder / "triton.log",  # kept with the report
            binary=settings.tritonserver,
        )
        with server:
            hooks.started(server.url)
            artifact = Path(published.files[1]).name
            candidates = Candidates(server.url, folder, version, signature.signature, artifact, published.config_text)
            workload = Workload.of(signature.signature)
            yield Session(candidates, workload, settings.target, settings.shape(), deadline, hooks, server)
