"""`nexus release prune`: delete old releases, never one a deployment uses, and the incomplete ones.

Kept: the newest ``keep`` complete releases, and every release a deployment folder names: its
`nexus-deploy.json` (:data:`DEPLOY_RECORD`), tracked in the project's git tree or not. A release is
deleted manifest first, so that from the first deletion on it reads as incomplete, never as a
complete release with files missing; then its other files. Incomplete folders (no manifest) are
deleted whole. A folder whose manifest does not parse is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nexus.errors import DeployRecordError, ReleaseKeepError
from nexus.registry import Project, git
from nexus.release.listing import IncompleteRelease, list_releases, open_root
from nexus.release.manifest import MANIFEST, Release

#: The record `nexus deploy` writes into each deployment folder.
DEPLOY_RECORD = "nexus-deploy.json"


@dataclass(frozen=True)
class Kept:
    release: Release
    #: Why: "newest 3", "deployed by deploy/prod/nexus-deploy.json", both joined with "; ".
    reason: str


@dataclass(frozen=True)
class PruneResult:
    root: str
    dry_run: bool
    kept: list[Kept] = field(default_factory=list)
    #: Releases deleted (with ``dry_run``: that would be).
    deleted: list[Release] = field(default_factory=list)
    #: Incomplete folders deleted (or that would be).
    incomplete: list[IncompleteRelease] = field(default_factory=list)
    #: Folders with a manifest that does not parse: left alone.
    unreadable: list[IncompleteRelease] = field(default_factory=list)
    #: Objects deleted (or that would be).
    objects: int = 0


def deployed_releases(project: Project) -> dict[str, list[str]]:
    """Release id -> the `nexus-deploy.json` files (relative to the project root) that name it.

    Raises:
        DeployRecordError: a record that cannot be read, or names no release.
    """
    found: dict[str, list[str]] = {}
    for name in git.ls_files(project.root, f"*{DEPLOY_RECORD}"):
        path = project.root / name
        if Path(name).name != DEPLOY_RECORD or not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DeployRecordError(name, f"cannot read it: {e}") from None
        release = data.get("release") if isinstance(data, dict) else None
        if not isinstance(release, str) or not release:
            raise DeployRecordError(name, 'no "release" id in it')
        found.setdefault(release, []).append(name)
    return found


def prune_releases(project: Project, root: str | None = None, *, keep: int, dry_run: bool = False) -> PruneResult:
    """Delete every complete release but the newest ``keep`` and the deployed ones, and every incomplete one.

    Raises:
        ReleaseKeepError: ``keep`` is negative.
        DeployRecordError: a `nexus-deploy.json` that cannot be read (then nothing is deleted).
    """
    if keep < 0:
        raise ReleaseKeepError(keep)
    deployed = deployed_releases(project)
    releases = list_releases(project, root)
    newest = {r.id for r in releases.complete[len(releases.complete) - keep :]} if keep else set()
    result = PruneResult(releases.root, dry_run)
    for release in releases.complete:
        reasons = [f"newest {keep}"] if release.id in newest else []
        reasons += [f"deployed by {record}" for record in deployed.get(release.id, [])]
        if reasons:
            result.kept.append(Kept(release, "; ".join(reasons)))
        else:
            result.deleted.append(release)
    for folder in releases.incomplete:
        (result.unreadable if folder.unreadable else result.incomplete).append(folder)
    storage = open_root(project, releases.root).storage
    objects = 0
    for release in result.deleted:
        manifest = f"{release.id}/{MANIFEST}"
        keys = [manifest, *(k for k in storage.list_keys(f"{release.id}/") if k != manifest)]
        objects += len(keys)
        if not dry_run:
            for key in keys:  # the manifest first: from here on the release reads as incomplete
                storage.delete(key)
    for folder in result.incomplete:
        objects += len(folder.keys)
        if not dry_run:
            for key in folder.keys:
                storage.delete(key)
    return PruneResult(result.root, dry_run, result.kept, result.deleted, result.incomplete, result.unreadable, objects)
