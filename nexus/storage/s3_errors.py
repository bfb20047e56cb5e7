"""How S3's answers become NexusML's errors (:mod:`nexus.storage.s3`): one table of error codes, one translator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nexus.errors import (
    BucketNotFoundError,
    EndpointUnreachableError,
    KeyExistsError,
    MissingDependencyError,
    ObjectMissingError,
    StorageCredentialsError,
    StorageError,
)

try:
    import botocore.exceptions
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("s3:// storage", "s3") from e

MISSING_BUCKET = {"NoSuchBucket"}
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
TAKEN = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
MISSING_KEY = {"NoSuchKey", "404"}


def error_code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


@contextmanager
def translated(uri: str, bucket: str, endpoint_url: str | None) -> Iterator[None]:
    """Translate botocore's exceptions into NexusML's for the object at ``uri``."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as e:
        raise StorageCredentialsError(uri, "boto3 found no credentials") from e
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ReadTimeoutError,
    ) as e:
        raise EndpointUnreachableError(endpoint_url or "AWS S3", str(e)) from e
    except botocore.exceptions.ClientError as e:
        code = error_code(e)
        if code in TAKEN:
            raise KeyExistsError(uri) from e
        if code in MISSING_BUCKET:
            raise BucketNotFoundError(f"s3://{bucket}") from e
        if code in DENIED:
            raise StorageCredentialsError(uri, f"S3 answered {code}") from e
        if code in MISSING_KEY:
            raise ObjectMissingError(uri) from e
        raise StorageError(f"S3 request for {uri} failed: {e}; check the bucket and your access") from e
    except botocore.exceptions.BotoCoreError as e:
        raise StorageError(f"S3 request for {uri} failed: {e}; check the storage settings") from e
