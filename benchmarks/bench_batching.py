"""Batching benchmark: the same model served without batching, with the default batching, and with delay 0.

Run from the repository root (or ``make bench-batching``)::

    .venv/bin/python benchmarks/bench_batching.py                 # both models, concurrency 1/8/32/64 (about 7 minutes)
    .venv/bin/python benchmarks/bench_batching.py --quick         # the MLP at concurrency 1 and 32, short runs
    .venv/bin/python benchmarks/bench_batching.py --instances 1   # every config with one model instance
    .venv/bin/python benchmarks/bench_batching.py --profile       # also time model.py: forward pass and other Python
    .venv/bin/python benchmarks/bench_batching.py --out DIR       # write DIR/batching.md and the PNG (default docs/)

Two reference models, exported as TorchScript and stored in a throwaway git repository: an MLP
784→2048→2048→10 and a small CNN on 1×28×28 images (float32, ``torch.manual_seed(0)``). Each is
stored under four names and published four ways into one model repository:

- ``baseline``: no dynamic batching and one instance: the plain deployment the seed measured;
- ``nobatch``: no dynamic batching, with the instance count of the rows below;
- ``batch50ms``: NexusML's default (batches of up to 32, ``max_queue_delay_microseconds: 50000``);
- ``batch0``: batches of up to 32 with ``max_queue_delay_microseconds: 0``.

The last three get NexusML's automatic instance count (two for these models; ``--instances N`` sets
it, and ``--instances 1`` drops the baseline row, which is then the same as ``nobatch``), each with
one torch thread, one Triton serving all of them. For each model, config and concurrency, the
closed-loop client in ``_bench_client.py`` runs a warm-up and then a measured window; Triton's
statistics before and after the window give the average executed batch size and where each request's
time went, ``/proc`` where the CPU went, and with ``--profile`` a timer inside the stub how long
`model.py` spent in and around the forward pass. A row during which other programs used more than
``--max-other`` of the cores is measured again once the machine is quiet. The in-process forward
throughput of the same artifact at batch 1 and 32 (one torch thread, ``torch.inference_mode()``,
best of three) is the limit this machine sets; efficiency is served requests/s divided by the
in-process samples/s at batch 32.

A run writes ``OUT/<name>.png`` and replaces its block (between ``<!-- bench:<name>:begin -->`` and
``<!-- bench:<name>:end -->``) in ``OUT/batching.md``, leaving the prose around it alone; ``<name>``
is ``batching``, or ``batching-N-instance(s)`` with ``--instances N``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_client import ClosedLoopClient, StatsDelta, infer_request
from _bench_cpu import CpuSnapshot, CpuUse, wait_until_quiet
from _bench_profile import ENV as PROFILE_ENV
from _bench_profile import HOOK as PROFILE_HOOK
from _bench_profile import ExecuteTotals, read_totals
from _bench_report import Row, write_report
from nexus.registry import Project
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import AUTO_INSTANCES, ServingOptions
from nexus.serving.publish import publish
from nexus.serving.server import TritonServer
from nexus.tensors import Signature, TensorSpec

CONFIGS = {
    "baseline": ServingOptions(batching=False, instances=1),
    "nobatch": ServingOptions(batching=False),
    "batch50ms": ServingOptions(policy="window"),
    "batch0": ServingOptions(max_queue_delay_us=0, policy="window"),
    "adaptive": ServingOptions(),
}


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(784, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048),
        torch.nn.ReLU(),
        torch.nn.Linear(2048, 10),
    )


def cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 7 * 7, 10),
    )


@dataclass(frozen=True)
class Reference:
    name: str
    build: Callable[[], torch.nn.Module]
    sample_shape: tuple[int, ...]
    outputs: int = 10

    @property
    def signature(self) -> Signature:
        return Signature(
            [TensorSpec("x", "float32", [-1, *self.sample_shape])], [TensorSpec("y", "float32", [-1, self.outputs])]
        )


MODELS = {"mlp": Reference("mlp", mlp, (784,)), "cnn": Reference("cnn", cnn, (1, 28, 28))}


def export(reference: Reference, path: Path) -> Path:
    module = reference.build().eval()
    torch.jit.script(module).save(str(path))  # type: ignore[no-untyped-call]  # untyped in torch
    return path


def in_process(
    path: Path, shape: tuple[int, ...], batch: int, seconds: float, quiet: bool = True, device: str = "cpu"
) -> float:
    """Samples/s of the artifact's forward pass at ``batch`` on ``device``, one torch thread, inference mode.

    The best of three runs, each started once the machine is quiet (with ``quiet``): the limit the
    served figures are compared with, so it is measured at its best. On a GPU each run ends with a
    synchronize, so that queued kernels are counted.
    """
    torch.set_num_threads(1)
    module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]  # untyped in torch
    x = torch.randn(batch, *shape, device=device)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    best = 0.0
    with torch.inference_mode():
        for _ in range(3):
            if quiet:
                wait_until_quiet()
            for _ in range(20):
                module(x)
            sync()
            n, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 3:
                module(x)
                n += 1
            sync()
            elapsed = time.perf_counter() - start
            best = max(best, n * batch / elapsed)
    return best


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def configs(instances: int | None, kind: str = "auto") -> dict[str, ServingOptions]:
    """The configs a run publishes: ``baseline`` stays at one instance, the others get ``instances``;
    all of them instances of ``kind`` (auto, cpu or gpu)."""
    chosen = {
        name: replace(o, kind=kind) if name == "baseline" else replace(o, instances=instances, kind=kind)
        for name, o in CONFIGS.items()
    }
    if instances == 1:
        del chosen["baseline"]  # the same as nobatch
    return chosen


def make_repository(
    workdir: Path,
    models: list[str],
    instances: int | None = None,
    backend: Path | None = None,
    profile: bool = False,
    kind: str = "auto",
) -> tuple[Path, dict[str, Path]]:
    """A throwaway git project with every model stored under each config's name, published into one repository.

    ``backend`` replaces the published `model.py` (to compare another version of it with the template);
    ``profile`` appends the timing hook of ``_bench_profile.py`` to it.
    """
    project_dir = workdir / "project"
    project_dir.mkdir()
    for key, value in {
        "GIT_AUTHOR_NAME": "NexusML Bench",
        "GIT_AUTHOR_EMAIL": "bench@nexusml.invalid",
        "GIT_COMMITTER_NAME": "NexusML Bench",
        "GIT_COMMITTER_EMAIL": "bench@nexusml.invalid",
        "NEXUS_CACHE_DIR": str(workdir / "cache"),
    }.items():
        os.environ[key] = value
    (project_dir / ".gitignore").write_text("*.pt\n", encoding="utf-8")
    (project_dir / "bench.py").write_bytes(Path(__file__).read_bytes())
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "bench"]):
        subprocess.run(cmd, cwd=project_dir, check=True)
    project = Project.open(project_dir, env={})
    repository = workdir / "model_repository"
    artifacts = {}
    for name in models:
        reference = MODELS[name]
        artifacts[name] = export(reference, project_dir / f"{name}.pt")
        for config, options in configs(instances, kind).items():
            served = f"{name}_{config}"
            project.store(artifacts[name], served, signature=reference.signature)
            result = publish(project, served, repository=repository, options=options)
            model_py = repository / result.files[0]
            source = (backend or model_py).read_text(encoding="utf-8")
            model_py.write_text(source + (PROFILE_HOOK if profile else ""), encoding="utf-8")
    return repository, artifacts


def measure_quietly(
    server: TritonServer,
    reference: Reference,
    config: str,
    concurrency: int,
    warmup: float,
    seconds: float,
    max_other: float,
) -> Row:
    """One row; measured again (up to twice, after waiting for quiet) while other programs took the cores."""
    row = measure(server, reference, config, concurrency, warmup, seconds)
    for _ in range(2):
        if row.cpu.other <= max_other:
            break
        print(f"  other programs used {row.cpu.other:.0%} of the cores; measuring again", flush=True)
        wait_until_quiet()
        again = measure(server, reference, config, concurrency, warmup, seconds)
        row = min(row, again, key=lambda r: r.cpu.other)
    return row


def measure(
    server: TritonServer, reference: Reference, config: str, concurrency: int, warmup: float, seconds: float
) -> Row:
    model = f"{reference.name}_{config}"
    profile_dir = Path(os.environ[PROFILE_ENV]) if PROFILE_ENV in os.environ else None
    x = np.random.default_rng(0).standard_normal((1, *reference.sample_shape)).astype(np.float32)
    request = infer_request(server.host, server.http_port, model, {"x": x}, ["y"])
    with ClosedLoopClient(server.host, server.http_port, request, 4 * reference.outputs, concurrency) as client:
        client.run(warmup)
        before = TritonAdmin(server.url).stats(model)
        profile_before = read_totals(profile_dir, model) if profile_dir else None
        cpu_before = CpuSnapshot.take(server.pid)
        result = client.run(seconds)
        cpu_after = CpuSnapshot.take(server.pid)
        profile_after = read_totals(profile_dir, model) if profile_dir else ExecuteTotals()
        after = TritonAdmin(server.url).stats(model)
    stats = StatsDelta.between(before, after)
    row = Row(
        model=reference.name,
        config=config,
        concurrency=concurrency,
        throughput=result.throughput,
        p50=result.percentile_ms(50),
        p95=result.percentile_ms(95),
        p99=result.percentile_ms(99),
        avg_batch=stats.avg_batch,
        stats=stats,
        cpu=CpuUse.between(cpu_before, cpu_after, result.requests),
        profile=profile_after.minus(profile_before) if profile_before is not None else None,
    )
    print(row.summary(), flush=True)
    return row


def server_version(url: str) -> str:
    return str(TritonAdmin(url).server_metadata()["version"])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="MLP only, concurrency 1 and 32, short runs")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for batching.md and batching.png")
    parser.add_argument("--seconds", type=float, help="measured window per run (default 10, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up per run (default 2, quick 0.5)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default: mlp cnn (quick: mlp)")
    parser.add_argument("--concurrency", nargs="+", type=int, help="default: 1 8 32 64 (quick: 1 32)")
    parser.add_argument(
        "--instances", type=int, help=f"model instances per config (default: NexusML's automatic {AUTO_INSTANCES})"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the models run, in-process and in Triton (default: cuda when torch sees a GPU)",
    )
    parser.add_argument("--backend", type=Path, help="serve this model.py instead of the template (a before/after)")
    parser.add_argument(
        "--profile", action="store_true", help="time model.py's forward pass and the Python around it, in the stub"
    )
    parser.add_argument(
        "--max-other",
        type=float,
        help="measure a row again when other programs used more than this share of the cores "
        "(default 0.1; quick: never)",
    )
    args = parser.parse_args(argv)
    models = args.models or (["mlp"] if args.quick else ["mlp", "cnn"])
    concurrencies = args.concurrency or ([1, 32] if args.quick else [1, 8, 32, 64])
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    warmup = args.warmup or (0.5 if args.quick else 2.0)
    inproc_seconds = 1.0 if args.quick else 6.0
    max_other = args.max_other if args.max_other is not None else (1.0 if args.quick else 0.1)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    kind = "gpu" if device == "cuda" else "cpu"

    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        workdir = Path(tmp)
        repository, artifacts = make_repository(workdir, models, args.instances, args.backend, args.profile, kind)
        if args.profile:
            (workdir / "profile").mkdir()
            os.environ[PROFILE_ENV] = str(workdir / "profile")
        in_proc = {
            name: {
                b: in_process(
                    artifacts[name], MODELS[name].sample_shape, b, inproc_seconds, quiet=not args.quick, device=device
                )
                for b in (1, 32)
            }
            for name in models
        }
        for name, speeds in in_proc.items():
            print(f"{name} in-process: batch 1 {speeds[1]:,.0f}/s, batch 32 {speeds[32]:,.0f}/s", flush=True)
        server = TritonServer(
            repository=str(repository),
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_file=workdir / "triton.log",
        )
        rows: list[Row] = []
        with server:
            triton_version = server_version(server.url)
            for name in models:
                for config in configs(args.instances):
                    for concurrency in concurrencies:
                        rows.append(
                            measure_quietly(server, MODELS[name], config, concurrency, warmup, seconds, max_other)
                        )
    count = AUTO_INSTANCES if args.instances is None else args.instances
    plural = "s" if count > 1 else ""
    instances_text = f"{count} instance{plural}" + (" (automatic)" if args.instances is None else "")
    environment = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine() + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
        "torch": torch.__version__,
        "Triton": f"{triton_version} (the tritonserver in nvidia-pytriton {metadata.version('nvidia-pytriton')})",
        "run": f"{warmup:g} s warm-up, {seconds:g} s measured per row; {instances_text} per config "
        "(the baseline: one), one torch thread each"
        + (f"; model.py from {args.backend}" if args.backend else "")
        + ("; model.py timed in the stub (--profile)" if args.profile else ""),
    }
    name = "batching" if args.instances is None else f"batching-{args.instances}-instance{plural}"
    title = f"{instances_text} per config, one torch thread each; {environment['machine']}"
    md, png = write_report(args.out, name, rows, in_proc, environment, title)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
