"""`nexus` commands. Each is a few lines around one call into the library."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from nexus import __version__
from nexus.cli.errors import describe
from nexus.cli.output import human_size, short_time, stderr, stdout, transfer_progress
from nexus.errors import ConfigError
from nexus.registry import Project, init
from nexus.registry.metadata import META_FILE, ModelVersion, parse_time
from nexus.settings import CONFIG_FILE, PublishSettings, StorageSettings
from nexus.tensors import Signature

if TYPE_CHECKING:
    from nexus.serving.model_config import ServingOptions

app = typer.Typer(
    name="nexus",
    help="Git-pinned, verified PyTorch model versions, served by Triton.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    rich_markup_mode=None,
)


class _State:
    debug: bool = False
    repo: Path | None = None


state = _State()

F = TypeVar("F", bound=Callable[..., Any])

# Shared argument and option types, defined once.
ModelArg = Annotated[str, typer.Argument(help="Model name: letters, digits, '_', '-', '.'.", show_default=False)]
OptionalModelArg = Annotated[str | None, typer.Argument(help="Only this model.", show_default=False)]
VersionOpt = Annotated[int | None, typer.Option("--version", "-v", help="Version number (default: latest).")]
CommitOpt = Annotated[str | None, typer.Option("--commit", help="Version stored at this commit (4+ hex digits).")]
RepositoryOpt = Annotated[
    str | None,
    typer.Option("--repository", "-r", help="Folder or s3:// / gs:// URI (default: [publish] in .nexusrc)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
GitCommitOpt = Annotated[bool, typer.Option("--commit", help="Commit .nexus_meta.json afterwards.")]


InputsOpt = Annotated[
    list[str] | None,
    typer.Option("--input", help="NAME:DTYPE:DIMS, dims without the batch (-1: any); repeat per input."),
]
OutputsOpt = Annotated[list[str] | None, typer.Option("--output", help="NAME:DTYPE:DIMS; repeat per output.")]
SamplesOpt = Annotated[
    list[str] | None,
    typer.Option("--sample", help="NAME=FILE.npy: record the signature from one run on it; repeat per input."),
]


ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Triton to switch (default: the running `nexus serve`, if any)."),
]


def _live_server(project: Project, server: str | None, repository: str | None) -> str | None:
    """The server to hot-swap: the one given, else the running `nexus serve` on the default repository."""
    if server is not None:
        return server
    if repository is not None:
        return None  # a publish elsewhere does not touch the running server
    from nexus.serving.serve import find_server

    return find_server(project)


def _signature(inputs: list[str] | None, outputs: list[str] | None, batched: bool) -> Signature | None:
    """The signature given with --input/--output, or None; both or neither must be given."""
    from nexus.serving.model_config import SignatureError, parse_tensor_spec

    if not inputs and not outputs:
        return None
    if not (inputs and outputs):
        raise SignatureError("give both --input and --output (one per tensor), or neither")
    return Signature(
        inputs=[parse_tensor_spec(t, batched) for t in inputs], outputs=[parse_tensor_spec(t, batched) for t in outputs]
    )


def _instances(text: str) -> int | None:
    """--instances: a positive count, or auto (None)."""
    from nexus.serving.model_config import SignatureError

    if text.strip().lower() == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise SignatureError(f"--instances must be auto or a count of at least 1, not {text!r}")
    return count


def _serving_summary(options: ServingOptions, version: ModelVersion) -> str:
    """One line on how a published version is served, e.g. "2 instances (auto), batches of up to 32 within 50 ms"."""
    from nexus.serving.model_config import instance_count

    count = instance_count(options, version)
    parts = [f"{count} instance{'s' if count > 1 else ''}" + (" (auto)" if options.instances is None else "")]
    if not options.batching:
        parts.append("no batching")
    else:
        parts.append(f"batches of up to {options.max_batch_size} within {options.max_queue_delay_us / 1000:g} ms")
    if options.max_queue_size:
        parts.append(f"queue of {options.max_queue_size}")
    return ", ".join(parts)


def _handles_errors(fn: F) -> F:
    """Turn NexusML errors into one red line on stderr and an exit code (tracebacks only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (Exception, KeyboardInterrupt) as e:
            if state.debug:
                raise
            message, code = describe(e)
            stderr().print(f"[bold red]Error:[/] {escape(message)}")
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _project() -> Project:
    return Project.open(state.repo)


def _version_callback(value: bool) -> None:
    if value:
        stdout().print(f"nexus {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.", envvar="NEXUS_DEBUG")] = False,
    repo: Annotated[
        Path | None, typer.Option("-C", "--repo", help="Run as if started in this folder.", show_default=False)
    ] = None,
    _version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    state.debug = debug
    state.repo = repo


