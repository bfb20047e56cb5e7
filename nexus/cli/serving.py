"""Data-plane commands: publish, serve, predict (status: :mod:`nexus.cli.status`). Each parses, calls one library
function, and prints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nexus.cli.context import handles_errors, live_server, project
from nexus.cli.options import (
    CommitOpt,
    InputsOpt,
    JsonOpt,
    ModelArg,
    OutputsOpt,
    ProtocolOpt,
    RepositoryOpt,
    ServerOpt,
    VersionOpt,
)
from nexus.cli.output import stderr, stdout
from nexus.cli.tables import print_outputs, print_published

if TYPE_CHECKING:
    from nexus.registry import Project
    from nexus.serving.model_config import ServingOptions
    from nexus.serving.serve import Running, SyncResult


@handles_errors
def publish(
    model_name: ModelArg,
    version: VersionOpt = None,
    commit: CommitOpt = None,
    repository: RepositoryOpt = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Largest batch Triton forms. [default: 32]")] = None,
    max_queue_delay_us: Annotated[
        int | None,
        typer.Option(
            help="window: how long each batch waits to fill. adaptive: never waited on; 0 stops a batch that "
            "waits for an instance from growing. [default: 50000]"
        ),
    ] = None,
    batching: Annotated[
        str | None,
        typer.Option(
            help="adaptive: send a batch as soon as an instance is free; window: wait out the queue delay; "
            "none: one request at a time. [default: adaptive]"
        ),
    ] = None,
    no_batching: Annotated[bool, typer.Option("--no-batching", hidden=True, help="Same as --batching none.")] = False,
    instances: Annotated[
        str | None,
        typer.Option(
            help="Model instances (copies) per device, or auto: 2, or 1 for artifacts over 1 GiB. [default: auto]"
        ),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Where instances run: auto, cpu or gpu. [default: auto]")] = None,
    priority_levels: Annotated[
        int | None,
        typer.Option(
            help="Request priority levels (0: none); 1 is the highest, and requests sent without one get "
            "the level below the middle (2 of 2, 2 of 3). [default: 0]"
        ),
    ] = None,
    max_queue_size: Annotated[
        int | None, typer.Option(help="Refuse requests beyond this queue length (0: no bound). [default: 0]")
    ] = None,
    warmup: Annotated[
        bool | None, typer.Option("--warmup/--no-warmup", help="Run a warm-up batch when the model loads.")
    ] = None,
    torch_threads: Annotated[int | None, typer.Option(help="torch threads per instance. [default: 1]")] = None,
    inputs: InputsOpt = None,
    outputs: OutputsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the config and files; write nothing.")] = False,
    server: ServerOpt = None,
) -> None:
    """Render a stored version (latest by default) into a Triton model repository.

    The serving options are the ones `nexus tune` recorded for the model in .nexus_serving.json, else the
    defaults; each option given here overrides just that one.

    With a running `nexus serve` (found in .nexus/server.json) or --server HOST:PORT, the server is
    switched to the new version without failing a request, and the previous version comes back if it fails.

    Example: nexus publish prod_model --max-batch-size 64 --max-queue-delay-us 2000
    """
    from nexus.serving.publish import publish as publish_version
    from nexus.tensors import parse_signature

    p = project()
    given = {
        "max_batch_size": max_batch_size,
        "max_queue_delay_us": max_queue_delay_us,
        "batching": "none" if no_batching else batching,
        "instances": instances,
        "kind": kind,
        "priority_levels": priority_levels,
        "max_queue_size": max_queue_size,
        "warmup": warmup,
        "torch_threads": torch_threads,
    }
    options, source = serving_options(p, model_name, {k: v for k, v in given.items() if v is not None})
    result = publish_version(
        p,
        model_name,
        version=version,
        commit=commit,
        repository=repository,
        options=options,
        signature=parse_signature(inputs, outputs, batched=options.batching),
        dry_run=dry_run,
        server=None if dry_run else live_server(p, server, repository),
    )
    print_published(result, options, source)


def serving_options(p: Project, model: str, given: dict[str, Any]) -> tuple[ServingOptions, str | None]:
    """The options recorded for ``model`` (else the defaults) with the ``given`` ones (as typed) replacing theirs;
    and where they came from, for the summary line (None: the defaults)."""
    from nexus.serving.model_config import ServingOptions, parse_instances
    from nexus.serving.tuned import recorded

    tuning = recorded(p, model)
    fields = dict(given)
    if "batching" in fields:
        policy = ServingOptions.with_policy(fields.pop("batching"))
        fields.update(batching=policy.batching, policy=policy.policy)
    if "instances" in fields:
        fields["instances"] = parse_instances(fields["instances"])
    options = replace(tuning.options if tuning else ServingOptions(), **fields)
    if tuning is None:
        return options, None
    typed = ", ".join(f"--{name.replace('_', '-')}" for name in given)
    return options, tuning.describe() + (f"; {typed} as given" if typed else "")


@handles_errors
def serve(
    repository: RepositoryOpt = None,
    http_port: Annotated[int, typer.Option(help="KServe v2 HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="KServe v2 gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")] = (
        "127.0.0.1"
    ),
    no_publish: Annotated[
        bool, typer.Option("--no-publish", help="Serve the repository as it is; publish nothing first.")
    ] = False,
    tritonserver: Annotated[
        Path | None, typer.Option(help="A tritonserver binary (default: the one in nvidia-pytriton).")
    ] = None,
    log_file: Annotated[Path | None, typer.Option(help="Triton's log (default: .nexus/triton.log).")] = None,
) -> None:
    """Publish each model's latest version, run Triton on the repository, and stop it on Ctrl-C.

    Example: nexus serve --http-port 8000 --grpc-port 8001 --metrics-port 8002
    """
    from nexus.serving.serve import ServeHooks
    from nexus.serving.serve import serve as run

    out, err = stdout(), stderr()
    hooks = ServeHooks(
        synced=_print_synced,
        ready=_print_ready,
        message=lambda message: err.print(f"[yellow]{escape(message)}[/]"),
        restarted=lambda pid: out.print(f"Restarted: tritonserver pid {pid}."),
        stopping=lambda: out.print("Stopping Triton (up to 20 s)..."),
    )
    run(
        project(),
        repository=repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        sync=not no_publish,
        tritonserver=tritonserver,
        log_file=log_file,
        hooks=hooks,
    )
    out.print("Triton stopped.")


def _print_synced(synced: SyncResult) -> None:
    for r in synced.published:
        stdout().print(f"Published {r.model_name} v{r.version.version} (commit {r.version.short_commit})")
        if r.replaced is not None:
            stdout().print(f"  Replaced the repository's {r.replaced.replaced()}", highlight=False)
    for name, reason in synced.skipped:
        stderr().print(f"[yellow]Skipped[/] {name}: {escape(reason)}")


def _print_ready(running: Running) -> None:
    from rich.table import Table

    out, server = stdout(), running.server
    table = Table(box=None, header_style="bold")
    for column in ("model", "version", "state"):
        table.add_column(column)
    for model in running.models:
        table.add_row(model.name, model.version, model.state)
    out.print(table)
    out.print(f"HTTP    {server.url}  (KServe v2: POST {server.url}/v2/models/MODEL/infer)")
    out.print(f"gRPC    {running.grpc}")
    out.print(f"metrics {running.metrics}")
    out.print(f"Triton log: {server.log_file}")
    out.print(f"Ready: tritonserver pid {server.pid}. Press Ctrl-C to stop.")


@handles_errors
def predict(
    model_name: ModelArg,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="NAME=FILE.npy; repeat per input.")] = None,
    random: Annotated[bool, typer.Option("--random", help="Send random valid inputs (batch of 1).")] = False,
    server: Annotated[
        str | None, typer.Option(help="Triton: HOST:PORT or http(s)://HOST:PORT (default: 127.0.0.1:8000, gRPC :8001).")
    ] = None,
    protocol: ProtocolOpt = "http",
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Write each output to DIR/NAME.npy.")
    ] = None,
    priority: Annotated[
        int | None,
        typer.Option(help="Triton request priority: 1 is the highest (publish --priority-levels); 0: the default."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one request to a served model and print (or save) its outputs.

    Example: nexus predict prod_model --input input=batch.npy --protocol grpc
    """
    from nexus.errors import PredictError
    from nexus.serving.predict import load_inputs
    from nexus.serving.predict import predict as send

    if bool(inputs) == random:
        raise PredictError("give --input NAME=FILE.npy (one per input) or --random, not both or neither")
    arrays = load_inputs(inputs) if inputs else None
    outputs = send(model_name, arrays, server=server, protocol=protocol, priority=priority)
    if as_json:
        typer.echo(
            json.dumps(
                {n: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.tolist()} for n, v in outputs.items()}
            )
        )
    else:
        print_outputs(outputs, output_dir)
