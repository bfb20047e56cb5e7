"""A full disk during store, load or publish: one line naming the path and the space needed, exit 1.

Two ways to fill a disk. A real one: a 512 KiB tmpfs mounted in the test's folder (needs root and
the right to mount; skipped with the reason otherwise), written through the real console script.
An injected one, run everywhere: the kernel copies (`copy_file_range`, `sendfile`) and `os.write`
into one folder fail with ENOSPC or EDQUOT after a first chunk, so a half-written file exists and
must be cleaned up; that runs the CLI in-process (Typer's CliRunner) so the patch applies.

Each test checks that nothing half-written is left (every file below the full folder is listed)
and that `.nexus_meta.json` is byte for byte what it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backends import gcs_backend, s3_backend
from conftest import GCSServer, S3Server
from helpers import GitRepo
from nexus.cli import app
from nexus.registry.metadata import META_FILE

SMALL_FS = 512 << 10
BIG = 1 << 20  # more than SMALL_FS: never fits

RunNexus = Callable[..., subprocess.CompletedProcess[str]]


def make_big_onnx(path: Path, columns: int) -> Path:
    """A real ONNX model (y = x @ W, W of 4 x ``columns`` floats) that records its own signature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, columns)).astype(np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", columns])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_big_onnx(tmp_path_factory.mktemp("big") / "big.onnx", BIG // 16)
    assert path.stat().st_size > SMALL_FS
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_big_onnx(tmp_path_factory.mktemp("small") / "small.onnx", 8)


def files_under(folder: Path) -> list[str]:
    """Every file (hidden ones too) below ``folder``, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def assert_disk_full_error(exit_code: int, stderr: str, path: Path, quota: bool = False) -> str:
    """Exit 1 and one line on stderr that says no space (a quota is used up) and names ``path``; returns the line."""
    lines = stderr.strip().splitlines()
    assert exit_code == 1, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "bug" not in stderr
    assert "no space" in lines[0].lower()
    assert str(path) in lines[0]
    assert ("quota" in lines[0]) == quota
    return lines[0]


def meta_bytes(repo: GitRepo) -> bytes | None:
    path = repo.root / META_FILE
    return path.read_bytes() if path.exists() else None


# --- a real small filesystem ----------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs mounted at `tmp_path/small_fs`, unmounted afterwards."""
    mount = tmp_path / "small_fs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the injected-ENOSPC tests below cover the code")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip()}); the injected-ENOSPC tests run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_store_into_a_full_local_store_names_the_store_and_records_nothing(
    repo: GitRepo, small_fs: Path, small_model: Path, big_model: Path, run_nexus: RunNexus
) -> None:
    env = {"NEXUS_STORAGE": str(small_fs / "store")}
    run_nexus("store", str(small_model), "wide", "--commit", cwd=repo.root, env=env, check=True)
    repo.gen({"train.py": "print('bigger')\n"}, commit="bigger model")
    before, stored = meta_bytes(repo), files_under(small_fs)

    result = run_nexus("store", str(big_model), "wide", cwd=repo.root, env=env)

    line = assert_disk_full_error(result.returncode, result.stderr, small_fs / "store")
    assert "1.0 MiB needed" in line
    assert "NEXUS_STORAGE" in line
    assert files_under(small_fs) == stored  # the first version only: no temporary file
    assert meta_bytes(repo) == before
    assert run_nexus("load", "wide", "-o", str(repo.root.parent / "v1.onnx"), cwd=repo.root, env=env).returncode == 0


def test_load_to_a_full_output_disk_writes_nothing_there(
    repo: GitRepo, tmp_path: Path, small_fs: Path, big_model: Path, run_nexus: RunNexus
) -> None:
    run_nexus("store", str(big_model), "wide", "--commit", cwd=repo.root, check=True)
    before = meta_bytes(repo)
    target = small_fs / "out.onnx"

    result = run_nexus("load", "wide", "-o", str(target), cwd=repo.root)

    line = assert_disk_full_error(result.returncode, result.stderr, target)
    assert "-o PATH" in line
    assert files_under(small_fs) == []
    assert meta_bytes(repo) == before
    assert run_nexus("load", "wide", "-o", str(tmp_path / "out.onnx"), cwd=repo.root).returncode == 0
    assert (tmp_path / "out.onnx").read_bytes() == big_model.read_bytes()


