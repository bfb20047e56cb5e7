"""`nexus publish`: render a stored version into a Triton model repository, and switch a running server to it.

The repository's layout is drawn in :mod:`nexus.serving.repository`. With ``server``, the publish is a
hot swap (:mod:`nexus.serving.hotswap`): the server keeps the old version until the new one is READY
and answers a smoke request, and gets the old one back if it does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.errors import PublishError, SignatureMissingError
from nexus.registry import Project
from nexus.registry.metadata import EXTENSIONS, ModelVersion
from nexus.registry.signature import check_signature, signature_command
from nexus.serving.drift import REPOSITORY, StaleNumber, stale_number
from nexus.serving.model_config import ServingOptions, config_to_text, parse_config, render_config
from nexus.serving.repository import CONFIG, MODEL_PY, ModelRepository
from nexus.serving.tuned import recorded_options
from nexus.tensors import Signature

__all__ = [
    "CONFIG",
    "MODEL_PY",
    "PublishResult",
    "Rendered",
    "prepare_version",
    "publish",
    "render_version",
    "resolve_signature",
    "stale_in",
]


@dataclass(frozen=True)
class Rendered:
    """One version made ready to publish, nothing written yet (:func:`prepare_version`)."""

    version: ModelVersion
    options: ServingOptions
    #: The `ModelConfig` message and its text, which parses back to it.
    config: Any
    config_text: str
    #: The artifact's file name in the version folder (`model.pt2`).
    artifact_name: str
    #: The verified artifact in the cache (read it, never change it).
    cached: Path


@dataclass(frozen=True)
class PublishResult:
    model_name: str
    version: ModelVersion
    #: The local folder, or the bucket URI, written to.
    repository: Path | str
    #: What to give `tritonserver --model-repository` to serve it.
    triton_repository: str
    config_text: str
    #: Paths relative to the repository, in the order they are written.
    files: list[str]
    written: bool
    #: The server switched to the version (a hot swap), if one was given.
    server: str | None = None
    #: What the repository served under this version's number before, when it was another artifact
    #: (a number a branch merge renumbered): it is replaced (:mod:`nexus.serving.drift`).
    replaced: StaleNumber | None = None


def resolve_signature(version: ModelVersion, signature: Signature | None, artifact: Path | None = None) -> Signature:
    """The signature given, else the one recorded (at store time, or by `nexus signature`)."""
    if signature is not None:
        return signature
    if version.signature is None:
        command = signature_command(version.model_name, version.version, version.format, artifact)
        raise SignatureMissingError(version.model_name, version.version, version.format, command)
    return version.signature


def publish(
    project: Project,
    model_name: str,
    *,
    version: int | None = None,
    commit: str | None = None,
    repository: ModelRepository | Path | str | None = None,
    options: ServingOptions | None = None,
    signature: Signature | None = None,
    dry_run: bool = False,
    server: str | None = None,
) -> PublishResult:
    """Render ``model_name`` (latest by default) into a Triton model repository.

    Args:
        options: how to serve it; default the options `nexus tune` recorded for the model
            (`.nexus_serving.json`), else (a hot swap) the ones the server runs, else the defaults.
        repository: a folder (relative to the project root), a bucket URI, or a resolved repository;
            default `[publish] repository` in `.nexusrc`.
        server: a running Triton serving that repository (`host:port` or a URL): it is switched to
            the version with no failed request, and gets the previous version back if the new one
            fails (:func:`nexus.serving.hotswap.swap`).
    """
    v = project.resolve(model_name, version, commit)
    repo = ModelRepository.resolve(project, repository)
    options = options if options is not None else recorded_options(project, model_name)
    if not dry_run:
        repo.refuse_release()  # before a hot swap touches the server
    if server is not None and not dry_run:
        from nexus.serving.hotswap import swap

        return swap(project, model_name, v.version, server, repo, options, signature)
    return render_version(project, v, repo, options, signature, dry_run=dry_run)


def render_version(
    project: Project,
    v: ModelVersion,
    repo: ModelRepository,
    options: ServingOptions | None = None,
    signature: Signature | None = None,
    *,
    dry_run: bool = False,
) -> PublishResult:
    """Render one version into ``repo`` (nothing is written with ``dry_run``); no server is touched.

    Without ``options``, the ones recorded for the model (`.nexus_serving.json`), else the defaults.
    """
    r = prepare_version(project, v, options, signature)
    replaced = stale_in(project, repo, v)
    if not dry_run:
        repo.write_version(
            v.model_name,
            v.version,
            r.artifact_name,
            r.cached,
            lambda target: project.cache.copy_out(v.sha256, v.size, target),
            r.config_text,
        )
    files = repo.version_keys(v.model_name, v.version, r.artifact_name)
    return PublishResult(
        v.model_name, v, repo.location, repo.triton_path, r.config_text, files, written=not dry_run, replaced=replaced
    )


def stale_in(project: Project, repo: ModelRepository, v: ModelVersion) -> StaleNumber | None:
    """What ``repo`` publishes as ``v``'s number when that is another artifact than ``v``; else None."""
    published = repo.read_published(v.model_name)
    if published is None or published.version != v.version:
        return None
    return stale_number(project.read_metadata().models[v.model_name], REPOSITORY, published.served)


def prepare_version(
    project: Project, v: ModelVersion, options: ServingOptions | None = None, signature: Signature | None = None
) -> Rendered:
    """Render ``v``'s `config.pbtxt` and fetch its verified artifact, writing nothing anywhere.

    Without ``options``, the ones recorded for the model (`.nexus_serving.json`), else the defaults;
    without ``signature``, the recorded one.

    Raises:
        SignatureMissingError: no signature is recorded and none was given.
        SignatureError: the artifact does not run with the signature and options.
    """
    options = options or recorded_options(project, v.model_name) or ServingOptions()
    cached = project.cached_artifact(v)
    signature = resolve_signature(v, signature, cached)
    artifact_name = f"model.{EXTENSIONS[v.format]}"
    config = render_config(v.model_name, v, signature, options, artifact_name)
    text = config_to_text(config)
    if parse_config(text) != config:  # pragma: no cover - protobuf round trip; guards against a broken install
        raise PublishError("config.pbtxt does not parse back to what was rendered; reinstall tritonclient")
    check_signature(cached, v.format, signature, options.batching)
    return Rendered(v, options, config, text, artifact_name, cached)
