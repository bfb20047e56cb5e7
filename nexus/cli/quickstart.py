"""`nexus quickstart`: the whole job in a new folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nexus.cli.context import handles_errors


@handles_errors
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
