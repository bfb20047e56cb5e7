"""Storage faults: stores and loads through a proxy that delays, errs, cuts and corrupts.

After every attempt, each scenario checks what NexusML promises: the attempt either finished
correctly (the object's sha256 is the file's, the version is recorded once, a load returns the same
bytes) or failed cleanly (a NexusML error, `.nexus_meta.json` untouched, no object at the final key
unless it is complete and correct, no corrupt or half-written file in the cache, no multipart
upload left open that NexusML could have aborted).

In-process scenarios lower the multipart (S3) and resumable (GCS) thresholds so that a 12 MiB
model goes in three parts or chunks: the code paths of a 1 GiB model, at a test's cost.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from google.cloud.storage.retry import DEFAULT_RETRY

import nexus.storage.gcs
import nexus.storage.s3
from chaos.checks import (
    STORE,
    TRANSFER,
    Check,
    check_cache,
    check_no_open_uploads,
    check_store_attempt,
    file_sha256,
    model_of_size,
    read_meta,
    seeds,
    seeds_until,
    through_proxy,
)
from chaos.conftest import Recorder, Remote
from chaos.fault_proxy import FaultPlan, FaultProxy, Request
from helpers import GitRepo
from nexus.errors import IntegrityError, StorageError
from nexus.registry import Project
from nexus.registry.cache import ObjectCache
from nexus.settings import load_config

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

GROUP = "Storage faults"
SMALL = 3 << 20  # one PutObject / one GCS request
LARGE = 12 << 20  # three parts / chunks with the thresholds below


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three parts or chunks for a 12 MiB model; GCS transfers retried after 50 ms, not 1 s."""
    monkeypatch.setattr(nexus.storage.gcs, "DEFAULT_RETRY", DEFAULT_RETRY.with_delay(initial=0.05, maximum=0.5))
    monkeypatch.setattr(nexus.storage.s3, "MULTIPART_THRESHOLD", 8 << 20)
    monkeypatch.setattr(nexus.storage.s3, "PART_SIZE", 5 << 20)  # S3's smallest part
    monkeypatch.setattr(nexus.storage.gcs, "RESUMABLE_THRESHOLD", 8 << 20)
    monkeypatch.setattr(nexus.storage.gcs, "CHUNK_SIZE", 4 << 20)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("chaos-models")
    return {"small": model_of_size(folder / "small.pt", SMALL), "large": model_of_size(folder / "large.pt", LARGE)}


def _project(root: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, cache: Path) -> Project:
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # STORAGE_EMULATOR_HOST is read by the GCS client, not by NexusML
    return Project(load_config(root), cache=ObjectCache(cache))


def _label(remote: Remote, size: str) -> str:
    if remote.backend.name == "s3":
        return "S3 " + ("single PutObject" if size == "small" else "multipart upload (3 parts)")
    return "GCS " + ("single request" if size == "small" else "resumable upload (3 chunks)")


@dataclass
class Attempt:
    outcome: str
    error: BaseException | None


def _store(
    check: Check, project: Project, remote: Remote, model: Path, name: str, expected: tuple[type[BaseException], ...]
) -> Attempt:
    """Store ``model`` as ``name`` and check the guarantees, whatever happened."""
    root = project.root
    key = f"{name}/{GitRepo(root).head}.pt"
    before = read_meta(root)
    error: BaseException | None = None
    try:
        action = project.store(model, name).action
    except Exception as e:  # noqa: BLE001 - which exception it is, is what is checked
        error = e
    check_store_attempt(
        check,
        root=root,
        backend=remote.backend,
        model_name=name,
        key=key,
        local_sha=file_sha256(model),
        meta_before=before,
        succeeded=error is None,
        error=error,
        expected_errors=expected,
    )
    if error is None:
        return Attempt(action, None)
    return Attempt(f"{'clean' if isinstance(error, expected) else 'UNCLEAN'} failure ({type(error).__name__})", error)


def _load(check: Check, project: Project, name: str, out: Path, expected_sha: str) -> Attempt:
    """Load ``name`` into ``out`` through a fresh cache and check the result and the cache."""
    error: BaseException | None = None
    try:
        project.load(name, output=out)
    except Exception as e:  # noqa: BLE001 - which exception it is, is what is checked
        error = e
    if error is None and file_sha256(out) != expected_sha:
        check.fail("wrong loads", f"{out} differs from the stored file")
    if error is not None and out.exists():
        check.fail("wrong loads", f"a failed load left {out}")
    if error is not None and not isinstance(error, StorageError):
        check.fail("unclean errors", f"load: {type(error).__name__}: {error}")
    check_cache(check, project.cache.root)
    if error is None:
        return Attempt("loaded", None)
    clean = "cleanly" if isinstance(error, StorageError) else "UNCLEANLY"
    return Attempt(f"load failed {clean} ({type(error).__name__})", error)


