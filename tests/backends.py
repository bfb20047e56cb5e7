"""The storage backends under test, with raw access that bypasses NexusML (to check or damage objects)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Backend:
    """A configured store plus raw object access by full key (prefix included)."""

    name: str
    uri: str
    endpoint_url: str | None
    _raw: Any
    _bucket: str | None = None
    _folder: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {"NEXUS_STORAGE": self.uri}
        if self.endpoint_url:
            env["NEXUS_ENDPOINT_URL"] = self.endpoint_url
        return env

    def read(self, key: str) -> bytes | None:
        if self.name == "local":
            assert self._folder is not None
            path = self._folder / key
            return path.read_bytes() if path.exists() else None
        if self.name == "s3":
            try:
                return bytes(self._raw.get_object(Bucket=self._bucket, Key=key)["Body"].read())
            except self._raw.exceptions.NoSuchKey:
                return None
        blob = self._raw.bucket(self._bucket).get_blob(key)
        return None if blob is None else bytes(blob.download_as_bytes())

    def write(self, key: str, data: bytes) -> None:
        """Overwrite an object behind NexusML's back."""
        if self.name == "local":
            assert self._folder is not None
            path = self._folder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                path.chmod(0o644)  # stored objects are read-only
            path.write_bytes(data)
        elif self.name == "s3":
            self._raw.put_object(Bucket=self._bucket, Key=key, Body=data)
        else:
            self._raw.bucket(self._bucket).blob(key).upload_from_string(data)

    def keys(self) -> list[str]:
        if self.name == "local":
            assert self._folder is not None
            if not self._folder.exists():
                return []
            return sorted(str(p.relative_to(self._folder)) for p in self._folder.rglob("*") if p.is_file())
        if self.name == "s3":
            pages = self._raw.get_paginator("list_objects_v2").paginate(Bucket=self._bucket)
            return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
        return sorted(b.name for b in self._raw.list_blobs(self._bucket))


def local_backend(folder: Path) -> Backend:
    return Backend("local", f"file://{folder}", None, None, _folder=folder)


def s3_backend(endpoint: str, bucket: str, client: Any) -> Backend:
    return Backend("s3", f"s3://{bucket}/models", endpoint, client, _bucket=bucket)


def gcs_backend(bucket: str, client: Any) -> Backend:
    return Backend("gcs", f"gs://{bucket}/models", None, client, _bucket=bucket)


def full_key(backend: Backend, key: str) -> str:
    """The raw key of a NexusML key: the local folder is the root; buckets use the `models/` prefix."""
    return key if backend.name == "local" else f"models/{key}"
