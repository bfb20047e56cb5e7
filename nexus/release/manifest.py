"""A release's manifest, `nexus-release.json`: what an immutable release prefix holds, file by file.

A release is a complete Triton model repository under its own prefix of a releases root, written once
and never modified::

    <root>/                               # s3://bucket/prefix, gs://bucket/prefix or a folder
      <id>/                               # 20261202-101500-3f9a1c2e: UTC time and the content's digest
        <model>/config.pbtxt
        <model>/<N>/model.py
        <model>/<N>/model.<ext>
        nexus-release.json                # written last: a release without it is incomplete

The manifest lists every other file with its sha256 and size, and for each model what a deployment is
sized from (instances, device kind, batch size, the bytes of one sample). Triton ignores the file: a
repository's top-level entries that are not folders are not models.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from nexus.errors import ReleaseManifestError

MANIFEST = "nexus-release.json"
FORMAT = 1


@dataclass(frozen=True)
class ReleaseFile:
    #: Relative to the release prefix: `mlp/config.pbtxt`, `mlp/3/model.pt2`.
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ReleasedModel:
    """One model of a release, at one version, with what its serving costs."""

    name: str
    version: int
    #: The commit the version was stored at.
    commit: str
    #: The artifact's sha256 and size.
    sha256: str
    size: int
    #: Instances per device, as `config.pbtxt` renders them.
    instances: int
    #: Where instances run: auto, cpu or gpu (:data:`nexus.serving.model_config.KINDS`).
    kind: str
    #: adaptive, window or none.
    policy: str
    #: 0 without batching.
    max_batch_size: int
    #: Bytes of one sample's inputs and outputs together; None when a dimension is variable.
    sample_bytes: int | None


@dataclass(frozen=True)
class Release:
    id: str
    #: The releases root the release is under, without a trailing `/`.
    root: str
    #: When it was made, UTC, ISO 8601 (`2026-12-02T10:15:00Z`).
    created: str
    #: The project's HEAD when it was made.
    commit: str
    models: tuple[ReleasedModel, ...]
    files: tuple[ReleaseFile, ...]

    @property
    def uri(self) -> str:
        """The release's prefix (a repository Triton serves), without a trailing `/`."""
        return f"{self.root.rstrip('/')}/{self.id}"

    def model(self, name: str) -> ReleasedModel | None:
        return next((m for m in self.models if m.name == name), None)

    def to_json(self) -> str:
        body = {"format": FORMAT, **asdict(self)}
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Release:
        """Parse a manifest; ``where`` (its URI) is named in the error.

        Raises:
            ReleaseManifestError: not JSON, another format, or a field missing or of the wrong type.
        """
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ReleaseManifestError(where, f"not JSON: {e}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ReleaseManifestError(where, f"expected format {FORMAT}")
        try:
            models = tuple(_build(ReleasedModel, m) for m in data["models"])
            files = tuple(_build(ReleaseFile, f) for f in data["files"])
            release = cls(
                id=_typed(data["id"], str),
                root=_typed(data["root"], str),
                created=_typed(data["created"], str),
                commit=_typed(data["commit"], str),
                models=models,
                files=files,
            )
        except (KeyError, TypeError) as e:
            raise ReleaseManifestError(where, f"missing or wrong field {e}") from None
        return release


def release_id(created: datetime, files: list[ReleaseFile] | tuple[ReleaseFile, ...]) -> str:
    """`20261202-101500-3f9a1c2e`: the UTC time, then a digest of the paths and hashes (so ids sort by time)."""
    digest = hashlib.sha256("".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path)).encode())
    return f"{created.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{digest.hexdigest()[:8]}"


def content_digest(files: list[ReleaseFile] | tuple[ReleaseFile, ...]) -> str:
    """The digest part of :func:`release_id`: two releases with the same files have the same one."""
    return release_id(datetime.now(timezone.utc), files).rsplit("-", 1)[1]


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(repr(value))
    return value


def _build(cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise TypeError(repr(raw))
    names = {f.name for f in fields(cls)}
    if set(raw) != names:
        raise TypeError(", ".join(sorted(set(raw) ^ names)))
    return cls(**raw)
