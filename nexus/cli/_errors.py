"""Where errors become messages and exit codes: the only place that does."""

from __future__ import annotations

from nexus.errors import NexusError

#: Exit codes: 1 for a user error NexusML explains, 2 for a usage error (Typer's), 3 for a bug,
#: 130 for Ctrl-C.
EXIT_USER_ERROR = 1
EXIT_BUG = 3
EXIT_INTERRUPTED = 130


def describe(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``error``."""
    if isinstance(error, NexusError):
        return str(error), error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; nothing was recorded in .nexus_meta.json", EXIT_INTERRUPTED
    first_line = (str(error).splitlines() or [""])[0]
    return (
        f"unexpected {type(error).__name__}: {first_line} (a bug in nexus: rerun with --debug for the "
        "traceback and report it)",
        EXIT_BUG,
    )
