"""`nexus status`: one server against `.nexus_meta.json` and the repository, or a fleet against the releases."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from nexus.cli.context import handles_errors, project
from nexus.cli.options import JsonOpt, RepositoryOpt
from nexus.cli.output import stderr, stdout
from nexus.cli.tables import fleet_summary, fleet_table, status_table

if TYPE_CHECKING:
    from nexus.registry import Project


@handles_errors
def status(
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            help="Triton: HOST:PORT or http(s)://HOST:PORT (default: the running `nexus serve`); repeat for a fleet.",
        ),
    ] = None,
    servers: Annotated[
        Path | None,
        typer.Option("--servers", help="A file of Triton addresses, one a line (# comments): a fleet.", metavar="FILE"),
    ] = None,
    root: Annotated[
        str | None,
        typer.Option("--root", help="A fleet's releases: folder or s3:// / gs:// URI (default: [release] root)."),
    ] = None,
    repository: RepositoryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Latest in .nexus_meta.json, published in the repository, live on Triton: and any drift.

    With several --server (or --servers FILE): per server READY or not, its models, the release it serves
    (found by content among the releases under --root) and drift; and whether all serve one release.

    Example: nexus status --server localhost:8000 --json
    """
    from nexus.registry.merge_driver import missing_hint
    from nexus.serving.discovery import find_server
    from nexus.serving.status import model_status

    p = project()
    if (hint := missing_hint(p.root)) is not None:
        stderr().print(f"[yellow]Note:[/] {escape(hint)}")
    if servers is not None or len(server or []) > 1:
        _fleet_status(p, [*(server or []), *_listed(servers)], root, repository, as_json)
        return
    live = server[0] if server else find_server(p)
    statuses = model_status(p, live, repository)
    if as_json:
        typer.echo(json.dumps([{**asdict(s), "drift": s.drift} for s in statuses], indent=2))
        return
    if not statuses:
        stdout().print("No models stored yet. Store one with `nexus store PATH MODEL_NAME`.")
        return
    out = stdout()
    out.print(status_table(statuses))
    out.print(f"server: {live or 'none found (start one with nexus serve, or pass --server)'}")
    for s in statuses:
        for problem in s.drift:
            out.print(f"[bold red]drift[/] {s.model_name}: {problem}")


def _listed(servers: Path | None) -> list[str]:
    from nexus.release import read_server_list

    return read_server_list(servers) if servers is not None else []


def _fleet_status(p: Project, servers: list[str], root: str | None, repository: str | None, as_json: bool) -> None:
    from nexus.errors import FleetRepositoryError
    from nexus.release import fleet_status

    if repository is not None:
        raise FleetRepositoryError()
    fleet = fleet_status(p, servers, root)
    if as_json:
        body = {
            "root": fleet.root,
            "agreed": fleet.agreed,
            "releases": {release or "none": urls for release, urls in fleet.by_release.items()},
            "latest": fleet.latest,
            "servers": [asdict(s) for s in fleet.servers],
        }
        typer.echo(json.dumps(body, indent=2))
        return
    out = stdout()
    out.print(fleet_table(fleet))
    for line in fleet_summary(fleet):
        out.print(escape(line), highlight=False)
