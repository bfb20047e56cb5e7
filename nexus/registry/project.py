"""The control plane's library API: store, load, list and roll back git-pinned model versions.

The CLI is a thin layer over :class:`Project`; a Python user can do everything through it::

    from nexus import Project

    project = Project.open()                       # the git repository around the current folder
    result = project.store("model.pt", "prod_model")
    print(result.version.version, result.version.storage_uri)
    path = project.load("prod_model", output="model.pt").path
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from nexus.atomic import atomic_write_text, disk_full_as_error
from nexus.errors import (
    AmbiguousVersionError,
    ArtifactNotFoundError,
    DirtyTreeError,
    IntegrityError,
    ModelNotFoundError,
    ObjectConflictError,
    ObjectMissingError,
    OutputExistsError,
    RollbackError,
    VersionNotFoundError,
)
from nexus.hashing import Digest, Progress, hash_file
from nexus.names import validate_model_name
from nexus.registry import git
from nexus.registry.cache import ObjectCache
from nexus.registry.formats import inspect_artifact
from nexus.registry.metadata import (
    EXTENSIONS,
    META_FILE,
    HistoryEvent,
    Metadata,
    MetadataFile,
    ModelRecord,
    ModelVersion,
    Signature,
    utc_now,
)
from nexus.settings import NexusConfig, PublishSettings, StorageSettings, load_config, write_config
from nexus.storage import KeyExistsError, Storage, open_storage, parse_storage_uri, split_object_uri

_COMMIT_PREFIX = re.compile(r"^[0-9a-f]{4,40}$")


@dataclass(frozen=True)
class StoreResult:
    version: ModelVersion
    #: "stored" (uploaded and recorded), "recorded" (the object was already in storage with the same
    #: bytes, now recorded) or "unchanged" (already stored and recorded: nothing to do).
    action: str
    #: The commit that recorded the metadata, with ``commit=True``.
    metadata_commit: str | None = None


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
    path: Path | None = None, storage: StorageSettings | None = None, publish: PublishSettings | None = None
) -> Path:
    """Write `.nexusrc` at the root of the git repository holding ``path``; return its path."""
    root = git.find_root(path)
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
        progress: Progress | None = None,
    ) -> StoreResult:
        """Upload ``path`` as a new version of ``model_name``, pinned to HEAD, and record it.

        The tree must be clean (apart from `.nexus_meta.json`) unless ``allow_dirty``. The object
        goes to `<storage>/<model_name>/<commit>.<ext>` and is never overwritten; the metadata is
        updated only after the upload is verified. A ``signature`` (inputs and outputs, for formats
        that carry none, like TorchScript) is checked by one forward pass before anything is uploaded.
        """
        validate_model_name(model_name)
        path = Path(path)
        if not path.is_file():
            raise ArtifactNotFoundError(path)
        info = inspect_artifact(path)
        if signature is not None:
            from nexus.registry.signature import check_signature

            check_signature(path, info.format, signature, batched=True)
            info = replace(info, signature=signature)
        with self.metadata.locked():  # `git status` may take git's index lock: see MetadataFile.locked
            dirty = git.dirty_files(self.root, ignore=[META_FILE])
        if dirty and not allow_dirty:
            raise DirtyTreeError(dirty)
        commit_hash = git.head_commit(self.root)
        storage = self.storage()
        duplicate = self._same_bytes_stored(model_name, path, storage)
        if duplicate is not None:
            return StoreResult(duplicate, "unchanged")
        self._keep_private_dir_untracked()
        key = f"{model_name}/{commit_hash}.{info.extension}"
        uri = storage.uri(key)

        action = "stored"
        if storage.size(key) is not None:
            digest, action = self._existing(storage, key, path, progress)
        else:
            try:
                digest = storage.put_file(key, path, progress)
            except KeyExistsError:  # another writer got there between the check and the upload
                digest, action = self._existing(storage, key, path, progress)

        with self.metadata.locked():  # held through the commit, so that it commits this very update
            with self.metadata.update() as meta:
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
                        author=git.author(self.root),
                        dirty=bool(dirty),
                        signature=info.signature,
                    )
                    _promote(record, version, "store", version.author)
                    result = StoreResult(version, action)
            if commit and result.action != "unchanged":
                v = result.version
                message = f"nexus: store {model_name} v{v.version} ({v.short_commit})"
                return StoreResult(v, result.action, git.commit_paths(self.root, [META_FILE], message))
        return result

    def _same_bytes_stored(self, model_name: str, path: Path, storage: Storage) -> ModelVersion | None:
        """A version of the model in this store with exactly these bytes, whatever its commit.

        Storing it again would only add a duplicate (for example after `--commit` moved HEAD). A copy
        in another store does not count: after a move to a new store, a store puts the bytes there.
        The file is hashed first only when such a version has the same size.
        """
        record = self.metadata.read().models.get(model_name)
        size = path.stat().st_size
        prefix = storage.uri("")
        here = [v for v in (record.versions if record else []) if v.storage_uri.startswith(prefix) and v.size == size]
        if not here:
            return None
        digest = hash_file(path)
        return next((v for v in reversed(here) if v.sha256 == digest.sha256), None)

    def _keep_private_dir_untracked(self) -> None:
        """`.nexus/` holds the default local store and other per-machine state: keep it out of git."""
        private = self.root / ".nexus"
        ignore = private / ".gitignore"
        with disk_full_as_error(private):
            private.mkdir(exist_ok=True)
            if not ignore.exists():
                atomic_write_text(ignore, "# Written by nexus: per-machine state, never committed.\n*\n")

    def _existing(self, storage: Storage, key: str, path: Path, progress: Progress | None) -> tuple[Digest, str]:
        """The key is taken: same bytes -> fine; different bytes -> refuse. Nothing is uploaded."""
        local = hash_file(path, progress)
        uri = storage.uri(key)
        recorded = next(
            (v for rec in self.metadata.read().models.values() for v in rec.versions if v.storage_uri == uri), None
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
        record = self.model(model_name)
        return _resolve(record, version, commit)

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
                    target = _resolve(record, number, prefix)
                if target.version == current.version:
                    raise RollbackError(
                        f"v{target.version} is already the latest version of {model_name!r}; nothing to do"
                    )
                storage, key = self._storage_of(target)
                if storage.size(key) is None:
                    raise ObjectMissingError(target.storage_uri)
                _promote(record, target, "rollback", author)
            sha = None
            if commit:
                message = f"nexus: roll back {model_name} to v{target.version}"
                sha = git.commit_paths(self.root, [META_FILE], message)
        return RollbackResult(model_name, current.version, target.version, sha)


def parse_version_ref(ref: str) -> tuple[int | None, str | None]:
    """`"3"`/`"v3"` -> (3, None); a hex string of 7+ digits -> (None, prefix); else (None, None)."""
    text = ref.strip().lower()
    digits = text.removeprefix("v")
    if digits.isdigit() and (text.startswith("v") or len(digits) < 7):
        return int(digits), None
    if len(text) >= 7 and _COMMIT_PREFIX.match(text):
        return None, text
    return None, None


def _resolve(record: ModelRecord, version: int | None, commit: str | None) -> ModelVersion:
    available = [v.version for v in record.versions]
    if version is not None:
        found = record.get(version)
        if found is None:
            raise VersionNotFoundError(record.name, str(version), available)
        return found
    if commit is not None:
        prefix = commit.lower()
        if not _COMMIT_PREFIX.match(prefix):
            raise VersionNotFoundError(record.name, f"for commit {commit!r} (give 4-40 hex digits)", available)
        matches = [v for v in record.versions if v.commit_hash.startswith(prefix)]
        if not matches:
            raise VersionNotFoundError(record.name, f"at commit {commit}", available)
        if len(matches) > 1:
            raise AmbiguousVersionError(record.name, commit, [v.version for v in matches])
        return matches[0]
    return record.current()


def _promote(record: ModelRecord, version: ModelVersion, action: str, author: str) -> None:
    previous = record.latest
    if record.get(version.version) is None:
        record.versions.append(version)
    record.set_latest(version.version)
    record.history.append(
        HistoryEvent(
            action=action,
            at=utc_now(),
            by=author,
            from_version=previous.version if previous else None,
            to_version=version.version,
        )
    )


class _NullWriter:
    """A sink for downloads that only need hashing."""

    def write(self, data: bytes) -> int:
        return len(data)
