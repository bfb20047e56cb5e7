"""Streaming sha256: every byte NexusML moves is hashed on the way, never in a second pass.

`copy_and_hash` overlaps hashing with writing (hashlib and file writes release the GIL), so a
verified copy of a stream costs about as much as hashing alone. `copy_file_and_hash` copies one
file to another in the kernel (`copy_file_range`) while a second reader hashes the source, and
checks the source did not change meanwhile: a local verified copy at the cost of a hash.

A write that fails (a full disk above all: `ENOSPC`, `EDQUOT`) is raised as it is, errno intact,
as soon as it happens; the callers that know the destination's path turn it into a user error
(:func:`nexus.atomic.disk_full_as_error`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from nexus.atomic import is_disk_full


class Writable(Protocol):
    """Where bytes go: a binary file, or anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> int: ...


#: Called with the number of bytes just moved.
Progress = Callable[[int], None]

CHUNK = 8 << 20


@dataclass(frozen=True)
class Digest:
    sha256: str
    size: int


def _noop(_: int) -> None:
    return None


def hash_file(path: Path, progress: Progress | None = None, limit: int | None = None) -> Digest:
    """The sha256 and size of a file (of its first ``limit`` bytes, if given)."""
    with open(path, "rb", buffering=0) as f:
        return _hash_open_file(f.fileno(), progress, limit)


def _hash_open_file(fd: int, progress: Progress | None, limit: int | None) -> Digest:
    """Hash an open file from its start with positioned reads (its offset is left alone)."""
    progress = progress or _noop
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while (limit is None or size < limit) and (n := os.preadv(fd, [buf], size)):
        if limit is not None:
            n = min(n, limit - size)
        h.update(view[:n])
        size += n
        progress(n)
    return Digest(h.hexdigest(), size)


def copy_and_hash(src: BinaryIO, dst: Writable, progress: Progress | None = None) -> Digest:
    """Copy ``src`` to ``dst`` and return the digest of exactly the bytes written.

    The reading thread hashes each chunk while a writer thread writes the previous one.
    """
    progress = progress or _noop
    h = hashlib.sha256()
    size = 0
    chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
    failure: list[BaseException] = []

    def write() -> None:
        while (chunk := chunks.get()) is not None:
            if failure:
                continue  # drain so the reader never blocks
            try:
                dst.write(chunk)
            except BaseException as e:  # noqa: BLE001 - handed to the reading thread and re-raised there
                failure.append(e)

    writer = threading.Thread(target=write, name="nexus-copy-writer", daemon=True)
    writer.start()
    try:
        while chunk := src.read(CHUNK):
            if failure:
                break
            h.update(chunk)
            chunks.put(chunk)
            size += len(chunk)
            progress(len(chunk))
    finally:
        chunks.put(None)
        writer.join()
    if failure:
        raise failure[0]
    return Digest(h.hexdigest(), size)


class HashingReader:
    """A read-only file wrapper that hashes what is read, for SDKs that pull from a file object.

    SDKs may seek back to resend a chunk; bytes already hashed are not hashed twice. If a reader
    skips ahead, the running hash is abandoned and :meth:`digest` hashes the file again.
    """

    def __init__(self, f: BinaryIO, progress: Progress | None = None) -> None:
        self._f = f
        self._progress = progress or _noop
        self._hash = hashlib.sha256()
        self._hashed = 0
        self._valid = True

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        data = self._f.read(n)
        if pos > self._hashed:
            self._valid = False
        new = self._hashed - pos
        if self._valid and new < len(data):
            fresh = data[max(new, 0) :]
            self._hash.update(fresh)
            self._hashed += len(fresh)
            self._progress(len(fresh))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def digest(self, path: Path) -> Digest:
        """The digest of the whole file; hashes ``path`` again only if the stream was not read in order."""
        size = self._f.seek(0, 2)
        if self._valid and self._hashed == size:
            return Digest(self._hash.hexdigest(), size)
        return hash_file(path)


class _CopyFailed(Exception):
    """Internal: stops the hashing of a source whose copy already failed."""


class SourceChangedError(OSError):
    """The file changed while it was being copied, so the copy and its hash may disagree."""


def kernel_copy(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes between file descriptors without passing them through Python."""
    copied = 0
    use_range = hasattr(os, "copy_file_range")
    while copied < size:
        count = min(size - copied, 1 << 30)
        if use_range:
            try:
                n = os.copy_file_range(src_fd, dst_fd, count, copied, copied)
            except OSError as e:  # EXDEV on old kernels, ENOSYS, filesystems without support
                if is_disk_full(e):
                    raise  # no fallback writes into a full disk
                use_range = False
                continue
        else:
            os.lseek(dst_fd, copied, os.SEEK_SET)
            n = os.sendfile(dst_fd, src_fd, copied, count)
        if n == 0:
            raise SourceChangedError(f"the source file ended after {copied} of {size} bytes")
        copied += n


def copy_file_and_hash(src: Path, dst: BinaryIO, progress: Progress | None = None, *, fsync: bool = False) -> Digest:
    """Copy the file ``src`` into the open file ``dst`` and return the digest of ``src``.

    The kernel copies while this thread hashes the source; afterwards the source's size and
    modification time must be unchanged, else :class:`SourceChangedError` is raised. Both read
    the one open file, so another file renamed over ``src`` meanwhile (a second process filling
    the same cache entry) changes neither the copy nor the hash. With
    ``fsync``, the copying thread flushes ``dst`` to disk as soon as it is done, overlapping the
    disk write with the rest of the hashing.
    """
    with open(src, "rb") as f:
        before = os.fstat(f.fileno())
        failure: list[BaseException] = []

        def copy() -> None:
            try:
                kernel_copy(f.fileno(), dst.fileno(), before.st_size)
                if fsync:
                    os.fsync(dst.fileno())
            except BaseException as e:  # noqa: BLE001 - handed to the hashing thread and re-raised there
                failure.append(e)

        def tick(n: int) -> None:
            if failure:  # the copy failed (a full disk?): say so now, not after hashing the rest
                raise _CopyFailed
            (progress or _noop)(n)

        copier = threading.Thread(target=copy, name="nexus-kernel-copy", daemon=True)
        copier.start()
        try:
            digest = _hash_open_file(f.fileno(), tick, before.st_size)
        except _CopyFailed:
            pass
        finally:
            copier.join()
        if failure:
            raise failure[0]
        after = os.fstat(f.fileno())
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or digest.size != before.st_size:
        raise SourceChangedError(f"{src} changed while it was copied; copy it again")
    return digest
