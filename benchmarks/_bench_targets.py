"""The issue's targets for the default (``adaptive``) config, computed from one run's rows.

- at every open-loop rate below saturation, its p99 is within 10 % of the best config measured at that rate;
- its saturated throughput (closed loop, the highest concurrency) is at least 95 % of the best;
- closed loop at concurrency 1, its p50 is at most the in-process batch-1 forward + 1.5 ms;
- at concurrency 64 (the highest measured, if lower) it serves at least 8x the unbatched one-instance baseline.

Each line says what was measured and whether the target was met; nothing is hidden when one is missed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from _bench_labels import label
from _bench_openloop import DEFAULT, OPEN_MARGIN, against_best, priorities_shown

if TYPE_CHECKING:
    from _bench_openloop import OpenRow, PriorityRow
    from _bench_report import Row

UNBATCHED = ("baseline", "nobatch")


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _closed(rows: list[Row], config: str, concurrency: int) -> Row | None:
    return next((r for r in rows if r.config == config and r.concurrency == concurrency), None)


def _open_lines(opened: list[OpenRow]) -> list[str]:
    lines = []
    below = sorted({r.fraction for r in opened if r.fraction < 1})
    compared = [against_best([r for r in opened if r.fraction == fraction]) for fraction in below]
    worst = max((c for c in compared if c is not None), key=lambda c: c[0], default=None)
    if worst is not None:
        ratio, default, best = worst
        rounds = f", medians of {len(default.p99_rounds)} rounds" if default.p99_rounds else ""
        lines.append(
            f"- open loop below saturation: the default's p99 is at most {ratio - 1:+.0%} over the best config "
            f"at the same rate (worst at {default.offered:,.0f} req/s: {default.p99:.2f} ms against "
            f"{best.p99:.2f} ms for {label(best.config)}{rounds}; target within +10%: "
            f"{_verdict(ratio <= OPEN_MARGIN)})"
        )
    return lines


def targets(
    model: str,
    closed: list[Row],
    opened: list[OpenRow],
    priority: list[PriorityRow],
    in_proc: dict[int, float],
) -> list[str]:
    lines = _open_lines(opened)
    top = max((r.concurrency for r in closed), default=0)
    default_top = _closed(closed, DEFAULT, top)
    batched = [r for r in closed if r.concurrency == top and r.config not in UNBATCHED]
    if default_top and batched:
        best = max(batched, key=lambda r: r.throughput)
        share = default_top.throughput / best.throughput
        lines.append(
            f"- saturated (closed loop, concurrency {top}): {default_top.throughput:,.0f} req/s, {share:.0%} of the "
            f"best ({best.throughput:,.0f}, {label(best.config)}; target ≥ 95%: {_verdict(share >= 0.95)})"
        )
    one = _closed(closed, DEFAULT, 1)
    if one:
        added = one.p50 - 1000 / in_proc[1]
        lines.append(
            f"- closed loop at concurrency 1: p50 {one.p50:.2f} ms, {added:+.2f} ms over the in-process batch-1 "
            f"forward ({1000 / in_proc[1]:.2f} ms; target ≤ +1.5 ms: {_verdict(added <= 1.5)})"
        )
    issue = 64 if _closed(closed, DEFAULT, 64) else top  # the issue's "at concurrency 64"
    default_64 = _closed(closed, DEFAULT, issue)
    baseline = _closed(closed, "baseline", issue) or _closed(closed, "nobatch", issue)
    if default_64 and baseline:
        ratio = default_64.throughput / baseline.throughput
        lines.append(
            f"- concurrency {issue}: {ratio:.1f}x {label(baseline.config)} (target ≥ 8x: {_verdict(ratio >= 8)}); "
            f"efficiency {default_64.throughput / in_proc[32]:.0%} of the in-process batch-32 forward"
        )
    window = _closed(closed, "window", 1)
    if one and window:
        lines.append(
            f"- the seed's 50 ms window at concurrency 1: p50 {window.p50:.1f} ms and {window.throughput:,.0f} req/s, "
            f"against {one.p50:.2f} ms and {one.throughput:,.0f} req/s for the default"
        )
    marked = next((r for r in priority if r.config == "prio"), None)
    control = next((r for r in priority if r.config == "noprio"), None)
    if marked and control:
        shown, why = priorities_shown(marked, control)
        verdict = "shown" if shown else f"NOT shown: {why}"
        lines.append(
            f"- priorities under overload ({marked.offered:,.0f} req/s offered to the smaller server): the "
            f"top-priority share's p99 {marked.top_p99:.1f} ms against {marked.rest_p99:.1f} ms for the rest, and "
            f"{control.top_p99:.1f} ms for the same share with no priorities ({verdict})"
        )
    return [f"Targets ({model.upper()}, the default config):", "", *lines]
