"""Immutable releases: complete Triton repositories under never-modified prefixes of a releases root.

:mod:`.manifest` (`nexus-release.json`, written last), :mod:`.create` (:func:`create_release`),
:mod:`.listing` (:func:`list_releases`, :func:`find_release`, :func:`verify_release`), :mod:`.prune`
(:func:`prune_releases`, which keeps the newest and every deployed one).
"""

from nexus.release.create import CreateResult, create_release, parse_model_ref
from nexus.release.listing import (
    IncompleteRelease,
    Releases,
    Verified,
    find_release,
    list_releases,
    open_root,
    verify_release,
)
from nexus.release.manifest import MANIFEST, Release, ReleasedModel, ReleaseFile
from nexus.release.prune import DEPLOY_RECORD, Kept, PruneResult, deployed_releases, prune_releases

__all__ = [
    "DEPLOY_RECORD",
    "MANIFEST",
    "CreateResult",
    "IncompleteRelease",
    "Kept",
    "PruneResult",
    "Release",
    "ReleaseFile",
    "ReleasedModel",
    "Releases",
    "Verified",
    "create_release",
    "deployed_releases",
    "find_release",
    "list_releases",
    "open_root",
    "parse_model_ref",
    "prune_releases",
    "verify_release",
]
