"""`nexus tune`: find and record the serving options that serve the most requests within a latency target."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexus.cli.context import handles_errors, live_server, project
from nexus.cli.options import CommitOpt, JsonOpt, ModelArg, VersionOpt
from nexus.cli.output import stderr, stdout

if TYPE_CHECKING:
    from nexus.tune import Evaluation, TuneHooks, TuneResult
    from nexus.tune.rates import Probe


@handles_errors
def tune(
    model_name: ModelArg,
    p99: Annotated[str | None, typer.Option("--p99", help="p99 latency target: 20ms, 0.02s or 500us.")] = None,
    p90: Annotated[str | None, typer.Option("--p90", help="p90 latency target.")] = None,
    p50: Annotated[str | None, typer.Option("--p50", help="p50 latency target.")] = None,
    target: Annotated[
        str | None, typer.Option(help="Any percentile: PERCENTILE=LATENCY, e.g. p95=15ms or p99.9=50ms.")
    ] = None,
    version: VersionOpt = None,
    commit: CommitOpt = None,
    budget: Annotated[
        str | None, typer.Option(help="Time for the whole run: 90s, 10m. [default: 10m; 2m with --quick]")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller grid and 1 s windows.")] = False,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Hot-swap the winner into the running `nexus serve` (as nexus publish does)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure serving configurations on a Triton of its own and record the one that serves the most
    requests with the latency percentile under the target and no errors.

    The winner goes to .nexus_serving.json, which `nexus publish` serves the model with from then on.
    The report (results.json, results.csv, frontier.png) goes to .nexus/tune/MODEL/<time>/.

    Example: nexus tune prod_model --p99 20ms --budget 10m
    """
    from nexus.errors import TuneError
    from nexus.loadtest.runner import parse_duration
    from nexus.tune import TuneSettings, target_from_options
    from nexus.tune import tune as run

    chosen = target_from_options(target, p99=p99, p90=p90, p50=p50)
    seconds = parse_duration(budget) if budget is not None else None
    p = project()
    server = None
    if apply:
        server = live_server(p, None, None)
        if server is None:
            raise TuneError("--apply needs a running `nexus serve` for this project; start one, or leave out --apply")
    settings = TuneSettings(model_name, chosen, version=version, commit=commit, budget=seconds, quick=quick,
                            apply_to=server)  # fmt: skip
    result = run(p, settings, _hooks())
    if as_json:
        from nexus.tune.report import summary

        typer.echo(json.dumps(summary(result), indent=2))
        return
    _print_result(result)


def _hooks() -> TuneHooks:
    from nexus.tune import TuneHooks
    from nexus.tune.space import label

    err = stderr()

    def probed(probe: Probe) -> None:
        err.print(
            f"    {probe.offered:9,.0f}/s offered  {probe.achieved:9,.0f}/s served  "
            f"p99 {probe.p99_ms:8.2f} ms  late {probe.late}  errors {probe.errors}",
            style="dim",
        )

    return TuneHooks(
        started=lambda url: err.print(f"Tuning on a Triton of its own at {url}"),
        evaluating=lambda options: err.print(f"  {label(options)}"),
        probed=probed,
        evaluated=lambda e: err.print(
            f"  -> {e.served:,.0f}/s under the target"
            + (" (at least)" if e.coarse else "")
            + ("" if e.reference_ms is None else f"  (machine: {e.reference_ms:.2f} ms a forward pass)")
        ),
        message=lambda message: err.print(f"[yellow]{escape(message)}[/]"),
    )


def frontier_table(result: TuneResult) -> Table:
    name = result.target.name
    table = Table(box=None, header_style="bold", title=f"{result.model} v{result.version.version}: {result.target}")
    for column in ("config", "served req/s", f"{name} ms", "avg batch", "capacity req/s", ""):
        table.add_column(column, justify="left" if column in ("config", "") else "right", no_wrap=True)
    for e in result.frontier:
        table.add_row(
            e.label,
            f"{e.served:,.0f}" + ("+" if e.coarse else ""),
            "-" if e.at is None else f"{e.at.latency_ms:.2f}",
            "-" if e.at is None or e.at.avg_batch is None else f"{e.at.avg_batch:.1f}",
            f"{e.capacity:,.0f}",
            _note(result, e),
            style="bold green" if e is result.winner else None,
        )
    return table


def _note(result: TuneResult, e: Evaluation) -> str:
    # the first evaluation is the start: what `nexus publish` renders now (a recorded pick, else the defaults)
    start = "the start: what publish renders now" if e is result.evaluations[0] else ""
    if e is result.winner:
        s = result.spread
        winner = f"winner ({s.min:,.0f}-{s.max:,.0f} over {len(s.rates)} runs)" if len(s.rates) > 1 else "winner"
        return f"{winner}, {start}" if start else winner
    if e.error:
        return f"did not load: {e.error}"
    return start


def _print_speed(result: TuneResult) -> None:
    """The machine's reference speed over the run, and a warning when it moved enough to matter."""
    from nexus.tune.results import DRIFT_WARNING

    speed, drift = result.speed, result.drift
    if speed is None:
        return
    out = stdout()
    out.print(
        f"Machine speed: one forward pass of a single request took {speed.min:.2f}-{speed.max:.2f} ms "
        f"(median {speed.median:.2f}) over the run's {len(speed.rates)} searches."
    )
    if drift is not None and drift > DRIFT_WARNING:
        stderr().print(
            f"[yellow]Warning:[/] the machine's speed moved {drift:.2f}x during the run: rates measured at "
            "different speeds are not comparable, and a rerun may pick another configuration. Tune on a quieter "
            "machine, or compare runs by their reference_ms (results.json)."
        )


def _print_result(result: TuneResult) -> None:
    from nexus.serving.tuned import SERVING_FILE
    from nexus.tune.report import PLOT_HINT

    out, w, spread = stdout(), result.winner, result.spread
    out.print(frontier_table(result))
    out.print(
        f"Winner: {w.label}: {spread.median:,.0f} req/s under {result.target} with no errors "
        f"({len(spread.rates)} measurements: min {spread.min:,.0f}, median {spread.median:,.0f}, "
        f"max {spread.max:,.0f})."
    )
    others = [c for c in result.contenders if c.evaluation is not w]
    if others:
        out.print(
            "Measured again beside it: "
            + "; ".join(f"{c.evaluation.label}: median {c.spread.median:,.0f} req/s" for c in others)
            + "."
        )
    if result.runner_up is not None and result.runner_up_within_spread:
        out.print(
            f"The runner-up, {result.runner_up.label} ({result.runner_up_rate:,.0f} req/s), is within the winner's "
            "spread: on this machine the two cannot be told apart."
        )
    out.print(
        f"Searched {len(result.evaluations)} configurations in {result.elapsed_s:.0f} s (stopped: {result.stopped})."
    )
    _print_speed(result)
    names = ", ".join(f.name for f in result.files)
    plot = "" if any(f.suffix == ".png" for f in result.files) else f" (no frontier.png: {PLOT_HINT})"
    out.print(f"Report: {result.report} ({names}){plot}")
    if result.record is not None:
        out.print(f"Recorded in {SERVING_FILE}: `nexus publish {result.model}` now serves these options.")
        out.print(f"Next: git add {SERVING_FILE} && git commit -m 'Tune {result.model} for {result.target}'")
    if result.applied is not None:
        out.print(f"Switched {result.applied} to them.")
