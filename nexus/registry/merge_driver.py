"""The git side of merging `.nexus_meta.json`: installing the merge driver, noticing a clone without it,
running it for git, and reading the sides `nexus merge-meta` is given.

Git runs a merge driver named in `.gitattributes` (``.nexus_meta.json merge=nexus-meta``, committed)
through the clone's own config (``merge.nexus-meta.driver``, never committed: each clone installs it,
with ``nexus init`` or ``nexus init --merge-driver``). The command is this Python interpreter's absolute
path with ``-m nexus``: it works however nexus was started (console script, ``python -m nexus`` or the
library), needs no PATH or activated virtual environment when git runs it, and runs the very nexus
that installed it. If that interpreter goes away, :func:`missing_hint` says to install it again.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from nexus.atomic import atomic_write_text
from nexus.errors import CorruptMetadataError, MetadataError, NexusError
from nexus.registry import git
from nexus.registry.merge import MergeResult, merge_metadata
from nexus.registry.metadata import META_FILE, Metadata, utc_now

DRIVER = "nexus-meta"
ATTRIBUTES = ".gitattributes"
ATTRIBUTE_LINE = f"{META_FILE} merge={DRIVER}"
INSTALL_COMMAND = "nexus init --merge-driver"
DRIVER_NAME = "NexusML .nexus_meta.json merge (nexus merge-meta)"


def driver_command() -> str:
    """The `merge.nexus-meta.driver` value: git substitutes ancestor, ours, theirs and the path."""
    return f"{shlex.quote(sys.executable)} -m nexus merge-driver %O %A %B %P"


@dataclass(frozen=True)
class Installed:
    attributes: Path
    #: Whether `.gitattributes` got the line now (then it is to be committed).
    attributes_changed: bool
    #: Whether the clone's git config changed now.
    config_changed: bool


def install(root: Path) -> Installed:
    """Ask for the driver in `root/.gitattributes` and configure it in this clone; idempotent."""
    path = root / ATTRIBUTES
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    attributes_changed = ATTRIBUTE_LINE not in (line.strip() for line in text.splitlines())
    if attributes_changed:
        atomic_write_text(path, text + ("" if not text or text.endswith("\n") else "\n") + ATTRIBUTE_LINE + "\n")
    config_changed = False
    for key, value in ((f"merge.{DRIVER}.name", DRIVER_NAME), (f"merge.{DRIVER}.driver", driver_command())):
        if git.config_get(root, key) != value:
            git.config_set(root, key, value)
            config_changed = True
    return Installed(path, attributes_changed, config_changed)


def missing_hint(root: Path) -> str | None:
    """One clause for the user when `.gitattributes` asks for the driver and this clone cannot run it."""
    if git.attribute(root, "merge", META_FILE) != DRIVER:
        return None
    command = git.config_get(root, f"merge.{DRIVER}.driver")
    if not command:
        return (
            f"this clone lacks the {DRIVER} merge driver that .gitattributes asks for: `{INSTALL_COMMAND}` installs it"
        )
    program = shlex.split(command)[0] if command.strip() else ""
    if Path(program).is_absolute() and not Path(program).exists():
        return f"the {DRIVER} merge driver runs {program}, which is gone: reinstall it with `{INSTALL_COMMAND}`"
    return None


def parse(text: str, where: str) -> Metadata:
    """Metadata from a side's text; an empty text (no ancestor, or no file on that side) is empty metadata."""
    return Metadata() if not text.strip() else Metadata.from_json(text, Path(where))


def read_source(spec: str, cwd: Path) -> str:
    """The text of a file, or of `REV:PATH` / a merge stage (`:1:.nexus_meta.json`) through `git show`."""
    path = cwd / spec
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CorruptMetadataError(path, "not UTF-8 text") from e
    if ":" in spec:
        return git.show(cwd, spec)
    raise MetadataError(f"{spec}: no such file; name a file, REV:PATH (main:{META_FILE}) or a stage (:2:{META_FILE})")


def merge_texts(
    base: str | None, ours: str, theirs: str, names: tuple[str, str, str], resolve: dict[str, str], by: str
) -> MergeResult:
    """Parse the three sides (``names`` for messages: base, ours, theirs) and merge them, now, as ``by``."""
    ancestor = parse(base, names[0]) if base is not None else None
    return merge_metadata(
        ancestor, parse(ours, names[1]), parse(theirs, names[2]), at=utc_now(), by=by, resolve=resolve
    )


def summary(result: MergeResult) -> list[str]:
    """One line per renumbered version."""
    return [
        f"{r.model}: theirs' v{r.old} (commit {r.commit_hash[:8]}) is v{r.new} after the merge"
        for r in result.renumbered
    ]


def run_driver(base: Path, ours: Path, theirs: Path, name: str) -> list[str]:
    """What git's driver does: merge the three files into ``ours`` (atomically); the summary lines.

    On a conflict or any error, ``ours`` gets both sides between conflict markers (so nexus refuses it
    and git reports the conflict) before the error is raised; its message says how to decide.
    """
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in (base, ours, theirs)]
    try:
        result = merge_texts(
            texts[0], texts[1], texts[2], (f":1:{name}", f":2:{name}", f":3:{name}"), {}, author(Path.cwd())
        )
        how = (
            f"decide from the repository root with `nexus merge-meta :2:{name} :3:{name} --base :1:{name} "
            f"{{flags}} -o {name}` (or =theirs), then `git add {name}`; `nexus rollback MODEL --to N` "
            "picks another version afterwards"
        )
        merged = result.checked(how)
    except NexusError:
        atomic_write_text(ours, conflicted_text(texts[1], texts[2]))
        raise
    atomic_write_text(ours, merged.to_json())
    return summary(result)


def conflicted_text(ours: str, theirs: str) -> str:
    """Both sides whole, between git's conflict markers."""

    def line_end(text: str) -> str:
        return text if not text or text.endswith("\n") else text + "\n"

    return f"<<<<<<< ours\n{line_end(ours)}=======\n{line_end(theirs)}>>>>>>> theirs\n"


def author(cwd: Path) -> str:
    """Who merges, for the history; "unknown" where git cannot say."""
    try:
        return git.author(cwd)
    except NexusError:
        return "unknown"
