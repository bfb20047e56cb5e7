"""Tuner benchmark: `nexus tune`'s quick search against an exhaustive grid, on the batching benchmark's MLP.

Run from the repository root (or ``make bench-tune``)::

    .venv/bin/python benchmarks/bench_tune.py                       # targets p99 5, 20, 100 ms (long: the grid)
    .venv/bin/python benchmarks/bench_tune.py --targets 20 --tiny   # a smoke run: 4 configurations, short windows
    .venv/bin/python benchmarks/bench_tune.py --out DIR             # write DIR/tuning.md (default docs/)

The MLP 784→2048→2048→10 of ``bench_batching.py`` is exported as TorchScript and stored in a throwaway
git project. For each target, the grid measures every configuration of the space (one Triton, each
configuration applied in turn, each with the full rate search the tuner uses), then the tuner runs
three times (no budget cut). Each of those runs at its own time, and on this machine the speed of a
forward pass moves by half within minutes, so their rates are not compared with each other: last,
the grid's best and the three picks are searched side by side, in rounds on one Triton
(`nexus.tune.side_by_side`), and the verdicts come from those medians. Written: the pick against the
grid's best (the issue's target: within 5 %), the tuner's time against the grid's (under a third),
and the three picks' rates (within 10 % of each other).
``OUT/tuned.json`` holds the tuner's pick per target, for ``bench_batching.py --tuned OUT/tuned.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench_models import MODELS, export
from _bench_project import throwaway_project
from bench_batching import machine
from nexus.errors import TargetUnreachableError
from nexus.registry import Project
from nexus.tune import Target, TuneResult, TuneSettings, side_by_side, tune
from nexus.tune.results import Contender
from nexus.tune.space import QUICK_SPACE, Space

TINY_SPACE: Space = {
    "instances": (1, 2),
    "max_batch_size": (8, 32),
    "policy": ("adaptive",),
    "max_queue_delay_us": (0, 5000, 20_000),
}
#: A grid this 2-core machine measures in about 15 minutes: 36 configurations (12 adaptive, 24 window).
BENCH_SPACE: Space = {
    "instances": (1, 2, 3),
    "max_batch_size": (4, 16, 32, 64),
    "policy": ("adaptive", "window"),
    "max_queue_delay_us": (1000, 5000),
}
SPACES = {"quick": QUICK_SPACE, "bench": BENCH_SPACE, "tiny": TINY_SPACE}


def make_project(workdir: Path) -> Project:
    """A throwaway git project with the reference models stored under their names (`mlp`, `cnn`)."""
    project = throwaway_project(workdir, Path(__file__))
    for name, reference in MODELS.items():
        project.store(export(reference, project.root / f"{name}.pt"), name, signature=reference.signature)
    return project


#: Rounds of the side-by-side comparison of the grid's best and the picks.
ROUNDS = 3
#: The issue's targets: the pick within 5 % of the grid's best, the tuner in a third of its time, the picks
#: within 10 % of each other.
PICK_SHARE, TIME_SHARE, PICKS_SPREAD = 0.95, 1 / 3, 0.10


@dataclass
class TargetRun:
    """One target: the grid, the tuner's three runs (each with its seconds), and the side-by-side comparison
    of the grid's best (first) and the distinct picks."""

    target: Target
    grid: TuneResult
    grid_s: float
    tuned: list[tuple[TuneResult, float]]
    compared: list[Contender]

    def grid_rate(self, result: TuneResult) -> float:
        """The rate the grid measured for ``result``'s winner."""
        return next((e.served for e in self.grid.evaluations if e.options == result.winner.options), 0.0)

    def contender(self, result: TuneResult) -> Contender:
        """``result``'s winner in the side-by-side rounds."""
        return next(c for c in self.compared if c.evaluation.options == result.winner.options)

    def side_by_side(self, result: TuneResult) -> float:
        """The median rate, in the side-by-side rounds, of ``result``'s winner."""
        return self.contender(result).spread.median

    @property
    def best_side_by_side(self) -> float:
        return self.compared[0].spread.median

    @property
    def pick_share(self) -> float:
        """The worst pick's side-by-side median over the grid's best's."""
        best = self.best_side_by_side
        return min(self.side_by_side(r) for r, _ in self.tuned) / best if best > 0 else 0.0

    @property
    def picks_spread(self) -> float:
        """The highest of the picks' side-by-side medians over the lowest, less one."""
        rates = [self.side_by_side(r) for r, _ in self.tuned]
        return max(rates) / min(rates) - 1 if min(rates) > 0 else math.inf

    @property
    def time_share(self) -> float:
        return sum(s for _, s in self.tuned) / len(self.tuned) / self.grid_s


