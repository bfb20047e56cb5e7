"""Branch merges of `.nexus_meta.json`: `nexus merge-meta`, and the hidden `nexus merge-driver` git runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nexus.atomic import atomic_write_text
from nexus.cli.context import handles_errors, state
from nexus.cli.output import stderr, stdout
from nexus.errors import ConfigError
from nexus.registry.merge_driver import author, merge_texts, read_source, run_driver, summary
from nexus.registry.metadata import META_FILE


@handles_errors
def merge_meta(
    ours: Annotated[str, typer.Argument(help="Our side: a file, REV:PATH, or a merge stage like :2:.nexus_meta.json.")],
    theirs: Annotated[str, typer.Argument(help="Their side, the same ways (:3:.nexus_meta.json).")],
    base: Annotated[
        str | None, typer.Option("--base", help="Their common ancestor (:1:.nexus_meta.json); gives the exact rules.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the merged file here.")] = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Write the merged file over OURS (a file).")] = False,
    resolve: Annotated[
        list[str] | None,
        typer.Option("--resolve", help="MODEL=ours or MODEL=theirs: the side a conflicted model takes (repeatable)."),
    ] = None,
) -> None:
    """Merge two sides' .nexus_meta.json by the merge driver's rules; print the result (or write it).

    Every version of either side is kept once; a number ours already uses moves to the next free one
    (recorded in the history). A conflict (both sides rolled a model back to different versions) is
    reported and nothing is written, until --resolve MODEL=ours|theirs decides it.

    From the repository root: a conflict git already checked out, then the same in CI (a branch against main):

    \b
      nexus merge-meta :2:.nexus_meta.json :3:.nexus_meta.json --base :1:.nexus_meta.json -o .nexus_meta.json
      git add .nexus_meta.json
      nexus merge-meta main:.nexus_meta.json HEAD:.nexus_meta.json \\
        --base "$(git merge-base main HEAD):.nexus_meta.json"

    Example: nexus merge-meta :2:.nexus_meta.json :3:.nexus_meta.json --base :1:.nexus_meta.json -o .nexus_meta.json
    """
    cwd = Path(state.repo or Path.cwd())
    if in_place and output is not None:
        raise ConfigError("--in-place", "cannot be given with --output", "give one of them")
    if in_place and not (cwd / ours).is_file():
        raise ConfigError("--in-place", f"{ours} is not a file to write over", "use --output FILE instead")
    decided: dict[str, str] = {}
    for item in resolve or []:
        model, sep, side = item.partition("=")
        if not sep or not model:
            raise ConfigError("--resolve", f"{item!r} is not MODEL=SIDE", "write e.g. --resolve clf=ours")
        decided[model] = side
    ancestor = read_source(base, cwd) if base is not None else None
    names = (base or "base", ours, theirs)
    result = merge_texts(ancestor, read_source(ours, cwd), read_source(theirs, cwd), names, decided, author(cwd))
    merged = result.checked("rerun with {flags} (or =theirs); then `nexus rollback MODEL --to N` picks another")
    target = cwd / ours if in_place else output
    lines = summary(result)
    if target is None:
        typer.echo(merged.to_json(), nl=False)
        for line in lines:
            stderr().print(escape(line))
        return
    atomic_write_text(target, merged.to_json())
    out = stdout()
    out.print(f"Merged {ours} and {theirs} into {target}")
    for line in lines:
        out.print(f"  {escape(line)}")
    if target.name == META_FILE:
        out.print(f"Next: git add {target}")


@handles_errors
def merge_driver(
    base: Annotated[Path, typer.Argument(help="%O: the common ancestor's file.")],
    ours: Annotated[Path, typer.Argument(help="%A: ours, replaced by the merge.")],
    theirs: Annotated[Path, typer.Argument(help="%B: theirs.")],
    path: Annotated[str, typer.Argument(help="%P: the path being merged.")] = META_FILE,
) -> None:
    """Git's merge driver for .nexus_meta.json (installed by `nexus init --merge-driver`)."""
    for line in run_driver(base, ours, theirs, path):
        stderr().print(f"nexus: {escape(line)}")
