"""The batching benchmark's report: a markdown block (tables and target verdicts) and a PNG plot."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from _bench_client import StatsDelta
from _bench_cpu import CpuUse
from _bench_profile import ExecuteTotals

CONFIG_LABELS = {
    "baseline": "no batching, one instance (baseline)",
    "nobatch": "no batching",
    "batch50ms": "batching, 50 ms window (the seed's default)",
    "batch0": "batching, delay 0",
    "adaptive": "adaptive batching, 50 ms bound (default)",
}


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
            f"| {CONFIG_LABELS[r.config]} | {r.concurrency} | {r.throughput:,.0f} | {r.p50:.2f} | {r.p95:.2f} "
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
            f"| {CONFIG_LABELS[r.config]} | {r.concurrency} | {s.queue_ms:.2f} "
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


def _find(rows: list[Row], config: str, concurrency: int) -> Row | None:
    return next((r for r in rows if r.config == config and r.concurrency == concurrency), None)


def _targets(model: str, rows: list[Row], in_proc: dict[int, float]) -> list[str]:
    """The issue's targets, measured: ≥ 8x unbatched and ≥ 75% efficiency at the highest concurrency,
    ≤ 1.5 ms over the in-process forward at concurrency 1 with delay 0."""
    top = max(r.concurrency for r in rows)
    lines = []
    default, alike = _find(rows, "batch50ms", top), _find(rows, "nobatch", top)
    baseline = _find(rows, "baseline", top) or alike
    if default and baseline and alike:
        ratio = default.throughput / baseline.throughput
        lines.append(
            f"- default config vs {CONFIG_LABELS[baseline.config]} at concurrency {top}: {ratio:.1f}x "
            f"(target ≥ 8x: {'met' if ratio >= 8 else 'MISSED'})"
        )
        if alike is not baseline:
            lines.append(
                f"- default config vs no batching with the same instances: "
                f"{default.throughput / alike.throughput:.1f}x (what batching alone adds)"
            )
        efficiency = default.throughput / in_proc[32]
        lines.append(
            f"- efficiency of the default config at concurrency {top}: {efficiency:.0%} (target ≥ 75%: "
            f"{'met' if efficiency >= 0.75 else 'MISSED'})"
        )
    zero = _find(rows, "batch0", 1)
    if zero:
        added = zero.p50 - 1000 / in_proc[1]
        lines.append(
            f"- delay 0 at concurrency 1: p50 {zero.p50:.2f} ms, {added:+.2f} ms over the in-process batch-1 "
            f"forward (target ≤ 1.5 ms: {'met' if added <= 1.5 else 'MISSED'})"
        )
    window, slow = _find(rows, "batch0", 1), _find(rows, "batch50ms", 1)
    if window and slow:
        lines.append(
            f"- the 50 ms window at concurrency 1: p50 {slow.p50:.1f} ms against {window.p50:.2f} ms with delay 0, "
            f"{slow.throughput:,.0f} against {window.throughput:,.0f} req/s"
        )
    return [f"Targets ({model.upper()}):", "", *lines]


def markers(name: str) -> tuple[str, str]:
    """The comments around the block a run named ``name`` writes into batching.md."""
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def markdown_block(
    name: str, rows: list[Row], in_proc: dict[str, dict[int, float]], environment: dict[str, str]
) -> str:
    begin, end = markers(name)
    lines = [begin, "", *(f"- {key}: {value}" for key, value in environment.items()), ""]
    for model in in_proc:
        model_rows = [r for r in rows if r.model == model]
        lines += [*_table(model, model_rows, in_proc[model]), "", *_targets(model, model_rows, in_proc[model]), ""]
    lines += [f"![throughput against p99 latency per config]({name}.png)", "", end]
    return "\n".join(lines)


def plot(path: Path, rows: list[Row], in_proc: dict[str, dict[int, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    models = list(in_proc)

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for config, label in CONFIG_LABELS.items():
            points = sorted((r for r in rows if r.model == model and r.config == config), key=lambda r: r.concurrency)
            if not points:
                continue
            (line,) = ax.plot([r.p99 for r in points], [r.throughput for r in points], marker="o", label=label)
            for r in points:
                ax.annotate(
                    f"c={r.concurrency}",
                    (r.p99, r.throughput),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize="x-small",
                    color=line.get_color(),
                )
        ax.axhline(in_proc[model][32], color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            "in-process forward, batch 32",
            (0, in_proc[model][32]),
            xycoords=("axes fraction", "data"),
            textcoords="offset points",
            xytext=(4, -12),
            color="grey",
            fontsize="small",
        )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(bottom=0)
        ax.set_xlabel("p99 latency (ms, log scale)")
        ax.set_ylabel("requests/s")
        ax.set_title(f"{model.upper()}: throughput against p99 latency")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path,
    name: str,
    rows: list[Row],
    in_proc: dict[str, dict[int, float]],
    environment: dict[str, str],
    title: str,
) -> tuple[Path, Path]:
    """Write ``out/<name>.png`` and the block ``name`` of ``out/batching.md``.

    The block replaces the one of the same name, or is appended; the rest of the file (prose kept by
    hand, other runs' blocks) is left as it is. A missing file is made with a title.
    """
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    plot(png, rows, in_proc, title)
    md = out / "batching.md"
    block = markdown_block(name, rows, in_proc, environment)
    text = md.read_text(encoding="utf-8") if md.exists() else "# Batching benchmark\n"
    begin, end = markers(name)
    if begin in text:
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    md.write_text(text, encoding="utf-8")
    return md, png
