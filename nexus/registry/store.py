"""The writes to a model's record: a new version (:func:`store`), or a signature for a stored one
(:func:`set_signature`). :class:`~nexus.registry.project.Project` calls them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nexus.atomic import atomic_write_text, disk_full_as_error
from nexus.errors import (
    ArtifactNotFoundError,
    DirtyTreeError,
    ModelNotFoundError,
    ObjectConflictError,
    SignatureError,
)
from nexus.hashing import Digest, Progress, hash_file
from nexus.names import validate_model_name
from nexus.registry import git
from nexus.registry.formats import inspect_artifact
from nexus.registry.metadata import META_FILE, ModelVersion, utc_now
from nexus.registry.samples import signature_for
from nexus.registry.signature import signature_command
from nexus.registry.versions import promote, resolve
from nexus.storage import KeyExistsError, Storage
from nexus.tensors import Signature

if TYPE_CHECKING:
    from nexus.registry.project import Project


@dataclass(frozen=True)
class StoreResult:
    version: ModelVersion
    #: "stored" (uploaded and recorded), "recorded" (the object was already in storage with the same
    #: bytes, now recorded) or "unchanged" (already stored and recorded: nothing to do).
    action: str
    #: The commit that recorded the metadata, with ``commit=True``.
    metadata_commit: str | None = None
    #: One line for the user, when the version cannot be served as it is (no signature), with the fix.
    notice: str | None = None


@dataclass(frozen=True)
class SignatureResult:
    version: ModelVersion
    #: The signature now recorded.
    signature: Signature
    #: The signature recorded before, replaced by this one.
    previous: Signature | None
    #: The commit that recorded the metadata, with ``commit=True``.
    metadata_commit: str | None = None


def store(
    project: Project,
    path: Path,
    model_name: str,
    *,
    allow_dirty: bool,
    commit: bool,
    signature: Signature | None,
    sample: Mapping[str, Any] | None,
    progress: Progress | None,
) -> StoreResult:
    """:meth:`Project.store <nexus.registry.project.Project.store>`."""
    validate_model_name(model_name)
    if not path.is_file():
        raise ArtifactNotFoundError(path)
    info = inspect_artifact(path)
    if signature is not None or sample is not None:
        info = replace(info, signature=signature_for(path, info.format, signature, sample))
    with project.metadata.locked():  # `git status` may take git's index lock: see MetadataFile.locked
        dirty = git.dirty_files(project.root, ignore=[META_FILE])
    if dirty and not allow_dirty:
        raise DirtyTreeError(dirty)
    commit_hash = git.head_commit(project.root)
    storage = project.storage()
    duplicate = _same_bytes_stored(project, model_name, path, storage)
    if duplicate is not None:
        return StoreResult(duplicate, "unchanged", notice=_notice(duplicate, path))
    _keep_private_dir_untracked(project.root)
    key = f"{model_name}/{commit_hash}.{info.extension}"
    uri = storage.uri(key)

    action = "stored"
    if storage.size(key) is not None:
        digest, action = _existing(project, storage, key, path, progress)
    else:
        try:
            digest = storage.put_file(key, path, progress)
        except KeyExistsError:  # another writer got there between the check and the upload
            digest, action = _existing(project, storage, key, path, progress)

    with project.metadata.locked():  # held through the commit, so that it commits this very update
        with project.metadata.update() as meta:
            record = meta.model(model_name)
            known = next((v for v in record.versions if v.storage_uri == uri), None)
            if known is not None:
                if known.sha256 != digest.sha256:
                    raise ObjectConflictError(uri)
                result = StoreResult(known, "unchanged")
            else:
                action = "recorded" if action == "unchanged" else action
                version = ModelVersion(
                    model_name=model_name,
                    version=record.next_version(),
                    commit_hash=commit_hash,
                    storage_uri=uri,
                    is_latest=True,
                    sha256=digest.sha256,
                    size=digest.size,
                    format=info.format,
                    created_at=utc_now(),
                    author=git.author(project.root),
                    dirty=bool(dirty),
                    signature=info.signature,
                )
                promote(record, version, "store", version.author)
                result = StoreResult(version, action)
        sha = None
        if commit and result.action != "unchanged":
            v = result.version
            message = f"nexus: store {model_name} v{v.version} ({v.short_commit})"
            sha = git.commit_paths(project.root, [META_FILE], message)
    return replace(result, metadata_commit=sha, notice=_notice(result.version, path))


def _notice(version: ModelVersion, artifact: Path) -> str | None:
    if version.signature is not None:
        return None
    command = signature_command(version.model_name, version.version, version.format, artifact)
    return (
        f"{version.model_name} v{version.version} is {version.format}, which records no input/output signature, "
        f"so it cannot be served until one is given: {command}"
    )


def set_signature(
    project: Project,
    model_name: str,
    signature: Signature | None,
    *,
    version: int | None,
    sample: Mapping[str, Any] | None,
    commit: bool,
) -> SignatureResult:
    """:meth:`Project.set_signature <nexus.registry.project.Project.set_signature>`."""
    target = project.resolve(model_name, version)
    artifact = project.cached_artifact(target)
    if signature is None and sample is None:
        command = signature_command(model_name, target.version, target.format, artifact)
        raise SignatureError(f"give the signature to record: {command}")
    checked = signature_for(artifact, target.format, signature, sample)
    with project.metadata.locked():  # held through the commit, so that it commits this very update
        with project.metadata.update() as meta:
            record = meta.models.get(model_name)
            if record is None or not record.versions:
                raise ModelNotFoundError(model_name, sorted(meta.models))
            current = resolve(record, target.version, None)
            previous, current.signature = current.signature, checked
        sha = None
        if commit:
            message = f"nexus: signature of {model_name} v{current.version}"
            sha = git.commit_paths(project.root, [META_FILE], message)
    return SignatureResult(current, checked, previous, sha)


def _same_bytes_stored(project: Project, model_name: str, path: Path, storage: Storage) -> ModelVersion | None:
    """A version of the model in this store with exactly these bytes, whatever its commit.

    Storing it again would only add a duplicate (for example after `--commit` moved HEAD). A copy
    in another store does not count: after a move to a new store, a store puts the bytes there.
    The file is hashed first only when such a version has the same size.
    """
    record = project.metadata.read().models.get(model_name)
    size = path.stat().st_size
    prefix = storage.uri("")
    here = [v for v in (record.versions if record else []) if v.storage_uri.startswith(prefix) and v.size == size]
    if not here:
        return None
    digest = hash_file(path)
    return next((v for v in reversed(here) if v.sha256 == digest.sha256), None)


def _keep_private_dir_untracked(root: Path) -> None:
    """`.nexus/` holds the default local store and other per-machine state: keep it out of git."""
    private = root / ".nexus"
    ignore = private / ".gitignore"
    with disk_full_as_error(private):
        private.mkdir(exist_ok=True)
        if not ignore.exists():
            atomic_write_text(ignore, "# Written by nexus: per-machine state, never committed.\n*\n")


def _existing(
    project: Project, storage: Storage, key: str, path: Path, progress: Progress | None
) -> tuple[Digest, str]:
    """The key is taken: same bytes -> fine; different bytes -> refuse. Nothing is uploaded."""
    local = hash_file(path, progress)
    uri = storage.uri(key)
    recorded = next(
        (v for rec in project.metadata.read().models.values() for v in rec.versions if v.storage_uri == uri), None
    )
    if recorded is not None:
        if recorded.sha256 != local.sha256:
            raise ObjectConflictError(uri)
        return local, "unchanged"
    # Stored but not recorded here (another branch, or a run cut off before the metadata update):
    # hash the remote bytes to be sure before recording them.
    remote = storage.download(key, _NullWriter())
    if remote != local:
        raise ObjectConflictError(uri)
    return local, "recorded"


class _NullWriter:
    """A sink for downloads that only need hashing."""

    def write(self, data: bytes) -> int:
        return len(data)
