"""Transfer benchmark: NexusML store/load against plain copies, plain boto3 transfers and sha256.

Run from the repository root::

    .venv/bin/python benchmarks/bench_transfer.py                          # 1 GiB model, about 6 minutes
    .venv/bin/python benchmarks/bench_transfer.py --size-mib 64            # a quick run
    .venv/bin/python benchmarks/bench_transfer.py --markdown results.md    # also write a markdown table

Everything runs on this machine: a temporary git repository, a TorchScript model of random weights
(incompressible), a local-folder store and an S3 store served by moto on loopback. moto runs in a child
process so that the server does not share the benchmark's GIL (it still shares the machine's cores).

Method: the model file is in the page cache for every measurement, and dirty pages are flushed
(``os.sync``) before each timed operation so that one measurement's writes do not bleed into the next.
Each repetition runs the NexusML operation and then its baselines back to back, so drift hits all of
them alike. Every copy, NexusML's stored objects included, is deleted after its repetition: on a VM,
writing into memory that has not been used recently costs several times more, and whichever operation
did that would pay for it. A NexusML timing covers a whole library call as a user makes it:
``Project.open`` plus ``store``/``load`` (git checks, storage client, metadata update). Ratios are of
the medians. The "other CPU" column says how busy the cores were outside the benchmark: a row measured
while another program ran is skewed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import nexus
from nexus.machine import cpu_model
from nexus.registry import LoadResult, Project, StoreResult

BUCKET = "nexus-bench"
STORAGE_PREFIX = "models"
HASH_CHUNK = 1 << 20


def stored_name(label: str) -> str:
    """The model stored once, untimed, for the repeated-store and load measurements of a backend."""
    return f"bench-{label.lower()}-stored"


# -- measurement ----------------------------------------------------------------------------------


@dataclass
class Case:
    """One timed operation. ``prepare`` and ``cleanup`` run untimed around ``run`` (rep index as argument)."""

    name: str
    run: Callable[[int], object]
    prepare: Callable[[int], None] | None = None
    cleanup: Callable[[int], None] | None = None
    samples: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def measure(self, rep: int) -> float:
        if self.prepare:
            self.prepare(rep)
        os.sync()
        start = time.perf_counter()
        self.run(rep)
        elapsed = time.perf_counter() - start
        if self.cleanup:
            self.cleanup(rep)
        self.samples.append(elapsed)
        return elapsed


@dataclass
class Row:
    operation: str
    nexus: Case
    baseline: Case
    #: The largest acceptable ratio nexus/baseline, or None for a row shown for information.
    target: float | None
    #: Share of all cores busy outside the benchmark while this row was measured (None: unknown).
    foreign_cpu: float | None = None

    @property
    def ratio(self) -> float:
        return self.nexus.median / self.baseline.median

    @property
    def best_ratio(self) -> float:
        return self.nexus.best / self.baseline.best

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        return "met" if self.ratio <= self.target else "MISSED"

    def cells(self) -> list[str]:
        return [
            self.operation,
            str(len(self.nexus.samples)),
            f"{self.nexus.best:.3f} / {self.nexus.median:.3f}",
            self.baseline.name,
            f"{self.baseline.best:.3f} / {self.baseline.median:.3f}",
            f"{self.ratio:.2f}x ({self.best_ratio:.2f}x)",
            "—" if self.target is None else f"≤ {self.target:.1f}x",
            self.verdict,
            "?" if self.foreign_cpu is None else f"{self.foreign_cpu:.0%}",
        ]


HEADERS = ["operation", "reps", "nexus s (best / median)", "baseline", "baseline s (best / median)",
           "ratio: median (best)", "target", "verdict", "other CPU"]  # fmt: skip


class CpuMonitor:
    """How much CPU was busy outside the benchmark while we measured (Linux ``/proc``; None elsewhere).

    The machine's busy time minus that of this process, its waited-for children (git) and the moto
    server, as a share of all cores: other processes, plus kernel work charged to no process
    (writeback, loopback network interrupts), which the benchmark itself causes a little of.
    Tens of percent mean another program competed for the cores and the row is skewed.
    """

    def __init__(self) -> None:
        self.pids: list[int] = []  # our helper processes, besides this one
        self.shares: list[float] = []

    @staticmethod
    def _machine_busy() -> int:
        fields = [int(x) for x in Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()[1:]]
        return sum(fields) - fields[3] - fields[4]  # all but idle and iowait

    def _ours(self) -> int:
        total = 0
        for pid in ["self", *map(str, self.pids)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total

    def snapshot(self) -> tuple[float, int, int] | None:
        if not Path("/proc/stat").is_file():
            return None
        return time.perf_counter(), self._machine_busy(), self._ours()

    def others_share(self, start: tuple[float, int, int] | None) -> float | None:
        """Share of all cores used by other processes since ``start`` (0.0 to 1.0)."""
        end = self.snapshot()
        if start is None or end is None:
            return None
        ticks = os.sysconf("SC_CLK_TCK") * (end[0] - start[0]) * (os.cpu_count() or 1)
        share = max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / ticks)
        self.shares.append(share)
        return share


CPU = CpuMonitor()


def describe_share(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%} of the CPU"


def compare(operation: str, nexus: Case, baselines: list[tuple[Case, float | None]], reps: int) -> list[Row]:
    """Time ``nexus`` and each baseline ``reps`` times, interleaved; one row per baseline."""
    print(f"\n== {operation}", flush=True)
    cases = [nexus, *(case for case, _ in baselines)]
    start = CPU.snapshot()
    for rep in range(reps):
        for case in cases:
            elapsed = case.measure(rep)
            print(f"   rep {rep + 1}/{reps}  {case.name:<34} {elapsed:8.3f} s", flush=True)
    share = CPU.others_share(start)
    print(f"   CPU busy outside the benchmark: {describe_share(share)}", flush=True)
    return [Row(operation, nexus, case, target, share) for case, target in baselines]


def expect(condition: bool, message: str) -> None:
    """Stop the benchmark when it is not measuring what it claims to (never skipped, unlike assert)."""
    if not condition:
        raise RuntimeError(message)


# -- plain baselines ------------------------------------------------------------------------------


def plain_hash(path: Path) -> str:
    """Read the file once and sha256 it: the floor for anything that verifies every byte."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def copy_and_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


