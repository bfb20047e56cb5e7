"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The bytes go to a unique temporary file in the destination's folder (same filesystem), are flushed
and fsynced, then renamed over the destination. The temporary file is removed on any failure.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def temporary_sibling(path: Path) -> Iterator[tuple[Path, BinaryIO]]:
    """Yield ``(tmp_path, file)`` for a new hidden file next to ``path``; remove it afterwards.

    The caller renames or links ``tmp_path`` into place before the block ends; whatever is left at
    ``tmp_path`` when the block exits (normally or not) is deleted.
    """
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
    with temporary_sibling(path) as (tmp, f):
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
