"""Immutable releases: complete Triton repositories under never-modified prefixes of a releases root.

:mod:`.manifest` (`nexus-release.json`, written last), :mod:`.create` (:func:`create_release`),
:mod:`.listing` (:func:`list_releases`, :func:`find_release`, :func:`verify_release`), :mod:`.prune`
(:func:`prune_releases`, which keeps the newest and every deployed one), :mod:`.fleet` (:func:`fleet_status`:
which release each of several Triton servers serves, found by content, and drift).
"""

from nexus.release.create import CreateResult, create_release, parse_model_ref
from nexus.release.fleet import FleetStatus, ServerStatus, fleet_status, read_server_list
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
    "FleetStatus",
    "IncompleteRelease",
    "Kept",
    "PruneResult",
    "Release",
    "ReleaseFile",
    "ReleasedModel",
    "Releases",
    "ServerStatus",
    "Verified",
    "create_release",
    "deployed_releases",
    "find_release",
    "fleet_status",
    "list_releases",
    "open_root",
    "parse_model_ref",
    "prune_releases",
    "read_server_list",
    "verify_release",
]
