"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The bytes go to a unique temporary file in the destination's folder (same filesystem), are flushed
and fsynced, then renamed over the destination. The temporary file is removed on any failure.

A full disk (or an exceeded quota) is something the user can fix, not a bug: every local write
NexusML makes runs inside :func:`disk_full_as_error`, which turns `ENOSPC` / `EDQUOT` into a
:class:`~nexus.errors.DiskFullError` naming the path and the space it needed.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from nexus.errors import DiskFullError

#: The errnos of a write that ran out of room: no space left on the device, or the user's quota used up.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is an `OSError` saying the filesystem (or the quota) has no room left."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


@contextmanager
def disk_full_as_error(path: Path, needed: int | None = None, elsewhere: str | None = None) -> Iterator[None]:
    """Turn a full disk inside the block into a :class:`DiskFullError` about ``path``.

    The block must write only at or below ``path``, and clean up after itself before the exception
    leaves it (the error reports the space free once that is done). A :class:`DiskFullError` raised
    by an inner block about another path is reported as this ``path``: the outermost caller knows
    which path the user named.

    Args:
        path: the file or folder being written, as the user knows it.
        needed: the bytes the write needs, where known.
        elsewhere: how to write somewhere else instead (e.g. "pass another -o PATH").
    """
    try:
        yield
    except DiskFullError as e:
        if e.path == path:
            raise
        raise DiskFullError(
            path, needed if needed is not None else e.needed, elsewhere or e.elsewhere, quota=e.quota
        ) from e
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise DiskFullError(path, needed, elsewhere, quota=e.errno == errno.EDQUOT) from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temporary_sibling(
    path: Path, needed: int | None = None, elsewhere: str | None = None
) -> Iterator[tuple[Path, BinaryIO]]:
    """Yield ``(tmp_path, file)`` for a new hidden file next to ``path``; remove it afterwards.

    The caller renames or links ``tmp_path`` into place before the block ends; whatever is left at
    ``tmp_path`` when the block exits (normally or not) is deleted. A full disk while the block runs
    raises :class:`DiskFullError` for ``path`` (``needed`` and ``elsewhere`` go into its message),
    once the temporary file is gone.
    """
    with disk_full_as_error(path, needed, elsewhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                yield tmp, f
        finally:
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically."""
    with temporary_sibling(path, needed=len(data)) as (tmp, f):
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
