"""A folder on a local or mounted filesystem.

Layout below the root: `<model_name>/<commit>.<ext>`. Each object is written to a hidden temporary
file in the same folder, fsynced, then hard-linked to its final name: `link` fails if the name is
taken, which makes the write create-only and atomic, and a half-written file never has a final name.
Stored files are read-only.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from nexus.atomic import temporary_sibling
from nexus.errors import KeyExistsError, ObjectMissingError, StorageError
from nexus.hashing import Digest, Progress, SourceChangedError, Writable, copy_and_hash, copy_file_and_hash
from nexus.storage.base import Storage


class LocalStorage(Storage):
    scheme = "file"

    def __init__(self, base_uri: str, root: Path) -> None:
        super().__init__(base_uri)
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def put_file(self, key: str, path: Path, progress: Progress | None = None, *, overwrite: bool = False) -> Digest:
        dest = self._path(key)
        if dest.exists() and not overwrite:
            raise KeyExistsError(self.uri(key))
        try:
            room = "point storage.uri in .nexusrc (or NEXUS_STORAGE) at a folder with room"
            with temporary_sibling(dest, path.stat().st_size, room) as (tmp, out):
                digest = copy_file_and_hash(path, out, progress, fsync=True)
                if overwrite:
                    tmp.replace(dest)
                else:
                    tmp.chmod(0o444)  # a stored version is never edited in place
                    try:
                        os.link(tmp, dest)
                    except FileExistsError:
                        raise KeyExistsError(self.uri(key)) from None
        except SourceChangedError as e:
            raise StorageError(f"{path} changed while it was stored; store it again once it is written") from e
        except PermissionError as e:
            raise StorageError(f"cannot write to {dest.parent}: permission denied; fix the folder's permissions") from e
        if dest.stat().st_size != digest.size:
            raise StorageError(f"{dest} has the wrong size after writing; check the filesystem")
        return digest

    def list_keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (
            "/".join(path.relative_to(self.root).parts)
            for path in self.root.rglob("*")
            if path.is_file() and not _is_temporary(path.name)
        )
        return sorted(key for key in keys if key.startswith(prefix))

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except PermissionError as e:
            raise StorageError(f"cannot delete {path}: permission denied; fix the folder's permissions") from e
        for folder in path.parents:  # drop the folders the key leaves empty, up to the root
            if folder == self.root or self.root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:
                break

    def download(self, key: str, out: Writable, progress: Progress | None = None) -> Digest:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissingError(self.uri(key))
        if isinstance(out, io.BufferedWriter | io.FileIO):  # a real file: copy in the kernel, hash alongside
            out.flush()
            return copy_file_and_hash(path, out, progress)
        with open(path, "rb") as src:
            return copy_and_hash(src, out, progress)


def _is_temporary(name: str) -> bool:
    """A write in progress (or one cut off by a crash): :func:`nexus.atomic.temporary_sibling`'s hidden file."""
    return name.startswith(".") and name.endswith(".tmp")
