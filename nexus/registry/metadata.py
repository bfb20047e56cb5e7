"""`.nexus_meta.json`: the git-tracked record of every stored model version and of every promotion.

Layout::

    {
      "schema_version": 1,
      "models": {
        "prod_model": {
          "versions": [                      # ordered by "version", 1, 2, 3, ...
            {"model_name": "prod_model", "version": 1, "commit_hash": "<40 hex>",
             "storage_uri": "s3://bucket/prefix/prod_model/<commit>.pt", "is_latest": false,
             "sha256": "<64 hex>", "size": 1234, "format": "torchscript",
             "created_at": "2026-11-26T08:00:00Z", "author": "Ada <ada@example.com>",
             "dirty": false, "signature": null},
            ...
          ],
          "history": [                       # which version was latest, from when (time order)
            {"action": "store", "at": "...", "by": "...", "from_version": null, "to_version": 1},
            {"action": "rollback", "at": "...", "by": "...", "from_version": 2, "to_version": 1},
            {"action": "renumber", ..., "from_version": 2, "to_version": 3},  # a merge moved v2 to v3
            {"action": "merge", ..., "from_version": 1, "to_version": 3}      # latest before, after it
          ]
        }
      }
    }

Exactly one version per model has ``is_latest``. A branch merge (:mod:`nexus.registry.merge`) may
give a version another number; the renumber entry keeps the old one, and commit and sha256 say which
artifact each number means. Updates happen under a lock (in the repository's
`.git` folder, so it never shows in `git status`) and replace the file atomically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from nexus.atomic import atomic_write_text
from nexus.errors import ConfigError, CorruptMetadataError, LockTimeoutError, MergeConflictError, MetadataError
from nexus.names import is_model_name
from nexus.tensors import Signature, TensorSpec

META_FILE = ".nexus_meta.json"
SCHEMA_VERSION = 1
LOCK_TIMEOUT_S = 120.0


def utc_now() -> str:
    """The current time as ISO 8601 UTC with a `Z`, to the microsecond (history stays ordered)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse a time written by :func:`utc_now`, or any ISO 8601 time (naive means UTC)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_time_option(option: str, text: str) -> datetime:
    """A time a user typed (``option`` names where), as UTC; an unreadable one is a :class:`ConfigError`."""
    try:
        return parse_time(text).astimezone(UTC)
    except ValueError:
        raise ConfigError(option, f"{text!r} is not an ISO 8601 time", "write e.g. 2026-11-26T08:00:00Z") from None


@dataclass
class ModelVersion:
    """One stored binary, pinned to the commit that produced it."""

    model_name: str
    version: int
    commit_hash: str
    storage_uri: str
    is_latest: bool
    sha256: str
    size: int
    format: str
    created_at: str
    author: str
    dirty: bool = False
    signature: Signature | None = None

    @property
    def short_commit(self) -> str:
        return self.commit_hash[:8]


@dataclass(frozen=True)
class HistoryEvent:
    """A change of which version is latest: a store or a rollback."""

    action: str
    at: str
    by: str
    from_version: int | None
    to_version: int


@dataclass
class ModelRecord:
    name: str
    versions: list[ModelVersion] = field(default_factory=list)
    history: list[HistoryEvent] = field(default_factory=list)

    @property
    def latest(self) -> ModelVersion | None:
        return next((v for v in self.versions if v.is_latest), None)

    def current(self) -> ModelVersion:
        """The latest version; a record read from disk always has exactly one."""
        latest = self.latest
        if latest is None:
            raise MetadataError(f"model {self.name!r} has no version marked latest; fix .nexus_meta.json")
        return latest

    def get(self, version: int) -> ModelVersion | None:
        return next((v for v in self.versions if v.version == version), None)

    def next_version(self) -> int:
        return max((v.version for v in self.versions), default=0) + 1

    def set_latest(self, version: int) -> None:
        for v in self.versions:
            v.is_latest = v.version == version

    def latest_at(self, when: datetime) -> int | None:
        """The version that was latest at ``when``, from the history (None before the first store)."""
        current = None
        for event in self.history:
            if parse_time(event.at) > when:
                break
            if event.action != "renumber":  # a merge's note that a version's number changed, not a promotion
                current = event.to_version
        return current


@dataclass
class Metadata:
    models: dict[str, ModelRecord] = field(default_factory=dict)

    def model(self, name: str) -> ModelRecord:
        """The record for ``name``, created empty if there is none."""
        return self.models.setdefault(name, ModelRecord(name=name))

    def to_json(self) -> str:
        data = {
            "schema_version": SCHEMA_VERSION,
            "models": {
                name: {
                    "versions": [asdict(v) for v in rec.versions],
                    "history": [asdict(e) for e in rec.history],
                }
                for name, rec in sorted(self.models.items())
                if rec.versions
            },
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path) -> Metadata:
        if (marker := _CONFLICT_MARKER.search(text)) is not None:  # before JSON: its error would mislead
            raise MergeConflictError(path, text.count("\n", 0, marker.start()) + 1)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorruptMetadataError(path, f"invalid JSON at line {e.lineno}") from e
        try:
            return _parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CorruptMetadataError(path, _describe(e)) from e