def _finish(check: Check, proxy: FaultProxy, seed: int) -> str:
    return f"seed {seed}: {check.details}\nrequests:\n{proxy.log()}"


# --- which requests a plan aims at -------------------------------------------------------------------


def _object_download(request: Request) -> bool:
    """A GET of an object's bytes (not of GCS's JSON metadata)."""
    return request.method == "GET" and not request.target.startswith("/storage/v1/")


def _gcs_chunk(request: Request) -> bool:
    """A PUT of a chunk into a GCS resumable session."""
    return request.method == "PUT" and "upload_id=" in request.target


def _bytes_upload(request: Request) -> bool:
    """A request that carries the model's bytes: S3 PutObject or UploadPart, a GCS upload or chunk."""
    return request.method == "PUT" or (request.method == "POST" and "uploadType=multipart" in request.target)


# --- transient faults: everything gets through ---------------------------------------------------

# A chunk cut mid-body, or whose answer is lost, breaks a GCS emulator session for good: the
# emulator keeps what it got and answers the SDK's resend of the same range with 400. NexusML then
# starts a new session (up to nexus.storage.gcs.UPLOAD_SESSIONS); the cut scenarios below exercise
# that. Here, where everything must get through, such chunks only get errors and delays.
TRANSIENT = FaultPlan(
    delay=0.1, error_500=0.1, error_503=0.1, cut_request=0.08, cut_response=0.08, max_streak=2, uncut=_gcs_chunk
)