def run_target(project: Project, target: Target, space: Space, seconds: float | None, out: Path) -> TargetRun | str:
    """The grid and three tuner runs for ``target``; the error's text when no configuration met it."""
    try:
        return _run_target(project, target, space, seconds, out)
    except TargetUnreachableError as e:
        print(f"{target}: {e}", flush=True)
        return f"| {target} | no configuration met it | | | | | |"


def _run_target(project: Project, target: Target, space: Space, seconds: float | None, out: Path) -> TargetRun:
    common: dict[str, Any] = {"quick": True, "space": space, "seconds": seconds, "record": False, "out": out}
    start = time.monotonic()
    # every configuration once, then the best few measured twice more, as the tuner does: medians on both sides
    grid = tune(project, TuneSettings("mlp", target, budget=4 * 3600, exhaustive=True, **common))
    grid_s = time.monotonic() - start
    print(f"{target}: grid best {grid.winner.label} {grid.spread.median:,.0f}/s in {grid_s:.0f} s "
          f"(speed {_speed(grid, ranged=True)} ms)", flush=True)  # fmt: skip
    tuned = []
    for i in range(3):
        start = time.monotonic()
        result = tune(project, TuneSettings("mlp", target, budget=3600, **common))
        tuned.append((result, time.monotonic() - start))
        print(f"  tuner run {i + 1}: {result.winner.label} {result.spread.median:,.0f}/s "
              f"({len(result.evaluations)} configs, {tuned[-1][1]:.0f} s, speed {_speed(result, ranged=True)} ms)",
              flush=True)  # fmt: skip
    # the grid's best first, then the picks: searched in rounds on one Triton, so a drift falls on all alike
    configurations = [grid.winner.options, *(r.winner.options for r, _ in tuned)]
    compared = side_by_side(project, TuneSettings("mlp", target, **common), configurations, rounds=ROUNDS)
    print(f"  side by side ({ROUNDS} rounds): "
          + "; ".join(f"{c.evaluation.label} {c.spread.median:,.0f}/s" for c in compared), flush=True)  # fmt: skip
    return TargetRun(target, grid, grid_s, tuned, compared)


def pick_only(project: Project, model: str, target: Target, space: Space, seconds: float | None, out: Path) -> Any:
    """One tuner run for ``model`` (no grid): the options it picks, for ``bench_batching.py --tuned``."""
    common: dict[str, Any] = {"quick": True, "space": space, "seconds": seconds, "record": False, "out": out}
    try:
        result = tune(project, TuneSettings(model, target, budget=3600, **common))
    except TargetUnreachableError as e:
        print(f"{model} {target}: {e}", flush=True)
        return None
    print(f"{model} {target}: tuner picks {result.winner.label} {result.spread.median:,.0f}/s", flush=True)
    return asdict(result.winner.options)


def tuned_picks(runs: list[TargetRun | str]) -> dict[str, dict[str, Any]]:
    """Target ms -> the options the tuner picked most often (ties: the earliest): `bench_batching.py --tuned`."""
    picks = {}
    for run in runs:
        if isinstance(run, str):
            continue
        chosen = [r.winner.options for r, _ in run.tuned]
        picks[f"{run.target.ms:g}"] = asdict(max(chosen, key=chosen.count))
    return picks


BEGIN, END = "<!-- bench:tuning:begin -->", "<!-- bench:tuning:end -->"


