"""What a quickstart run found, kept in `quickstart.json` and shown as a table at the end."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass
class Summary:
    folder: str
    model: str
    version: int
    commit: str
    stored_at: str
    repository: str
    http: str
    grpc: str
    metrics: str
    trained_accuracy: float
    served_accuracy: float
    test_images: int
    predictions_match: bool
    max_abs_difference: float
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    average_batch: float | None
    seconds: float


def print_summary(console: Console, s: Summary) -> None:
    table = Table(title="NexusML quickstart", box=None, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    batch = "-" if s.average_batch is None else f"{s.average_batch:.1f}"
    rows = [
        ("model", f"{s.model} v{s.version}, commit {s.commit[:8]}"),
        ("stored at", s.stored_at),
        ("published to", s.repository),
        ("endpoints", f"HTTP {s.http}  gRPC {s.grpc}  metrics {s.metrics}"),
        ("accuracy", f"{s.trained_accuracy:.4f} trained, {s.served_accuracy:.4f} served ({s.test_images} images)"),
        (
            "served = in-process",
            f"{'yes' if s.predictions_match else 'NO'} (max |diff| {s.max_abs_difference:.1e})",
        ),
        ("load test", f"{s.requests} requests, {s.failures} failed, {s.requests_per_s:.0f} req/s"),
        ("latency", f"p50 {s.p50_ms:.0f} ms, p99 {s.p99_ms:.0f} ms"),
        ("average batch", f"{batch} requests per forward pass"),
        ("total time", f"{s.seconds:.0f}s"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    console.print(f"Summary written to {Path(s.folder) / 'quickstart.json'}")
