"""Control-plane commands: init, store, load, list, rollback, history. Each parses, calls one library
function, and prints."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nexus.cli.context import handles_errors, live_server, project, state
from nexus.cli.options import (
    CommitOpt,
    GitCommitOpt,
    InputsOpt,
    JsonOpt,
    ModelArg,
    OptionalModelArg,
    OutputsOpt,
    SamplesOpt,
    ServerOpt,
    VersionOpt,
)
from nexus.cli.output import human_size, stderr, stdout, transfer_progress
from nexus.cli.tables import history_table, next_step, versions_table
from nexus.registry import git, init
from nexus.registry.merge_driver import install as install_merge_driver
from nexus.registry.merge_driver import missing_hint
from nexus.registry.metadata import parse_time_option
from nexus.registry.samples import load_samples
from nexus.registry.signature import describe
from nexus.settings import PublishSettings, StorageSettings
from nexus.tensors import parse_signature


@handles_errors
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
    merge_driver: Annotated[
        bool,
        typer.Option(
            "--merge-driver", help="Only install the .nexus_meta.json merge driver in this clone (idempotent)."
        ),
    ] = False,
) -> None:
    """Write .nexusrc (storage settings, never credentials) at the repository root, and install the
    .nexus_meta.json merge driver (.gitattributes and this clone's git config).

    Example: nexus init --storage s3://ml-models/nexus --endpoint-url http://127.0.0.1:9000
    """
    root = Path(state.repo or Path.cwd())
    out, written = stdout(), []
    if not merge_driver:
        settings = StorageSettings(uri=storage, endpoint_url=endpoint_url, region=region)
        path = init(root, settings, PublishSettings(repository), force=force)
        out.print(f"Wrote {path} (storage: {storage})")
        written.append(path.name)
    installed = install_merge_driver(git.find_root(root))
    if installed.attributes_changed:
        written.append(installed.attributes.name)
    changed = [installed.attributes.name] * installed.attributes_changed + ["git config"] * installed.config_changed
    if changed:
        out.print(f"Installed the .nexus_meta.json merge driver ({' and '.join(changed)})")
    else:
        out.print("The .nexus_meta.json merge driver is already installed in this clone.")
    if written:
        out.print(f"Next: git add {' '.join(written)} && git commit -m 'nexus: configure storage and merges'")


@handles_errors
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
    signature, sample = parse_signature(inputs, outputs, batched=True), load_samples(samples) if samples else None
    with transfer_progress(f"store {model_name}", path.stat().st_size if path.is_file() else 0) as progress:
        result = project().store(
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
    v, out = result.version, stdout()
    what = f"{v.model_name} v{v.version} (commit {v.short_commit}, {v.format}, {human_size(v.size)})"
    if result.action == "unchanged":
        out.print(f"Already stored: {what} holds these exact bytes; nothing to do.")
        if not v.is_latest:
            out.print(
                f"It is not the latest version; to make it latest: nexus rollback {v.model_name} --to {v.version}"
            )
        return
    out.print(
        f"Found identical bytes already in storage; recorded {what}."
        if result.action == "recorded"
        else f"Stored {what}"
    )
    out.print(f"  {v.storage_uri}\n  sha256 {v.sha256}")
    if v.dirty:
        stderr().print("[yellow]Warning:[/] the tree had uncommitted changes; the version is recorded as dirty.")
    next_step(result.metadata_commit, f"nexus: store {v.model_name} v{v.version}")


@handles_errors
def signature(
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
    p, out = project(), stdout()
    given, sample = parse_signature(inputs, outputs, batched=True), load_samples(samples) if samples else None
    if given is None and sample is None:
        v = p.resolve(model_name, version)
        lines = describe(v.signature) if v.signature else [f"none recorded; give one: {p.signature_command(v)}"]
        out.print(f"{model_name} v{v.version} ({v.format}):", *(f"  {line}" for line in lines), sep="\n")
        return
    result = p.set_signature(model_name, given, version, sample=sample, commit=commit)
    v = result.version
    out.print(f"Recorded the signature of {model_name} v{v.version}; every publish of it uses it:")
    out.print(*(f"  {line}" for line in describe(result.signature)), sep="\n")
    next_step(result.metadata_commit, f"nexus: signature of {model_name} v{v.version}")


@handles_errors
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
    p = project()
    v = p.resolve(model_name, version, commit)
    with transfer_progress(f"load {model_name} v{v.version}", v.size) as progress:
        result = p.load(model_name, version=v.version, output=output, force=force, progress=progress)
    source = "from the verified cache" if result.from_cache else "downloaded"
    stdout().print(
        f"Loaded {v.model_name} v{v.version} (commit {v.short_commit}) -> {result.path} ({source}, sha256 verified)"
    )


@handles_errors
def list_cmd(model_name: OptionalModelArg = None, as_json: JsonOpt = False) -> None:
    """List stored versions.

    Example: nexus list prod_model --json
    """
    p = project()
    versions = p.versions(model_name)
    if (hint := missing_hint(p.root)) is not None:
        stderr().print(f"[yellow]Note:[/] {escape(hint)}")
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in versions], indent=2))
    elif not versions:
        stdout().print("No models stored yet. Store one with `nexus store PATH MODEL_NAME`.")
    else:
        stdout().print(versions_table(versions, show_model=model_name is None))


@handles_errors
def rollback(
    model_name: ModelArg,
    to: Annotated[str | None, typer.Option("--to", help="Version number (3 or v3) or commit prefix.")] = None,
    commit: GitCommitOpt = False,
    server: ServerOpt = None,
) -> None:
    """Make an older version the latest (the one before the current latest by default).

    With a running `nexus serve` (or --server HOST:PORT), the server is switched to it too.

    Example: nexus rollback prod_model --to 1 --commit
    """
    from nexus.serving.hotswap import rollback as roll_back

    p = project()
    result, swapped = roll_back(p, model_name, to, commit=commit, server=live_server(p, server, None))
    target = p.resolve(model_name, result.to_version)
    out = stdout()
    out.print(
        f"Rolled back {model_name}: latest is now v{result.to_version} (commit {target.short_commit}), "
        f"was v{result.from_version}."
    )
    if swapped is not None:
        out.print(f"Switched {swapped.server} to {model_name} v{result.to_version}.")
    next_step(result.metadata_commit, f"nexus: roll back {model_name} to v{result.to_version}")


@handles_errors
def history(
    model_name: ModelArg,
    at: Annotated[str | None, typer.Option("--at", help="Only say which version was latest at this ISO time.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show every change of the latest version (stores and rollbacks), oldest first.

    Example: nexus history prod_model --at 2026-11-26T08:00Z
    """
    record = project().model(model_name)
    if at is not None:
        when = parse_time_option("--at", at)
        number = record.latest_at(when)
        if as_json:
            typer.echo(json.dumps({"model_name": model_name, "at": when.isoformat(), "version": number}))
        elif number is None:
            stdout().print(f"{model_name} had no version yet at {at}.")
        else:
            stdout().print(f"{model_name}: v{number} was latest at {at}.")
    elif as_json:
        typer.echo(json.dumps([asdict(e) for e in record.history], indent=2))
    else:
        stdout().print(history_table(record.history))
