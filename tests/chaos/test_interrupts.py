"""Ctrl-C: SIGINT at a random moment of a real `nexus store` process.

The store goes through a slowed-down proxy, so that its upload lasts about two seconds; the
signal lands at a random byte of the upload, or in the half second after it (the server's answer,
the size check, the metadata update). Whatever the moment, the process ends with exit code 130
and one line, or 0 if it had finished; a version is recorded only if its object is whole; no
object is left at the final key unless it is complete; no multipart upload is left open; and the
same store then succeeds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaos.checks import (
    STORE,
    Check,
    check_no_open_uploads,
    check_store_attempt,
    file_sha256,
    model_of_size,
    read_meta,
    seeds,
    through_proxy,
)
from chaos.conftest import Recorder, Remote
from chaos.fault_proxy import FaultPlan, FaultProxy
from helpers import GitRepo
from nexus.registry import Project
from nexus.settings import load_config

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

SIZE = 20 << 20  # above the real S3 multipart and GCS resumable thresholds (no patching: a subprocess)
THROTTLE_BPS = 10e6  # about two seconds of upload
INTERRUPTED = 130


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_of_size(tmp_path_factory.mktemp("sigint") / "big.pt", SIZE)


def _interrupt(process: subprocess.Popen[str], proxy: FaultProxy, rng: random.Random) -> str:
    """Send SIGINT at a random moment from nexus's first request on; return where it landed.

    (Not before: until then nothing of the store has happened, and a signal in the middle of the
    CLI's imports is the interpreter's business, not the store's.)
    """
    share = rng.uniform(0.0, 1.15)
    deadline = time.monotonic() + 60

    def wait(condition: Callable[[], bool]) -> None:
        while not condition() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)

    wait(lambda: bool(proxy.events))
    if share < 1.0:
        wait(lambda: proxy.received >= share * SIZE)
        where = f"upload ({min(proxy.received / SIZE, 1.0):.0%} sent)"
    else:
        wait(lambda: proxy.received >= SIZE)
        time.sleep((share - 1.0) * 4)  # up to 0.6 s: the server's answer, the check, the record
        where = "after the upload"
    if process.poll() is not None:
        return f"{where}, too late: it had finished"
    process.send_signal(signal.SIGINT)
    return where


def test_sigint_at_a_random_moment_of_a_store_leaves_a_whole_version_or_nothing(
    repo: GitRepo,
    remote: Remote,
    big_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record: Recorder,
) -> None:
    exe = Path(sys.executable).with_name("nexus")
    local_sha = file_sha256(big_model)
    kind = "S3 multipart" if remote.backend.name == "s3" else "GCS resumable"
    scenario = f"SIGINT at a random moment of `nexus store` ({kind}, 20 MiB, slowed to ~2 s)"
    for i, seed in enumerate(seeds(quick=1)):
        rng = random.Random(seed)
        check = Check((*STORE, "stale uploads"))
        name = f"m{i}"
        before = read_meta(repo.root)
        with through_proxy(remote.backend, remote.port, FaultPlan(), seed, throttle_bps=THROTTLE_BPS) as (proxy, env):
            process = subprocess.Popen(
                [str(exe), "store", str(big_model), name],
                cwd=repo.root,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            where = _interrupt(process, proxy, rng)
            sent, signalled = proxy.received, time.monotonic()
            out, err = process.communicate(timeout=120)
            exit_s = time.monotonic() - signalled
            code = process.returncode
            excused = check_no_open_uploads(check, remote.backend, proxy)
        # the guarantee is on the data: the metadata changed only by a whole version, or not at all
        recorded = read_meta(repo.root) != before
        check_store_attempt(
            check,
            root=repo.root,
            backend=remote.backend,
            model_name=name,
            key=f"{name}/{repo.head}.pt",
            local_sha=local_sha,
            meta_before=before,
            succeeded=recorded,
            error=None,
            expected_errors=(),
        )
        one_line = err.strip().splitlines() == [err.strip()]
        if code == 0:
            outcome = "finished first (exit 0)"
            if not recorded:
                check.fail("lost versions", "exit code 0, but no version was recorded")
        elif code == INTERRUPTED and one_line:
            outcome = "interrupted (exit 130), " + ("after recording" if recorded else "nothing recorded")
        elif code == -signal.SIGINT and recorded and "Stored " in out:
            # the store had finished and said so; the signal hit the interpreter's exit
            outcome = "finished, signal during exit (killed by SIGINT)"
        else:
            outcome = f"exit {code}"
            check.fail("unclean errors", f"exit code {code}: {err.strip()[-2000:]}\nstdout: {out[-2000:]}")
        # nothing left behind blocks the same store
        for key, value in remote.direct_env.items():
            monkeypatch.setenv(key, value)
        again = Project(load_config(repo.root)).store(big_model, name)
        if again.version.sha256 != local_sha:
            check.fail("lost versions", f"the store after the interrupt recorded {again.version}")
        record(
            "Interrupts",
            scenario,
            outcome,
            violations=check.counts(),
            moment=where.split(" (")[0].split(",")[0],
            bytes_before_signal=sent,
            exit_s=round(exit_s, 2),
            orphans_excused=excused,
            seed=seed,
        )
        assert not check.details, f"seed {seed}, SIGINT during {where} after {sent} bytes: {check.details}\n{err}"
