"""The `nexus` command line: the Typer app, its global options, and where each command lives.

Control plane (`nexus.cli.control`): init, store, signature, load, list, rollback, history;
`nexus.cli.merge`: merge-meta and the hidden merge-driver git runs.
Data plane (`nexus.cli.serving`): publish, serve, predict; `nexus.cli.status`: status; `nexus.cli.loadtest`: loadtest;
`nexus.cli.tune`: tune;
`nexus.cli.release`: the `nexus release` group (create, list, show, verify, prune);
`nexus.cli.deploy`: the `nexus deploy` group (k8s, kserve);
`nexus.cli.quickstart`: the whole job in a new folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nexus import __version__
from nexus.cli import control, deploy, loadtest, merge, quickstart, release, serving, status, tune
from nexus.cli.context import state
from nexus.cli.output import stdout

app = typer.Typer(
    name="nexus",
    help="Git-pinned, verified PyTorch model versions, served by Triton.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    rich_markup_mode=None,
)


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


app.command("init")(control.init_cmd)
app.command()(control.store)
app.command()(control.signature)
app.command()(control.load)
app.command("list")(control.list_cmd)
app.command()(control.rollback)
app.command()(control.history)
app.command("merge-meta")(merge.merge_meta)
app.command("merge-driver", hidden=True)(merge.merge_driver)
app.command()(serving.publish)
app.command()(serving.serve)
app.command()(serving.predict)
app.command()(status.status)
app.command()(loadtest.loadtest)
app.command()(tune.tune)
app.command()(quickstart.quickstart)
app.add_typer(release.app, name="release")
app.add_typer(deploy.app, name="deploy")


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    app()
