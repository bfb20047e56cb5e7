"""The batching benchmark (`benchmarks/bench_batching.py`): its quick mode against a real Triton server, and the
timing hook of its `--profile` mode on the backend `model.py` in-process."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fake_pb_utils as pb
from helpers import make_torchscript
from test_backend_model import MLP_SIG, TEMPLATE, load_instance

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_batching.py"
CONFIGS = [
    "no batching, one instance (baseline)",
    "no batching",
    "50 ms window (the seed's default)",
    "window, delay 0",
    "adaptive, 50 ms bound (the default)",
    "adaptive, delay 0",
]
QUICK_CONCURRENCY = [1, 32]
QUICK_SHARES = ["5%", "50%", "100%"]


def table_rows(markdown: str, header: tuple[str, ...] = ("config", "concurrency", "req/s")) -> list[list[str]]:
    """The cells of the data rows of the tables whose header starts with ``header``."""
    rows: list[list[str]] = []
    in_table = False
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif tuple(cells[: len(header)]) == header:
            in_table = True
        elif in_table and not cells[0].startswith("---"):
            rows.append(cells)
    return rows


@pytest.mark.slow
def test_quick_bench_reports_every_config_and_concurrency_with_batches_formed(tmp_path: Path) -> None:
    result = subprocess.run(
        # two interleaved rounds (both concurrencies, the two highest) in shorter windows
        [sys.executable, str(BENCH), "--quick", "--rounds", "2", "--seconds", "1.5", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, f"bench failed:\n{result.stdout}\n{result.stderr}"

    markdown = (tmp_path / "batching.md").read_text(encoding="utf-8")
    rows = table_rows(markdown)
    measured = {(r[0], int(r[1])): r for r in rows if r[1].isdigit()}
    assert set(measured) == {(c, n) for c in CONFIGS for n in QUICK_CONCURRENCY}, markdown
    assert [r[0] for r in rows if not r[1].isdigit()] == ["in-process forward (the limit)"]
    for row in measured.values():  # the median round, and the rounds' range beside it
        median, low, high = (float(x.replace(",", "")) for x in re.fullmatch(r"(\S+) \((\S+)-(\S+)\)", row[2]).groups())  # type: ignore[union-attr]
        assert low <= median <= high, row
    for config in CONFIGS[2:]:
        avg_batch = float(measured[(config, 32)][6])
        assert avg_batch > 1, f"{config} at concurrency 32 executed batches of {avg_batch} on average"
    assert float(measured[("no batching", 32)][6]) == 1.0
    assert float(measured[("no batching, one instance (baseline)", 32)][6]) == 1.0

    # open loop: every batching config at each share of the capacity, answered without errors
    opened = table_rows(markdown, ("config", "offered req/s (share)"))
    shares = {(r[0], r[1].rsplit("(", 1)[1].rstrip(")")) for r in opened}
    assert shares == {(c, share) for c in CONFIGS[2:] for share in QUICK_SHARES}, markdown
    assert all(r[4] == "0" for r in opened), "open-loop rows with errors"
    priority = table_rows(markdown, ("config", "closed loop req/s", "open loop req/s", "offered req/s"))
    assert [r[0] for r in priority] == [
        "one instance, batches ≤ 4, 2 priority levels",
        "one instance, batches ≤ 4, no priorities",
    ]
    served_open = [float(r[2].replace(",", "")) for r in priority]
    assert [float(r[3].replace(",", "")) for r in priority] == [pytest.approx(1.3 * max(served_open), rel=0.01)] * 2
    assert all(2.0 <= float(r[4]) <= 2.0 for r in priority), "quick mode's windows are 2 s, never shorter"
    assert priority[1][-1] == "0", "requests without priorities timed out"
    for target in ("open loop below saturation", "saturated (closed loop, concurrency 32)",
                   "closed loop at concurrency 1", "concurrency 32:", "priorities under overload"):  # fmt: skip
        assert f"- {target}" in markdown, target
    assert (tmp_path / "batching.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_an_open_loop_rate_the_default_missed_is_judged_by_the_median_of_its_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))
    from _bench_client import StatsDelta
    from _bench_cpu import CpuUse
    from _bench_openloop import OpenRow, default_misses, median_round
    from _bench_report import _open_table
    from _bench_targets import targets

    def row(config: str, p99: float) -> OpenRow:
        return OpenRow("mlp", config, 0.5, 1000, 1000, 0, 0, p99 / 2, p99 / 1.2, p99, 4.0,
                       StatsDelta(1, 1, 0, 0, 0, 0), CpuUse(0, 0, 0, 0, 0))  # fmt: skip

    first = [row("adaptive", 12.0), row("window", 10.0)]  # the default 20 % over the best: measured again
    assert default_misses(first)
    assert not default_misses([row("adaptive", 10.9), row("window", 10.0)])
    kept = [median_round([first[0], row("adaptive", 10.5), row("adaptive", 9.8)]),
            median_round([first[1], row("window", 11.0), row("window", 10.2)])]  # fmt: skip
    assert [(r.p99, r.p99_rounds) for r in kept] == [(10.5, (12.0, 10.5, 9.8)), (10.2, (10.0, 11.0, 10.2))]

    table = "\n".join(_open_table(kept))
    assert "| 10.50 (9.80-12.00) |" in table
    (line,) = [x for x in targets("mlp", [], kept, [], {1: 500.0, 32: 5000.0}) if "open loop" in x]
    assert "+3% over the best" in line
    assert "medians of 3 rounds" in line
    assert line.endswith("target within +10%: met)")


def test_the_profile_hook_times_execute_and_the_forward_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))
    import _bench_profile

    source = tmp_path / "model.py"
    source.write_text(TEMPLATE.read_text(encoding="utf-8") + _bench_profile.HOOK, encoding="utf-8")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setenv(_bench_profile.ENV, str(tmp_path))
    spec = importlib.util.spec_from_file_location("profiled_model", source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = load_instance(module, tmp_path / "repo", make_torchscript(tmp_path / "a.pt"), "torchscript", MLP_SIG)

    model.execute([pb.InferenceRequest(input=np.ones((n, 4), np.float32)) for n in (1, 2, 3)])
    totals = _bench_profile.read_totals(tmp_path, "m")

    assert (totals.executions, totals.requests) == (1, 3)
    assert 0 < totals.forward_ns < totals.execute_ns
    assert totals.minus(_bench_profile.ExecuteTotals()).python_us_per_request > 0


def test_the_priority_rows_fit_their_backlog_in_the_connections_and_say_whether_they_showed_priorities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCH.parent))
    from _bench_openloop import PriorityRow, priorities_shown, priority_window
    from _bench_targets import targets

    # 1,760 req/s more offered than the slower config serves: 0.75 x 12,288 connections last 5.2 s, warm-up 1 s
    assert priority_window(3914, 2154, 1.0, 5.0, 12288) == pytest.approx(4.24, abs=0.01)
    assert priority_window(1336, 928, 1.0, 5.0, 12288) == 5.0  # the MLP's backlog fits the whole window
    assert priority_window(9000, 1000, 1.0, 5.0, 4096) == 2.0  # never under the shortest window

    def row(config: str, achieved: float, late: int, top: float, rest: float) -> PriorityRow:
        return PriorityRow("mlp", config, 900, 950, 1250, achieved, 5.0, 6000, late, top, rest, 300, 0)

    marked, control = row("prio", 830, 150, 12.1, 8900), row("noprio", 980, 130, 1716, 1709)
    assert priorities_shown(marked, control) == (True, "shown")
    behind = priorities_shown(row("prio", 830, 900, 5600, 9000), control)
    assert behind == (
        False,
        "the client sent 900 of 6,000 requests late on prio, so the backlog waited in the client, "
        "where no priority reaches it",
    )
    kept_up = priorities_shown(marked, row("noprio", 1240, 0, 9.0, 9.1))
    assert kept_up == (False, "without priorities the server kept up (1,240 of 1,250 req/s)")
    assert not priorities_shown(row("prio", 830, 150, 1500, 1700), control)[0]
    (line,) = [x for x in targets("mlp", [], [], [marked, control], {1: 500.0, 32: 5000.0}) if "priorities" in x]
    assert line.endswith("(shown)")
