"""A tuning run's files: `results.json` (everything), `results.csv` (every probe) and `frontier.png` (with matplotlib).

The plot draws, for each configuration, the latency percentile against the achieved throughput of its
probes (ordered by offered rate), and the target as a horizontal line. Without matplotlib (the `tune`
extra: `pip install 'nexusml[tune]'`) the other two files are written and the plot is skipped.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nexus.atomic import atomic_write_text
from nexus.tune.rates import Probe, passes
from nexus.tune.results import Evaluation, TuneResult

PLOT_HINT = "pip install 'nexusml[tune]' for frontier.png"
CSV_FIELDS = [
    "config", "instances", "max_batch_size", "policy", "max_queue_delay_us", "stage", "offered", "scheduled",
    "achieved", "sent", "late", "errors", "p50_ms", "p90_ms", "p99_ms", "latency_ms", "avg_batch", "passed",
    "reference_ms",
]  # fmt: skip


def write_report(result: TuneResult, folder: Path) -> tuple[Path, list[Path]]:
    """Write the files into ``folder`` (created); returns it and the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "results.json", folder / "results.csv"]
    atomic_write_text(files[0], json.dumps(_json(result), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    _write_csv(result, files[1])
    png = plot_frontier(result, folder / "frontier.png")
    if png is not None:
        files.append(png)
    return folder, files


def _clean(value: Any) -> Any:
    """NaN (nothing answered) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _evaluation(e: Evaluation, target_ms: float) -> dict[str, Any]:
    return {
        "config": e.label,
        "options": asdict(e.options),
        "served_rate": e.served,
        "latency_ms": e.at.latency_ms if e.at else None,
        "avg_batch": e.at.avg_batch if e.at else None,
        "capacity": e.capacity,
        "coarse": e.coarse,
        "error": e.error,
        "load_s": round(e.load_s, 2),
        "measure_s": round(e.measure_s, 2),
        "reference_ms": _reference(e),
        "probes": [{**asdict(p), "passed": passes(p, target_ms)} for p in e.probes],
        "bursts": [asdict(p) for p in e.bursts],
    }


def _json(result: TuneResult) -> dict[str, Any]:
    target = result.target
    cleaned: dict[str, Any] = _clean(
        {
            "model": result.model,
            "version": result.version.version,
            "commit": result.version.commit_hash,
            "target": {"percentile": target.percentile, "ms": target.ms},
            "date": result.date,
            "machine": asdict(result.machine),
            "elapsed_s": round(result.elapsed_s, 1),
            "stopped": result.stopped,
            "winner": _evaluation(result.winner, target.ms),
            "spread": {"rates": list(result.spread.rates), "min": result.spread.min, "median": result.spread.median,
                       "max": result.spread.max},
            "speed": _speed(result),
            "runner_up": result.runner_up.label if result.runner_up else None,
            "runner_up_within_spread": result.runner_up_within_spread,
            "contenders": [{"config": c.evaluation.label, "rates": list(c.spread.rates), "median": c.spread.median,
                            "reruns": [_evaluation(e, target.ms) for e in c.reruns]} for c in result.contenders],
            "evaluations": [_evaluation(e, target.ms) for e in result.evaluations],
            "reruns": [_evaluation(e, target.ms) for e in result.reruns],
        }
    )  # fmt: skip
    return cleaned


def _reference(e: Evaluation) -> float | None:
    return None if e.reference_ms is None else round(e.reference_ms, 3)


def _speed(result: TuneResult) -> dict[str, Any] | None:
    """The machine's reference speed over the run (:mod:`nexus.tune.reference`): ms of one batch of one."""
    speed, drift = result.speed, result.drift
    if speed is None:
        return None
    return {
        "reference_ms": [round(r, 3) for r in speed.rates],
        "min": round(speed.min, 3),
        "median": round(speed.median, 3),
        "max": round(speed.max, 3),
        "drift": None if drift is None else round(drift, 3),
    }


def summary(result: TuneResult) -> dict[str, Any]:
    """What `nexus tune --json` prints: results.json's content, with where the files and the record went."""
    return {
        **_json(result),
        "report": str(result.report) if result.report else None,
        "files": [str(f) for f in result.files],
        "record": str(result.record) if result.record else None,
        "applied": result.applied,
    }


def _rows(e: Evaluation, stage: str, probes: list[Probe], target_ms: float) -> list[dict[str, Any]]:
    o = e.options
    return [
        {
            "config": e.label, "instances": o.instances, "max_batch_size": o.max_batch_size, "policy": o.policy,
            "max_queue_delay_us": o.max_queue_delay_us, "stage": stage, "offered": round(p.offered, 2),
            "scheduled": "" if p.scheduled is None else p.scheduled, "achieved": round(p.achieved, 2),
            "sent": p.sent, "late": p.late, "errors": p.errors,
            "p50_ms": _ms(p.p50_ms), "p90_ms": _ms(p.p90_ms), "p99_ms": _ms(p.p99_ms), "latency_ms": _ms(p.latency_ms),
            "avg_batch": "" if p.avg_batch is None else round(p.avg_batch, 2),
            "passed": "" if stage == "capacity" else passes(p, target_ms),
            "reference_ms": "" if e.reference_ms is None else _reference(e),
        }
        for p in probes
    ]  # fmt: skip


def _ms(value: float) -> float | str:
    return "" if not math.isfinite(value) else round(value, 3)


def _write_csv(result: TuneResult, path: Path) -> None:
    rows: list[dict[str, Any]] = []
    for e in result.evaluations:
        rows += _rows(e, "capacity", e.bursts, result.target.ms) + _rows(e, "search", e.probes, result.target.ms)
    for c in result.contenders:
        for e in c.reruns:
            rows += _rows(e, "rerun", e.probes, result.target.ms)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def plot_frontier(result: TuneResult, path: Path) -> Path | None:
    """Throughput against the target's percentile, one curve per configuration; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    target = result.target
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for e in result.frontier:
        points = sorted((p for p in e.probes if math.isfinite(p.latency_ms)), key=lambda p: p.offered)
        if points:
            ax.plot([p.achieved for p in points], [p.latency_ms for p in points], marker="o", ms=3, lw=1,
                    label=f"{e.label}: {e.served:,.0f}/s")  # fmt: skip
    ax.axhline(target.ms, color="red", ls="--", lw=1, label=f"target {target}")
    ax.set_yscale("log")
    ax.set_xlabel("served requests/s (open loop)")
    ax.set_ylabel(f"{target.name} latency (ms, from the scheduled send)")
    ax.set_title(f"{result.model} v{result.version.version}: {target.name} against throughput per configuration")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
