"""Listing and deleting keys, the two storage operations releases need, on every backend."""

from __future__ import annotations

from pathlib import Path

from backends import Backend, full_key
from nexus.settings import StorageSettings
from nexus.storage import Storage, open_storage


def _open(backend: Backend, tmp_path: Path, uri: str | None = None) -> Storage:
    settings = StorageSettings(uri=backend.uri, endpoint_url=backend.endpoint_url)
    return open_storage(uri or backend.uri, settings, tmp_path)


def _put(storage: Storage, tmp_path: Path, *keys: str) -> None:
    for key in keys:
        path = tmp_path / "src.bin"
        path.write_bytes(key.encode())
        storage.put_file(key, path)


def test_list_keys_is_recursive_sorted_relative_to_the_root_and_filtered_by_prefix(
    backend: Backend, tmp_path: Path
) -> None:
    storage = _open(backend, tmp_path)
    assert storage.list_keys() == []
    _put(storage, tmp_path, "b/2/model.py", "a/config.pbtxt", "b/config.pbtxt", "ab/x", "a/1/model.pt2")
    assert storage.list_keys() == ["a/1/model.pt2", "a/config.pbtxt", "ab/x", "b/2/model.py", "b/config.pbtxt"]
    assert storage.list_keys("a/") == ["a/1/model.pt2", "a/config.pbtxt"]
    assert storage.list_keys("a") == ["a/1/model.pt2", "a/config.pbtxt", "ab/x"]
    assert storage.list_keys("c/") == []


def test_list_keys_sees_only_its_own_root(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    sibling = _open(backend, tmp_path, backend.uri + "-other")
    _put(storage, tmp_path, "m/x")
    _put(sibling, tmp_path, "m/y")
    assert storage.list_keys() == ["m/x"]
    assert sibling.list_keys() == ["m/y"]


def test_delete_removes_one_object_and_a_missing_key_is_no_error(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    _put(storage, tmp_path, "r/a/config.pbtxt", "r/a/1/model.py")
    storage.delete("r/a/1/model.py")
    assert storage.list_keys() == ["r/a/config.pbtxt"]
    assert storage.size("r/a/1/model.py") is None
    assert backend.read(full_key(backend, "r/a/1/model.py")) is None
    assert backend.read(full_key(backend, "r/a/config.pbtxt")) == b"r/a/config.pbtxt"
    storage.delete("r/a/1/model.py")
    storage.delete("never/was")
    storage.delete("r/a/config.pbtxt")
    assert storage.list_keys() == []


def test_a_deleted_key_can_be_written_again(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    _put(storage, tmp_path, "k/v")
    storage.delete("k/v")
    _put(storage, tmp_path, "k/v")
    assert storage.list_keys() == ["k/v"]


def test_local_delete_leaves_no_empty_folders_and_listing_skips_writes_in_progress(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = open_storage(str(root), StorageSettings(), tmp_path)
    _put(storage, tmp_path, "r/a/1/model.py", "keep/x")
    (root / "keep" / ".x.abc123.tmp").write_bytes(b"half")  # what a crash mid-write leaves
    assert storage.list_keys() == ["keep/x", "r/a/1/model.py"]
    storage.delete("r/a/1/model.py")
    assert not (root / "r").exists()
    assert root.is_dir()
