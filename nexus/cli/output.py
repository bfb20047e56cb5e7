"""Rich output for the CLI: consoles, progress bars, human sizes. The library never prints."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nexus.hashing import Progress as ProgressCallback
from nexus.registry.metadata import parse_time


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160  # piped output: tables should not be squeezed to 80 columns
    return console


def stdout() -> Console:
    return _console(stderr=False)


def stderr() -> Console:
    return _console(stderr=True)


@contextmanager
def transfer_progress(description: str, total: int) -> Iterator[ProgressCallback]:
    """A transient byte progress bar on stderr; yields the callback the library calls."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    console = stderr()
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    units = ["KiB", "MiB", "GiB", "TiB"]
    value, i = size / 1024, 0
    while value >= 1024 and i < len(units) - 1:
        value, i = value / 1024, i + 1
    return f"{value:.1f} {units[i]}"


def short_time(text: str) -> str:
    """`2026-11-26T08:00:00.123456Z` -> `2026-11-26 08:00Z`."""
    return datetime.strftime(parse_time(text), "%Y-%m-%d %H:%MZ")


def to_json(value: Any) -> str:
    """``value`` (dataclasses turned into dicts first) as strict JSON: NaN and infinities become null."""

    def clean(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, list | tuple):
            return [clean(v) for v in item]
        return item

    return json.dumps(clean(value), default=str, indent=2, allow_nan=False)
