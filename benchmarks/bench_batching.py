"""Batching benchmark: one model served every way NexusML can, closed loop and open loop, beside its in-process limit.

Run from the repository root (or ``make bench-batching``)::

    .venv/bin/python benchmarks/bench_batching.py                 # both models, closed and open loop (~25 min)
    .venv/bin/python benchmarks/bench_batching.py --quick         # the MLP, concurrency 1 and 32, three rates
    .venv/bin/python benchmarks/bench_batching.py --tuned docs/tuned.json   # also the configs `nexus tune` picked
    .venv/bin/python benchmarks/bench_batching.py --instances 1   # every config with one model instance
    .venv/bin/python benchmarks/bench_batching.py --profile       # also time model.py: forward pass and other Python
    .venv/bin/python benchmarks/bench_batching.py --out DIR       # write DIR/batching.md and the PNG (default docs/)

Two reference models (``_bench_models.py``), exported as TorchScript and stored in a throwaway git
repository: an MLP 784→2048→2048→10 and a small CNN on 1×28×28 images. Each is stored under one name
per config and published that way into one model repository, served by one Triton:

- ``baseline``: no dynamic batching and one instance: the plain deployment the seed measured;
- ``nobatch``: no dynamic batching, with the instance count of the rows below;
- ``window``: the seed's default, batches of up to 32 that wait out ``max_queue_delay_microseconds: 50000``;
- ``delay0``: the same with ``max_queue_delay_microseconds: 0``;
- ``adaptive``: NexusML's default, every size preferred with the 50 ms as a bound (``--batching adaptive``);
- ``adaptive0``: the same with delay 0 (Triton then closes each batch as it is formed, see docs/batching.md);
- ``tunedNms``: with ``--tuned FILE``, the options `nexus tune` picked for p99 ≤ N ms (the JSON
  ``{"mlp": {"5": {ServingOptions fields}, ...}, ...}`` that ``bench_tune.py`` writes);
- ``prio`` and ``noprio``: for the priority rows only, one instance and batches of at most 4, with 2
  priority levels and without (a server small enough that the client can overload it).

All but the baseline get NexusML's automatic instance count (two for these models; ``--instances N``
sets it), each with one torch thread. For each model:

1. **Closed loop** (``_bench_client.py``): each config at each concurrency, a warm-up and a measured
   window. Triton's statistics before and after give the average batch and where each request's time
   went, ``/proc`` where the CPU went, ``--profile`` how long `model.py` spent in and around the
   forward pass. A row during which other programs used more than ``--max-other`` of the cores is
   measured again once the machine is quiet.
2. **Open loop** (``_bench_openloop.py``): the capacity is the best closed-loop throughput at the
   highest concurrency; every batching config is driven with Poisson arrivals at shares of it, from
   2 % up to saturation, latency counted from each request's scheduled send time. At a rate below
   saturation where the default's p99 is more than 10 % over the best, every config is measured
   again, interleaved, up to ``--rounds`` in all, and each keeps its median round: one 5 s window's
   p99 moves by more than 10 % on this machine, and the lowest of six single windows is a lucky one.
3. **Priorities**: the capacity of ``prio`` and ``noprio`` closed loop, then open loop (what an
   overload burst gets served), then 1.3x the higher one open loop on both (a backlog builds), 5 % of
   the requests at priority 1 on ``prio``, the same share only counted apart on ``noprio``. The
   window is shortened where the backlog would outgrow the client's connections (up to 12,288).

The in-process forward throughput at batch 1 and 32 (one torch thread, ``torch.inference_mode()``,
best of three) is the limit; efficiency is served requests/s over the in-process samples/s at batch
32. ``_bench_targets.py`` checks the issue's targets for the default config.

A run writes ``OUT/<name>.png`` and replaces its block (between ``<!-- bench:<name>:begin -->`` and
``<!-- bench:<name>:end -->``) in ``OUT/batching.md``, leaving the prose around it alone; ``<name>``
is ``batching``, or ``batching-N-instance(s)`` with ``--instances N``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_client import ClosedLoopClient, StatsDelta, infer_request
from _bench_cpu import CpuSnapshot, CpuUse, wait_until_quiet
from _bench_models import MODELS, Reference, export, in_process
from _bench_openloop import (
    FRACTIONS,
    PRIORITY_BURST,
    PRIORITY_CONNECTIONS,
    PRIORITY_LOAD,
    PRIORITY_MODELS,
    QUICK_FRACTIONS,
    OpenRow,
    default_misses,
    measure_open,
    measure_priority,
    median_round,
    open_capacity,
    priority_window,
    rates,
)
from _bench_profile import ENV as PROFILE_ENV
from _bench_profile import HOOK as PROFILE_HOOK
from _bench_profile import ExecuteTotals, read_totals
from _bench_project import throwaway_project
from _bench_report import Results, Row, write_report
from nexus.machine import cores, cpu_model
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import AUTO_INSTANCES, ServingOptions
from nexus.serving.publish import publish
from nexus.serving.server import TritonServer, free_ports

CONFIGS = {
    "baseline": ServingOptions(batching=False, instances=1),
    "nobatch": ServingOptions(batching=False),
    "window": ServingOptions(policy="window"),
    "delay0": ServingOptions(max_queue_delay_us=0, policy="window"),
    "adaptive": ServingOptions(),
    "adaptive0": ServingOptions(max_queue_delay_us=0),
}
#: Published beside the others for the priority rows only: a smaller server (one instance, batches of
#: at most 4), with 2 priority levels and without. The rows overload it (:data:`PRIORITY_LOAD` times its
#: own capacity) so that a backlog builds; at the full configs' capacity the client, on the two cores it
#: shares with Triton, cannot send that much: it falls behind, the backlog waits in the client, where no
#: priority reaches it (the rows of 2026-12-02 and 2026-12-07 measured that). The small server's overload
#: is a rate the client keeps to.
PRIORITY_CONFIGS = {
    "prio": ServingOptions(priority_levels=2, instances=1, max_batch_size=4),
    "noprio": ServingOptions(instances=1, max_batch_size=4),
}
#: The open-file limit this process (and so Triton) asks for: the priority rows' connections and more.
OPEN_FILES = 16384


def read_tuned(path: Path | None) -> dict[str, dict[str, ServingOptions]]:
    """``--tuned FILE`` -> model -> config name (``tuned5ms``) -> the options `nexus tune` picked."""
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {
        model: {f"tuned{target}ms": ServingOptions(**fields) for target, fields in picks.items()}
        for model, picks in data.items()
    }


def configs(
    instances: int | None, kind: str = "auto", tuned: dict[str, ServingOptions] | None = None
) -> dict[str, ServingOptions]:
    """The configs a run measures: ``baseline`` stays at one instance, the others get ``instances``
    (the tuned ones keep their own); all of them instances of ``kind`` (auto, cpu or gpu)."""
    chosen = {
        name: replace(o, kind=kind) if name == "baseline" else replace(o, instances=instances, kind=kind)
        for name, o in CONFIGS.items()
    }
    if instances == 1:
        del chosen["baseline"]  # the same as nobatch
    chosen.update({name: replace(o, kind=kind) for name, o in (tuned or {}).items()})
    return chosen


def published(
    instances: int | None, kind: str, tuned: dict[str, ServingOptions] | None, priority: bool
) -> dict[str, ServingOptions]:
    """Every config put into the repository: those measured, and the priority row's."""
    chosen = configs(instances, kind, tuned)
    if priority:
        chosen.update({name: replace(o, kind=kind) for name, o in PRIORITY_CONFIGS.items()})
    return chosen