@pytest.mark.parametrize("size", ["small", "large"])
def test_store_and_load_get_through_transient_faults_verified(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """500, 503 SlowDown, delays and cuts on ~45% of requests, at most twice in a row for the same
    request: the SDKs' retries (and NexusML's resumed downloads and restarted sessions) get every
    store and load through, verified."""
    model = model_files[size]
    scenario = f"{_label(remote, size)}: store + load, 500/503/delay/cut on ~45% of requests (≤2 in a row)"
    injected: Counter[str] = Counter()

    def faulted() -> bool:
        return sum(n for fault, n in injected.items() if fault != "pass") > 0

    # a small file is a handful of requests: a quick run's draws can miss them all, then more seeds run
    for i, seed in enumerate(seeds_until(1, faulted)):
        check = Check()
        with through_proxy(remote.backend, remote.port, TRANSIENT, seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            stored = _store(check, project, remote, model, f"m{i}", expected=())
            loaded = _load(check, project, f"m{i}", tmp_path / f"out{i}.pt", file_sha256(model))
            check_no_open_uploads(check, remote.backend, proxy)
            for attempt in (stored, loaded):
                if attempt.error is not None:
                    check.fail("gave up on transient faults", f"{type(attempt.error).__name__}: {attempt.error}")
            faults = proxy.faults()
            injected += faults
            outcome = "stored and loaded" if stored.error is None and loaded.error is None else "failed"
            record(
                GROUP,
                scenario,
                outcome,
                violations=check.counts(),
                faults=dict(faults),
                requests=len(proxy.events),
                seed=seed,
            )
            assert not check.details, _finish(check, proxy, seed)
    assert faulted(), "no fault was injected: nothing was tested"


def _store_and_load_finish_or_fail_cleanly(
    repo: GitRepo,
    remote: Remote,
    model: Path,
    plan: FaultPlan,
    scenario: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """Store (and, when that worked, load) through ``plan``'s faults once per seed; each attempt must
    finish correctly or fail with a NexusML error, leaving no partial version behind."""
    for i, seed in enumerate(seeds(quick=1)):
        check = Check(TRANSFER)
        with through_proxy(remote.backend, remote.port, plan, seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            stored = _store(check, project, remote, model, f"m{i}", expected=(StorageError,))
            outcome = stored.outcome
            if stored.error is None:
                loaded = _load(check, project, f"m{i}", tmp_path / f"out{i}.pt", file_sha256(model))
                outcome = f"{outcome}, {loaded.outcome}"
            excused = check_no_open_uploads(check, remote.backend, proxy)
            record(
                GROUP,
                scenario,
                outcome,
                violations=check.counts(),
                faults=dict(proxy.faults()),
                requests=len(proxy.events),
                orphans_excused=excused,
                seed=seed,
            )
            assert not check.details, _finish(check, proxy, seed)


# --- cuts with no bound: each attempt finishes correctly or fails cleanly --------------------------

CUTS = FaultPlan(cut_request=0.25, cut_response=0.25, max_streak=None)


@pytest.mark.parametrize("size", ["small", "large"])
def test_connections_cut_at_random_leave_complete_versions_or_nothing(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """Half of all requests cut (mid-request or mid-answer), as often in a row as the dice say: a
    store or load may fail, but only cleanly, and a version is recorded only when it is whole."""
    monkeypatch.setattr(nexus.storage.gcs, "RETRY_TIMEOUT_S", 2.0)
    model = model_files[size]
    scenario = f"{_label(remote, size)}: store + load, half of all requests cut, no bound"
    _store_and_load_finish_or_fail_cleanly(repo, remote, model, CUTS, scenario, tmp_path, monkeypatch, record)


# --- answers that look complete but are not ------------------------------------------------------

TRUNCATED = FaultPlan(truncated_head=0.3, max_streak=None)


@pytest.mark.parametrize("size", ["small", "large"])
def test_answers_cut_after_the_status_line_never_pass_for_success(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """30% of answers end right after their status line or their head: the SDK sees a bodiless
    success (no upload id, no ETag, no JSON). NexusML must not take it for one: store and load finish
    correctly or fail with a NexusML error, never a KeyError."""
    model = model_files[size]
    scenario = f"{_label(remote, size)}: store + load, 30% of answers cut after the status line or head"
    _store_and_load_finish_or_fail_cleanly(repo, remote, model, TRUNCATED, scenario, tmp_path, monkeypatch, record)


# --- the server refuses -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "large"])
def test_upload_refused_once_is_retried_or_fails_cleanly_never_recorded_without_its_object(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """The first request that carries the bytes is answered 404 (S3 NoSuchUpload, GCS notFound):
    a GCS resumable upload starts a new session, anything else fails cleanly; a version is
    recorded only with its object in place."""
    model = model_files[size]
    scenario = f"{_label(remote, size)}: the first request carrying the bytes answered 404"
    plan = FaultPlan(where=_bytes_upload, script=["error_404"])
    for i, seed in enumerate(seeds(quick=1)):
        check = Check(STORE)
        with through_proxy(remote.backend, remote.port, plan, seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            stored = _store(check, project, remote, model, f"m{i}", expected=(StorageError,))
            faults = proxy.faults()
            record(GROUP, scenario, stored.outcome, violations=check.counts(), faults=dict(faults), seed=seed)
            assert faults["error_404"] == 1, "no request was refused: nothing was tested"
            assert not check.details, _finish(check, proxy, seed)


# --- the link dies and stays dead ---------------------------------------------------------------


@pytest.mark.parametrize("size", ["small", "large"])
def test_link_dying_mid_upload_fails_cleanly_and_blocks_nothing(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """The link dies at a random byte of the upload and stays dead: a clean failure, no object, no
    metadata change; once the link is back, the same store succeeds."""
    monkeypatch.setattr(nexus.storage.gcs, "RETRY_TIMEOUT_S", 2.0)
    model = model_files[size]
    scenario = f"{_label(remote, size)}: link dies at a random byte of the upload, stays down"
    for i, seed in enumerate(seeds(quick=1)):
        check = Check(STORE)
        cut_at = seed % model.stat().st_size
        with through_proxy(remote.backend, remote.port, FaultPlan(), seed, outage_after=cut_at) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / "cache")
            stored = _store(check, project, remote, model, f"m{i}", expected=(StorageError,))
        if stored.error is None:
            check.fail("lost versions", "the store succeeded although the link died during its upload")
        # with the link back, nothing left behind blocks the same store (a half-written object would)
        again = _store(
            check,
            _project(repo.root, remote.direct_env, monkeypatch, tmp_path / "cache"),
            remote,
            model,
            f"m{i}",
            expected=(),
        )
        if again.error is not None:
            check.fail("lost versions", f"the store after the outage failed: {again.error}")
        record(
            GROUP,
            scenario,
            stored.outcome,
            violations=check.counts(),
            faults=dict(proxy.faults()),
            requests=len(proxy.events),
            seed=seed,
        )
        assert not check.details, _finish(check, proxy, seed)


# --- bytes damaged in flight --------------------------------------------------------------------


def test_download_corrupted_in_flight_is_refused_and_never_cached(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """One byte of the answer flipped on the way: the load fails on the sha256, keeps no file, and
    the next load (clean network) succeeds."""
    model = model_files["small"]
    scenario = f"{'S3' if remote.backend.name == 's3' else 'GCS'} load: one byte of the download flipped in flight"
    _project(repo.root, remote.direct_env, monkeypatch, tmp_path / "cache").store(model, "m")
    corrupt = FaultPlan(corrupt=1.0, where=_object_download, max_streak=None)
    for i, seed in enumerate(seeds(quick=1)):
        check = Check(("wrong loads", "corrupt cache files", "unclean errors"))
        out = tmp_path / f"out{i}.pt"
        with through_proxy(remote.backend, remote.port, corrupt, seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            loaded = _load(check, project, "m", out, file_sha256(model))
        if not isinstance(loaded.error, IntegrityError):
            check.fail("wrong loads", f"a corrupted download gave {loaded.error!r}, not an IntegrityError")
        again = _load(
            check,
            _project(repo.root, remote.direct_env, monkeypatch, tmp_path / f"cache{i}"),
            "m",
            out,
            file_sha256(model),
        )
        if again.error is not None:
            check.fail("wrong loads", f"the load after the corruption failed: {again.error}")
        record(
            GROUP,
            scenario,
            loaded.outcome,
            violations=check.counts(),
            faults=dict(proxy.faults()),
            requests=len(proxy.events),
            seed=seed,
        )
        assert not check.details, _finish(check, proxy, seed)


# --- the answer to the last request lost -----------------------------------------------------------


def _final_request(remote: Remote, size: str) -> FaultPlan:
    """Cut, once, the answer to the request that makes the object exist."""
    if remote.backend.name == "s3":
        if size == "small":
            return FaultPlan(cut_response=1.0, methods=frozenset({"PUT"}), limit=1)
        # the answer to CompleteMultipartUpload is lost; the retry finds the upload gone, as on S3 and MinIO
        complete = FaultPlan(where=lambda r: r.method == "POST" and "uploadId=" in r.target)
        return replace(complete, script=["cut_response", "error_404"])

    def last_chunk(request: Request) -> bool:
        start_end, _, total = request.headers.get("content-range", "").removeprefix("bytes ").partition("/")
        return total.isdigit() and start_end.endswith(f"-{int(total) - 1}")

    if size == "small":
        return FaultPlan(
            cut_response=1.0, methods=frozenset({"POST"}), where=lambda r: "uploadType" in r.target, limit=1
        )
    return FaultPlan(cut_response=1.0, where=last_chunk, limit=1)


@pytest.mark.parametrize("size", ["small", "large"])
def test_lost_answer_to_the_final_request_still_records_the_verified_version(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    size: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """The server completes the object but its answer is cut: the retry finds the object there
    (412 on S3's If-None-Match, NoSuchUpload on a second CompleteMultipartUpload, a finished GCS
    session), and on S3 NexusML hashes what is stored before it records the version, once."""
    model = model_files[size]
    scenario = f"{_label(remote, size)}: the answer to the request that completes the object is lost"
    for i, seed in enumerate(seeds(quick=1)):
        check = Check((*STORE, "stale uploads", "gave up on transient faults"))
        with through_proxy(remote.backend, remote.port, _final_request(remote, size), seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            stored = _store(check, project, remote, model, f"m{i}", expected=())
            if stored.error is not None:
                check.fail("gave up on transient faults", f"{type(stored.error).__name__}: {stored.error}")
            elif remote.backend.name == "s3" and stored.outcome != "recorded":  # the emulator ignores preconditions
                check.fail("lost versions", f"{stored.outcome}: the object's bytes were not checked before recording")
            excused = check_no_open_uploads(check, remote.backend, proxy)
            faults = proxy.faults()
            record(
                GROUP,
                scenario,
                stored.outcome,
                violations=check.counts(),
                faults=dict(faults),
                requests=len(proxy.events),
                orphans_excused=excused,
                seed=seed,
            )
            assert faults["cut_response"], "no answer was cut: nothing was tested"
            assert not check.details, _finish(check, proxy, seed)


def test_download_cut_mid_body_resumes_and_is_verified(
    repo: GitRepo,
    remote: Remote,
    model_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    """The object's bytes stop coming twice, mid-body: botocore does not retry a body cut off
    half-way, so NexusML asks for the rest (S3 `Range`, pinned by `If-Match`); the GCS SDK
    retries the chunk. Either way the load gets the whole, verified file."""
    model = model_files["large"]
    scenario = f"{'S3' if remote.backend.name == 's3' else 'GCS'} load (12 MiB): the download cut mid-body, twice"
    _project(repo.root, remote.direct_env, monkeypatch, tmp_path / "cache").store(model, "m")
    plan = FaultPlan(where=_object_download, script=["cut_response", "cut_response"])
    for i, seed in enumerate(seeds(quick=1)):
        check = Check(("wrong loads", "corrupt cache files", "unclean errors", "gave up on transient faults"))
        with through_proxy(remote.backend, remote.port, plan, seed) as (proxy, env):
            project = _project(repo.root, env, monkeypatch, tmp_path / f"cache{i}")
            loaded = _load(check, project, "m", tmp_path / f"out{i}.pt", file_sha256(model))
            if loaded.error is not None:
                check.fail("gave up on transient faults", f"{type(loaded.error).__name__}: {loaded.error}")
            faults = proxy.faults()
            record(GROUP, scenario, loaded.outcome, violations=check.counts(), faults=dict(faults), seed=seed)
            assert faults["cut_response"] == 2, "the download was not cut: nothing was tested"
            assert not check.details, _finish(check, proxy, seed)
