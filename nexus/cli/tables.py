"""How command results look: tables and short summaries (Rich stays in the CLI layer)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from nexus.cli.output import human_size, short_time, stderr, stdout
from nexus.registry.metadata import META_FILE, HistoryEvent, ModelVersion

if TYPE_CHECKING:
    from nexus.release import FleetStatus
    from nexus.serving.model_config import ServingOptions
    from nexus.serving.publish import PublishResult
    from nexus.serving.status import ModelStatus


def _name(author: str) -> str:
    """`Ada Lovelace <ada@example.com>` -> `Ada Lovelace`, for narrow tables."""
    return author.split(" <", 1)[0]


def next_step(metadata_commit: str | None, message: str) -> None:
    """After a change to `.nexus_meta.json`: the commit that recorded it, or the command to commit it."""
    if metadata_commit:
        stdout().print(f"Committed {META_FILE} as {metadata_commit[:8]}.")
    else:
        stdout().print(f"Next: git add {META_FILE} && git commit -m '{message}'")


def versions_table(versions: list[ModelVersion], show_model: bool) -> Table:
    table = Table(box=None, header_style="bold")
    columns = ["version", "commit", "size", "created", "latest", "format", "author"]
    for name in ["model", *columns] if show_model else columns:
        table.add_column(name, justify="right" if name in ("version", "size") else "left", no_wrap=name != "author")
    for v in versions:
        commit = v.short_commit + (" (dirty)" if v.dirty else "")
        row = [str(v.version), commit, human_size(v.size), short_time(v.created_at), "*" if v.is_latest else "",
               v.format, _name(v.author)]  # fmt: skip
        table.add_row(*([v.model_name, *row] if show_model else row), style="bold green" if v.is_latest else None)
    return table


def history_table(events: list[HistoryEvent]) -> Table:
    table = Table(box=None, header_style="bold")
    for name in ("at", "action", "from", "to", "by"):
        table.add_column(name, no_wrap=name != "by")
    for e in events:
        before = "-" if e.from_version is None else f"v{e.from_version}"
        table.add_row(short_time(e.at), e.action, before, f"v{e.to_version}", _name(e.by))
    return table


def serving_summary(options: ServingOptions, version: ModelVersion) -> str:
    """One line on how a published version is served.

    E.g. "2 instances (auto), adaptive batches of up to 32".
    """
    from nexus.serving.model_config import instance_count

    count = instance_count(options, version)
    parts = [f"{count} instance{'s' if count > 1 else ''}" + (" (auto)" if options.instances is None else "")]
    if not options.batching:
        parts.append("no batching")
    else:
        size, delay_us = options.max_batch_size, options.max_queue_delay_us
        delay = f"{delay_us / 1000:g} ms"
        if options.policy == "window":
            parts.append(f"batches of up to {size} in {delay} windows")
        else:
            parts.append(f"adaptive batches of up to {size}" + (", closed as formed (delay 0)" if not delay_us else ""))
    if options.max_queue_size:
        parts.append(f"queue of {options.max_queue_size}")
    return ", ".join(parts)


def print_published(result: PublishResult, options: ServingOptions, source: str | None = None) -> None:
    """What a publish wrote (or would write, with --dry-run), which server it switched, and how it serves
    (``source``: where the options came from, e.g. `tuned for p99 ≤ 20 ms, .nexus_serving.json`)."""
    from nexus.serving.model_config import one_instance_without_prefetch

    out, v, model = stdout(), result.version, result.model_name
    if not result.written:
        out.out(result.config_text, highlight=False)
        out.print(f"Would write to {result.repository}:")
    elif result.server is not None:
        out.print(f"Published {model} v{v.version} and switched {result.server} to it (commit {v.short_commit}).")
    else:
        out.print(f"Published {model} v{v.version} (commit {v.short_commit}, {v.format}) to {result.repository}")
    if result.replaced is not None:
        verb = "Replaced" if result.written else "Would replace"
        out.print(f"  {verb} the repository's {result.replaced.replaced()}", highlight=False)
    if result.written:
        suffix = f" ({source})" if source else ""
        out.print(f"  serving: {serving_summary(options, v)}{suffix}", highlight=False)
    for name in result.files:
        out.print(f"  {name}")
    if warning := one_instance_without_prefetch(options, v):
        stderr().print(f"[yellow]Warning:[/] {warning}", highlight=False)
    if not v.is_latest:
        stderr().print(
            f"[yellow]Note:[/] v{v.version} is not the latest version in .nexus_meta.json, but the config "
            f"serves it. To make it latest: nexus rollback {model} --to {v.version}"
        )


def print_outputs(outputs: dict[str, Any], output_dir: Path | None) -> None:
    """Each output's dtype and shape, and its values or the `.npy` file it was written to."""
    import numpy as np

    out = stdout()
    for name, value in outputs.items():
        if output_dir is not None:
            output_dir.mkdir(parents=True, exist_ok=True)
            np.save(output_dir / f"{name}.npy", value)
            out.print(f"{name}: {value.dtype}{list(value.shape)} -> {output_dir / name}.npy")
        else:
            out.print(f"{name}: {value.dtype}{list(value.shape)}")
            out.out(np.array2string(value, threshold=50, precision=5), highlight=False)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def status_table(statuses: list[ModelStatus]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("model", "latest", "commit", "published", "live", "avg batch", "queue ms", "compute ms", "failed"):
        table.add_column(column, no_wrap=True)
    for s in statuses:
        live = "-" if s.live is None else (", ".join(f"v{v}" for v in s.live) or "none")
        table.add_row(
            s.model_name,
            f"v{s.latest}",
            s.commit[:8],
            "-" if s.published is None else f"v{s.published}",
            live,
            _number(s.avg_batch_size, 1),
            _number(s.avg_queue_ms, 2),
            _number(s.avg_compute_ms, 2),
            "-" if s.failed is None else str(s.failed),
            style="bold red" if s.drift else None,
        )
    return table


#: How the fleet table and summary name a server that serves no release under the root.
NO_RELEASE = "no release (hand-published or unknown)"


def fleet_table(fleet: FleetStatus) -> Table:
    """One row per server: READY or not, the release it serves, its READY versions, and how much drift."""
    table = Table(box=None, header_style="bold")
    for column in ("server", "state", "release", "models", "drift"):
        table.add_column(column, no_wrap=column != "models")
    for s in fleet.servers:
        if not s.reachable:
            table.add_row(s.server, "unreachable", "-", "-", "-", style="bold red")
            continue
        models = ", ".join(f"{name}:" + ",".join(f"v{v}" for v in versions) for name, versions in s.models.items())
        table.add_row(
            s.server,
            "READY" if s.ready else "NOT READY",
            s.release or NO_RELEASE,
            models or "none",
            str(len(s.drift)) if s.drift else "-",
            style="bold red" if not s.ready else ("yellow" if s.drift or s.release is None else None),
        )
    return table


def fleet_summary(fleet: FleetStatus) -> list[str]:
    """Whether the servers agree on one release (and which), then what each one drifts from, in lines."""
    total = len(fleet.servers)
    if fleet.agreed is not None:
        lines = [f"All {total} servers serve" if total > 1 else "The server serves"]
        lines[0] += f" release {fleet.agreed}."
    else:
        groups = [
            f"{f'release {release}' if release else NO_RELEASE} on {', '.join(urls)}"
            for release, urls in fleet.by_release.items()
        ]
        down = [s.server for s in fleet.servers if not s.reachable]
        if down:
            groups.append(f"unreachable: {', '.join(down)}")
        what = "a rollout in progress, or servers left behind" if len(fleet.by_release) > 1 else "not every server"
        lines = [f"The servers do not agree on one release ({what}): " + "; ".join(groups) + "."]
    for s in fleet.servers:
        if not s.reachable:
            lines.append(f"unreachable {s.server}: {s.error}")
        lines.extend(f"drift {s.server} {problem}" for problem in s.drift)
    lines.append(f"releases root: {fleet.root}")
    return lines
