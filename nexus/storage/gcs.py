"""Google Cloud Storage through google-cloud-storage.

Objects live at `gs://<bucket>/<prefix>/<model_name>/<commit>.<ext>`.

Uploads are create-only with `if_generation_match=0` (GCS refuses the write if any generation of
the object exists); NexusML also looks before it writes, for emulators that ignore preconditions.
Files above :data:`RESUMABLE_THRESHOLD` use a resumable upload in :data:`CHUNK_SIZE` chunks, in a
new session if the server loses track of one (:data:`UPLOAD_SESSIONS`). The client checks a CRC32C
of the whole object against the server's, and the SHA-256 is computed from the same stream. An
upload that never finalises leaves no object. Credentials come from Application Default
Credentials; `STORAGE_EMULATOR_HOST` points the client at an emulator.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nexus.errors import (
    BucketNotFoundError,
    EndpointUnreachableError,
    KeyExistsError,
    MissingDependencyError,
    ObjectMissingError,
    StorageCredentialsError,
    StorageError,
)
from nexus.hashing import Digest, HashingReader, Progress, Writable
from nexus.storage.base import Storage

try:
    import google.auth.exceptions
    import requests.exceptions
    from google.api_core import exceptions as gexc
    from google.cloud import storage as gcs
    from google.cloud.storage.retry import DEFAULT_RETRY
    from google.resumable_media import common as resumable_common
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("gs:// storage", "gcs") from e

RESUMABLE_THRESHOLD = 16 << 20
#: How long the client keeps retrying a failing request before it gives up.
RETRY_TIMEOUT_S = 60.0
CHUNK_SIZE = 32 << 20  # a multiple of 256 KiB, as GCS requires
#: Resumable sessions one upload may use. The SDK retries each chunk within a session; when the
#: server has lost track of the session (a chunk half-received and refused when resent, an expired
#: or unknown session, a checksum mismatch at the end), the upload starts again in a new one.
UPLOAD_SESSIONS = 3
_BROKEN_SESSION = (gexc.BadRequest, gexc.NotFound, gexc.ResumeIncomplete, resumable_common.DataCorruption)
_CHUNK = 1 << 20


class _CountingWriter:
    """Hashes and forwards what the SDK writes during a download."""

    def __init__(self, out: Writable, progress: Progress | None) -> None:
        self.out = out
        self.progress = progress
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.progress:
            self.progress(len(data))
        return self.out.write(data)


class GCSStorage(Storage):
    scheme = "gs"

    def __init__(self, base_uri: str, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        super().__init__(base_uri)
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        options = {"api_endpoint": endpoint_url} if endpoint_url else None
        try:
            self.client = gcs.Client(client_options=options)
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise StorageCredentialsError(base_uri, "no Application Default Credentials") from e
        self.bucket = self.client.bucket(bucket)
        self._bucket_checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        uri = self.uri(key)
        try:
            yield
        except gexc.PreconditionFailed as e:
            raise KeyExistsError(uri) from e
        except gexc.NotFound as e:
            raise ObjectMissingError(uri) from e
        except (gexc.Forbidden, gexc.Unauthorized, google.auth.exceptions.GoogleAuthError) as e:
            raise StorageCredentialsError(uri, type(e).__name__) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise EndpointUnreachableError(self.endpoint_url or self.client._connection.API_BASE_URL, str(e)) from e
        except (gexc.GoogleAPIError, resumable_common.InvalidResponse, resumable_common.DataCorruption) as e:
            raise StorageError(f"GCS request for {uri} failed: {e}; check the bucket and your access") from e
        except requests.exceptions.RequestException as e:  # an answer cut short: no JSON where JSON was due
            raise StorageError(f"GCS request for {uri} got a malformed answer ({e}); try again") from e

    def _check_bucket(self, key: str) -> None:
        if self._bucket_checked:
            return
        with self._errors(key):
            exists = self.bucket.exists()
        if not exists:
            raise BucketNotFoundError(f"gs://{self.bucket.name}")
        self._bucket_checked = True

    def size(self, key: str) -> int | None:
        self._check_bucket(key)
        with self._errors(key):
            blob = self.bucket.get_blob(self._key(key))
        return None if blob is None else int(blob.size or 0)

    def put_file(self, key: str, path: Path, progress: Progress | None = None, *, overwrite: bool = False) -> Digest:
        if not overwrite and self.size(key) is not None:
            raise KeyExistsError(self.uri(key))  # emulators ignore if_generation_match; real GCS enforces it below
        size = path.stat().st_size
        chunk_size = CHUNK_SIZE if size > RESUMABLE_THRESHOLD else None
        blob = self.bucket.blob(self._key(key), chunk_size=chunk_size)
        with self._errors(key), open(path, "rb") as f:
            reader = HashingReader(f, progress)
            sessions = UPLOAD_SESSIONS if chunk_size else 1
            for attempt in range(1, sessions + 1):
                try:
                    blob.upload_from_file(
                        reader,
                        size=size,
                        if_generation_match=None if overwrite else 0,
                        checksum="crc32c" if chunk_size else "md5",
                        content_type="application/octet-stream",
                        retry=DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT_S),  # safe: conditional or idempotent
                    )
                    break
                except _BROKEN_SESSION:
                    if attempt == sessions:
                        raise
                    reader.seek(0)  # a new session, from the first byte (hashed once: see HashingReader)
            digest = reader.digest(path)
        if blob.size is not None and int(blob.size) != digest.size:
            raise StorageError(f"{self.uri(key)} has size {blob.size} after upload, sent {digest.size}")
        return digest

    def list_keys(self, prefix: str = "") -> list[str]:
        self._check_bucket(prefix)
        base = self._key("")
        with self._errors(prefix):
            names = [blob.name for blob in self.client.list_blobs(self.bucket, prefix=base + prefix)]
        return sorted(name[len(base) :] for name in names if not name.endswith("/"))

    def delete(self, key: str) -> None:
        self._check_bucket(key)
        try:
            with self._errors(key):
                self.bucket.blob(self._key(key)).delete(retry=DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT_S))
        except ObjectMissingError:
            pass

    def download(self, key: str, out: Writable, progress: Progress | None = None) -> Digest:
        self._check_bucket(key)
        writer = _CountingWriter(out, progress)
        with self._errors(key):
            blob = self.bucket.blob(self._key(key), chunk_size=CHUNK_SIZE)
            blob.download_to_file(
                writer, checksum=None, retry=DEFAULT_RETRY.with_timeout(RETRY_TIMEOUT_S)
            )  # the SHA-256 below is the check that counts
        return Digest(writer.sha.hexdigest(), writer.size)
