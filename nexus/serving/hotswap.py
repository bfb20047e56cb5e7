"""Hot swap: switch a running Triton to another version of a model without failing a request.

Triton serves the old version until the new one is READY (explicit model control, one repository);
then one smoke request must succeed. If the load or the smoke request fails, the previous version is
published and loaded again, and :class:`~nexus.errors.HotSwapError` says why.

The same number with another artifact (a stale number a branch merge left, :mod:`nexus.serving.drift`)
needs no detour through a spare number: Triton 2.51 loads a changed version in the background, keeps
the loaded one answering, and returns from the load request once the new one answers instead (measured
under load: no failed request in three swaps of one number, and no old answer after the load returned).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from nexus.errors import HotSwapError, PredictError, TritonRequestError
from nexus.registry import Project, RollbackResult
from nexus.serving.admin import TritonAdmin
from nexus.serving.discovery import api_key
from nexus.serving.drift import Served
from nexus.serving.model_config import ServingOptions
from nexus.serving.publish import PublishResult, render_version
from nexus.serving.repository import ModelRepository
from nexus.tensors import Signature

if TYPE_CHECKING:
    from pathlib import Path

    from nexus.registry.metadata import ModelVersion


def load_version(
    server: str,
    model: str,
    version: int,
    timeout: float = 300,
    key: str | None = None,
    artifact: ModelVersion | None = None,
) -> None:
    """Ask Triton to (re)load ``model`` from its repository and wait until ``version`` is READY.

    With ``artifact``, the config Triton then has loaded must record serving that version's commit and
    sha256: the same number loaded again (a stale number repaired, :mod:`nexus.serving.drift`) is READY
    before and after, so readiness alone does not say the load took.

    Raises :class:`HotSwapError` with Triton's reason if the load fails.
    """
    admin = TritonAdmin(server, key=key)
    try:
        admin.load(model, timeout=timeout)
    except TritonRequestError as e:
        raise HotSwapError(f"Triton could not load {model} v{version}: {e.reason}") from e
    if not admin.wait_model_ready(model, version, timeout):
        raise HotSwapError(f"{model} v{version} was not READY on {admin.url} after {timeout:.0f}s")
    if artifact is not None:
        served = Served.from_triton(admin.model_config(model, version))  # the version now READY
        if served is None or not served.is_artifact_of(artifact):
            loaded = f"commit {served.commit[:8]}'s artifact" if served else "a config that records no artifact"
            raise HotSwapError(
                f"{model} v{version} on {admin.url} still serves {loaded} after the load, not commit "
                f"{artifact.short_commit}'s; restart the server (`nexus serve`) to load the repository anew"
            )


def swap(
    project: Project,
    model: str,
    version: int,
    server: str,
    repository: ModelRepository,
    options: ServingOptions | None = None,
    signature: Signature | None = None,
) -> PublishResult:
    """Publish ``version`` of ``model`` into ``repository`` and switch ``server`` to it.

    The model keeps its serving options and signature unless new ones are given.
    """
    from nexus.serving.predict import predict

    kept = repository.read_published(model)
    if kept is not None:
        options = options or kept.options
        signature = signature or kept.signature
    target = project.resolve(model, version)
    result = render_version(project, target, repository, options, signature)
    key = api_key(project)
    try:
        load_version(server, model, version, key=key, artifact=target)
        predict(model, server=server)
    except (HotSwapError, PredictError) as e:
        if kept is None or kept.version is None or kept.version == version:
            raise
        render_version(project, project.resolve(model, kept.version), repository, kept.options, kept.signature)
        load_version(server, model, kept.version, key=key)
        raise HotSwapError(f"{model} v{version} failed on {server} ({e}); v{kept.version} is served again") from e
    return replace(result, server=TritonAdmin(server).url)


def rollback(
    project: Project,
    model: str,
    to: str | int | None = None,
    *,
    commit: bool = False,
    server: str | None = None,
    repository: ModelRepository | Path | str | None = None,
) -> tuple[RollbackResult, PublishResult | None]:
    """:meth:`Project.rollback`, then, with ``server``, a hot swap of that server to the version rolled back to."""
    result = project.rollback(model, to, commit=commit)
    if server is None:
        return result, None
    swapped = swap(project, model, result.to_version, server, ModelRepository.resolve(project, repository))
    return result, swapped