def make_repository(
    workdir: Path,
    models: list[str],
    instances: int | None = None,
    backend: Path | None = None,
    profile: bool = False,
    kind: str = "auto",
    tuned: dict[str, dict[str, ServingOptions]] | None = None,
    priority: bool = False,
) -> tuple[Path, dict[str, Path]]:
    """A throwaway git project with every model stored under each config's name, published into one repository.

    ``backend`` replaces the published `model.py` (to compare another version of it with the template);
    ``profile`` appends the timing hook of ``_bench_profile.py`` to it.
    """
    project = throwaway_project(workdir, Path(__file__))
    project_dir = project.root
    repository = workdir / "model_repository"
    artifacts = {}
    for name in models:
        reference = MODELS[name]
        artifacts[name] = export(reference, project_dir / f"{name}.pt")
        for config, options in published(instances, kind, (tuned or {}).get(name), priority).items():
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


def measure_rounds(
    server: TritonServer,
    reference: Reference,
    configs: list[str],
    concurrencies: list[int],
    rounds: int,
    warmup: float,
    seconds: float,
    max_other: float,
) -> list[Row]:
    """The rows near saturation, where configs differ by less than the machine's drift: every config in turn,
    ``rounds`` times over, so each round compares them within minutes; each row is its median round."""
    runs: dict[tuple[str, int], list[Row]] = {}
    for _ in range(rounds):
        for concurrency in concurrencies:
            for config in configs:
                row = measure_quietly(server, reference, config, concurrency, warmup, seconds, max_other)
                runs.setdefault((config, concurrency), []).append(row)
    kept = []
    for rows in runs.values():
        ranked = sorted(rows, key=lambda r: r.throughput)
        kept.append(replace(ranked[len(ranked) // 2], rounds=tuple(r.throughput for r in rows)))
    return kept


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


def bench_server(repository: Path, workdir: Path) -> TritonServer:
    """A `tritonserver` on ``repository`` on free loopback ports, its log in ``workdir``."""
    http_port, grpc_port, metrics_port = free_ports(3)
    return TritonServer(
        repository=str(repository),
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_file=workdir / "triton.log",
    )


def server_version(url: str) -> str:
    return str(TritonAdmin(url).server_metadata()["version"])


def machine() -> str:
    return f"{cpu_model()}, {cores()} cores"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="MLP only, concurrency 1 and 32, three rates, short runs")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for batching.md and batching.png")
    parser.add_argument("--seconds", type=float, help="measured window per closed-loop row (default 6, quick 2)")
    parser.add_argument("--open-seconds", type=float, help="measured window per open-loop row (default 5, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up per row (default 2, open loop 1; quick 0.5)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), help="default: mlp cnn (quick: mlp)")
    parser.add_argument("--concurrency", nargs="+", type=int, help="default: 1 8 32 64 128 (quick: 1 32)")
    parser.add_argument(
        "--rounds",
        type=int,
        help="measure the two highest concurrencies, and the open-loop rates where the default missed its bound, "
        "this many times, configs interleaved, and keep each median (default 3, quick 1)",
    )
    shares = f"default {' '.join(map(str, FRACTIONS))}; quick {' '.join(map(str, QUICK_FRACTIONS))}"
    parser.add_argument("--fractions", nargs="+", type=float, help=f"open-loop rates as shares of capacity ({shares})")
    parser.add_argument("--no-open", action="store_true", help="closed loop only (no open-loop or priority rows)")
    parser.add_argument("--tuned", type=Path, help="JSON of tuned options per model and p99 target (bench_tune.py)")
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
    return parser.parse_args(argv)


def run_model(
    server: TritonServer,
    reference: Reference,
    measured: dict[str, ServingOptions],
    args: argparse.Namespace,
    results: Results,
) -> None:
    """Every row of one model: closed loop, then open loop at shares of the capacity, then priorities."""
    concurrencies = args.concurrency or ([1, 32] if args.quick else [1, 8, 32, 64, 128])
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    warmup = args.warmup or (0.5 if args.quick else 2.0)
    max_other = args.max_other if args.max_other is not None else (1.0 if args.quick else 0.1)
    rounds = args.rounds or (1 if args.quick else 3)
    interleaved = sorted(concurrencies)[-2:] if rounds > 1 else []
    closed = []
    for config in measured:
        for concurrency in concurrencies:
            if concurrency not in interleaved:
                closed.append(measure_quietly(server, reference, config, concurrency, warmup, seconds, max_other))
    closed += measure_rounds(server, reference, list(measured), interleaved, rounds, warmup, seconds, max_other)
    closed.sort(key=lambda r: (list(measured).index(r.config), r.concurrency))
    results.closed += closed
    if args.no_open:
        return
    batched = [c for c, o in measured.items() if o.batching]
    top = max(concurrencies)
    capacity = max(r.throughput for r in closed if r.concurrency == top and r.config in batched)
    print(f"{reference.name} capacity: {capacity:,.0f} req/s (best closed loop at concurrency {top})", flush=True)
    open_seconds = args.open_seconds or (2.0 if args.quick else 5.0)
    open_warmup = args.warmup or (0.5 if args.quick else 1.0)
    for fraction, rate in rates(capacity, tuple(args.fractions or (QUICK_FRACTIONS if args.quick else FRACTIONS))):
        rounds_at = [open_round(server, reference, batched, fraction, rate, open_warmup, open_seconds, not args.quick)]
        while len(rounds_at) < rounds and fraction < 1 and default_misses(rounds_at[0]):
            # measured again only where the default missed its bound below saturation
            rounds_at.append(
                open_round(server, reference, batched, fraction, rate, open_warmup, open_seconds, not args.quick)
            )
        if len(rounds_at) == 1:
            results.open += rounds_at[0]
        else:
            results.open += [median_round(list(rows)) for rows in zip(*rounds_at, strict=True)]
    if reference.name not in PRIORITY_MODELS:
        return
    # the priority rows' smaller server: its capacity closed loop (the table's), then open loop (an overload
    # burst); the higher open-loop capacity overloaded on both configs, in a window the backlog fits
    own = {
        c: measure_quietly(server, reference, c, top, warmup, seconds, max_other).throughput for c in PRIORITY_CONFIGS
    }
    connections = priority_connections()
    burst = PRIORITY_BURST * max(own.values())
    served = {
        c: open_capacity(server, reference, c, burst, open_warmup / 2, min(open_seconds, 2.0), connections)
        for c in PRIORITY_CONFIGS
    }
    offered = PRIORITY_LOAD * max(served.values())
    window = priority_window(offered, min(served.values()), open_warmup, open_seconds, connections)
    print(
        f"{reference.name} priority rows: {offered:,.0f} req/s offered for {window:.1f} s "
        f"(open-loop capacity {max(served.values()):,.0f}; {connections:,} connections)",
        flush=True,
    )
    for config, options in PRIORITY_CONFIGS.items():
        results.priority.append(
            measure_priority(
                server,
                reference,
                config,
                own[config],
                served[config],
                offered,
                open_warmup,
                window,
                connections,
                top=options.priority_levels > 0,
            )
        )


def open_round(
    server: TritonServer,
    reference: Reference,
    configs: list[str],
    fraction: float,
    rate: float,
    warmup: float,
    seconds: float,
    quiet: bool,
) -> list[OpenRow]:
    """Every config at one open-loop rate, in turn (each after the machine is quiet, with ``quiet``)."""
    rows = []
    for config in configs:
        if quiet:
            wait_until_quiet()
        rows.append(measure_open(server, reference, config, fraction, rate, warmup, seconds))
    return rows


def more_open_files() -> None:
    """Raise this process's (and so Triton's) open-file limit: the priority row opens thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def priority_connections() -> int:
    """The priority rows' connections: :data:`PRIORITY_CONNECTIONS`, less where the open-file limit is lower
    (Triton, started by this process, holds the other end of each one under the same limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return PRIORITY_CONNECTIONS
    return max(256, min(PRIORITY_CONNECTIONS, soft - 1024))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    more_open_files()
    models = args.models or (["mlp"] if args.quick else ["mlp", "cnn"])
    warmup = args.warmup or (0.5 if args.quick else 2.0)
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    inproc_seconds = 1.0 if args.quick else 6.0
    rounds = args.rounds or (1 if args.quick else 3)
    tuned = read_tuned(args.tuned)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    kind = "gpu" if device == "cuda" else "cpu"

    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        workdir = Path(tmp)
        repository, artifacts = make_repository(
            workdir, models, args.instances, args.backend, args.profile, kind, tuned, priority=not args.no_open
        )
        if args.profile:
            (workdir / "profile").mkdir()
            os.environ[PROFILE_ENV] = str(workdir / "profile")
        results = Results(
            in_proc={
                name: {
                    b: in_process(
                        artifacts[name],
                        MODELS[name].sample_shape,
                        b,
                        inproc_seconds,
                        quiet=not args.quick,
                        device=device,
                    )
                    for b in (1, 32)
                }
                for name in models
            }
        )
        for name, speeds in results.in_proc.items():
            print(f"{name} in-process: batch 1 {speeds[1]:,.0f}/s, batch 32 {speeds[32]:,.0f}/s", flush=True)
        with bench_server(repository, workdir) as server:
            triton_version = server_version(server.url)
            for name in models:
                run_model(server, MODELS[name], configs(args.instances, kind, tuned.get(name)), args, results)
    count = AUTO_INSTANCES if args.instances is None else args.instances
    plural = "s" if count > 1 else ""
    instances_text = f"{count} instance{plural}" + (" (automatic)" if args.instances is None else "")
    environment = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine() + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
        "torch": torch.__version__,
        "Triton": f"{triton_version} (the tritonserver in nvidia-pytriton {metadata.version('nvidia-pytriton')})",
        "run": f"closed loop {warmup:g} s warm-up and {seconds:g} s measured per row"
        + (
            f" (the two highest concurrencies: the median of {rounds} interleaved rounds, min-max beside it)"
            if rounds > 1
            else ""
        )
        + f"; {instances_text} per config "
        "(the baseline: one; tuned configs: their own), one torch thread each"
        + (f"; tuned configs from {args.tuned}" if args.tuned else "")
        + (f"; model.py from {args.backend}" if args.backend else "")
        + ("; model.py timed in the stub (--profile)" if args.profile else ""),
    }
    name = "batching" if args.instances is None else f"batching-{args.instances}-instance{plural}"
    title = f"{instances_text} per config, one torch thread each; {environment['machine']}"
    md, png = write_report(args.out, name, results, environment, title)
    print(f"wrote {md} and {png}")


if __name__ == "__main__":
    main()