# -- fixtures: git repository, model, moto ---------------------------------------------------------


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def sealed_environment(work: Path) -> None:
    """Git identity and fake AWS credentials of our own; nothing from the user's settings leaks in."""
    gitconfig = work / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = Bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n"
        "[commit]\n\tgpgsign = false\n",
        encoding="utf-8",
    )
    for var in list(os.environ):
        if var.startswith(("AWS_", "NEXUS_", "GIT_")):
            del os.environ[var]
    os.environ.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(gitconfig),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummy credentials
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(work / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials"),
        }
    )


def make_repo(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    (root / "train.py").write_text("print('training')\n", encoding="utf-8")
    git(root, "add", "train.py")
    git(root, "commit", "-q", "-m", "initial")
    return root


def make_model(path: Path, size_mib: int) -> Path:
    """A TorchScript archive holding ``size_mib`` MiB of float32 random weights."""
    import torch

    class Blob(torch.nn.Module):
        def __init__(self, numel: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(numel), requires_grad=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight[0]

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Blob(size_mib * (1 << 20) // 4)), str(path))
    return path


def _serve_moto(port_queue: Any, tmp_dir: str) -> None:  # runs in the child process
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    tempfile.tempdir = tmp_dir  # moto spills objects above 5 MiB to temporary files: keep them in our folder
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    port_queue.put(server.get_host_and_port()[1])
    while True:
        time.sleep(3600)


def start_moto(tmp_dir: Path) -> tuple[multiprocessing.process.BaseProcess, str]:
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    process = ctx.Process(target=_serve_moto, args=(ports, str(tmp_dir)), daemon=True, name="moto")
    process.start()
    port = ports.get(timeout=60)
    return process, f"http://127.0.0.1:{port}"


def nexus_fingerprint() -> str:
    """Version and a digest of the nexus sources, so a figure can be tied to the code it measured."""
    package = Path(nexus.__file__).parent
    h = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        h.update(str(source.relative_to(package)).encode() + b"\0" + source.read_bytes())
    return f"nexus {nexus.__version__} (sources sha256 {h.hexdigest()[:12]})"


# -- machine --------------------------------------------------------------------------------------


def machine_info(model: Path, work: Path) -> list[tuple[str, str]]:
    cpu = cpu_model()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30) if hasattr(os, "sysconf") else 0.0
    packages = ("torch", "boto3", "botocore", "s3transfer", "moto")
    versions = ", ".join([nexus_fingerprint(), *(f"{p} {importlib_metadata.version(p)}" for p in packages)])
    size = model.stat().st_size
    return [
        ("machine", f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, {platform.system()} {platform.release()}"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", versions),
        ("model file", f"TorchScript archive, {size:,} bytes ({size / (1 << 20):.0f} MiB), random float32 weights"),
        ("temp folder", f"{work.parent} (model, stores, cache and outputs all on this filesystem)"),
    ]


# -- the benchmark ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, work: Path, model: Path, repo: Path) -> None:
        self.work = work
        self.model = model
        self.repo = repo
        self.out = work / "out.pt"
        self.rows: list[Row] = []

    def project(self, env: dict[str, str], cache: Path) -> Project:
        os.environ["NEXUS_CACHE_DIR"] = str(cache)  # read by ObjectCache() when the Project is built
        return Project.open(self.repo, env=env)

    def store(self, env: dict[str, str], cache: Path, name: str, action: str) -> StoreResult:
        result = self.project(env, cache).store(self.model, name)
        expect(result.action == action, f"store of {name}: expected {action!r}, got {result.action!r}")
        return result

    def load(self, env: dict[str, str], cache: Path, name: str, from_cache: bool) -> LoadResult:
        result = self.project(env, cache).load(name, output=self.out)
        expect(result.from_cache == from_cache, f"load of {name}: from_cache should be {from_cache}")
        return result

    def hash_case(self) -> Case:
        return Case("read + sha256 (hashlib)", lambda _: plain_hash(self.model))

    def clear_cache(self, cache: Path) -> Callable[[int], None]:
        def clear(_: int) -> None:
            shutil.rmtree(cache, ignore_errors=True)
            remove(self.out)

        return clear

    def store_and_load(
        self,
        label: str,
        env: dict[str, str],
        cache: Path,
        plain: dict[str, Case],
        drop: Callable[[str], None],
        reps: int,
    ) -> None:
        """Rows for one backend: fresh store, repeated store, uncached and cached load.

        ``plain`` holds the baselines: "store" (a plain upload/copy of the model, given the rep) and
        "load" (a plain download/copy of the object of :func:`stored_name` to ``self.out``), plus
        optional extras "store+" and "load+" shown for information. ``drop`` deletes a model's
        objects from the store behind NexusML's back: every timed write then starts from the same
        free space and memory, as the baselines do (they delete their copies too).
        """
        name = f"bench-{label.lower()}"
        stored = stored_name(label)
        self.rows += compare(
            f"store, new key ({label})",
            Case(
                "nexus store",
                lambda rep: self.store(env, cache, f"{name}-{rep}", "stored"),
                cleanup=lambda rep: drop(f"{name}-{rep}"),
            ),
            [(plain["store"], 1.2), *([(plain["store+"], None)] if "store+" in plain else [])],
            reps,
        )
        self.store(env, cache, stored, "stored")  # untimed: the object the rows below use
        self.rows += compare(
            f"store, same bytes again ({label})",
            Case("nexus store (unchanged)", lambda _: self.store(env, cache, stored, "unchanged")),
            [(self.hash_case(), 1.2)],
            reps,
        )
        self.rows += compare(
            f"load, cache empty ({label})",
            Case(
                "nexus load (uncached)",
                lambda _: self.load(env, cache, stored, from_cache=False),
                prepare=self.clear_cache(cache),
            ),
            [(plain["load"], None), *([(plain["load+"], None)] if "load+" in plain else [])],
            reps,
        )
        # the last uncached load filled the cache: what follows is served from it
        self.rows += compare(
            f"load, cache warm ({label})",
            Case(
                "nexus load (cached)",
                lambda _: self.load(env, cache, stored, from_cache=True),
                prepare=lambda _: remove(self.out),
            ),
            [(self.hash_case(), 1.2)],
            reps,
        )
        remove(self.out)

    def local(self, reps: int) -> None:
        store = self.work / "local-store"
        cache = self.work / "cache-local"
        env = {"NEXUS_STORAGE": f"file://{store}"}
        copy = self.work / "plain-copy.pt"

        def stored_object() -> Path:
            return next((store / stored_name("local")).glob("*.pt"))

        def drop(model_name: str) -> None:
            shutil.rmtree(store / model_name)

        plain = {
            "store": Case(
                "shutil.copyfile", lambda _: shutil.copyfile(self.model, copy), cleanup=lambda _: remove(copy)
            ),
            "store+": Case(
                "shutil.copyfile + fsync", lambda _: copy_and_fsync(self.model, copy), cleanup=lambda _: remove(copy)
            ),
            "load": Case(
                "shutil.copyfile (stored object)",
                lambda _: shutil.copyfile(stored_object(), self.out),
                prepare=lambda _: remove(self.out),
            ),
        }
        self.store_and_load("local", env, cache, plain, drop, reps)
        shutil.rmtree(store)

    def s3(self, endpoint: str, reps: int) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        cache = self.work / "cache-s3"
        env = {"NEXUS_STORAGE": f"s3://{BUCKET}/{STORAGE_PREFIX}", "NEXUS_ENDPOINT_URL": endpoint}
        client.head_bucket(Bucket=BUCKET)  # warm the connection and botocore's loaders

        def keys(model_name: str) -> list[str]:
            listing = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{STORAGE_PREFIX}/{model_name}/")
            return [str(obj["Key"]) for obj in listing.get("Contents", [])]

        def stored_key() -> str:
            return keys(stored_name("S3"))[0]

        def drop(model_name: str) -> None:
            for key in keys(model_name):
                client.delete_object(Bucket=BUCKET, Key=key)

        def delete_upload(rep: int) -> None:
            client.delete_object(Bucket=BUCKET, Key=f"plain/upload-{rep}.pt")

        def get_object_to_file(_: int) -> None:
            body = client.get_object(Bucket=BUCKET, Key=stored_key())["Body"]
            with open(self.out, "wb") as f:
                for chunk in body.iter_chunks(HASH_CHUNK):
                    f.write(chunk)

        plain = {
            "store": Case(
                "boto3 upload_file",
                lambda rep: client.upload_file(str(self.model), BUCKET, f"plain/upload-{rep}.pt"),
                cleanup=delete_upload,
            ),
            "load": Case(
                "boto3 download_file",
                lambda _: client.download_file(BUCKET, stored_key(), str(self.out)),
                prepare=lambda _: remove(self.out),
            ),
            "load+": Case("boto3 get_object, streamed", get_object_to_file, prepare=lambda _: remove(self.out)),
        }
        self.store_and_load("S3", env, cache, plain, drop, reps)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=obj["Key"])


# -- output ---------------------------------------------------------------------------------------


def text_table(rows: list[Row]) -> str:
    lines = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: list[Row], info: list[tuple[str, str]], command: str) -> str:
    lines = [f"- **{key}**: {value}" for key, value in info]
    lines += [f"- **command**: `{command}`", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=1024, help="model size in MiB (default 1024)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each S3 operation (default 3)")
    parser.add_argument("--local-reps", type=int, default=5, help="repetitions of each local operation (default 5)")
    parser.add_argument("--tmp-dir", type=Path, default=Path(tempfile.gettempdir()), help="where the big files go")
    parser.add_argument("--markdown", type=Path, help="also write the machine and the table as markdown here")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the S3 backend")
    parser.add_argument("--skip-local", action="store_true", help="leave out the local-folder backend")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-", dir=args.tmp_dir))
    moto: multiprocessing.process.BaseProcess | None = None
    try:
        # import every backend now: a long run must measure one version of the code throughout
        importlib.import_module("nexus.storage.local")
        if not args.skip_s3:
            importlib.import_module("nexus.storage.s3")
        sealed_environment(work)
        repo = make_repo(work / "repo")
        print(f"making a {args.size_mib} MiB TorchScript model in {work} ...", flush=True)
        model = make_model(work / "model.pt", args.size_mib)
        plain_hash(model)  # into the page cache
        info = machine_info(model, work)
        idle = CPU.snapshot()
        time.sleep(2)
        print(f"before the run, CPU busy outside the benchmark: {describe_share(CPU.others_share(idle))}", flush=True)
        for key, value in info:
            print(f"{key:>12}: {value}")

        bench = Bench(work, model, repo)
        if not args.skip_local:
            bench.local(args.local_reps)
        if not args.skip_s3:
            moto_tmp = work / "moto-tmp"
            moto_tmp.mkdir()
            moto, endpoint = start_moto(moto_tmp)
            CPU.pids.append(moto.pid or 0)
            print(f"\nmoto S3 server at {endpoint} (child process {moto.pid})", flush=True)
            bench.s3(endpoint, args.reps)

        print(f"\nfinished in {time.perf_counter() - started:.0f} s; seconds are best / median of the repetitions\n")
        if CPU.shares:
            busy = f"{CPU.shares[0]:.0%} before the run, {max(CPU.shares[1:] or [0]):.0%} at most during an operation"
            info.append(("CPU busy outside the benchmark", f"{busy} (share of all cores; column 'other CPU')"))
        print(text_table(bench.rows))
        print(f"\n{info[-1][0]}: {info[-1][1]}")
        if args.markdown:
            command = " ".join(
                ["python", "benchmarks/bench_transfer.py", *(argv if argv is not None else sys.argv[1:])]
            )
            args.markdown.write_text(markdown(bench.rows, info, command), encoding="utf-8")
            print(f"\nwrote {args.markdown}")
    finally:
        if moto is not None:
            moto.terminate()
            moto.join(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