#: A line git writes into a conflicted file: `<<<<<<< ours`, `|||||||` (diff3), `=======`, `>>>>>>> theirs`.
#: No line of the JSON NexusML writes starts with one of them (each is indented, or a brace).
_CONFLICT_MARKER = re.compile(r"^(?:<{7}|\|{7}|={7}|>{7})(?:[ \t\r]|$)", re.MULTILINE)


def _describe(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"missing field {e.args[0]!r}"
    return str(e) or type(e).__name__


#: Artifact formats and the extensions their objects are stored under.
EXTENSIONS = {"torchscript": "pt", "torch_export": "pt2", "onnx": "onnx"}
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _parse(data: Any) -> Metadata:
    _require(isinstance(data, dict), "top level must be an object")
    schema = data.get("schema_version")
    _require(schema == SCHEMA_VERSION, f"schema_version {schema!r} is not {SCHEMA_VERSION}; upgrade nexus")
    models: dict[str, ModelRecord] = {}
    for name, raw in dict(data["models"]).items():
        # names, commits and formats become paths and keys: a hand-edited file must not point elsewhere
        _require(isinstance(name, str) and is_model_name(name), f"model name {name!r} is not a valid model name")
        versions = [_parse_version(v) for v in raw["versions"]]
        history = [HistoryEvent(**e) for e in raw["history"]]
        numbers = [v.version for v in versions]
        _require(numbers == sorted(set(numbers)), f"model {name!r}: versions are not unique and ordered")
        _require(all(v.model_name == name for v in versions), f"model {name!r}: a version names another model")
        latest = [v.version for v in versions if v.is_latest]
        _require(len(latest) == 1, f"model {name!r}: {len(latest)} versions are marked latest, expected 1")
        models[name] = ModelRecord(name=name, versions=versions, history=history)
    return Metadata(models=models)


def _parse_version(raw: dict[str, Any]) -> ModelVersion:
    raw = dict(raw)
    sig = raw.pop("signature", None)
    signature = None
    if sig is not None:
        signature = Signature(
            inputs=[TensorSpec(**t) for t in sig["inputs"]], outputs=[TensorSpec(**t) for t in sig["outputs"]]
        )
    version = ModelVersion(**raw, signature=signature)
    _require(isinstance(version.version, int) and version.version > 0, "a version number is not a positive integer")
    _require(isinstance(version.sha256, str) and len(version.sha256) == 64, f"version {version.version}: bad sha256")
    _require(isinstance(version.size, int) and version.size >= 0, f"version {version.version}: bad size")
    _require(
        isinstance(version.commit_hash, str) and bool(_COMMIT.match(version.commit_hash)),
        f"version {version.version}: commit_hash {version.commit_hash!r} is not a full git commit hash",
    )
    _require(version.format in EXTENSIONS, f"version {version.version}: unknown format {version.format!r}")
    key = f"/{version.model_name}/{version.commit_hash}.{EXTENSIONS[version.format]}"
    _require(
        isinstance(version.storage_uri, str) and version.storage_uri.endswith(key),
        f"version {version.version}: storage_uri does not end with {key}",
    )
    return version


class MetadataFile:
    """`.nexus_meta.json` in one work tree, with a lock for read-modify-write updates."""

    def __init__(self, root: Path, lock_dir: Path) -> None:
        self.path = root / META_FILE
        self._lock = filelock.FileLock(str(lock_dir / "nexus-meta.lock"))

    def read(self) -> Metadata:
        """The current metadata (empty when the file does not exist yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Metadata()
        except UnicodeDecodeError as e:
            raise CorruptMetadataError(self.path, "not UTF-8 text") from e
        try:
            return Metadata.from_json(text, self.path)
        except MergeConflictError as e:
            from nexus.registry.merge_driver import missing_hint  # it imports this module

            hint = missing_hint(self.path.parent)
            if hint is None:
                raise
            raise MergeConflictError(e.path, e.line, hint) from None

    @contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the work tree's lock (re-entrant within a thread).

        NexusML processes sharing a work tree take turns on it for every metadata update, and for
        the git commands that take git's index lock (`status`, `add`, `commit`): two at once make
        the second fail with "index.lock exists".
        """
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout as e:
            raise LockTimeoutError(Path(self._lock.lock_file), timeout) from e
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def update(self, timeout: float = LOCK_TIMEOUT_S) -> Iterator[Metadata]:
        """Lock, read, let the caller change the metadata, then write it atomically.

        Nothing is written if the block raises.
        """
        with self.locked(timeout):
            meta = self.read()
            yield meta
            atomic_write_text(self.path, meta.to_json())
