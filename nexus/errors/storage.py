"""Errors of storage and local files: buckets, credentials, endpoints, objects, integrity, a full disk."""

from __future__ import annotations

from pathlib import Path

from nexus.errors.base import NexusError

# --- storage --------------------------------------------------------------------------------


class StorageError(NexusError):
    """A storage backend failed."""


class KeyExistsError(StorageError, FileExistsError):
    """Internal: a create-only write found the key taken (the caller decides what that means)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"{uri} already exists")


class DiskFullError(StorageError, OSError):
    """A local write ran out of space (or quota): the user can make room, so it is no bug.

    Raised once the half-written file is gone, so the free space reported is what there really is.
    """

    def __init__(
        self, path: Path, needed: int | None = None, elsewhere: str | None = None, *, quota: bool = False
    ) -> None:
        import contextlib
        import errno
        import shutil

        self.path = path
        self.needed = needed
        self.elsewhere = elsewhere
        self.quota = quota
        sizes = [f"{_size(needed)} needed"] if needed is not None else []
        if not quota:  # the filesystem's free space says nothing about a quota
            folder = next((p for p in (path, *path.parents) if p.exists()), path)
            with contextlib.suppress(OSError):
                sizes.append(f"{_size(shutil.disk_usage(folder).free)} free there")
        why = "your disk quota is used up" if quota else "the device is full"
        detail = f"{why}, {', '.join(sizes)}" if sizes else why
        fix = f"free some space there or {elsewhere}" if elsewhere else "free some space there"
        super().__init__(f"no space left to write {path} ({detail}); {fix}, then run the command again")
        self.errno = errno.EDQUOT if quota else errno.ENOSPC


def _size(n: int) -> str:
    """`1536` -> `1.5 KiB` (the CLI's sizes; errors may not import the CLI)."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):  # noqa: B007 - the last unit is kept
        if value < 1024:
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"


class BucketNotFoundError(StorageError, LookupError):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"bucket for {uri} does not exist; create it or fix `storage.uri` in .nexusrc / NEXUS_STORAGE")


class StorageCredentialsError(StorageError, PermissionError):
    def __init__(self, uri: str, detail: str) -> None:
        self.uri = uri
        super().__init__(
            f"no usable credentials for {uri} ({detail}); set them in the environment or the SDK's standard "
            "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS)"
        )


class EndpointUnreachableError(StorageError, ConnectionError):
    def __init__(self, endpoint: str, detail: str) -> None:
        self.endpoint = endpoint
        super().__init__(
            f"cannot reach storage endpoint {endpoint} ({detail}); check that the server is up and "
            "`storage.endpoint_url` in .nexusrc / NEXUS_ENDPOINT_URL"
        )


class ObjectMissingError(StorageError, LookupError):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(f"{uri} is missing from storage; it was deleted outside NexusML, store the version again")


class ObjectConflictError(StorageError, FileExistsError):
    """The storage key is taken by different bytes: stored versions are never overwritten."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        super().__init__(
            f"{uri} already holds different bytes for this commit and stored versions are never overwritten; "
            "commit your changes (a new commit gives a new version) and store again"
        )


class IntegrityError(StorageError):
    """Bytes read back do not hash to what was recorded."""

    def __init__(self, uri: str, expected: str, actual: str, expected_size: int, actual_size: int) -> None:
        self.uri = uri
        self.expected = expected
        self.actual = actual
        what = (
            f"size {actual_size} != recorded {expected_size}"
            if expected_size != actual_size
            else f"sha256 {actual[:12]}… != recorded {expected[:12]}…"
        )
        super().__init__(
            f"{uri} failed verification ({what}); the stored object is corrupt or was replaced outside "
            "NexusML, nothing was written; store the version again from a good copy"
        )


class OutputExistsError(NexusError, FileExistsError):
    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} already exists with different content; choose another -o PATH or pass --force")