def test_load_with_the_cache_on_a_full_disk_keeps_no_partial_cache_entry(
    repo: GitRepo, tmp_path: Path, small_fs: Path, big_model: Path, run_nexus: RunNexus
) -> None:
    run_nexus("store", str(big_model), "wide", "--commit", cwd=repo.root, check=True)
    before = meta_bytes(repo)
    cache = small_fs / "cache"
    target = tmp_path / "out.onnx"

    result = run_nexus("load", "wide", "-o", str(target), cwd=repo.root, env={"NEXUS_CACHE_DIR": str(cache)})

    line = assert_disk_full_error(result.returncode, result.stderr, cache)
    assert "NEXUS_CACHE_DIR" in line
    assert "1.0 MiB needed" in line
    assert files_under(small_fs) == []
    assert not target.exists()
    assert meta_bytes(repo) == before


@pytest.mark.parametrize("cloud", ["s3", "gcs"])
def test_download_from_a_bucket_into_a_full_cache_keeps_no_partial_cache_entry(
    repo: GitRepo,
    tmp_path: Path,
    small_fs: Path,
    big_model: Path,
    run_nexus: RunNexus,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    cloud: str,
) -> None:
    if cloud == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        store = s3_backend(server.endpoint, request.getfixturevalue("s3_bucket"), server.client())
    else:
        gcs: GCSServer = request.getfixturevalue("gcs_server")
        store = gcs_backend(request.getfixturevalue("gcs_bucket"), gcs.client())
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    run_nexus("store", str(big_model), "wide", "--commit", cwd=repo.root, check=True)
    before = meta_bytes(repo)
    cache = small_fs / "cache"

    result = run_nexus(
        "load", "wide", "-o", str(tmp_path / "out.onnx"), cwd=repo.root, env={"NEXUS_CACHE_DIR": str(cache)}
    )

    assert_disk_full_error(result.returncode, result.stderr, cache)
    assert files_under(small_fs) == []
    assert not (tmp_path / "out.onnx").exists()
    assert meta_bytes(repo) == before


def test_publish_to_a_full_repository_keeps_the_published_version(
    repo: GitRepo, small_fs: Path, small_model: Path, big_model: Path, run_nexus: RunNexus
) -> None:
    repository = small_fs / "repo"
    run_nexus("store", str(small_model), "wide", "--commit", cwd=repo.root, check=True)
    run_nexus("publish", "wide", "--repository", str(repository), cwd=repo.root, check=True)
    repo.gen({"train.py": "print('bigger')\n"}, commit="bigger model")
    run_nexus("store", str(big_model), "wide", "--commit", cwd=repo.root, check=True)
    before = meta_bytes(repo)
    published = {name: (repository / name).read_bytes() for name in files_under(repository)}
    assert sorted(published) == ["wide/1/model.onnx", "wide/1/model.py", "wide/config.pbtxt"]

    result = run_nexus("publish", "wide", "--repository", str(repository), cwd=repo.root)

    line = assert_disk_full_error(result.returncode, result.stderr, repository)
    assert "--repository" in line
    assert sorted(p.name for p in (repository / "wide").iterdir()) == ["1", "config.pbtxt"]  # no 2/, no staging
    assert {name: (repository / name).read_bytes() for name in files_under(repository)} == published
    assert meta_bytes(repo) == before


# --- an injected full disk, everywhere ------------------------------------------------------


class Disks:
    """Folders whose disk is full: writes there fail after the first 4 KiB of each file, and fsync at once."""

    def __init__(self) -> None:
        self.full: dict[Path, int] = {}
        self._written: dict[tuple[int, int], int] = {}

    def fill(self, folder: Path, code: int) -> None:
        self.full[folder] = code

    def make_room(self) -> None:
        self.full.clear()

    def room(self, fd: int, count: int) -> int:
        """How many of ``count`` bytes a write to ``fd`` may still put in its file; raises when none."""
        target = Path(f"/proc/self/fd/{fd}").readlink()
        for folder, code in self.full.items():
            if target.is_relative_to(folder):
                st = os.fstat(fd)
                key = (st.st_dev, st.st_ino)
                room = max(4096 - self._written.get(key, 0), 0)
                if room == 0 or count == 0:
                    raise OSError(code, os.strerror(code))
                self._written[key] = self._written.get(key, 0) + min(count, room)
                return min(count, room)
        return count


