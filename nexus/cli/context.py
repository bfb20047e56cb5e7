"""What every command shares: the global options' state, the project it runs in, and error handling."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from nexus.cli.errors import describe
from nexus.cli.output import stderr
from nexus.registry import Project


class _State:
    debug: bool = False
    repo: Path | None = None


state = _State()

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
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


def project() -> Project:
    """The project of the folder the command runs in (`-C DIR`, else the current one)."""
    return Project.open(state.repo)


def live_server(project: Project, server: str | None, repository: str | None) -> str | None:
    """The server a publish or rollback switches: the one given, else the running `nexus serve` on the
    default repository (a publish elsewhere does not touch it)."""
    if server is not None or repository is not None:
        return server
    from nexus.serving.discovery import find_server

    return find_server(project)
