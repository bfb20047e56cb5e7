"""Where errors become messages and exit codes: the only place that does.

The library raises :class:`~nexus.errors.NexusError` subclasses that carry their data and say the
fix; here each kind gets its exit code, in one table, most specific first.
"""

from __future__ import annotations

from nexus import errors

#: 1: a user error NexusML explains (the message names the fix). 2 is Typer's usage error.
EXIT_USER_ERROR = 1
#: A bug in nexus: the message asks for a report, and --debug shows the traceback.
EXIT_BUG = 3
#: Ctrl-C or SIGTERM.
EXIT_INTERRUPTED = 130

#: Error type -> exit code; the first match wins. Every NexusError is a user error, a condition the
#: user can fix from the message; anything else that escapes the library is a bug.
EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (errors.NexusError, EXIT_USER_ERROR),
    (KeyboardInterrupt, EXIT_INTERRUPTED),
]


def describe(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit code for ``error``."""
    code = next((code for kind, code in EXIT_CODES if isinstance(error, kind)), EXIT_BUG)
    if code == EXIT_INTERRUPTED:
        return "interrupted; nothing was recorded in .nexus_meta.json", code
    if code != EXIT_BUG:
        return str(error), code
    first_line = (str(error).splitlines() or [""])[0]
    return (
        f"unexpected {type(error).__name__}: {first_line} (a bug in nexus: rerun with --debug for the "
        "traceback and report it)",
        EXIT_BUG,
    )