@pytest.fixture
def disks(monkeypatch: pytest.MonkeyPatch) -> Disks:
    """The lowest-level writes (kernel copies, `os.write`, `os.fsync`) made to fail in the folders filled."""
    disks = Disks()
    real_range, real_sendfile, real_write, real_fsync = os.copy_file_range, os.sendfile, os.write, os.fsync

    def copy_file_range(src: int, dst: int, count: int, offset_src: int | None = None, offset_dst: int | None = None):  # type: ignore[no-untyped-def]
        return real_range(src, dst, disks.room(dst, count), offset_src, offset_dst)

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        return real_sendfile(out_fd, in_fd, offset, disks.room(out_fd, count))

    def write(fd: int, data: bytes) -> int:
        return real_write(fd, memoryview(data)[: disks.room(fd, len(data))])

    def fsync(fd: int) -> None:  # where a network filesystem reports it: small writes are buffered until then
        disks.room(fd, 0)
        real_fsync(fd)

    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    monkeypatch.setattr(os, "sendfile", sendfile)
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    return disks


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


CODES = pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])


@CODES
def test_store_into_a_full_store_is_a_user_error(
    repo: GitRepo,
    tmp_path: Path,
    big_model: Path,
    disks: Disks,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("NEXUS_STORAGE", str(store))
    disks.fill(store, code)

    exit_code, stderr = cli("store", str(big_model), "wide")

    assert_disk_full_error(exit_code, stderr, store, quota=code == errno.EDQUOT)
    assert files_under(store) == []
    assert meta_bytes(repo) is None


@CODES
def test_load_to_a_full_output_folder_is_a_user_error(
    repo: GitRepo, tmp_path: Path, big_model: Path, disks: Disks, code: int
) -> None:
    assert cli("store", str(big_model), "wide", "--commit")[0] == 0
    before = meta_bytes(repo)
    out = tmp_path / "out"
    out.mkdir()
    disks.fill(out, code)

    exit_code, stderr = cli("load", "wide", "-o", str(out))

    assert_disk_full_error(exit_code, stderr, out / "wide.onnx", quota=code == errno.EDQUOT)
    assert files_under(out) == []
    assert meta_bytes(repo) == before


@CODES
def test_load_into_a_full_cache_is_a_user_error(
    repo: GitRepo, tmp_path: Path, big_model: Path, disks: Disks, code: int
) -> None:
    assert cli("store", str(big_model), "wide", "--commit")[0] == 0
    before = meta_bytes(repo)
    cache = Path(os.environ["NEXUS_CACHE_DIR"])
    disks.fill(cache, code)

    exit_code, stderr = cli("load", "wide", "-o", str(tmp_path / "out.onnx"))

    assert_disk_full_error(exit_code, stderr, cache, quota=code == errno.EDQUOT)
    assert files_under(cache) == []
    assert not (tmp_path / "out.onnx").exists()
    assert meta_bytes(repo) == before


@CODES
def test_publish_to_a_full_repository_is_a_user_error(
    repo: GitRepo, tmp_path: Path, big_model: Path, disks: Disks, code: int
) -> None:
    assert cli("store", str(big_model), "wide", "--commit")[0] == 0
    before = meta_bytes(repo)
    repository = tmp_path / "repository"
    disks.fill(repository, code)

    exit_code, stderr = cli("publish", "wide", "--repository", str(repository))

    line = assert_disk_full_error(exit_code, stderr, repository, quota=code == errno.EDQUOT)
    assert "--repository" in line
    assert [p.name for p in repository.rglob("*")] == ["wide"]  # an empty model folder: no version, no staging
    assert meta_bytes(repo) == before


@CODES
def test_a_full_disk_when_the_metadata_is_written_leaves_it_unchanged(
    repo: GitRepo,
    tmp_path: Path,
    small_model: Path,
    big_model: Path,
    disks: Disks,
    code: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXUS_STORAGE", str(tmp_path / "store"))
    assert cli("store", str(small_model), "wide", "--commit")[0] == 0
    repo.gen({"train.py": "print('bigger')\n"}, commit="bigger model")
    before = meta_bytes(repo)
    disks.fill(repo.root, code)

    exit_code, stderr = cli("store", str(big_model), "wide")

    assert_disk_full_error(exit_code, stderr, repo.root / META_FILE, quota=code == errno.EDQUOT)
    assert meta_bytes(repo) == before
    assert sorted(p.name for p in repo.root.iterdir()) == [".git", ".nexus", META_FILE, "train.py"]  # no temp file
    disks.make_room()  # the upload that was kept is recorded, nothing is sent twice
    result = CliRunner().invoke(app, ["store", str(big_model), "wide"])
    assert result.exit_code == 0, result.output
    assert "already in storage; recorded" in result.stdout
