"""The tuner's own Triton: a stored version published into a temporary repository and served on free loopback ports.

The user's repository and running server are never touched. :func:`own_triton` yields a
:class:`~nexus.tune.session.Session` over that server, on which configurations are applied and measured
(:mod:`nexus.tune.probe`); `nexus tune` and the side-by-side comparison (:mod:`nexus.tune.side_by_side`)
both measure there.

Triton starts on a variant of the first configuration (:func:`starter`) and then loads the first one,
so every configuration measured was loaded into a running Triton. A freshly started one served more:
the tuner's start scored its run's highest or second-highest first search in six runs of six, and
bursts of one configuration had medians of 5,216 and 5,184 req/s fresh against 4,544-5,124 after
reloads (docs/tuning.md, 2026-12-07). The climb sets every neighbour's bar from the start's figure.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
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


def starter(first: ServingOptions) -> ServingOptions:
    """What the tuner's Triton starts on: ``first`` with another queue bound, so loading ``first`` is a reload
    (Triton skips a load whose files did not change); no request is sent while it is served."""
    return replace(first, max_queue_size=first.max_queue_size + 1)


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
        published = render_version(project, version, ModelRepository(folder, str(folder)), starter(first))
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
            candidates.apply(first)
            workload = Workload.of(signature.signature)
            yield Session(candidates, workload, settings.target, settings.shape(), deadline, hooks, server)