@app.command("init")
@_handles_errors
def init_cmd(
    storage: Annotated[
        str, typer.Option(help="s3://bucket/prefix, gs://bucket/prefix, file:///abs/dir or a folder.")
    ] = StorageSettings.uri,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint (MinIO).")] = None,
    region: Annotated[str | None, typer.Option(help="Bucket region.")] = None,
    repository: Annotated[
        str, typer.Option(help="Where `nexus publish` writes the Triton model repository (folder or URI).")
    ] = PublishSettings.repository,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing .nexusrc.")] = False,
) -> None:
    """Write .nexusrc (storage settings, never credentials) at the repository root.

    Example: nexus init --storage s3://ml-models/nexus --endpoint-url http://127.0.0.1:9000
    """
    target = Path(state.repo or Path.cwd())
    from nexus.registry import git

    existing = git.find_root(target) / CONFIG_FILE
    if existing.exists() and not force:
        raise ConfigError(str(existing), "already exists", "edit it, or pass --force to overwrite it")
    path = init(
        target, StorageSettings(uri=storage, endpoint_url=endpoint_url, region=region), PublishSettings(repository)
    )
    out = stdout()
    out.print(f"Wrote {path} (storage: {storage})")
    out.print(f"Next: git add {CONFIG_FILE} && git commit -m 'nexus: configure storage'")


@app.command()
@_handles_errors
def store(
    path: Annotated[Path, typer.Argument(help="TorchScript (.pt), torch.export (.pt2) or ONNX file.")],
    model_name: ModelArg,
    allow_dirty: Annotated[
        bool, typer.Option("--allow-dirty", help="Store even with uncommitted changes (recorded as dirty).")
    ] = False,
    commit: GitCommitOpt = False,
    inputs: InputsOpt = None,
    outputs: OutputsOpt = None,
    samples: SamplesOpt = None,
) -> None:
    """Upload a model binary pinned to HEAD's commit and record it in .nexus_meta.json.

    Example: nexus store model.pt prod_model --commit --sample image=image.npy
    """
    from nexus.registry.samples import load_samples

    project = _project()
    signature = _signature(inputs, outputs, batched=True)
    sample = load_samples(samples) if samples else None
    size = path.stat().st_size if path.is_file() else 0
    with transfer_progress(f"store {model_name}", size) as progress:
        result = project.store(
            path,
            model_name,
            allow_dirty=allow_dirty,
            commit=commit,
            signature=signature,
            sample=sample,
            progress=progress,
        )
    if result.notice:
        stderr().print(f"[yellow]Note:[/] {escape(result.notice)}")
    v = result.version
    out = stdout()
    what = f"{v.model_name} v{v.version} (commit {v.short_commit}, {v.format}, {human_size(v.size)})"
    if result.action == "unchanged":
        out.print(f"Already stored: {what} holds these exact bytes; nothing to do.")
        if not v.is_latest:
            hint = f"nexus rollback {v.model_name} --to {v.version}"
            out.print(f"It is not the latest version; to make it latest: {hint}")
        return
    if result.action == "recorded":
        out.print(f"Found identical bytes already in storage; recorded {what}.")
    else:
        out.print(f"Stored {what}")
    out.print(f"  {v.storage_uri}")
    out.print(f"  sha256 {v.sha256}")
    if v.dirty:
        stderr().print("[yellow]Warning:[/] the tree had uncommitted changes; the version is recorded as dirty.")
    if result.metadata_commit:
        out.print(f"Committed {META_FILE} as {result.metadata_commit[:8]}.")
    else:
        out.print(f"Next: git add {META_FILE} && git commit -m 'nexus: store {v.model_name} v{v.version}'")


