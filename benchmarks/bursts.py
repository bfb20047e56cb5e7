"""How far one configuration's capacity bursts move, and whether a fresh Triton serves more than a reloaded one.

Run from the repository root (about 5 minutes; nothing else should run)::

    .venv/bin/python benchmarks/bursts.py

Two measurements over the tuner's own session (:func:`nexus.tune.own_triton.own_triton`) on the
batching benchmark's MLP, two instances, adaptive batching, p99 100 ms windows as ``--quick`` shapes them:

1. ``back to back``: after each of three reloads, four bursts at 10,000 req/s of max batch 64 and of
   max batch 32, in turns (AB, BA, AB). Says how wide one burst's figure is, and whether the first
   burst after a load is the lowest (a cold start).
2. ``fresh``: max batch 32 as the tuner's Triton first serves it, then after 2, 4 and 6 more reloads; five
   bursts at 8,000 req/s each time. Until 2026-12-07 the tuner's Triton started on its first configuration
   (a fresh Triton served more); since then it starts on a variant and loads the first one
   (:func:`nexus.tune.own_triton.starter`), so the first line is after one reload.

It prints the achieved rates; docs/tuning.md quotes a run of it (2026-12-07).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tune import make_project
from nexus.serving.model_config import ServingOptions
from nexus.tune.own_triton import own_triton
from nexus.tune.probe import burst_connections
from nexus.tune.session import Session, TuneHooks
from nexus.tune.settings import TuneSettings
from nexus.tune.target import Target

SMALL = ServingOptions(max_batch_size=32, max_queue_delay_us=5000, policy="adaptive", instances=2, torch_threads=1)
LARGE = ServingOptions(max_batch_size=64, max_queue_delay_us=5000, policy="adaptive", instances=2, torch_threads=1)


def bursts(session: Session, options: ServingOptions, rate: float, count: int) -> str:
    """``count`` capacity bursts at ``rate`` on what Triton serves now; their achieved rates."""
    connections = burst_connections(options, session.version)
    session.reference()  # as the tuner does before each search
    achieved = [session._probe(rate, session.shape.burst, connections).achieved for _ in range(count)]
    return ", ".join(f"{a:,.0f}" for a in achieved)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp))
        settings = TuneSettings("mlp", Target(99, 100), quick=True, record=False, out=Path(tmp) / "out")
        version = project.resolve("mlp")
        with own_triton(project, settings, version, SMALL, Path(tmp), math.inf, TuneHooks()) as session:
            print(f"fresh: mbs 32 as the tuner first serves it: {bursts(session, SMALL, 8000, 5)}", flush=True)
            for reloads in (2, 4, 6):
                session.candidates.apply(LARGE)
                session.candidates.apply(SMALL)
                print(f"fresh: mbs 32 after {reloads} more reloads: {bursts(session, SMALL, 8000, 5)}", flush=True)
            for turn in range(3):
                order = ((LARGE, SMALL), (SMALL, LARGE)) if turn % 2 == 0 else ((SMALL, LARGE), (LARGE, SMALL))
                for options, other in order:
                    session.candidates.apply(other)
                    session.candidates.apply(options)
                    line = bursts(session, options, 10000, 4)
                    print(f"back to back: turn {turn} mbs {options.max_batch_size} after a load: {line}", flush=True)


if __name__ == "__main__":
    main()
