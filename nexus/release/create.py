"""`nexus release create`: a complete Triton repository for chosen model versions, under a new release prefix.

Each model is rendered exactly as `nexus publish` renders it (:func:`nexus.serving.publish.prepare_version`,
with the options `nexus tune` recorded, else the defaults). Every file is uploaded create-only and its
digest checked against the sha256 it must have; the manifest goes last, so a release with a manifest is
complete, and one cut off midway is a folder without one, which `nexus release list` reports and
`nexus release prune` removes. A release whose content equals one already under the root is not made
again: that one is returned.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2

from nexus.errors import (
    ReleaseEmptyError,
    ReleaseIntegrityError,
    ReleaseRootError,
    ReleaseSpecError,
)
from nexus.registry import Project, git
from nexus.registry.metadata import ModelVersion
from nexus.release.listing import ReleaseRoot, list_releases, open_root
from nexus.release.manifest import MANIFEST, Release, ReleasedModel, ReleaseFile, content_digest, release_id
from nexus.serving.publish import Rendered, prepare_version
from nexus.serving.repository import CONFIG, MODEL_PY, ModelRepository, enclosing_release, template_source
from nexus.tensors import from_triton

_REF = re.compile(r"^(?P<name>[^:\s]+)(?::(?P<version>\d+))?$")


@dataclass(frozen=True)
class CreateResult:
    release: Release
    #: False when a release with the same content was already under the root (nothing was written).
    created: bool


def parse_model_ref(text: str) -> tuple[str, int | None]:
    """`mlp` -> (mlp, None): the latest; `mlp:3` -> (mlp, 3).

    Raises:
        ReleaseSpecError: anything else.
    """
    match = _REF.match(text.strip())
    if match is None or (match["version"] is not None and int(match["version"]) < 1):
        raise ReleaseSpecError(text)
    return match["name"], None if match["version"] is None else int(match["version"])


def create_release(
    project: Project, models: list[tuple[str, int | None]] | None = None, root: str | None = None
) -> CreateResult:
    """Write a new release of ``models`` (name, version or None for the latest; default every model at
    its latest version) under ``root`` (default `[release] root` in `.nexusrc`, else the folder `releases`).

    Raises:
        ReleaseRootError: the root lies inside a release.
        ReleaseSpecError: a model named twice.
        ReleaseEmptyError: no model is stored.
        ReleaseIntegrityError: a file arrived with other bytes than it was sent with (the release stays incomplete).
    """
    where = open_root(project, root)
    inside = enclosing_release(where.uri, project.config.storage, project.root)
    if inside is not None:
        raise ReleaseRootError(where.uri, inside)
    versions = _versions(project, models)
    rendered = [prepare_version(project, v) for v in versions]
    with tempfile.TemporaryDirectory(prefix="nexus-release-") as tmp:
        sources = _sources(rendered, Path(tmp))
        files = [ReleaseFile(path, sha, size) for path, (_, sha, size) in sources.items()]
        digest = content_digest(files)
        for existing in reversed(list_releases(project, where.uri).complete):
            if existing.id.endswith(f"-{digest}") and sorted(existing.files, key=lambda f: f.path) == files:
                return CreateResult(existing, created=False)
        rid, created = _new_id(where, files)
        for path, (source, sha, size) in sources.items():
            _upload(where, rid, path, source, sha, size)
        release = Release(
            id=rid,
            root=where.uri,
            created=f"{created:%Y-%m-%dT%H:%M:%S.%fZ}",  # to the microsecond: releases sort by it
            commit=git.head_commit(project.root),
            models=tuple(released_model(r) for r in rendered),
            files=tuple(files),
        )
        manifest = Path(tmp) / MANIFEST
        manifest.write_text(release.to_json(), encoding="utf-8")
        _upload(where, rid, MANIFEST, manifest, _sha256(manifest), manifest.stat().st_size)
    return CreateResult(release, created=True)


def _versions(project: Project, models: list[tuple[str, int | None]] | None) -> list[ModelVersion]:
    if models is None:
        records = project.read_metadata().models
        if not records:
            raise ReleaseEmptyError()
        return [record.current() for _, record in sorted(records.items())]
    if not models:
        raise ReleaseEmptyError()
    names = [name for name, _ in models]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ReleaseSpecError(twice, "named twice (a release serves one version of each model)")
    return [project.resolve(name, version) for name, version in sorted(models)]


def _sources(rendered: list[Rendered], tmp: Path) -> dict[str, tuple[Path, str, int]]:
    """Release path -> (local file, sha256, size), sorted by path; the artifact's hash is the recorded one."""
    model_py = tmp / MODEL_PY
    model_py.write_text(template_source(), encoding="utf-8")
    out: dict[str, tuple[Path, str, int]] = {}
    for r in rendered:
        v = r.version
        config = tmp / f"{v.model_name}.{CONFIG}"
        config.write_text(r.config_text, encoding="utf-8")
        keys = ModelRepository.version_keys(v.model_name, v.version, r.artifact_name)
        out[keys[0]] = (model_py, _sha256(model_py), model_py.stat().st_size)
        out[keys[1]] = (r.cached, v.sha256, v.size)
        out[keys[2]] = (config, _sha256(config), config.stat().st_size)
    return dict(sorted(out.items()))


def _new_id(where: ReleaseRoot, files: list[ReleaseFile]) -> tuple[str, datetime]:
    """An id whose folder is empty: ids are to the second, so one taken (a failed create of the same
    content this second) waits for the next."""
    for _ in range(5):
        now = datetime.now(UTC)
        rid = release_id(now, files)
        if not where.storage.list_keys(f"{rid}/"):
            return rid, now
        time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
    raise ReleaseIntegrityError(f"{where.uri}/{rid}", "the release folder", "stays taken; run `nexus release prune`")


def _upload(where: ReleaseRoot, rid: str, path: str, source: Path, sha256: str, size: int) -> None:
    digest = where.storage.put_file(f"{rid}/{path}", source, overwrite=False)
    if (digest.sha256, digest.size) != (sha256, size):
        raise ReleaseIntegrityError(
            f"{where.uri}/{rid}", path, f"was uploaded with sha256 {digest.sha256[:12]}…, expected {sha256[:12]}…"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def released_model(r: Rendered) -> ReleasedModel:
    """What the manifest says of one model: its version and what serving it costs, from the rendered config."""
    config, v = r.config, r.version
    group = config.instance_group[0]
    kind = model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind).removeprefix("KIND_").lower()
    return ReleasedModel(
        name=v.model_name,
        version=v.version,
        commit=v.commit_hash,
        sha256=v.sha256,
        size=v.size,
        instances=int(group.count),
        kind=kind,
        policy=r.options.batching_policy,
        max_batch_size=int(config.max_batch_size),
        sample_bytes=sample_bytes(config),
    )


def sample_bytes(config: Any) -> int | None:
    """Bytes of one sample's inputs and outputs (dims without the batch dimension); None if one is variable."""
    total = 0
    for tensor in [*config.input, *config.output]:
        dims = list(tensor.dims)
        found = from_triton(model_config_pb2.DataType.Name(tensor.data_type))
        if found is None or any(d < 0 for d in dims):
            return None
        total += _itemsize(found.name) * math.prod(dims)
    return total


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else int(np.dtype(dtype).itemsize)
