"""Reading a releases root: which releases it holds (:func:`list_releases`), one by reference
(:func:`find_release`), and whether one still holds exactly what its manifest says (:func:`verify_release`).

Only top-level folders named like a release id (:data:`ID_PATTERN`) count; anything else under the
root is left alone, by listing and by pruning. A folder with no manifest is an incomplete release: a
create that failed or was cut off midway, which `nexus release prune` removes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from nexus.errors import (
    ObjectMissingError,
    ReleaseAmbiguousError,
    ReleaseIntegrityError,
    ReleaseManifestError,
    ReleaseNotFoundError,
)
from nexus.registry import Project
from nexus.release.manifest import MANIFEST, Release
from nexus.storage import Storage, open_storage, parse_storage_uri

#: `20261202-101500-3f9a1c2e`: what :func:`nexus.release.manifest.release_id` makes.
ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class ReleaseRoot:
    """A resolved releases root: how it is written (absolute for a folder), and its storage."""

    uri: str
    storage: Storage


@dataclass(frozen=True)
class IncompleteRelease:
    """A release folder without its manifest (a create that did not finish), or with one that does not parse."""

    id: str
    #: Every key under the folder, relative to the root (`ID/mlp/config.pbtxt`).
    keys: tuple[str, ...]
    #: Why it is listed here: "no manifest", or the manifest's error.
    reason: str

    @property
    def unreadable(self) -> bool:
        """It has a manifest that does not parse (perhaps a newer nexus's): never pruned."""
        return self.reason != "no manifest"


@dataclass(frozen=True)
class Releases:
    root: str
    #: Complete releases, oldest first.
    complete: list[Release] = field(default_factory=list)
    incomplete: list[IncompleteRelease] = field(default_factory=list)

    @property
    def latest(self) -> Release | None:
        return self.complete[-1] if self.complete else None


@dataclass(frozen=True)
class Verified:
    release: Release
    files: int
    bytes: int


def open_root(project: Project, root: str | None = None) -> ReleaseRoot:
    """The releases root given, else `[release] root` in `.nexusrc` (default: the folder `releases`)."""
    target = root if root is not None else project.config.release.root
    location = parse_storage_uri(target)
    if location.scheme == "file":
        folder = Path(location.bucket).expanduser()
        target = str(folder if folder.is_absolute() else project.root / folder)
    target = target.rstrip("/") or target
    return ReleaseRoot(target, open_storage(target, project.config.storage, project.root))


def list_releases(project: Project, root: str | None = None) -> Releases:
    """Every release under the root: complete ones sorted by creation time, and incomplete folders."""
    where = open_root(project, root)
    groups: dict[str, list[str]] = {}
    for key in where.storage.list_keys():
        top, sep, _ = key.partition("/")
        if sep and ID_PATTERN.match(top):
            groups.setdefault(top, []).append(key)
    result = Releases(where.uri)
    for rid, keys in sorted(groups.items()):
        if f"{rid}/{MANIFEST}" not in keys:
            result.incomplete.append(IncompleteRelease(rid, tuple(keys), "no manifest"))
            continue
        try:
            release = read_manifest(where, rid)
        except ReleaseManifestError as e:
            result.incomplete.append(IncompleteRelease(rid, tuple(keys), str(e)))
            continue
        result.complete.append(release)
    result.complete.sort(key=lambda r: (r.created, r.id))
    return result


def read_manifest(where: ReleaseRoot, rid: str) -> Release:
    """The release ``rid`` under ``where``, as its manifest says, with the root it was found under."""
    key = f"{rid}/{MANIFEST}"
    buffer = io.BytesIO()
    where.storage.download(key, buffer)
    try:
        text = buffer.getvalue().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ReleaseManifestError(where.storage.uri(key), f"not UTF-8: {e}") from None
    release = Release.from_json(text, where.storage.uri(key))
    if release.id != rid:
        raise ReleaseManifestError(where.storage.uri(key), f"it names release {release.id}")
    return replace(release, root=where.uri)  # where it is now, should the root have been copied or moved


def find_release(project: Project, ref: str, root: str | None = None) -> Release:
    """A complete release by id, unique prefix of an id, or `latest`.

    Raises:
        ReleaseNotFoundError: no complete release matches (:class:`ReleaseAmbiguousError`: several do).
    """
    releases = list_releases(project, root)
    ids = [r.id for r in releases.complete]
    if ref == "latest" and releases.latest is not None:
        return releases.latest
    exact = [r for r in releases.complete if r.id == ref]
    matches = exact or [r for r in releases.complete if ref and r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ReleaseAmbiguousError(ref, releases.root, [r.id for r in matches])
    raise ReleaseNotFoundError(ref, releases.root, ids)


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)


def verify_release(project: Project, release: Release) -> Verified:
    """Download every file of ``release`` and check its sha256 and size against the manifest; also check
    that the release's folder holds nothing else.

    Raises:
        ReleaseIntegrityError: naming the first file that is missing, extra or different.
    """
    storage = open_storage(release.root, project.config.storage, project.root)
    listed = {f.path for f in release.files}
    present = {key.removeprefix(f"{release.id}/") for key in storage.list_keys(f"{release.id}/")}
    extra = sorted(present - listed - {MANIFEST})
    if extra:
        raise ReleaseIntegrityError(release.uri, extra[0], "is not in the manifest")
    total = 0
    for f in release.files:
        try:
            digest = storage.download(f"{release.id}/{f.path}", _Discard())
        except ObjectMissingError:
            raise ReleaseIntegrityError(release.uri, f.path, "is missing") from None
        if digest.size != f.size:
            raise ReleaseIntegrityError(release.uri, f.path, f"has {digest.size} bytes, the manifest says {f.size}")
        if digest.sha256 != f.sha256:
            raise ReleaseIntegrityError(
                release.uri, f.path, f"has sha256 {digest.sha256[:12]}…, the manifest says {f.sha256[:12]}…"
            )
        total += digest.size
    return Verified(release, len(release.files), total)
