"""One contract, every backend: local folder, S3 (moto server over HTTP), GCS (emulator over HTTP)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from backends import Backend, full_key
from nexus.errors import BucketNotFoundError, KeyExistsError, ObjectMissingError
from nexus.settings import StorageSettings
from nexus.storage import Storage, open_storage


def _open(backend: Backend, tmp_path: Path, uri: str | None = None) -> Storage:
    settings = StorageSettings(uri=backend.uri, endpoint_url=backend.endpoint_url)
    return open_storage(uri or backend.uri, settings, tmp_path)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_put_then_download_returns_the_same_bytes_and_digest(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    storage = _open(backend, tmp_path)
    seen: list[int] = []
    digest = storage.put_file("m/abc.pt", _file(tmp_path, "a.bin", data), seen.append)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.size == len(data) == sum(seen)
    assert storage.size("m/abc.pt") == len(data)
    assert backend.read(full_key(backend, "m/abc.pt")) == data
    out = io.BytesIO()
    assert storage.download("m/abc.pt", out) == digest
    assert out.getvalue() == data


def test_large_file_goes_in_parts_and_arrives_whole(backend: Backend, tmp_path: Path) -> None:
    data = os.urandom(40 << 20)  # above the multipart / resumable threshold of S3 and GCS
    storage = _open(backend, tmp_path)
    seen: list[int] = []
    digest = storage.put_file("m/big.pt", _file(tmp_path, "big.bin", data), seen.append)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)
    assert hashlib.sha256(backend.read(full_key(backend, "m/big.pt")) or b"").hexdigest() == digest.sha256


def test_put_is_create_only_and_keeps_the_first_bytes(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    storage.put_file("m/abc.pt", _file(tmp_path, "one", b"first"))
    with pytest.raises(KeyExistsError):
        storage.put_file("m/abc.pt", _file(tmp_path, "two", b"second"))
    assert backend.read(full_key(backend, "m/abc.pt")) == b"first"


def test_overwrite_replaces_an_object_for_model_repositories(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    storage.put_file("m/config.pbtxt", _file(tmp_path, "one", b"first"))
    digest = storage.put_file("m/config.pbtxt", _file(tmp_path, "two", b"second"), overwrite=True)
    assert digest.sha256 == hashlib.sha256(b"second").hexdigest()
    assert backend.read(full_key(backend, "m/config.pbtxt")) == b"second"


def test_missing_object_has_no_size_and_cannot_be_downloaded(backend: Backend, tmp_path: Path) -> None:
    storage = _open(backend, tmp_path)
    assert storage.size("m/none.pt") is None
    with pytest.raises(ObjectMissingError, match=r"m/none\.pt is missing"):
        storage.download("m/none.pt", io.BytesIO())


def test_uri_names_the_object_under_the_configured_root(backend: Backend, tmp_path: Path) -> None:
    assert _open(backend, tmp_path).uri("m/abc.pt") == f"{backend.uri}/m/abc.pt"


def test_missing_bucket_is_an_error_and_a_missing_folder_is_created(backend: Backend, tmp_path: Path) -> None:
    if backend.name == "local":
        folder = tmp_path / "new" / "store"
        storage = _open(backend, tmp_path, uri=f"file://{folder}")
        storage.put_file("m/abc.pt", _file(tmp_path, "a", b"x"))
        assert (folder / "m" / "abc.pt").read_bytes() == b"x"
        return
    scheme = backend.uri.split(":")[0]
    storage = _open(backend, tmp_path, uri=f"{scheme}://no-such-bucket/models")
    with pytest.raises(BucketNotFoundError, match="no-such-bucket"):
        storage.put_file("m/abc.pt", _file(tmp_path, "a", b"x"))
    assert backend.keys() == []
