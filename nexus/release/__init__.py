"""Immutable releases: complete Triton repositories under never-modified prefixes (:mod:`.manifest`)."""

from nexus.release.manifest import MANIFEST, Release, ReleasedModel, ReleaseFile

__all__ = ["MANIFEST", "Release", "ReleaseFile", "ReleasedModel"]