def write_block(path: Path, block: str) -> None:
    """Replace the block between :data:`BEGIN` and :data:`END` in ``path`` (prose around it is kept by hand)."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Tuning: `nexus tune` against an exhaustive grid\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def report(runs: list[TargetRun | str], environment: dict[str, str]) -> str:
    lines = [
        BEGIN,
        "",
        "Written by `benchmarks/bench_tune.py` (`make bench-tune`). "
        + "; ".join(f"{k}: {v}" for k, v in environment.items())
        + ".",
        "",
        f"| target | grid best | side by side, median (range) of {ROUNDS} rounds: grid best; each run's pick "
        "| pick / best | picks' spread | tuner s / grid s | each run's own median (the grid's one search) "
        "| machine speed, ms (grid; runs; side by side) |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for run in runs:
        if isinstance(run, str):
            lines.append(run)
            continue
        lines.append(
            f"| {run.target} | {run.grid.winner.label} | {_rounds(run.compared[0])}; "
            + "; ".join(f"{r.winner.label}: {_rounds(run.contender(r))}" for r, _ in run.tuned)
            + f" | {run.pick_share:.0%} (worst) | {run.picks_spread:.0%} | {run.time_share:.0%} | "
            + "; ".join(f"{r.spread.median:,.0f} ({run.grid_rate(r):,.0f})" for r, _ in run.tuned)
            + f" | {_speed(run.grid, ranged=True)}; {', '.join(_speed(r) for r, _ in run.tuned)}; "
            + f"{_compared_speed(run.compared)} |"
        )
    lines += [
        "",
        f"Each run of the grid and of the tuner keeps its best by the median of three rate searches. Those runs "
        f"come one after another, at different speeds of the machine, so the verdicts come from the side-by-side "
        f"comparison: the grid's best and the three picks searched once each per round, in turn, for {ROUNDS} "
        "rounds on one Triton (`nexus.tune.side_by_side`). `pick / best` is the worst pick's median there over "
        "the grid's best's; `picks' spread` the highest pick's over the lowest's (a configuration picked twice "
        "is one measurement). Machine speed: the tuner's reference, one forward pass of a single request "
        "(Triton's compute for batches of one, measured beside every search; `nexus/tune/reference.py`): the "
        "grid's range, each run's median, and the side-by-side rounds' range.",
        "",
        *verdicts(runs),
        "",
    ]
    for run in runs:
        if not isinstance(run, str):
            lines += _grid_table(run)
    lines.append(END)
    return "\n".join(lines)


def verdicts(runs: list[TargetRun | str]) -> list[str]:
    """The issue's three targets, per target, from the side-by-side medians and the runs' times."""
    lines = []
    for run in runs:
        if isinstance(run, str):
            continue
        checks = (
            (f"the pick within {1 - PICK_SHARE:.0%} of the grid's best", run.pick_share >= PICK_SHARE,
             f"the worst pick served {run.pick_share:.0%} of it"),
            (f"the tuner in under {TIME_SHARE:.0%} of the grid's time", run.time_share < TIME_SHARE,
             f"{run.time_share:.0%}"),
            (f"the three picks within {PICKS_SPREAD:.0%} of each other", run.picks_spread <= PICKS_SPREAD,
             f"{run.picks_spread:.0%} apart"),
        )  # fmt: skip
        lines += [f"- {run.target}: {name}: **{'met' if ok else 'missed'}** ({why})" for name, ok, why in checks]
    return lines


def _rounds(contender: Contender) -> str:
    """A contender's median over the side-by-side rounds, its range beside it."""
    spread = contender.spread
    return f"{spread.median:,.0f} ({spread.min:,.0f}-{spread.max:,.0f})"


def _compared_speed(compared: list[Contender]) -> str:
    references = [e.reference_ms for c in compared for e in (c.evaluation, *c.reruns) if e.reference_ms is not None]
    return f"{min(references):.2f}-{max(references):.2f}" if references else "-"


