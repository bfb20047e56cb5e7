"""`nexus release`: create, list, show, verify and prune immutable releases (:mod:`nexus.release`)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nexus.cli.context import handles_errors, project
from nexus.cli.options import JsonOpt
from nexus.cli.output import human_size, short_time, stdout, to_json

if TYPE_CHECKING:
    from nexus.release import Release

app = typer.Typer(
    name="release",
    help="Immutable releases: complete Triton repositories under prefixes that are never rewritten.\n\n"
    "Example: nexus release create --root s3://ml-models/releases",
    no_args_is_help=True,
    rich_markup_mode=None,
)

RootOpt = Annotated[
    str | None,
    typer.Option("--root", help="Folder or s3:// / gs:// URI of the releases (default: [release] root in .nexusrc)."),
]
RefArg = Annotated[str, typer.Argument(help="A release id, a unique prefix of one, or latest.", show_default=False)]


@app.command("create")
@handles_errors
def create(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="MODEL or MODEL:VERSION (default: every model at its latest version).", show_default=False),
    ] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a complete repository of the chosen versions under a new release prefix; its manifest last.

    Each model is rendered as `nexus publish` renders it, with the options `nexus tune` recorded.

    Example: nexus release create prod_model:3 ranker --root s3://ml-models/releases
    """
    from nexus.release import create_release, parse_model_ref

    refs = [parse_model_ref(text) for text in models] if models else None
    result = create_release(project(), refs, root)
    if as_json:
        typer.echo(to_json({"created": result.created, "uri": result.release.uri, **asdict(result.release)}))
        return
    out = stdout()
    out.print(models_table(result.release))
    verb = "Created" if result.created else "Unchanged: the same content is already released as"
    out.print(f"{verb} release {result.release.id} ({len(result.release.files)} files)")
    out.print(f"uri: {escape(result.release.uri)}")


@app.command("list")
@handles_errors
def list_cmd(root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Every release under the root, oldest first, and incomplete ones (a create cut off midway).

    Example: nexus release list --root s3://ml-models/releases
    """
    from nexus.release import list_releases

    releases = list_releases(project(), root)
    if as_json:
        body = {
            "root": releases.root,
            "releases": [{"uri": r.uri, **asdict(r)} for r in releases.complete],
            "incomplete": [{"id": i.id, "objects": len(i.keys), "reason": i.reason} for i in releases.incomplete],
        }
        typer.echo(to_json(body))
        return
    out = stdout()
    if not releases.complete and not releases.incomplete:
        out.print(f"No releases under {escape(releases.root)}. Make one with `nexus release create`.")
        return
    table = Table(box=None, header_style="bold")
    for name in ("id", "created", "models", "size", "commit"):
        table.add_column(name, justify="right" if name == "size" else "left")
    latest = releases.latest
    for r in releases.complete:
        names = ", ".join(f"{m.name}:{m.version}" for m in r.models)
        size = human_size(sum(f.size for f in r.files))
        style = "bold green" if r is latest else None
        table.add_row(r.id, short_time(r.created), names, size, r.commit[:8], style=style)
    for i in releases.incomplete:
        table.add_row(i.id, "-", f"[yellow]incomplete[/]: {escape(i.reason)}", "-", "-")
    out.print(table)
    out.print(f"root: {escape(releases.root)}")
    if any(not i.unreadable for i in releases.incomplete):
        out.print("Incomplete releases are removed by `nexus release prune`.")


@app.command("show")
@handles_errors
def show(ref: RefArg, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """A release's models and every file with its sha256.

    Example: nexus release show latest
    """
    from nexus.release import find_release

    release = find_release(project(), ref, root)
    if as_json:
        typer.echo(to_json({"uri": release.uri, **asdict(release)}))
        return
    out = stdout()
    out.print(f"release {release.id}  created {short_time(release.created)}  commit {release.commit[:8]}")
    out.print(f"uri: {escape(release.uri)}")
    out.print(models_table(release))
    files = Table(box=None, header_style="bold")
    for name in ("file", "size", "sha256"):
        files.add_column(name, justify="right" if name == "size" else "left")
    for f in release.files:
        files.add_row(escape(f.path), human_size(f.size), f.sha256)
    out.print(files)


@app.command("verify")
@handles_errors
def verify(ref: RefArg, root: RootOpt = None, as_json: JsonOpt = False) -> None:
    """Download every file of a release and check it against the manifest's sha256 and size.

    Example: nexus release verify 20261202-101500
    """
    from nexus.release import find_release, verify_release

    p = project()
    checked = verify_release(p, find_release(p, ref, root))
    if as_json:
        typer.echo(to_json({"id": checked.release.id, "ok": True, "files": checked.files, "bytes": checked.bytes}))
        return
    stdout().print(
        f"Verified release {checked.release.id}: {checked.files} files, {human_size(checked.bytes)}, "
        "every sha256 as the manifest says."
    )


@app.command("prune")
@handles_errors
def prune(
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest releases to keep.", show_default=False)],
    root: RootOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete all but the newest --keep releases, never one a nexus-deploy.json names, and incomplete ones.

    Example: nexus release prune --keep 5 --dry-run
    """
    from nexus.release import prune_releases

    result = prune_releases(project(), root, keep=keep, dry_run=dry_run)
    if as_json:
        typer.echo(
            to_json(
                {
                    "root": result.root,
                    "dry_run": dry_run,
                    "kept": [{"id": k.release.id, "reason": k.reason} for k in result.kept],
                    "deleted": [r.id for r in result.deleted],
                    "incomplete": [i.id for i in result.incomplete],
                    "unreadable": [{"id": i.id, "reason": i.reason} for i in result.unreadable],
                    "objects": result.objects,
                }
            )
        )
        return
    out = stdout()
    for k in result.kept:
        out.print(f"keep    {k.release.id}  ({escape(k.reason)})")
    verb = "would delete" if dry_run else "deleted"
    for r in result.deleted:
        out.print(f"{verb:<7} {r.id}")
    for i in result.incomplete:
        out.print(f"{verb:<7} {i.id}  (incomplete)")
    for i in result.unreadable:
        out.print(f"[yellow]left[/]    {i.id}  ({escape(i.reason)})")
    gone = len(result.deleted) + len(result.incomplete)
    out.print(f"{'Would delete' if dry_run else 'Deleted'} {gone} release(s), {result.objects} object(s).")


def models_table(release: Release) -> Table:
    table = Table(box=None, header_style="bold")
    for name in ("model", "version", "commit", "instances", "kind", "batching", "max batch", "sample"):
        table.add_column(name, justify="right" if name in ("version", "instances", "max batch", "sample") else "left")
    for m in release.models:
        sample = "-" if m.sample_bytes is None else human_size(m.sample_bytes)
        table.add_row(
            m.name, str(m.version), m.commit[:8], str(m.instances), m.kind, m.policy, str(m.max_batch_size), sample
        )
    return table
