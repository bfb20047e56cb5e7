"""Amazon S3 and S3-compatible servers (MinIO, moto) through boto3: `s3://<bucket>/<prefix>/<key>`.

Uploads are create-only on the server: `If-None-Match: *` on `PutObject` and on
`CompleteMultipartUpload`, so two writers racing for a key cannot both win. Files up to
:data:`MULTIPART_THRESHOLD` go in one `PutObject` carrying their SHA-256, which S3 checks before it
accepts the object. Larger files are read once, in order: each part is hashed into the file's
SHA-256 as it is read, then uploaded by a pool of threads with a per-part checksum that S3 checks;
a failed upload is aborted, so no partial object is ever visible. Credentials come only from
boto3's standard chain (environment, profiles, instance roles).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from nexus.errors import BucketNotFoundError, KeyExistsError, MissingDependencyError, ObjectMissingError, StorageError
from nexus.hashing import Digest, Progress, Writable
from nexus.storage.base import Storage
from nexus.storage.s3_errors import TAKEN, error_code, translated

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("s3:// storage", "s3") from e

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MULTIPART_THRESHOLD = 16 << 20
PART_SIZE = 16 << 20
MAX_PARTS = 10_000
CONCURRENCY = 8
#: Tries to receive a download's body; each after the first resumes where the last one was cut off.
DOWNLOAD_ATTEMPTS = 5
_CHUNK = 1 << 20

_STREAM_ERRORS = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
)


@functools.lru_cache(maxsize=8)
def _client(endpoint_url: str | None, region: str | None) -> S3Client:
    """One client per endpoint and region for the life of the process: clients are thread-safe, and
    building one (a session, credentials, endpoint rules) costs about 60 ms."""
    config = botocore.config.Config(
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=CONCURRENCY + 2,
    )
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )
    return client


class S3Storage(Storage):
    scheme = "s3"

    def __init__(self, base_uri: str, bucket: str, prefix: str, endpoint_url: str | None, region: str | None) -> None:
        super().__init__(base_uri)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.client = _client(endpoint_url, region)
        self._bucket_checked = False

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- errors -----------------------------------------------------------------------------

    def _errors(self, key: str) -> AbstractContextManager[None]:
        """Translate botocore's exceptions into NexusML's for the object at ``key``."""
        return translated(self.uri(key), self.bucket, self.endpoint_url)

    def _check_bucket(self, key: str) -> None:
        if self._bucket_checked:
            return
        with self._errors(key):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as e:
                if error_code(e) in {"404", "NoSuchBucket"}:
                    raise BucketNotFoundError(f"s3://{self.bucket}") from e
                raise
        self._bucket_checked = True

    # -- contract ---------------------------------------------------------------------------

    def size(self, key: str) -> int | None:
        self._check_bucket(key)
        try:
            with self._errors(key):
                head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ObjectMissingError:
            return None
        return int(self._answered(head, "ContentLength", key))

    def put_file(self, key: str, path: Path, progress: Progress | None = None, *, overwrite: bool = False) -> Digest:
        self._check_bucket(key)
        size = path.stat().st_size
        condition: dict[str, Any] = {} if overwrite else {"IfNoneMatch": "*"}
        with self._errors(key), open(path, "rb") as f:
            if size <= MULTIPART_THRESHOLD:
                digest = self._put_single(key, f, progress, condition)
            else:
                digest = self._put_multipart(key, f, size, progress, condition)
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            stored = int(self._answered(head, "ContentLength", key))
        if stored != digest.size:
            raise StorageError(f"{self.uri(key)} has size {stored} after upload, sent {digest.size}")
        return digest

    def _put_single(self, key: str, f: BinaryIO, progress: Progress | None, condition: dict[str, Any]) -> Digest:
        data = f.read()
        sha = hashlib.sha256(data)
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._key(key),
            Body=data,
            **condition,
            ChecksumSHA256=base64.b64encode(sha.digest()).decode(),  # S3 rejects the PUT if the bytes differ
        )
        if progress:
            progress(len(data))
        return Digest(sha.hexdigest(), len(data))

    def _put_multipart(
        self, key: str, f: BinaryIO, size: int, progress: Progress | None, condition: dict[str, Any]
    ) -> Digest:
        part_size = max(PART_SIZE, -(-size // MAX_PARTS))
        s3_key = self._key(key)
        sha = hashlib.sha256()
        sent = 0
        slots = threading.BoundedSemaphore(CONCURRENCY + 2)  # parts held in memory at once
        lock = threading.Lock()

        def upload(number: int, body: bytes) -> dict[str, Any]:
            try:
                r = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=s3_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumAlgorithm="CRC32",
                )
                if progress:
                    with lock:
                        progress(len(body))
                part = {"PartNumber": number, "ETag": self._answered(r, "ETag", key)}
                if "ChecksumCRC32" in r:
                    part["ChecksumCRC32"] = r["ChecksumCRC32"]
                return part
            finally:
                slots.release()

        futures: list[Future[dict[str, Any]]] = []
        created = self.client.create_multipart_upload(Bucket=self.bucket, Key=s3_key, ChecksumAlgorithm="CRC32")
        upload_id = self._answered(created, "UploadId", key)
        try:  # from the moment the upload exists: a Ctrl-C anywhere after this line aborts it
            with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="nexus-s3-part") as pool:
                number = 1
                while body := f.read(part_size):
                    sha.update(body)  # hashed in file order while earlier parts upload
                    sent += len(body)
                    slots.acquire()
                    if any(fut.done() and fut.exception() for fut in futures):
                        slots.release()
                        break
                    futures.append(pool.submit(upload, number, body))
                    number += 1
            parts = [fut.result() for fut in futures]  # re-raises the first failed part
            if sent != size:
                raise StorageError(
                    f"{getattr(f, 'name', 'the file')} changed size while it was uploaded; store it again"
                )
            self._complete(key, upload_id, parts, condition)
        except BaseException:
            self._abort(s3_key, upload_id)
            raise
        return Digest(sha.hexdigest(), sent)

    def _answered(self, response: Mapping[str, Any], field: str, key: str) -> str:
        """A field the request cannot have succeeded without. A connection cut between two header
        lines makes a truncated answer look complete (an empty 200), and botocore accepts it."""
        value = response.get(field)
        if value is None or value == "":
            raise StorageError(f"S3 answered a request for {self.uri(key)} without its {field}; try again")
        return str(value)

    def _complete(self, key: str, upload_id: str, parts: list[dict[str, Any]], condition: dict[str, Any]) -> None:
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self._key(key),
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **condition,
            )
        except botocore.exceptions.ClientError as e:
            if error_code(e) != "NoSuchUpload":
                raise
            # A retried Complete whose first try went through (and whose answer was lost) finds
            # the upload gone. Create-only: if an object is at the key now, the caller checks its bytes.
            if condition and self.size(key) is not None:
                raise KeyExistsError(self.uri(key)) from e
            raise StorageError(
                f"the upload of {self.uri(key)} ended without a confirmation from the server; run the command again"
            ) from e

    def _abort(self, s3_key: str, upload_id: str) -> None:
        # If the server is gone or refuses, the parts stay invisible and expire by bucket lifecycle policy.
        with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=s3_key, UploadId=upload_id)

    def list_keys(self, prefix: str = "") -> list[str]:
        self._check_bucket(prefix)
        base = self._key("")
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base + prefix)
            names = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return sorted(name[len(base) :] for name in names if not name.endswith("/"))

    def delete(self, key: str) -> None:
        self._check_bucket(key)
        with self._errors(key):  # S3 answers 204 for a key with no object
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def download(self, key: str, out: Writable, progress: Progress | None = None) -> Digest:
        """Stream the object into ``out``; a connection lost mid-body resumes where it stopped.

        botocore retries a request until its answer starts, not a body cut off half-way: the rest
        is asked for with `Range`, pinned to the first answer's ETag (`If-Match`), so the bytes
        written always belong to one version of the object.
        """
        self._check_bucket(key)
        sha = hashlib.sha256()
        size = 0
        etag: str | None = None
        with self._errors(key):
            for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
                rest: dict[str, Any] = {"Range": f"bytes={size}-", "IfMatch": etag} if etag else {}
                try:
                    response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **rest)
                except botocore.exceptions.ClientError as e:
                    if etag and error_code(e) in TAKEN:
                        raise StorageError(f"{self.uri(key)} changed while it was downloaded; load it again") from e
                    raise
                etag = self._answered(response, "ETag", key)
                try:
                    for chunk in response["Body"].iter_chunks(_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                        if progress:
                            progress(len(chunk))
                    break
                except _STREAM_ERRORS:
                    if attempt == DOWNLOAD_ATTEMPTS:
                        raise
        return Digest(sha.hexdigest(), size)
