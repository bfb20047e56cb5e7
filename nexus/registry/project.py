"""The control plane's library API: store, load, list and roll back git-pinned model versions.

The CLI is a thin layer over :class:`Project`; a Python user can do everything through it::

    from nexus import Project

    project = Project.open()                       # the git repository around the current folder
    result = project.store("model.pt", "prod_model")
    print(result.version.version, result.version.storage_uri)
    path = project.load("prod_model", output="model.pt").path
    project.set_signature("ts_model", sample={"image": batch})   # TorchScript: record its signature

The writes live in :mod:`~nexus.registry.store` and the version lookups in :mod:`~nexus.registry.versions`;
:class:`Project` holds the settings and storage they work on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nexus.errors import (
    ConfigError,
    IntegrityError,
    ModelNotFoundError,
    ObjectMissingError,
    OutputExistsError,
    RollbackError,
    VersionNotFoundError,
)
from nexus.hashing import Digest, Progress, hash_file
from nexus.registry import git
from nexus.registry.cache import ObjectCache
from nexus.registry.metadata import EXTENSIONS, META_FILE, Metadata, MetadataFile, ModelRecord, ModelVersion
from nexus.registry.store import SignatureResult, StoreResult, set_signature, store
from nexus.registry.versions import parse_version_ref, promote, resolve
from nexus.settings import CONFIG_FILE, NexusConfig, PublishSettings, StorageSettings, load_config, write_config
from nexus.storage import Storage, open_storage, parse_storage_uri, split_object_uri
from nexus.tensors import Signature

__all__ = ["LoadResult", "Project", "RollbackResult", "SignatureResult", "StoreResult", "init", "parse_version_ref"]


@dataclass(frozen=True)
class LoadResult:
    version: ModelVersion
    path: Path
    from_cache: bool


@dataclass(frozen=True)
class RollbackResult:
    model_name: str
    from_version: int
    to_version: int
    #: The commit that recorded the metadata, with ``commit=True``.
    metadata_commit: str | None = None


def init(
    path: Path | None = None,
    storage: StorageSettings | None = None,
    publish: PublishSettings | None = None,
    *,
    force: bool = False,
) -> Path:
    """Write `.nexusrc` at the root of the git repository holding ``path``; return its path.

    An existing `.nexusrc` is kept unless ``force``.
    """
    root = git.find_root(path)
    if (root / CONFIG_FILE).exists() and not force:
        raise ConfigError(str(root / CONFIG_FILE), "already exists", "edit it, or pass --force to overwrite it")
    settings = storage or StorageSettings()
    publish = publish or PublishSettings()
    for uri in (settings.uri, publish.repository):
        parse_storage_uri(uri)  # validate before writing anything (no network, no credentials)
    return write_config(root, settings, publish)


class Project:
    """One git work tree with its `.nexus_meta.json`, settings and storage."""

    def __init__(self, config: NexusConfig, cache: ObjectCache | None = None) -> None:
        self.config = config
        self.root = config.root
        self.metadata = MetadataFile(self.root, git.git_dir(self.root))
        self.cache = cache or ObjectCache()

    @classmethod
    def open(cls, path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Project:
        """The project of the git repository holding ``path`` (default: the current folder)."""
        root = git.find_root(Path(path) if path is not None else None)
        return cls(load_config(root, env))

    def storage(self) -> Storage:
        """The configured store, where new versions go."""
        return open_storage(self.config.storage.uri, self.config.storage, self.root)

    def _storage_of(self, version: ModelVersion) -> tuple[Storage, str]:
        base, key = split_object_uri(version.storage_uri)
        return open_storage(base, self.config.storage, self.root), key

    # -- store ------------------------------------------------------------------------------

    def store(
        self,
        path: Path | str,
        model_name: str,
        *,
        allow_dirty: bool = False,
        commit: bool = False,
        signature: Signature | None = None,
        sample: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> StoreResult:
        """Upload ``path`` as a new version of ``model_name``, pinned to HEAD, and record it.

        The tree must be clean (apart from `.nexus_meta.json`) unless ``allow_dirty``. The object
        goes to `<storage>/<model_name>/<commit>.<ext>` and is never overwritten; the metadata is
        updated only after the upload is verified. A ``signature`` (inputs and outputs, for formats
        that carry none, like TorchScript), or one read off a forward pass on ``sample`` (input name ->
        array, first dimension the batch), is checked by one forward pass before anything is uploaded.
        A version left without a signature gets a :attr:`StoreResult.notice` with the command to give one.
        """
        return store(
            self,
            Path(path),
            model_name,
            allow_dirty=allow_dirty,
            commit=commit,
            signature=signature,
            sample=sample,
            progress=progress,
        )

    def set_signature(
        self,
        model_name: str,
        signature: Signature | None = None,
        version: int | None = None,
        *,
        sample: Mapping[str, Any] | None = None,
        commit: bool = False,
    ) -> SignatureResult:
        """Record the input/output signature of a stored version (latest by default); every later publish uses it.

        Give ``signature``, or ``sample`` (input name -> array) to read it off one forward pass. It is
        checked by running the model once before `.nexus_meta.json` is updated (under its lock, atomically).
        """
        return set_signature(self, model_name, signature, version=version, sample=sample, commit=commit)

    def signature_command(self, version: ModelVersion) -> str:
        """The `nexus signature` command that gives ``version`` a signature, with the model's input names."""
        from nexus.registry.signature import signature_command

        return signature_command(version.model_name, version.version, version.format, self.cached_artifact(version))

    # -- read -------------------------------------------------------------------------------

    def read_metadata(self) -> Metadata:
        return self.metadata.read()

    def model(self, model_name: str) -> ModelRecord:
        meta = self.metadata.read()
        record = meta.models.get(model_name)
        if record is None or not record.versions:
            raise ModelNotFoundError(model_name, sorted(meta.models))
        return record

    def versions(self, model_name: str | None = None) -> list[ModelVersion]:
        """All versions of one model, or of every model, oldest first per model."""
        if model_name is not None:
            return list(self.model(model_name).versions)
        return [v for _, rec in sorted(self.metadata.read().models.items()) for v in rec.versions]

    def resolve(self, model_name: str, version: int | None = None, commit: str | None = None) -> ModelVersion:
        """The version by number, by commit (prefix of at least 4 hex digits), or the latest."""
        return resolve(self.model(model_name), version, commit)

    # -- load -------------------------------------------------------------------------------

    def load(
        self,
        model_name: str,
        *,
        version: int | None = None,
        commit: str | None = None,
        output: Path | str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> LoadResult:
        """Fetch a version (latest by default) through the verified cache and write it to ``output``.

        ``output`` defaults to `./<model_name>.<ext>`; a folder gets that file name inside it. An
        existing file with other content is kept unless ``force``.
        """
        v = self.resolve(model_name, version, commit)
        target = Path(output) if output is not None else Path.cwd() / f"{model_name}.{EXTENSIONS[v.format]}"
        if target.is_dir():
            target = target / f"{model_name}.{EXTENSIONS[v.format]}"
        if target.is_file() and hash_file(target) == Digest(v.sha256, v.size):
            return LoadResult(v, target, from_cache=True)  # already there, verified
        if target.exists() and not force:
            raise OutputExistsError(target)
        from_cache = self.cache.has(v.sha256, v.size)
        for attempt in (1, 2):
            self.cached_artifact(v, None if from_cache else progress)
            try:
                # a fresh download was verified on its way into the cache; a cache hit is verified now
                self.cache.copy_out(v.sha256, v.size, target, progress if from_cache else None, verify=from_cache)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
                from_cache = False  # the cached copy was damaged and has been dropped: download again
        return LoadResult(v, target, from_cache)

    def cached_artifact(self, version: ModelVersion, progress: Progress | None = None) -> Path:
        """The version's binary in the verified cache, downloaded (and checked) first if need be.

        The file belongs to the cache: read it, never change it.
        """
        base, key = split_object_uri(version.storage_uri)
        return self.cache.fetch(
            lambda: open_storage(base, self.config.storage, self.root), key, version.sha256, version.size, progress
        )

    # -- rollback ---------------------------------------------------------------------------

    def rollback(self, model_name: str, to: str | int | None = None, *, commit: bool = False) -> RollbackResult:
        """Make an older version (the one before the current latest, by default) the latest.

        ``to`` is a version number (`3` or `"v3"`) or a commit prefix. The change is appended to
        the model's history; the target must still be in storage. With ``commit``, the change is
        committed (`.nexus_meta.json` only) before the lock is released.
        """
        author = git.author(self.root)
        with self.metadata.locked():
            with self.metadata.update() as meta:
                record = meta.models.get(model_name)
                if record is None or not record.versions:
                    raise ModelNotFoundError(model_name, sorted(meta.models))
                current = record.current()
                if to is None:
                    older = [v for v in record.versions if v.version < current.version]
                    if not older:
                        raise RollbackError(
                            f"v{current.version} is the oldest version of {model_name!r}; "
                            "there is nothing to roll back to (use --to N to pick a newer one)"
                        )
                    target = older[-1]
                else:
                    number, prefix = parse_version_ref(str(to))
                    if number is None and prefix is None:
                        available = [v.version for v in record.versions]
                        wanted = f"{to!r} (give a version number like 3 or a commit prefix of 7+ hex digits)"
                        raise VersionNotFoundError(model_name, wanted, available)
                    target = resolve(record, number, prefix)
                if target.version == current.version:
                    raise RollbackError(
                        f"v{target.version} is already the latest version of {model_name!r}; nothing to do"
                    )
                storage, key = self._storage_of(target)
                if storage.size(key) is None:
                    raise ObjectMissingError(target.storage_uri)
                promote(record, target, "rollback", author)
            sha = None
            if commit:
                message = f"nexus: roll back {model_name} to v{target.version}"
                sha = git.commit_paths(self.root, [META_FILE], message)
        return RollbackResult(model_name, current.version, target.version, sha)
