"""The names of the benchmark's configs in its tables and plot."""

from __future__ import annotations

CONFIG_LABELS = {
    "baseline": "no batching, one instance (baseline)",
    "nobatch": "no batching",
    "window": "50 ms window (the seed's default)",
    "delay0": "window, delay 0",
    "adaptive": "adaptive, 50 ms bound (the default)",
    "adaptive0": "adaptive, delay 0",
    "prio": "one instance, batches ≤ 4, 2 priority levels",
    "noprio": "one instance, batches ≤ 4, no priorities",
}


def label(config: str) -> str:
    """A config's name in the tables: ``tuned5ms`` -> "tuned for p99 ≤ 5 ms"."""
    if config.startswith("tuned"):
        return f"tuned for p99 ≤ {config.removeprefix('tuned').removesuffix('ms')} ms"
    return CONFIG_LABELS[config]
