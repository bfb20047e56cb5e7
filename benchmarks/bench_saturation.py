"""Saturation side by side: the default against the window and a few variants, interleaved on one Triton.

Run from the repository root::

    .venv/bin/python benchmarks/bench_saturation.py                      # MLP, concurrency 64 and 128, 3 rounds
    .venv/bin/python benchmarks/bench_saturation.py --rates 1.1 1.3      # and open loop at 110 %, 130 % of capacity
    .venv/bin/python benchmarks/bench_saturation.py --rounds 1 --seconds 1 --concurrency 64   # a smoke run
    .venv/bin/python benchmarks/bench_saturation.py --configs adaptive1 adaptive1p adaptive1q adaptive adaptivep \
        --concurrency 8 32 64 --rounds 2     # priorities / a queue bound (no prefetching), one instance and two

The configs differ in one thing each from the default (adaptive batching, two instances): the window
(the seed's config), one or three instances, and a queue bound (``max_queue_size``), under which
Triton's queue does not prefetch (the batcher waits for a free instance before it forms a batch).
Three more, measured on request: priority levels (no prefetching either) with one instance and with
two, and a queue bound with one.
Each round measures every config at every concurrency in turn, so drift of the machine falls on all
of them alike; each line prints every round. Nothing is written: docs/batching.md quotes the output.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_models import MODELS, export
from _bench_openloop import measure_open
from _bench_project import throwaway_project
from bench_batching import bench_server, measure, more_open_files
from nexus.serving.model_config import ServingOptions
from nexus.serving.publish import publish

VARIANTS = {
    "window": ServingOptions(policy="window", instances=2),
    "adaptive": ServingOptions(instances=2),
    "adaptive1": ServingOptions(instances=1),
    "adaptive3": ServingOptions(instances=3),
    "adaptiveq": ServingOptions(instances=2, max_queue_size=100_000),
    # no prefetching with one instance and with two (--configs ... --concurrency 8 32 64)
    "adaptive1p": ServingOptions(instances=1, priority_levels=2),
    "adaptive1q": ServingOptions(instances=1, max_queue_size=100_000),
    "adaptivep": ServingOptions(instances=2, priority_levels=2),
}
#: What a run measures unless ``--configs`` says otherwise.
DEFAULT_CONFIGS = ["window", "adaptive", "adaptive1", "adaptive3", "adaptiveq"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", choices=list(MODELS), default="mlp")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--rates", nargs="*", type=float, default=[], help="open loop at these shares of capacity")
    parser.add_argument("--configs", nargs="+", choices=list(VARIANTS), default=DEFAULT_CONFIGS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured window per row (warm-up: a third)")
    args = parser.parse_args(argv)
    more_open_files()
    reference = MODELS[args.model]
    closed: dict[tuple[str, int], list[str]] = {}
    opened: dict[tuple[str, float], list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="nexus-bench-saturation-") as tmp:
        workdir = Path(tmp)
        project = throwaway_project(workdir, Path(__file__))
        artifact = export(reference, project.root / f"{args.model}.pt")
        repository = workdir / "model_repository"
        for name in args.configs:
            project.store(artifact, f"{args.model}_{name}", signature=reference.signature)
            publish(project, f"{args.model}_{name}", repository=repository, options=VARIANTS[name])
        with bench_server(repository, workdir) as server:
            capacity = 0.0
            for _ in range(args.rounds):
                for concurrency in args.concurrency:
                    for name in args.configs:
                        row = measure(server, reference, name, concurrency, args.seconds / 3, args.seconds)
                        if name == "window":
                            capacity = max(capacity, row.throughput)
                        closed.setdefault((name, concurrency), []).append(
                            f"{row.throughput:,.0f} req/s p99 {row.p99:.1f} batch {row.avg_batch:.1f}"
                        )
                for share in args.rates:
                    for name in ("window", "adaptive"):
                        o = measure_open(server, reference, name, share, share * capacity, 1.0, args.seconds)
                        opened.setdefault((name, share), []).append(
                            f"{o.achieved:,.0f} of {o.offered:,.0f} req/s p99 {o.p99:.0f} batch {o.avg_batch:.1f}"
                        )
    print("\nclosed loop, each round:")
    for (name, concurrency), runs in closed.items():
        print(f"  {name:10} c={concurrency:<4} " + " | ".join(runs))
    if opened:
        print("open loop (shares of the window's best closed-loop req/s), each round:")
        for (name, share), runs in opened.items():
            print(f"  {name:10} {share:.0%} " + " | ".join(runs))


if __name__ == "__main__":
    main()