def _speed(result: TuneResult, ranged: bool = False) -> str:
    """The run's reference speed: its median (``ranged``: min-max), in ms."""
    speed = result.speed
    if speed is None:
        return "-"
    return f"{speed.min:.2f}-{speed.max:.2f}" if ranged else f"{speed.median:.2f}"


def _grid_table(run: TargetRun) -> list[str]:
    """Every configuration the grid measured for ``run``'s target, best first, with the reruns of its best few."""
    again = {c.evaluation.options: c.spread for c in run.grid.contenders}
    picked = {r.winner.options for r, _ in run.tuned}
    lines = [
        f"The grid for {run.target}, best first (the tuner's picks marked):",
        "",
        "| configuration | req/s (one search) | measured again: min / median / max | p99 ms there | avg batch |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for e in run.grid.frontier:
        spread = again.get(e.options)
        lines.append(
            f"| {e.label}{' (picked)' if e.options in picked else ''} | {e.served:,.0f} | "
            + (f"{spread.min:,.0f} / {spread.median:,.0f} / {spread.max:,.0f}" if spread else "")
            + f" | {'' if e.at is None else f'{e.at.latency_ms:.1f}'}"
            + f" | {'' if e.at is None or e.at.avg_batch is None else f'{e.at.avg_batch:.1f}'} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", nargs="+", type=float, default=[5, 20, 100], help="p99 targets in ms")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 4 configurations, 0.5 s windows")
    parser.add_argument("--space", choices=list(SPACES), help="the grid and the tuner's space (default quick)")
    parser.add_argument(
        "--grid-targets", nargs="+", type=float, help="targets that get the grid and three tuner runs (default: all); "
        "the others get one tuner run, for tuned.json"
    )  # fmt: skip
    parser.add_argument("--picks-for", nargs="*", default=["cnn"], choices=[m for m in MODELS if m != "mlp"],
                        help="other models tuned once per target for tuned.json (default: cnn)")  # fmt: skip
    parser.add_argument("--seconds", type=float, help="each rate window (default: the tuner's quick 1 s)")
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for tuning.md")
    parser.add_argument(
        "--reports", type=Path, help="keep every run's report (results.json and .csv, the plot, Triton's log) in "
        "this folder (default: thrown away with the temporary project)"
    )  # fmt: skip
    args = parser.parse_args(argv)
    space_name = "tiny" if args.tiny else (args.space or "quick")
    space = SPACES[space_name]
    seconds = args.seconds or (0.5 if args.tiny else None)
    grid_targets = set(args.targets if args.grid_targets is None else args.grid_targets)
    picks: dict[str, dict[str, Any]] = {"mlp": {}, **{m: {} for m in args.picks_for}}
    with tempfile.TemporaryDirectory(prefix="nexus-bench-tune-") as tmp:
        project = make_project(Path(tmp))
        reports = args.reports.resolve() if args.reports else Path(tmp) / "reports"
        runs = [
            run_target(project, Target(99, ms), space, seconds, reports) for ms in args.targets if ms in grid_targets
        ]
        picks["mlp"] = tuned_picks(runs)
        for model in picks:
            for ms in args.targets:
                if model == "mlp" and ms in grid_targets:
                    continue
                if (options := pick_only(project, model, Target(99, ms), space, seconds, reports)) is not None:
                    picks[model][f"{ms:g}"] = options
    sizes = {name: _size(s) for name, s in SPACES.items()}
    environment = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "space": f"{space_name}: {_describe(space)} ({sizes[space_name]} configurations)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "tuning.md"
    write_block(path, report(runs, environment))
    tuned = args.out / "tuned.json"
    tuned.write_text(json.dumps(picks, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path} and {tuned} (for bench_batching.py --tuned {tuned})")


def _size(space: Space) -> int:
    """Distinct configurations: adaptive ones share one delay (the tuner fixes it from the target)."""
    grid = len(space["instances"]) * len(space["max_batch_size"])
    return grid * (("adaptive" in space["policy"]) + ("window" in space["policy"]) * len(space["max_queue_delay_us"]))


def _describe(space: Space) -> str:
    return "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in space.items())


if __name__ == "__main__":
    main()