@app.command("signature")
@_handles_errors
def signature_cmd(
    model_name: ModelArg,
    version: VersionOpt = None,
    inputs: InputsOpt = None,
    outputs: OutputsOpt = None,
    samples: SamplesOpt = None,
    commit: GitCommitOpt = False,
) -> None:
    """Record a stored version's input/output signature (checked by one run); without options, show it.

    Every later publish of the version uses it.

    Example: nexus signature prod_model --version 1 --sample image=image.npy --sample mask=mask.npy
    """
    from nexus.registry.samples import load_samples
    from nexus.registry.signature import describe

    project, out = _project(), stdout()
    given, sample = _signature(inputs, outputs, batched=True), load_samples(samples) if samples else None
    if given is None and sample is None:
        v = project.resolve(model_name, version)
        lines = describe(v.signature) if v.signature else [f"none recorded; give one: {project.signature_command(v)}"]
        out.print(f"{model_name} v{v.version} ({v.format}):", *(f"  {line}" for line in lines), sep="\n")
        return
    result = project.set_signature(model_name, given, version, sample=sample, commit=commit)
    v = result.version
    out.print(f"Recorded the signature of {model_name} v{v.version}; every publish of it uses it:")
    out.print(*(f"  {line}" for line in describe(result.signature)), sep="\n")
    if result.metadata_commit:
        out.print(f"Committed {META_FILE} as {result.metadata_commit[:8]}.")
    else:
        out.print(f"Next: git add {META_FILE} && git commit -m 'nexus: signature of {model_name} v{v.version}'")


@app.command()
@_handles_errors
def load(
    model_name: ModelArg,
    version: VersionOpt = None,
    commit: CommitOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File or folder (default: ./MODEL_NAME.EXT).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing output file.")] = False,
) -> None:
    """Download a version (latest by default), verify its sha256, and write it to a file.

    Example: nexus load prod_model --version 2 -o served.pt
    """
    project = _project()
    v = project.resolve(model_name, version, commit)
    with transfer_progress(f"load {model_name} v{v.version}", v.size) as progress:
        result = project.load(model_name, version=v.version, output=output, force=force, progress=progress)
    source = "from the verified cache" if result.from_cache else "downloaded"
    stdout().print(
        f"Loaded {v.model_name} v{v.version} (commit {v.short_commit}) -> {result.path} ({source}, sha256 verified)"
    )


@app.command("list")
@_handles_errors
def list_cmd(model_name: OptionalModelArg = None, as_json: JsonOpt = False) -> None:
    """List stored versions.

    Example: nexus list prod_model --json
    """
    versions = _project().versions(model_name)
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in versions], indent=2))
        return
    if not versions:
        stdout().print("No models stored yet. Store one with `nexus store PATH MODEL_NAME`.")
        return
    stdout().print(_versions_table(versions, show_model=model_name is None))


def _versions_table(versions: list[ModelVersion], show_model: bool) -> Table:
    table = Table(box=None, header_style="bold")
    columns = ["version", "commit", "size", "created", "latest", "format", "author"]
    for name in ["model", *columns] if show_model else columns:
        right = name in ("version", "size")
        table.add_column(name, justify="right" if right else "left", no_wrap=name != "author")
    for v in versions:
        commit = v.short_commit + (" (dirty)" if v.dirty else "")
        row = [
            str(v.version),
            commit,
            human_size(v.size),
            short_time(v.created_at),
            "*" if v.is_latest else "",
            v.format,
            _name(v.author),
        ]
        table.add_row(*([v.model_name, *row] if show_model else row), style="bold green" if v.is_latest else None)
    return table


@app.command()
@_handles_errors
def rollback(
    model_name: ModelArg,
    to: Annotated[str | None, typer.Option("--to", help="Version number (3 or v3) or commit prefix.")] = None,
    commit: GitCommitOpt = False,
    server: ServerOpt = None,
) -> None:
    """Make an older version the latest (the one before the current latest by default).

    With a running `nexus serve` (or --server URL), the server is switched to it too.

    Example: nexus rollback prod_model --to 1 --commit
    """
    project = _project()
    result = project.rollback(model_name, to, commit=commit)  # committed under the work tree's lock
    target = project.resolve(model_name, result.to_version)
    out = stdout()
    out.print(
        f"Rolled back {model_name}: latest is now v{result.to_version} (commit {target.short_commit}), "
        f"was v{result.from_version}."
    )
    live = _live_server(project, server, None)
    if live is not None:
        from nexus.serving.serve import open_repository, swap

        swap(project, model_name, result.to_version, live, open_repository(project))
        out.print(f"Switched {live} to {model_name} v{result.to_version}.")
    if result.metadata_commit:
        out.print(f"Committed {META_FILE} as {result.metadata_commit[:8]}.")
    else:
        out.print(f"Next: git add {META_FILE} && git commit -m 'nexus: roll back {model_name} to v{result.to_version}'")


