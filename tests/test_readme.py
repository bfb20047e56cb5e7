"""The README's commands are the CLI's: every `nexus ...` line in its shell blocks parses as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from nexus.cli import app

README = Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("nexus "):
                commands.append(line)
    return commands


def test_the_readme_shows_the_main_commands() -> None:
    used = {c.split()[1] for c in readme_commands()}
    assert {"init", "store", "list", "load", "rollback", "history", "serve", "loadtest"} <= used
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text


@pytest.mark.parametrize("line", readme_commands())
def test_each_readme_command_parses(line: str) -> None:
    group: Any = typer.main.get_command(app)
    args = shlex.split(line)[1:]
    # global options come first, then the command and its own arguments
    with group.make_context("nexus", list(args)) as ctx:
        index = next(i for i, a in enumerate(args) if not a.startswith("-"))  # the README uses no -C DIR
        name, command, rest = group.resolve_command(ctx, args[index:])
        assert command is not None, f"`{line}`: no command {name!r}"
        # raises click's UsageError on an unknown option, a missing argument or a bad value
        command.make_context(name, list(rest), parent=ctx)
