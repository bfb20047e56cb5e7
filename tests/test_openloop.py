"""The open-loop client (nexus.loadtest.openloop) against real sockets: a deliberately slow HTTP server in a
process of its own (tests/slow_http_server.py), and a real Triton."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import free_port, serve_one_model
from nexus.errors import LoadTestError, TritonUnreachableError
from nexus.loadtest import OpenLoopSettings, PriorityShare, run_open_loop
from nexus.loadtest.openloop import schedule
from nexus.loadtest.rate import request_tensors
from nexus.serving.admin import TritonAdmin

SLOW_SERVER = Path(__file__).with_name("slow_http_server.py")
X = {"x": np.zeros((1, 4), np.float32)}


@contextmanager
def slow_server(*args: str) -> Iterator[int]:
    """tests/slow_http_server.py with ``args``, in its own process: its port."""
    process = subprocess.Popen([sys.executable, str(SLOW_SERVER), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def settings(port: int, **kwargs: Any) -> OpenLoopSettings:
    base: dict[str, Any] = {"server": f"127.0.0.1:{port}", "model": "m", "inputs": X, "outputs": ["y"]}
    return OpenLoopSettings(**{"output_bytes": 12, **base, **kwargs})


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


def seen(port: int) -> list[int | None]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/seen", timeout=10) as r:
        answer: list[int | None] = json.loads(r.read())
        return answer


def test_a_server_serving_one_at_a_time_falls_behind_and_latency_counts_the_wait() -> None:
    """40 req/s offered to a server that answers one request per 50 ms (20/s): the client keeps sending on
    schedule (more connections), the queue grows, and p99 grows far above the 50 ms a request takes."""
    with slow_server("--delay", "0.05", "--concurrency", "1") as port:
        s = settings(port, rate=40, duration=2)
        result = run_open_loop(s)

    assert result.scheduled == len(schedule(s)[0])
    assert 40 <= result.scheduled <= 120  # Poisson around 80
    assert result.sent == result.completed == result.scheduled
    assert result.errors == 0
    assert result.first_error is None
    assert result.connections > 10  # one per request waiting in the server
    assert 14 <= result.achieved_rate <= 21  # the server's 20/s, not the offered 40
    assert result.latency.p99 > 500
    assert result.latency.p50 >= result.send_latency.p50
    assert result.latency.p99 >= result.send_latency.p99


def test_with_too_few_connections_sends_go_out_late_and_the_wait_to_send_is_latency() -> None:
    with slow_server("--delay", "0.05", "--concurrency", "1") as port:
        result = run_open_loop(settings(port, rate=40, duration=2, max_connections=2))

    assert result.connections == 2
    assert result.sent == result.completed == result.scheduled
    assert result.late > result.scheduled / 2
    assert result.max_late_ms > 500
    # once sent, a request waits for at most the one on the other connection: ~100 ms
    assert result.send_latency.p50 < 300
    assert result.latency.p99 > result.send_latency.p99 + 500


def test_against_a_fast_server_the_client_keeps_its_schedule() -> None:
    # a send counts as late 10 ms after its time: a fast server never makes the client that late, while
    # 1 ms is within what a loaded 2-core machine's scheduler alone does to the sending thread
    with slow_server("--delay", "0.002", "--concurrency", "64") as port:
        s = settings(port, rate=300, duration=2, late_ms=10)
        result = run_open_loop(s)

    assert result.sent == result.completed == result.scheduled == len(schedule(s)[0])
    assert 400 <= result.scheduled <= 800
    assert result.errors == 0
    assert result.late <= 0.05 * result.sent, result
    assert result.achieved_rate == pytest.approx(result.scheduled_rate, rel=0.15)
    assert result.latency.p50 < 50


def test_a_priority_mix_sends_the_drawn_share_at_its_priority_and_reports_each_class() -> None:
    mix = (PriorityShare(0.2, 1),)
    with slow_server("--delay", "0", "--concurrency", "64") as port:
        s = settings(port, rate=400, duration=1, priority=3, mix=mix, seed=7)
        result = run_open_loop(s)
        got = Counter(seen(port))

    rest, high = result.classes
    assert (rest.priority, high.priority) == (3, 1)
    assert got == {3: rest.scheduled, 1: high.scheduled}
    assert rest.completed + high.completed == result.completed == result.scheduled
    assert high.scheduled / result.scheduled == pytest.approx(0.2, abs=0.07)
    assert schedule(s) == schedule(settings(port, rate=400, duration=1, priority=3, mix=mix, seed=7))
    assert schedule(s) != schedule(settings(port, rate=400, duration=1, priority=3, mix=mix, seed=8))


def test_without_a_priority_none_is_sent() -> None:
    with slow_server("--delay", "0") as port:
        result = run_open_loop(settings(port, rate=100, duration=0.5))
        assert set(seen(port)) == {None}
    assert result.classes == []


def test_bad_answers_are_counted_not_raised() -> None:
    with slow_server("--delay", "0", "--concurrency", "8", "--fail-every", "4") as port:
        result = run_open_loop(settings(port, rate=200, duration=1))
        wrong_size = run_open_loop(settings(port, rate=50, duration=0.5, output_bytes=13))

    assert not result.ok
    assert result.errors == pytest.approx(result.scheduled / 4, abs=1)
    assert result.completed + result.errors == result.scheduled
    assert result.first_error == 'HTTP 500: {"error":"failing on purpose"}'
    assert wrong_size.completed == 0
    assert wrong_size.errors == wrong_size.scheduled
    assert wrong_size.first_error == "expected 13 output bytes, got 12"


def test_unanswered_requests_time_out_as_errors_and_the_run_ends() -> None:
    with slow_server("--delay", "5", "--concurrency", "100") as port:
        start = time.monotonic()
        result = run_open_loop(settings(port, rate=50, duration=0.5, timeout=0.5))
        took = time.monotonic() - start

    assert took < 3
    assert result.completed == 0
    assert result.errors == result.scheduled > 0
    assert result.first_error == "no answer within 0.5s of its scheduled time"


def test_a_server_that_dies_mid_run_gives_errors_and_one_that_is_not_there_an_unreachable_error() -> None:
    process = subprocess.Popen([sys.executable, str(SLOW_SERVER), "--delay", "0.01"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = int(process.stdout.readline())
    timer = threading.Timer(0.5, process.kill)
    timer.start()
    try:
        result = run_open_loop(settings(port, rate=100, duration=1.5))
    finally:
        timer.join()
        process.wait()

    assert 0 < result.completed < result.scheduled
    assert result.errors == result.scheduled - result.completed
    assert result.first_error is not None
    assert "closed the connection" in result.first_error or "cannot connect" in result.first_error
    with pytest.raises(TritonUnreachableError, match=r"cannot reach Triton at http://127\.0\.0\.1:"):
        run_open_loop(settings(free_port(), rate=10, duration=1))


def test_warm_up_requests_are_sent_but_not_counted() -> None:
    with slow_server("--delay", "0", "--concurrency", "16") as port:
        s = settings(port, rate=200, duration=1, warmup=0.5)
        result = run_open_loop(s)
        sent = len(seen(port))

    offsets, _ = schedule(s)
    assert sent == len(offsets)
    assert result.scheduled == sum(1 for o in offsets if o >= 0.5e9) < sent


def test_repeated_runs_leak_no_sockets_or_threads() -> None:
    with slow_server("--delay", "0.001", "--concurrency", "32") as port:
        run_open_loop(settings(port, rate=100, duration=0.3))
        fds, threads = open_fds(), threading.active_count()
        for _ in range(3):
            run_open_loop(settings(port, rate=300, duration=0.3))
        assert (open_fds(), threading.active_count()) == (fds, threads)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rate": 0}, "the rate 0 is not a positive number"),
        ({"duration": 0}, "the duration and timeout must be positive"),
        ({"mix": (PriorityShare(0.6, 1), PriorityShare(0.5, 2))}, "add up to under 100%"),
        ({"priority": -1}, "a priority is 0"),
        ({"server": "https://127.0.0.1:1"}, "speaks plain HTTP"),
    ],
)
def test_bad_settings_are_one_line_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadTestError, match=message):
        run_open_loop(settings(1, **change))


@pytest.mark.slow
def test_against_triton_every_answer_is_good_and_triton_counts_them(tmp_path: Path) -> None:
    server, _ = serve_one_model(tmp_path)
    with server:
        admin = TritonAdmin(server.url)
        inputs, outputs, output_bytes = request_tensors(admin.model_metadata("m"), admin.model_config("m"), 2)
        assert output_bytes == 2 * 3 * 4  # two samples of three float32
        tensors = {"inputs": inputs, "outputs": outputs}
        # late: over 10 ms behind schedule (1 ms is what a loaded machine's scheduler does to the client alone)
        s = settings(
            server.http_port, rate=100, duration=2, warmup=0.5, output_bytes=output_bytes, late_ms=10, **tensors
        )
        before = admin.stats("m")
        result = run_open_loop(s)
        triton = admin.stats("m") - before
        wrong = run_open_loop(settings(server.http_port, rate=20, duration=0.5, output_bytes=16, **tensors))

    assert result.errors == 0, result.first_error
    assert result.sent == result.completed == result.scheduled == sum(1 for o in schedule(s)[0] if o >= 0.5e9)
    assert result.achieved_rate == pytest.approx(result.scheduled_rate, rel=0.15)
    assert triton.success == len(schedule(s)[0])  # the warm-up's requests too
    assert triton.inferences == 2 * triton.success
    assert result.late <= 0.05 * result.sent
    assert 0 < result.latency.p50 <= result.latency.p90 <= result.latency.p99 <= result.latency.max
    assert wrong.errors == wrong.scheduled > 0
    assert wrong.first_error == "expected 16 output bytes, got 24"


def test_any_latency_percentile_can_be_asked_for() -> None:
    from nexus.loadtest.openloop import Latency

    ms = [i * 1_000_000 for i in range(1, 1001)]  # 1..1000 ms
    latency = Latency.of(ms, percentiles=(95, 99.9, 99))
    assert latency.at(95) == pytest.approx(950.05)
    assert latency.at(99.9) == pytest.approx(999.001)
    assert latency.at(99) == latency.p99
    assert latency.at(100) == 1000.0
    with pytest.raises(LoadTestError, match="p97 was not measured"):
        latency.at(97)
    assert math.isnan(Latency.of([], percentiles=(95,)).at(95))
