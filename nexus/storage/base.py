"""The storage contract every backend (local folder, S3, GCS) fulfils.

Keys are `/`-separated paths below the backend's root (`<prefix>/` for buckets). Writes are
create-only: a key that exists is never replaced, so a stored version can never change under the
metadata that records it. Every transfer is hashed while it streams.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from nexus.hashing import Digest, Progress, Writable


class Storage(ABC):
    """One storage root: a local folder, or a bucket and key prefix.

    Args:
        base_uri: how the root is written in settings and recorded in metadata, without a trailing `/`.
    """

    #: URI scheme handled by the backend.
    scheme: str = ""

    def __init__(self, base_uri: str) -> None:
        self.base_uri = base_uri.rstrip("/")

    def uri(self, key: str) -> str:
        """The full URI of ``key``, as recorded in `.nexus_meta.json`."""
        return f"{self.base_uri}/{key}"

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when there is no such object."""

    @abstractmethod
    def put_file(self, key: str, path: Path, progress: Progress | None = None, *, overwrite: bool = False) -> Digest:
        """Upload ``path`` to ``key`` if no object is there yet; return the digest of the bytes sent.

        Args:
            overwrite: replace an existing object instead (model repositories only: stored
                versions are always written create-only).

        Raises:
            KeyExistsError: the key is taken (checked atomically by the server where it can).
        """

    @abstractmethod
    def download(self, key: str, out: Writable, progress: Progress | None = None) -> Digest:
        """Stream the object at ``key`` into ``out``; return the digest of the bytes received.

        Raises:
            ObjectMissingError: there is no object at ``key``.
        """

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]:
        """Every key below the root that starts with ``prefix``, relative to the root, sorted (recursive).

        ``prefix`` is a plain string prefix: `"2026"` matches `20261202-.../x`; give `"ID/"` for one folder.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object at ``key``; a key with no object is not an error."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_uri!r})"
