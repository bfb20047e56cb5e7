"""The batching benchmark's report: a markdown block (tables and target verdicts) and a PNG plot."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from _bench_client import StatsDelta
from _bench_cpu import CpuUse
from _bench_labels import label
from _bench_openloop import NO_PRIORITY_ROWS, PRIORITY_LOAD, PRIORITY_MODELS, TOP_SHARE, OpenRow, PriorityRow
from _bench_profile import ExecuteTotals
from _bench_targets import targets


@dataclass
class Row:
    model: str
    config: str
    concurrency: int
    throughput: float
    p50: float
    p95: float
    p99: float
    avg_batch: float
    stats: StatsDelta
    cpu: CpuUse
    #: Time inside `model.py`, with ``--profile``.
    profile: ExecuteTotals | None = None
    #: Every round's req/s when the row was measured in interleaved rounds (``--rounds``); the row is the median's.
    rounds: tuple[float, ...] = ()

    @property
    def throughput_text(self) -> str:
        if len(self.rounds) < 2:
            return f"{self.throughput:,.0f}"
        return f"{self.throughput:,.0f} ({min(self.rounds):,.0f}-{max(self.rounds):,.0f})"

    def summary(self) -> str:
        s, c = self.stats, self.cpu
        return (
            f"{self.model:4} {self.config:10} c={self.concurrency:<3} {self.throughput:8,.0f} req/s  "
            f"p50 {self.p50:7.2f}  p95 {self.p95:7.2f}  p99 {self.p99:7.2f} ms  batch {self.avg_batch:5.1f}  "
            f"queue {s.queue_ms:.3f}  in {s.input_ms:.3f}  infer {s.infer_ms:.3f}  out {s.output_ms:.3f} ms  "
            f"CPU us/req client {c.client_us:.0f} triton {c.server_us:.0f} stub {c.stub_us:.0f}  "
            f"busy {c.busy:.0%} other {c.other:.0%}"
            + (
                f"  model.py forward {self.profile.forward_ms_per_execute:.3f} ms/execute, "
                f"Python {self.profile.python_us_per_request:.1f} us/req"
                if self.profile
                else ""
            )
        )


@dataclass
class Results:
    """Everything one run measured: in-process limits per model, closed-loop, open-loop and priority rows."""

    in_proc: dict[str, dict[int, float]]
    closed: list[Row] = field(default_factory=list)
    open: list[OpenRow] = field(default_factory=list)
    priority: list[PriorityRow] = field(default_factory=list)


def _table(model: str, rows: list[Row], in_proc: dict[int, float]) -> list[str]:
    limit = in_proc[32]
    profiled = any(r.profile is not None for r in rows)
    lines = [
        f"### {model.upper()}",
        "",
        "| config | concurrency | req/s | p50 ms | p95 ms | p99 ms | avg batch | efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {label(r.config)} | {r.concurrency} | {r.throughput_text} | {r.p50:.2f} | {r.p95:.2f} "
            f"| {r.p99:.2f} | {r.avg_batch:.1f} | {r.throughput / limit:.0%} |"
        )
    lines += [
        f"| in-process forward (the limit) | — | batch 1: {in_proc[1]:,.0f} samples/s "
        f"({1000 / in_proc[1]:.2f} ms); batch 32: {limit:,.0f} samples/s ({32000 / limit:.2f} ms) | | | | | 100% |",
        "",
        "Where the time goes: Triton's statistics per request (queue; then compute input, infer and output, "
        "each the time of the batch the request was in) and CPU time per request by process:",
        "",
        "| config | concurrency | queue ms | compute in / infer / out ms | CPU µs/req: client / tritonserver / stub "
        "| cores busy | other programs |" + (PROFILE_HEADER if profiled else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if profiled else ""),
    ]
    for r in rows:
        s, c = r.stats, r.cpu
        lines.append(
            f"| {label(r.config)} | {r.concurrency} | {s.queue_ms:.2f} "
            f"| {s.input_ms:.2f} / {s.infer_ms:.2f} / {s.output_ms:.2f} "
            f"| {c.client_us:.0f} / {c.server_us:.0f} / {c.stub_us:.0f} | {c.busy:.0%} | {c.other:.0%} |"
            + (_profile_cell(r.profile) if profiled else "")
        )
    return lines


PROFILE_HEADER = " model.py: forward ms per execute / other Python µs per request |"


def _profile_cell(profile: ExecuteTotals | None) -> str:
    if profile is None or not profile.executions:
        return " — |"
    return f" {profile.forward_ms_per_execute:.2f} / {profile.python_us_per_request:.1f} |"


def markers(name: str) -> tuple[str, str]:
    """The comments around the block a run named ``name`` writes into batching.md."""
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def _open_table(rows: list[OpenRow]) -> list[str]:
    lines = [
        "Open loop: Poisson arrivals at each offered rate (a share of the capacity measured above), latency "
        "from each request's scheduled send time; Triton's split per request for the same window. Where the "
        "default's p99 was more than 10% over the best below saturation, every config was measured again, "
        "interleaved: the row is its median round, the p99's range over the rounds beside it:",
        "",
        "| config | offered req/s (share) | achieved | late sends | errors | p50 ms | p90 ms | p99 ms | avg batch "
        "| queue ms | compute in / infer / out ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r.fraction, r.config)):
        s = r.stats
        lines.append(
            f"| {label(r.config)} | {r.offered:,.0f} ({r.fraction:.0%}) | {r.achieved:,.0f} | {r.late} | {r.errors} "
            f"| {r.p50:.2f} | {r.p90:.2f} | {_p99_cell(r)} | {r.avg_batch:.1f} | {s.queue_ms:.2f} "
            f"| {s.input_ms:.2f} / {s.infer_ms:.2f} / {s.output_ms:.2f} |"
        )
    return lines


def _p99_cell(r: OpenRow) -> str:
    """The p99, with the range over the rounds when the rate was measured again."""
    if len(r.p99_rounds) < 2:
        return f"{r.p99:.2f}"
    return f"{r.p99:.2f} ({min(r.p99_rounds):.2f}-{max(r.p99_rounds):.2f})"


def _priority_table(rows: list[PriorityRow]) -> list[str]:
    lines = [
        "Priorities under overload: a smaller server (one instance, batches of at most 4) whose overload the client "
        "can send. Each config's throughput closed loop at the highest concurrency, then open loop (what a burst "
        f"above it was served), then {PRIORITY_LOAD:g}x the higher open-loop one offered to both, so that a backlog "
        f"builds in Triton's queue; {TOP_SHARE:.0%} of the requests marked. With 2 priority levels they are sent at "
        "priority 1 and the rest get the default level 2; without priorities the same share is only counted apart. "
        "The window is shortened where the backlog would outgrow the client's connections. Errors are requests "
        "unanswered 10 s after their time:",
        "",
        "| config | closed loop req/s | open loop req/s | offered req/s | window s | achieved | late sends "
        "| marked share p99 ms | the rest p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {label(r.config)} | {r.capacity:,.0f} | {r.served_open:,.0f} | {r.offered:,.0f} | {r.seconds:.1f} "
            f"| {r.achieved:,.0f} | {r.late:,} of {r.sent:,} | {r.top_p99:.2f} | {r.rest_p99:.2f} | {r.errors:,} |"
        )
    return lines


def markdown_block(name: str, results: Results, environment: dict[str, str]) -> str:
    begin, end = markers(name)
    lines = [begin, "", *(f"- {key}: {value}" for key, value in environment.items()), ""]
    for model, in_proc in results.in_proc.items():
        closed = [r for r in results.closed if r.model == model]
        opened = [r for r in results.open if r.model == model]
        priority = [r for r in results.priority if r.model == model]
        lines += [*_table(model, closed, in_proc), ""]
        if opened:
            lines += [*_open_table(opened), ""]
        if priority:
            lines += [*_priority_table(priority), ""]
        elif opened and model not in PRIORITY_MODELS:
            lines += [NO_PRIORITY_ROWS, ""]
        lines += [*targets(model, closed, opened, priority, in_proc), ""]
    lines += [f"![throughput against p99 latency per config, closed and open loop]({name}.png)", "", end]
    return "\n".join(lines)


def plot(path: Path, results: Results, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    models = list(results.in_proc)
    with_open = bool(results.open)
    fig, axes = plt.subplots(
        2 if with_open else 1, len(models), figsize=(6.5 * len(models), 9 if with_open else 4.5), squeeze=False
    )
    for column, model in enumerate(models):
        ax = axes[0][column]
        configs = dict.fromkeys(r.config for r in results.closed if r.model == model)
        for config in configs:
            points = sorted((r for r in results.closed if r.model == model and r.config == config),
                            key=lambda r: r.concurrency)  # fmt: skip
            (line,) = ax.plot([r.p99 for r in points], [r.throughput for r in points], marker="o", label=label(config))
            for r in points:
                ax.annotate(f"c={r.concurrency}", (r.p99, r.throughput), textcoords="offset points", xytext=(4, 4),
                            fontsize="x-small", color=line.get_color())  # fmt: skip
        limit = results.in_proc[model][32]
        ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.annotate("in-process forward, batch 32", (0, limit), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(4, -12), color="grey", fontsize="small")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("p99 latency (ms, log scale)")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{model.upper()}, closed loop: throughput against p99")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
        if not with_open:
            continue
        ax = axes[1][column]
        for config in dict.fromkeys(r.config for r in results.open if r.model == model):
            swept = sorted((r for r in results.open if r.model == model and r.config == config),
                           key=lambda r: r.offered)  # fmt: skip
            ax.plot([r.offered for r in swept], [r.p99 for r in swept], marker="o", label=label(config))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("offered requests/s (Poisson arrivals)")
        ax.set_ylabel("p99 latency from the scheduled send (ms, log scale)")
        ax.set_title(f"{model.upper()}, open loop: p99 against offered rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, name: str, results: Results, environment: dict[str, str], title: str) -> tuple[Path, Path]:
    """Write ``out/<name>.png`` and the block ``name`` of ``out/batching.md``.

    The block replaces the one of the same name, or is appended; the rest of the file (prose kept by
    hand, other runs' blocks) is left as it is. A missing file is made with a title.
    """
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    plot(png, results, title)
    md = out / "batching.md"
    block = markdown_block(name, results, environment)
    text = md.read_text(encoding="utf-8") if md.exists() else "# Batching benchmark\n"
    begin, end = markers(name)
    if begin in text:
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    md.write_text(text, encoding="utf-8")
    return md, png
