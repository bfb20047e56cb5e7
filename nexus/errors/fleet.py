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


class ReleaseAmbiguousError(ReleaseNotFoundError):
    """A prefix of a release id that matches more than one release."""

    def __init__(self, ref: str, root: str, matches: list[str]) -> None:
        self.ref, self.root, self.known = ref, root, matches
        listed = ", ".join(matches[:5])
        message = f"{ref!r} matches {len(matches)} releases under {root} ({listed}); give more of the id"
        ReleaseError.__init__(self, message)


class ReleaseSpecError(ReleaseError, ValueError):
    """A `MODEL[:VERSION]` argument that does not parse, or names a model twice."""

    def __init__(self, text: str, detail: str = "not MODEL or MODEL:VERSION") -> None:
        self.text = text
        super().__init__(f"{text!r} is {detail}; write a model name, optionally with a version: mlp or mlp:3")


class ReleaseRootError(ReleaseError):
    """A releases root that lies inside a release (releases never hold releases)."""

    def __init__(self, root: str, release: str) -> None:
        self.root, self.release = root, release
        super().__init__(
            f"{root} lies inside the release {release}; pass the folder or prefix that holds the releases "
            "(--root, or [release] root in .nexusrc)"
        )


class ReleaseEmptyError(ReleaseError):
    """Nothing to release: no model is stored."""

    def __init__(self) -> None:
        super().__init__("no model is stored yet, so there is nothing to release; store one with `nexus store`")


class ReleaseIntegrityError(ReleaseError):
    """A file of a release is missing, extra, or does not hash to what its manifest says."""

    def __init__(self, uri: str, path: str, detail: str) -> None:
        self.uri, self.path, self.detail = uri, path, detail
        super().__init__(
            f"release {uri} failed verification: {path} {detail}; it was changed outside nexus, so do not deploy "
            "it: make a new one with `nexus release create`"
        )


class ReleaseKeepError(ReleaseError, ValueError):
    def __init__(self, keep: int) -> None:
        self.keep = keep
        super().__init__(f"--keep must be 0 or more, not {keep}; e.g. --keep 5 keeps the five newest releases")


class DeployRecordError(ReleaseError):
    """A `nexus-deploy.json` prune cannot read: which releases are deployed is unknown, so nothing is pruned."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is not a valid nexus-deploy.json ({detail}); fix it or render the deployment again "
            "(`nexus deploy`), then prune again"
        )


class ServerListError(ReleaseError, ValueError):
    """A `--servers` file of `nexus status` that cannot be read, or holds no address or a bad one."""

    def __init__(self, path: str, detail: str) -> None:
        self.path, self.detail = path, detail
        super().__init__(
            f"--servers {path}: {detail}; write one Triton address per line (HOST:PORT or http(s)://HOST:PORT), "
            "`#` starts a comment"
        )


class FleetRepositoryError(ReleaseError, ValueError):
    """`nexus status` given a repository and several servers: a fleet is compared with releases instead."""

    def __init__(self) -> None:
        super().__init__(
            "--repository compares one server with a repository, and a fleet is compared with the releases under "
            "--root; drop --repository, or give one --server"
        )


# --- deployments ----------------------------------------------------------------------------


class DeployError(NexusError):
    """A deployment could not be rendered or written."""


class ManifestInvalidError(DeployError):
    """A rendered Kubernetes object does not validate against its schema."""

    def __init__(self, kind: str, name: str, detail: str) -> None:
        self.kind, self.name, self.detail = kind, name, detail
        super().__init__(f"rendered {kind} {name!r} is not valid: {detail} (a bug in nexus: please report it)")
