"""`nexus loadtest`: drive a served model with Locust and print what it and Triton measured."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexus.cli.context import handles_errors, project
from nexus.cli.options import JsonOpt, ModelArg, ProtocolOpt
from nexus.cli.output import stdout, to_json
from nexus.errors import NexusError
from nexus.serving.endpoints import DEFAULT_HTTP

if TYPE_CHECKING:
    from nexus.loadtest import LoadTestReport, RateReport
    from nexus.registry import Project
    from nexus.serving.admin import ModelCounters


def _number(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


@handles_errors
def loadtest(
    model_name: ModelArg,
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent users (the most, with --step-users).")] = 16,
    spawn_rate: Annotated[
        float | None, typer.Option("--spawn-rate", "-r", help="Users started per second (default: all at once).")
    ] = None,
    duration: Annotated[str, typer.Option("--duration", "-t", help="How long: 30s, 2m, 1h30m.")] = "30s",
    server: Annotated[
        str | None,
        typer.Option(
            help="Triton: HOST:PORT or http(s)://HOST:PORT (default: the running `nexus serve`, else 127.0.0.1:8000)."
        ),
    ] = None,
    protocol: ProtocolOpt = "http",
    grpc_address: Annotated[
        str | None, typer.Option(help="HOST:PORT for --protocol grpc (default: the running `nexus serve`'s).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per request.")] = 1,
    binary: Annotated[
        bool, typer.Option("--binary", help="Tensors as raw bytes (Triton's binary extension), not JSON.")
    ] = False,
    step_users: Annotated[
        int | None,
        typer.Option(help="Step load: add this many users every --step-time, up to --users (finds the knee)."),
    ] = None,
    step_time: Annotated[str, typer.Option(help="How long each step lasts.")] = "10s",
    results: Annotated[
        Path | None,
        typer.Option(help="Folder for Locust's CSVs (default: .nexus/loadtest in a project, else ./loadtest-results)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Open loop: send this many requests/s (Poisson arrivals) whatever the latency, instead of "
            "Locust's users; latency counts from each request's scheduled time. HTTP only."
        ),
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(help="Send every request at this priority (1: the highest; 0: the model's default level)."),
    ] = None,
    priority_mix: Annotated[
        str | None,
        typer.Option(
            help="With --rate: SHARE%:PRIORITY[,...]; e.g. 5%:1 sends 5% of the requests (at random) at priority 1, "
            "the rest at --priority or the model's default level (publish --priority-levels N makes it N//2+1)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drive a served model with Locust (closed loop) or at a fixed --rate (open loop); summarise latency,
    throughput and Triton's batching.

    Example: nexus loadtest prod_model -u 64 --step-users 8 --step-time 10s --binary
    Example: nexus loadtest prod_model --rate 500 --duration 1m --priority-mix 5%:1
    """
    from datetime import datetime

    from nexus.loadtest import LoadTestSettings, parse_duration, parse_priority_mix, run_loadtest, run_rate_test
    from nexus.serving.discovery import find_grpc_address, find_server

    try:
        p: Project | None = project()
    except NexusError:
        p = None  # a load test needs no project: any Triton serving the model will do
    settings = LoadTestSettings(
        model=model_name,
        server=server or (find_server(p) if p else None) or DEFAULT_HTTP,
        users=users,
        spawn_rate=spawn_rate,
        duration=parse_duration(duration),
        batch_size=batch_size,
        binary=binary,
        protocol=protocol,
        grpc_address=grpc_address or (find_grpc_address(p) if p else None),
        step_users=step_users,
        step_time=parse_duration(step_time),
        results=results or (p.root / ".nexus" / "loadtest" if p else Path("loadtest-results")),
        rate=rate,
        priority=priority,
        priority_mix=parse_priority_mix(priority_mix) if priority_mix is not None else (),
    )
    settings.check()
    if rate is not None:
        with stdout().status(f"Sending {rate:g} requests/s to {model_name} on {settings.server} (open loop)..."):
            rate_report = run_rate_test(settings)
        if as_json:
            typer.echo(to_json(asdict(rate_report)))
        else:
            print_rate_report(rate_report)
        if rate_report.result.errors:
            raise typer.Exit(1)
        return
    what = (
        f"{users} users for {settings.duration:g}s"
        if step_users is None
        else f"steps of {step_users} users every {settings.step_time:g}s up to {users}"
    )
    with stdout().status(f"Load-testing {model_name} on {settings.server} over {protocol}: {what}..."):
        report = run_loadtest(settings, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    if as_json:
        typer.echo(to_json(asdict(report)))
    else:
        print_loadtest(report)
    if report.failures:
        raise typer.Exit(1)


def print_loadtest(report: LoadTestReport) -> None:
    out = stdout()
    table = Table(title=f"{report.settings.model}: Locust", box=None, header_style="bold", title_justify="left")
    for column in ("requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "avg ms"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.requests),
        f"[red]{report.failures}[/]" if report.failures else "0",
        f"{report.requests_per_s:.1f}",
        _number(report.p50_ms),
        _number(report.p95_ms),
        _number(report.p99_ms),
        _number(report.average_ms),
    )
    out.print(table)
    print_triton(report.triton)
    if report.steps:
        steps = Table(title="Steps", box=None, header_style="bold", title_justify="left")
        for column in ("users", "req/s", "p50 ms", "p95 ms", "failures/s"):
            steps.add_column(column, justify="right")
        for s in report.steps:
            steps.add_row(
                str(s.users), f"{s.requests_per_s:.1f}", _number(s.p50_ms), _number(s.p95_ms), f"{s.failures_per_s:.1f}"
            )
        out.print(steps)
    for count, reason in report.failure_reasons[:5]:
        out.print(f"[red]{count} x[/] {escape(reason)}")
    out.print(f"Results: {report.results} ({', '.join(p.name for p in report.csv_files)})")


def print_triton(t: ModelCounters | str) -> None:
    """Triton's side of a run: requests, executed batch size, and the time per request in each stage."""
    if isinstance(t, str):
        stdout().print(f"[yellow]{escape(t)}[/]")
        return
    triton = Table(title="Triton, same run", box=None, header_style="bold", title_justify="left")
    for column in ("requests", "avg batch", "queue ms", "input ms", "infer ms", "output ms"):
        triton.add_column(column, justify="right")
    batch = t.average_batch
    triton.add_row(
        str(t.success),
        "-" if batch is None else f"{batch:.1f}",
        *(_number(t.per_request_ms(ns)) for ns in (t.queue_ns, t.input_ns, t.infer_ns, t.output_ns)),
    )
    stdout().print(triton)


def print_rate_report(report: RateReport) -> None:
    out, r = stdout(), report.result
    table = Table(title=f"{report.settings.model}: open loop", box=None, header_style="bold", title_justify="left")
    columns = ("offered req/s", "scheduled req/s", "achieved req/s", "requests", "late", "max late ms", "errors")
    for column in (*columns, "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{r.offered_rate:.1f}",
        f"{r.scheduled_rate:.1f}",
        f"{r.achieved_rate:.1f}",
        str(r.scheduled),
        str(r.late),
        _number(r.max_late_ms),
        f"[red]{r.errors}[/]" if r.errors else "0",
        *(_number(v) for v in (r.latency.p50, r.latency.p90, r.latency.p99, r.latency.max)),
    )
    out.print(table)
    if r.classes:
        classes = Table(title="By priority", box=None, header_style="bold", title_justify="left")
        for column in ("priority", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"):
            classes.add_column(column, justify="right")
        for c in r.classes:
            classes.add_row(
                "default" if c.priority is None else str(c.priority),
                str(c.scheduled),
                str(c.errors),
                *(_number(v) for v in (c.latency.p50, c.latency.p90, c.latency.p99, c.latency.max)),
            )
        out.print(classes)
    print_triton(report.triton)
    if r.late:
        out.print(
            f"[yellow]{r.late} requests went out over 1 ms late[/] "
            f"(no free connection of {r.connections}, or a busy client)"
        )
    if r.first_error is not None:
        out.print(f"[red]{r.errors} errors[/], the first: {escape(r.first_error)}")
