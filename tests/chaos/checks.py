"""What the chaos scenarios share: model files of a given size, a store pointed through a fault
proxy, and the checks of the guarantees that must hold after every attempt, whatever happened."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import Backend, full_key
from chaos.fault_proxy import FaultPlan, FaultProxy
from nexus.registry.metadata import META_FILE, Metadata

#: Every guarantee a storage scenario checks, as it is named in the report.
GUARANTEES = (
    "corrupt objects",  # an object at a version's final key whose bytes are not the stored file's
    "metadata changes",  # .nexus_meta.json changed by an attempt that failed
    "lost versions",  # an attempt that succeeded but whose version is missing or wrong in the metadata
    "unclean errors",  # a failure that was not a NexusError (the CLI would call it a bug)
    "corrupt cache files",  # a cache entry whose bytes do not hash to its name, or a leftover temp file
    "stale uploads",  # a multipart upload left open on a server that could be reached
    "wrong loads",  # a load that returned bytes other than the stored ones, or left a file after failing
    "gave up on transient faults",  # a store or load that failed although every fault was bounded
)
#: What a store attempt is checked for, and a store-and-load attempt.
STORE = ("corrupt objects", "metadata changes", "lost versions", "unclean errors")
TRANSFER = (*STORE, "corrupt cache files", "stale uploads", "wrong loads")


def iterations(quick: int) -> int:
    """How often a scenario runs: ``quick`` in CI, ``$NEXUS_CHAOS_ITERATIONS`` in the long run."""
    value = os.environ.get("NEXUS_CHAOS_ITERATIONS")
    return max(int(value), 1) if value else quick


def seeds(quick: int) -> list[int]:
    """One RNG seed per iteration (see :func:`iterations`), from ``$NEXUS_CHAOS_SEED`` if set.

    Every failure message and record names its seed; rerun with `NEXUS_CHAOS_SEED=<seed>` and one
    iteration to replay the same fault decisions (thread interleaving aside).
    """
    base = int(os.environ.get("NEXUS_CHAOS_SEED") or secrets.randbelow(1 << 30))
    return [base + i for i in range(iterations(quick))]


def seeds_until(quick: int, done: Callable[[], bool], extra: int = 8) -> Iterator[int]:
    """:func:`seeds`, then up to ``extra`` more while ``done()`` is false: for a scenario whose faults are
    drawn at random, so that a short run whose draws happened to inject none still tests something."""
    planned = seeds(quick)
    yield from planned
    for seed in range(planned[-1] + 1, planned[-1] + 1 + extra):
        if done():
            return
        yield seed


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_of_size(path: Path, nbytes: int, seed: int = 0) -> Path:
    """A real TorchScript model of about ``nbytes`` (one big parameter)."""
    import torch

    class Big(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(nbytes // 4, generator=torch.Generator().manual_seed(seed)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight[: x.shape[-1]]

    torch.jit.script(Big()).save(str(path))
    return path


def read_meta(root: Path) -> bytes | None:
    try:
        return (root / META_FILE).read_bytes()
    except FileNotFoundError:
        return None


def parse_meta(root: Path) -> Metadata:
    raw = read_meta(root)
    return Metadata() if raw is None else Metadata.from_json(raw.decode(), root / META_FILE)


@contextmanager
def through_proxy(
    backend: Backend,
    target_port: int,
    plan: FaultPlan,
    seed: int,
    *,
    throttle_bps: float | None = None,
    outage_after: int | None = None,
) -> Iterator[tuple[FaultProxy, dict[str, str]]]:
    """A fault proxy in front of ``backend``'s server, and the environment that points NexusML at it."""
    dialect = "s3" if backend.name == "s3" else "gcs"
    with FaultProxy(
        target_port, plan, dialect=dialect, seed=seed, throttle_bps=throttle_bps, outage_after=outage_after
    ) as proxy:
        env = {"NEXUS_STORAGE": backend.uri}
        if backend.name == "s3":
            env["NEXUS_ENDPOINT_URL"] = proxy.endpoint
        else:
            env["STORAGE_EMULATOR_HOST"] = proxy.endpoint
        yield proxy, env


