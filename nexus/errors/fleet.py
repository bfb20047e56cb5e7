"""Errors of releases and deployments: immutable release prefixes, their manifests, rendered manifests."""

from __future__ import annotations

from nexus.errors.base import NexusError

# --- releases -------------------------------------------------------------------------------


class ReleaseError(NexusError):
    """A release could not be made, read, listed or pruned."""


class ReleaseNotFoundError(ReleaseError, LookupError):
    def __init__(self, ref: str, root: str, known: list[str]) -> None:
        self.ref, self.root, self.known = ref, root, known
        hint = f"known: {', '.join(known[-5:])}" if known else "make one with `nexus release create`"
        super().__init__(f"no release {ref!r} under {root} ({hint})")


class ReleaseManifestError(ReleaseError):
    """A release's `nexus-release.json` is not valid."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        super().__init__(f"{where} is not a valid release manifest ({detail}); recreate the release")


class ReleaseImmutableError(ReleaseError):
    """Something would rewrite a file under a published release."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(
            f"{uri} is a published release, and releases are never rewritten; "
            "make a new one with `nexus release create`"
        )


# --- deployments ----------------------------------------------------------------------------


class DeployError(NexusError):
    """A deployment could not be rendered or written."""


class ManifestInvalidError(DeployError):
    """A rendered Kubernetes object does not validate against its schema."""

    def __init__(self, kind: str, name: str, detail: str) -> None:
        self.kind, self.name, self.detail = kind, name, detail
        super().__init__(f"rendered {kind} {name!r} is not valid: {detail} (a bug in nexus: please report it)")