@app.command()
@_handles_errors
def history(
    model_name: ModelArg,
    at: Annotated[str | None, typer.Option("--at", help="Only say which version was latest at this ISO time.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show every change of the latest version (stores and rollbacks), oldest first.

    Example: nexus history prod_model --at 2026-11-26T08:00Z
    """
    record = _project().model(model_name)
    if at is not None:
        try:
            when = parse_time(at)
        except ValueError:
            raise ConfigError("--at", f"{at!r} is not an ISO 8601 time", "write e.g. 2026-11-26T08:00:00Z") from None
        number = record.latest_at(when)
        if as_json:
            typer.echo(
                json.dumps({"model_name": model_name, "at": when.astimezone(UTC).isoformat(), "version": number})
            )
        elif number is None:
            stdout().print(f"{model_name} had no version yet at {at}.")
        else:
            stdout().print(f"{model_name}: v{number} was latest at {at}.")
        return
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in record.history], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for name in ("at", "action", "from", "to", "by"):
        table.add_column(name, no_wrap=name != "by")
    for e in record.history:
        before = "-" if e.from_version is None else f"v{e.from_version}"
        table.add_row(short_time(e.at), e.action, before, f"v{e.to_version}", _name(e.by))
    stdout().print(table)


@app.command()
@_handles_errors
def publish(
    model_name: ModelArg,
    version: VersionOpt = None,
    commit: CommitOpt = None,
    repository: RepositoryOpt = None,
    max_batch_size: Annotated[int, typer.Option(help="Largest batch Triton forms.")] = 32,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long a request may wait for a batch to fill.")] = 50_000,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="Serve requests one at a time.")] = False,
    instances: Annotated[
        str, typer.Option(help="Model instances (copies) per device, or auto: 2, or 1 for artifacts over 1 GiB.")
    ] = "auto",
    kind: Annotated[str, typer.Option(help="Where instances run: auto, cpu or gpu.")] = "auto",
    priority_levels: Annotated[int, typer.Option(help="Request priority levels (0: none).")] = 0,
    max_queue_size: Annotated[int, typer.Option(help="Refuse requests beyond this queue length (0: no bound).")] = 0,
    warmup: Annotated[bool, typer.Option("--warmup", help="Run a warm-up batch when the model loads.")] = False,
    torch_threads: Annotated[int, typer.Option(help="torch threads per instance.")] = 1,
    inputs: InputsOpt = None,
    outputs: OutputsOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the config and files; write nothing.")] = False,
    server: ServerOpt = None,
) -> None:
    """Render a stored version (latest by default) into a Triton model repository.

    With a running `nexus serve` (found in .nexus/server.json) or --server URL, the server is switched
    to the new version without failing a request, and the previous version comes back if it fails.

    Example: nexus publish prod_model --max-batch-size 64 --max-queue-delay-us 2000
    """
    from nexus.serving.model_config import ServingOptions
    from nexus.serving.publish import publish as publish_version

    options = ServingOptions(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        batching=not no_batching,
        instances=_instances(instances),
        kind=kind,
        priority_levels=priority_levels,
        max_queue_size=max_queue_size,
        warmup=warmup,
        torch_threads=torch_threads,
    )
    signature = _signature(inputs, outputs, batched=not no_batching)
    project = _project()
    live = None if dry_run else _live_server(project, server, repository)
    if live is not None:
        from nexus.serving.serve import open_repository, swap

        v = project.resolve(model_name, version, commit)
        swapped = swap(project, model_name, v.version, live, open_repository(project, repository), options, signature)
        stdout().print(f"Published {model_name} v{v.version} and switched {live} to it (commit {v.short_commit}).")
        for name in swapped.files:
            stdout().print(f"  {name}")
        return
    result = publish_version(
        project,
        model_name,
        version=version,
        commit=commit,
        repository=repository,
        options=options,
        signature=signature,
        dry_run=dry_run,
    )
    out = stdout()
    v = result.version
    if dry_run:
        out.out(result.config_text, highlight=False)
        out.print(f"Would write to {result.repository}:")
    else:
        out.print(f"Published {model_name} v{v.version} (commit {v.short_commit}, {v.format}) to {result.repository}")
        out.print(f"  serving: {_serving_summary(options, v)}", highlight=False)
    for name in result.files:
        out.print(f"  {name}")
    if not v.is_latest:
        stderr().print(
            f"[yellow]Note:[/] v{v.version} is not the latest version in .nexus_meta.json, but the config "
            f"serves it. To make it latest: nexus rollback {model_name} --to {v.version}"
        )


@app.command()
@_handles_errors
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
    import signal

    from nexus.serving.serve import (
        SERVER_FILE,
        api_key,
        check_ports,
        loaded_models,
        open_repository,
        restricted_api_args,
        supervise,
        sync_latest,
        write_server_file,
    )
    from nexus.serving.server import TritonServer

    project = _project()
    target = open_repository(project, repository)
    out, err = stdout(), stderr()
    if not no_publish:
        synced = sync_latest(project, target)
        for r in synced.published:
            out.print(f"Published {r.model_name} v{r.version.version} (commit {r.version.short_commit})")
        for name, reason in synced.skipped:
            err.print(f"[yellow]Skipped[/] {name}: {escape(reason)}")
    if isinstance(target.target, Path):
        target.target.mkdir(parents=True, exist_ok=True)
    check_ports(host, {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port})
    log = log_file or project.root / ".nexus" / "triton.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    key = api_key(project)
    server = TritonServer(
        repository=target.triton_path,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        log_file=log,
        binary=tritonserver,
        extra_args=restricted_api_args(key),
        env=target.env,
    )

    def terminate(signum: int, frame: object) -> None:
        # The first Ctrl-C or SIGTERM stops the server; later ones (`timeout` or a supervisor forwarding
        # its own) must not cut that shutdown short and leave Triton running: stop() is bounded.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGTERM, terminate)
    try:
        server.start()
        server.wait_ready(timeout=300)
        table = Table(box=None, header_style="bold")
        for column in ("model", "version", "state"):
            table.add_column(column)
        for model in loaded_models(server, key):
            table.add_row(model["name"], str(model.get("version", "")), model.get("state", ""))
        out.print(table)
        out.print(f"HTTP    {server.url}  (KServe v2: POST {server.url}/v2/models/MODEL/infer)")
        out.print(f"gRPC    {host}:{grpc_port}")
        out.print(f"metrics http://{host}:{metrics_port}/metrics")
        out.print(f"Triton log: {log}")
        write_server_file(project, server, target)
        out.print(f"Ready: tritonserver pid {server.pid}. Press Ctrl-C to stop.")

        def restarted(pid: int) -> None:
            write_server_file(project, server, target)
            out.print(f"Restarted: tritonserver pid {pid}.")

        supervise(
            server,
            on_restart=lambda message: err.print(f"[yellow]{escape(message)}[/]"),
            on_ready=restarted,
            key=key,
        )
    except KeyboardInterrupt:
        out.print("Stopping Triton (up to 20 s)...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (project.root / ".nexus" / SERVER_FILE).unlink(missing_ok=True)
        server.stop()
    out.print("Triton stopped.")


@app.command()
@_handles_errors
def predict(
    model_name: ModelArg,
    inputs: Annotated[list[str] | None, typer.Option("--input", "-i", help="NAME=FILE.npy; repeat per input.")] = None,
    random: Annotated[bool, typer.Option("--random", help="Send random valid inputs (batch of 1).")] = False,
    server: Annotated[
        str | None, typer.Option(help="Triton address (default: http://127.0.0.1:8000, gRPC 127.0.0.1:8001).")
    ] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Write each output to DIR/NAME.npy.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one request to a served model and print (or save) its outputs.

    Example: nexus predict prod_model --input input=batch.npy --protocol grpc
    """
    import numpy as np

    from nexus.names import validate_model_name
    from nexus.serving.predict import PredictError, load_inputs
    from nexus.serving.predict import predict as send

    validate_model_name(model_name)  # it becomes a URL path segment
    if bool(inputs) == random:
        raise PredictError("give --input NAME=FILE.npy (one per input) or --random, not both or neither")
    arrays = load_inputs(inputs) if inputs else None
    outputs = send(model_name, arrays, server=server, protocol=protocol)
    if as_json:
        typer.echo(
            json.dumps(
                {n: {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.tolist()} for n, v in outputs.items()}
            )
        )
        return
    out = stdout()
    for name, value in outputs.items():
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            np.save(output_dir / f"{name}.npy", value)
            out.print(f"{name}: {value.dtype}{list(value.shape)} -> {output_dir / name}.npy")
        else:
            out.print(f"{name}: {value.dtype}{list(value.shape)}")
            out.out(np.array2string(value, threshold=50, precision=5), highlight=False)


@app.command()
@_handles_errors
def status(
    server: ServerOpt = None,
    repository: RepositoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latest in .nexus_meta.json, published in the repository, live on Triton: and any drift.

    Example: nexus status --server http://127.0.0.1:8000 --json
    """
    from nexus.serving.serve import find_server
    from nexus.serving.status import model_status

    project = _project()
    live_server = server or find_server(project)
    statuses = model_status(project, live_server, repository)
    if as_json:
        typer.echo(json.dumps([{**asdict(s), "drift": s.drift} for s in statuses], indent=2))
        return
    if not statuses:
        stdout().print("No models stored yet. Store one with `nexus store PATH MODEL_NAME`.")
        return
    table = Table(box=None, header_style="bold")
    columns = ("model", "latest", "commit", "published", "live", "avg batch", "queue ms", "compute ms", "failed")
    for column in columns:
        table.add_column(column, no_wrap=True)

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for s in statuses:
        live = "-" if s.live is None else (", ".join(f"v{v}" for v in s.live) or "none")
        table.add_row(
            s.model_name,
            f"v{s.latest}",
            s.commit[:8],
            "-" if s.published is None else f"v{s.published}",
            live,
            number(s.avg_batch_size, 1),
            number(s.avg_queue_ms, 2),
            number(s.avg_compute_ms, 2),
            "-" if s.failed is None else str(s.failed),
            style="bold red" if s.drift else None,
        )
    out = stdout()
    out.print(table)
    out.print(f"server: {live_server or 'none found (start one with nexus serve, or pass --server)'}")
    for s in statuses:
        for problem in s.drift:
            out.print(f"[bold red]drift[/] {s.model_name}: {problem}")


@app.command()
@_handles_errors
def loadtest(
    model_name: ModelArg,
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent users (the most, with --step-users).")] = 16,
    spawn_rate: Annotated[
        float | None, typer.Option("--spawn-rate", "-r", help="Users started per second (default: all at once).")
    ] = None,
    duration: Annotated[str, typer.Option("--duration", "-t", help="How long: 30s, 2m, 1h30m.")] = "30s",
    server: Annotated[
        str | None,
        typer.Option(help="Triton's HTTP URL (default: the running `nexus serve`, else http://127.0.0.1:8000)."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
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
    as_json: JsonOpt = False,
) -> None:
    """Drive a served model with Locust, headless, and summarise latency, throughput and Triton's batching.

    Example: nexus loadtest prod_model -u 64 --step-users 8 --step-time 10s --binary
    """
    from datetime import datetime

    from nexus.errors import NexusError
    from nexus.loadtest import LoadTestSettings, parse_duration, run_loadtest
    from nexus.names import validate_model_name
    from nexus.serving.serve import find_grpc_address, find_server

    validate_model_name(model_name)  # it becomes a URL path segment
    try:
        project: Project | None = _project()
    except NexusError:
        project = None
    folder = results or (project.root / ".nexus" / "loadtest" if project else Path("loadtest-results"))
    settings = LoadTestSettings(
        model=model_name,
        server=server or (find_server(project) if project else None) or "http://127.0.0.1:8000",
        users=users,
        spawn_rate=spawn_rate,
        duration=parse_duration(duration),
        batch_size=batch_size,
        binary=binary,
        protocol=protocol,
        grpc_address=grpc_address or (find_grpc_address(project) if project else None),
        step_users=step_users,
        step_time=parse_duration(step_time),
        results=folder,
    )
    settings.check()
    out = stdout()
    what = (
        f"{users} users for {settings.duration:g}s"
        if step_users is None
        else f"steps of {step_users} users every {settings.step_time:g}s up to {users}"
    )
    with out.status(f"Load-testing {model_name} on {settings.server} over {protocol}: {what}..."):
        report = run_loadtest(settings, datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    if as_json:
        typer.echo(json.dumps(asdict(report), default=str, indent=2))
    else:
        _print_loadtest(report)
    if report.failures:
        raise typer.Exit(1)


def _print_loadtest(report: Any) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None or value != value else f"{value:.1f}"

    out = stdout()
    table = Table(title=f"{report.settings.model}: Locust", box=None, header_style="bold", title_justify="left")
    for column in ("requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms", "avg ms"):
        table.add_column(column, justify="right")
    table.add_row(
        str(report.requests),
        f"[red]{report.failures}[/]" if report.failures else "0",
        f"{report.requests_per_s:.1f}",
        ms(report.p50_ms),
        ms(report.p95_ms),
        ms(report.p99_ms),
        ms(report.average_ms),
    )
    out.print(table)
    t = report.triton
    if isinstance(t, str):
        out.print(f"[yellow]{escape(t)}[/]")
    else:
        triton = Table(title="Triton, same run", box=None, header_style="bold", title_justify="left")
        for column in ("requests", "avg batch", "queue ms", "input ms", "infer ms", "output ms"):
            triton.add_column(column, justify="right")
        batch = t.average_batch
        triton.add_row(
            str(t.success),
            "-" if batch is None else f"{batch:.1f}",
            *(ms(t.per_request_ms(ns)) for ns in (t.queue_ns, t.input_ns, t.infer_ns, t.output_ns)),
        )
        out.print(triton)
    if report.steps:
        steps = Table(title="Steps", box=None, header_style="bold", title_justify="left")
        for column in ("users", "req/s", "p50 ms", "p95 ms", "failures/s"):
            steps.add_column(column, justify="right")
        for s in report.steps:
            steps.add_row(
                str(s.users), f"{s.requests_per_s:.1f}", ms(s.p50_ms), ms(s.p95_ms), f"{s.failures_per_s:.1f}"
            )
        out.print(steps)
    for count, reason in report.failure_reasons[:5]:
        out.print(f"[red]{count} x[/] {escape(reason)}")
    out.print(f"Results: {report.results} ({', '.join(p.name for p in report.csv_files)})")


@app.command()
@_handles_errors
def quickstart(
    folder: Annotated[Path, typer.Argument(help="A new or empty folder for the quickstart's git repository.")] = Path(
        "nexus-quickstart"
    ),
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Leave Triton running at the end (Ctrl-C stops it).")
    ] = False,
    users: Annotated[int, typer.Option(help="Load-test users.")] = 32,
    duration: Annotated[str, typer.Option(help="Load-test duration.")] = "5s",
) -> None:
    """Train a digit classifier, store, publish, serve, query and load-test it: the whole job, in a new folder.

    Example: nexus quickstart /tmp/qs --keep-serving
    """
    from rich.console import Console

    from nexus.loadtest import parse_duration
    from nexus.quickstart import Quickstart, check_folder

    target = check_folder(folder)
    summary = Quickstart(target, Console(highlight=False), users=users, duration=parse_duration(duration)).run(
        keep_serving=keep_serving
    )
    if not summary.predictions_match or summary.failures:
        raise typer.Exit(1)


@app.command(hidden=True)
def demo(
    folder: Annotated[
        Path | None, typer.Argument(help="Where to create the demo (default: a temporary folder).")
    ] = None,
) -> None:
    """Run the end-to-end control-plane demo (what `make demo` runs)."""
    from nexus.demo import main as run_demo

    run_demo([str(folder)] if folder else [])


def _name(author: str) -> str:
    """`Ada Lovelace <ada@example.com>` -> `Ada Lovelace`, for narrow tables."""
    return author.split(" <", 1)[0]


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
