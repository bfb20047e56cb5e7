"""Storage backends, chosen by URI scheme and imported only when used.

=========  =================================  ==================
scheme     backend                            extra to install
=========  =================================  ==================
(path)     :class:`~nexus.storage.local.LocalStorage`  none
file://    :class:`~nexus.storage.local.LocalStorage`  none
s3://      :class:`~nexus.storage.s3.S3Storage`        ``nexusml[s3]``
gs://      :class:`~nexus.storage.gcs.GCSStorage`      ``nexusml[gcs]``
=========  =================================  ==================
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from nexus.errors import ConfigError, KeyExistsError
from nexus.settings import StorageSettings
from nexus.storage.base import Storage

__all__ = ["KeyExistsError", "Storage", "StorageLocation", "open_storage", "parse_storage_uri", "split_object_uri"]

_SCHEMES = {"s3": "nexus.storage.s3", "gs": "nexus.storage.gcs"}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class StorageLocation:
    """A parsed storage root: ``scheme`` is "file", "s3" or "gs"."""

    scheme: str
    #: The bucket, or for "file" the folder (relative paths are relative to the repository root).
    bucket: str
    prefix: str = ""


def parse_storage_uri(uri: str) -> StorageLocation:
    """Check a storage URI without touching the network; raise :class:`ConfigError` if it is unusable."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or re.match(r"^[a-zA-Z]:[\\/]", uri):
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(uri, "file:// URIs must be absolute", "write file:///abs/path")
            return StorageLocation("file", unquote(parts.path))
        return StorageLocation("file", uri)
    if scheme not in _SCHEMES:
        raise ConfigError(uri, f"unsupported storage scheme '{scheme}://'", "use a folder, file://, s3:// or gs://")
    if not _BUCKET.match(parts.netloc):
        raise ConfigError(
            uri, f"'{parts.netloc}' is not a valid bucket name", f"write {scheme}://BUCKET/optional/prefix"
        )
    return StorageLocation(scheme, parts.netloc, parts.path.strip("/"))


def open_storage(uri: str, settings: StorageSettings, root: Path) -> Storage:
    """The backend for ``uri`` (a storage root), configured from ``settings``.

    Args:
        uri: `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///abs/dir` or a folder path.
        settings: endpoint and region; applied only when ``uri`` has the scheme of the configured store.
        root: the repository root, which relative folder paths are relative to.
    """
    location = parse_storage_uri(uri)
    if location.scheme == "file":
        from nexus.storage.local import LocalStorage

        folder = Path(location.bucket).expanduser()
        return LocalStorage(uri, folder if folder.is_absolute() else root / folder)
    same_store = parse_storage_uri(settings.uri).scheme == location.scheme
    endpoint = settings.endpoint_url if same_store else None
    module = importlib.import_module(_SCHEMES[location.scheme])
    if location.scheme == "s3":
        region = settings.region if same_store else None
        storage: Storage = module.S3Storage(uri, location.bucket, location.prefix, endpoint_url=endpoint, region=region)
    else:
        storage = module.GCSStorage(uri, location.bucket, location.prefix, endpoint_url=endpoint)
    return storage


def split_object_uri(uri: str) -> tuple[str, str]:
    """Split a recorded object URI into its storage root and its key `<model>/<file>`."""
    base, _, file = uri.rstrip("/").rpartition("/")
    base, _, model = base.rpartition("/")
    if not (base and model and file):
        raise ValueError(f"{uri!r} is not an object URI of the form ROOT/MODEL/FILE")
    return base, f"{model}/{file}"
