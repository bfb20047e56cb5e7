"""The verified local cache of downloaded model binaries, keyed by content.

Layout (default root `~/.cache/nexus`, or `$NEXUS_CACHE_DIR`, or `$XDG_CACHE_HOME/nexus`)::

    objects/
      3f/
        a9c1...e2          # the full sha256 minus its first two hex digits
      .tmp-...             # never: downloads go to hidden temp files next to their final name

A download lands in a temporary file, is checked against the recorded sha256 and size, and only
then renamed into place, so an interrupted or corrupt download never poisons the cache. Every read
out of the cache is hashed again while it is copied, so a cache entry damaged on disk is detected,
dropped and downloaded anew.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from nexus.atomic import temporary_sibling
from nexus.errors import IntegrityError, StorageError
from nexus.hashing import Digest, Progress, SourceChangedError, copy_file_and_hash, kernel_copy
from nexus.storage import Storage


def default_cache_dir() -> Path:
    if env := os.environ.get("NEXUS_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nexus"


def _verify(uri: str, expected_sha: str, expected_size: int, got: Digest) -> None:
    if got.sha256 != expected_sha or got.size != expected_size:
        raise IntegrityError(uri, expected_sha, got.sha256, expected_size, got.size)


class ObjectCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_cache_dir()

    def path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def has(self, sha256: str, size: int) -> bool:
        try:
            return self.path(sha256).stat().st_size == size
        except FileNotFoundError:
            return False

    def fetch(
        self,
        storage: Storage | Callable[[], Storage],
        key: str,
        sha256: str,
        size: int,
        progress: Progress | None = None,
    ) -> Path:
        """Download ``key`` into the cache unless it is there; return the cached file.

        Args:
            storage: the backend, or a function that opens it (called only on a cache miss, so a
                hit costs no client set-up).

        Raises:
            IntegrityError: the downloaded bytes do not match ``sha256`` and ``size``; nothing is kept.
            DiskFullError: the cache's filesystem has no room for the object; nothing is kept.
        """
        dest = self.path(sha256)
        if self.has(sha256, size):
            return dest
        if not isinstance(storage, Storage):
            storage = storage()
        with temporary_sibling(dest, size, "set NEXUS_CACHE_DIR to a folder with room") as (tmp, f):
            got = storage.download(key, f, progress)
            _verify(storage.uri(key), sha256, size, got)
            # no fsync: an entry that a crash leaves damaged fails the hash of its next read and is fetched again
            f.flush()
            tmp.replace(dest)
        return dest

    def copy_out(
        self, sha256: str, size: int, output: Path, progress: Progress | None = None, verify: bool = True
    ) -> None:
        """Copy the cached object to ``output`` atomically, verifying it on the way.

        Args:
            verify: hash the cached file while it is copied (skip only right after :meth:`fetch`
                verified it).

        Raises:
            IntegrityError: the cache entry is damaged; it is removed and ``output`` is untouched.
            StorageError: something wrote to the cache entry while it was read; it is removed and
                ``output`` is untouched.
            DiskFullError: ``output``'s filesystem has no room; ``output`` is untouched.
        """
        source = self.path(sha256)
        with temporary_sibling(output, size, "pass another -o PATH") as (tmp, out):
            if verify:
                try:
                    got = copy_file_and_hash(source, out, progress)
                except SourceChangedError:
                    source.unlink(missing_ok=True)
                    raise StorageError(
                        f"the cached copy {source} was written to while it was read, so it was dropped; load again"
                    ) from None
                try:
                    _verify(str(source), sha256, size, got)
                except IntegrityError:
                    source.unlink(missing_ok=True)
                    raise
            else:
                with open(source, "rb") as src:
                    kernel_copy(src.fileno(), out.fileno(), size)
            tmp.replace(output)