@dataclass
class Check:
    """The violations found after one attempt (a name from :data:`GUARANTEES` -> count) and why.

    ``applies`` names the guarantees the scenario checks: the report counts only those.
    """

    applies: tuple[str, ...] = GUARANTEES
    violations: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def fail(self, guarantee: str, detail: str) -> None:
        assert guarantee in self.applies, f"{guarantee!r} is not checked by this scenario"
        self.violations[guarantee] += 1
        self.details.append(f"{guarantee}: {detail}")

    def counts(self) -> dict[str, int]:
        return {g: self.violations[g] for g in self.applies}


def raw_read(backend: Backend, key: str) -> bytes | None:
    """The object at NexusML's ``key``, read by a client that bypasses any proxy, or None.

    (For GCS, never through the blob's stored media link: the emulator writes the address of the
    request that uploaded it there, which may be a proxy.)
    """
    if backend.name != "gcs":
        return backend.read(full_key(backend, key))
    from google.api_core.exceptions import NotFound

    try:
        return bytes(backend._raw.bucket(backend._bucket).blob(full_key(backend, key)).download_as_bytes())
    except NotFound:
        return None


def check_object(check: Check, backend: Backend, key: str, expected_sha: str) -> bytes | None:
    """No object at ``key``, or one with exactly the stored file's bytes."""
    data = raw_read(backend, key)
    if data is not None and sha256(data) != expected_sha:
        check.fail("corrupt objects", f"{key} holds {len(data)} bytes with sha256 {sha256(data)}")
    return data


def check_cache(check: Check, cache_root: Path) -> None:
    """Every file in the cache is complete: its bytes hash to its name; no temporary file is left."""
    objects = cache_root / "objects"
    for path in objects.rglob("*") if objects.exists() else []:
        if not path.is_file():
            continue
        name = path.parent.name + path.name
        if path.name.startswith(".") or file_sha256(path) != name:
            check.fail("corrupt cache files", f"{path.relative_to(cache_root)}")


def check_no_open_uploads(check: Check, backend: Backend, proxy: FaultProxy | None = None) -> int:
    """No multipart upload left open, except those NexusML could not know or reach.

    An upload is excused when the answer that created it never reached the client (its id is only
    in a lost answer), or when every abort NexusML sent for it was eaten by the network. Returns
    how many were excused.
    """
    if backend.name != "s3":
        return 0
    raw: Any = backend._raw
    excused = 0
    for upload in raw.list_multipart_uploads(Bucket=backend._bucket).get("Uploads", []):
        upload_id = upload["UploadId"]
        events = proxy.events if proxy else []
        unknown = any(upload_id.encode() in e.lost_answer for e in events) and not any(
            upload_id in e.target for e in events
        )
        aborts = [e for e in events if e.method == "DELETE" and upload_id in e.target]
        unreachable = bool(aborts) and not any(e.delivered for e in aborts)
        if unknown or unreachable:
            excused += 1
            raw.abort_multipart_upload(Bucket=backend._bucket, Key=upload["Key"], UploadId=upload_id)
        else:
            check.fail("stale uploads", f"{upload['Key']} upload {upload_id}")
    return excused


def check_store_attempt(
    check: Check,
    *,
    root: Path,
    backend: Backend,
    model_name: str,
    key: str,
    local_sha: str,
    meta_before: bytes | None,
    succeeded: bool,
    error: BaseException | None,
    expected_errors: tuple[type[BaseException], ...],
) -> None:
    """The guarantees after a store attempt, whether it succeeded or failed."""
    check_object(check, backend, key, local_sha)
    if succeeded:
        record = parse_meta(root).models.get(model_name)
        found = [v for v in (record.versions if record else []) if v.storage_uri.endswith(key)]
        if len(found) != 1 or found[0].sha256 != local_sha or raw_read(backend, key) is None:
            check.fail("lost versions", f"{model_name}: recorded {found}")
    else:
        if read_meta(root) != meta_before:
            check.fail("metadata changes", f"{META_FILE} changed by a failed store of {model_name}")
        if error is not None and not isinstance(error, expected_errors):
            check.fail("unclean errors", f"{type(error).__name__}: {error}")
