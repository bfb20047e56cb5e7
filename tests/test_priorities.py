"""Request priorities on a real Triton: a saturated model with priority levels serves priority-1 requests
ahead of the queue; without a priority they wait their turn. Counted (who finished before whom), not timed.

The model does ~50 matmuls of 256x256 per batch whatever the batch (tens of ms on one core), one
instance, batches of at most 2: a few dozen requests make a queue that lasts about a second. Published
with ``priority_levels=3`` its default level is 2, so requests sent without a priority queue at level 2
and priority-1 requests go first (with priority levels Triton's batcher takes requests in priority
order once the instance is free; it does not prefetch).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import GitRepo, free_port
from nexus.loadtest import OpenLoopSettings, PriorityShare, run_open_loop
from nexus.loadtest.wire import check_response, exchange, infer_request, parse_response
from nexus.serving.model_config import ServingOptions
from nexus.serving.predict import predict
from nexus.serving.server import TritonServer

pytestmark = pytest.mark.slow

LOWS, HIGHS = 24, 4
X = {"x": np.ones((1, 256), np.float32)}
OUTPUT_BYTES = 256 * 4


def make_slow_model(path: Path) -> Path:
    import torch
    from torch.export import Dim

    class Slow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.w = torch.nn.Parameter(torch.randn(256, 256) / 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = self.w
            for _ in range(50):  # work that does not shrink with the batch
                m = torch.tanh(m @ self.w)
            return x @ m

    program = torch.export.export(Slow().eval(), (torch.randn(2, 256),), dynamic_shapes=({0: Dim("batch")},))
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    from nexus.registry import Project
    from nexus.serving.publish import publish

    root = tmp_path_factory.mktemp("priorities")
    repo = GitRepo.create(root / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    project = Project.open(repo.root, env={})
    project.store(make_slow_model(root / "slow.pt2"), "slow")
    options = ServingOptions(max_batch_size=2, max_queue_delay_us=0, instances=1, priority_levels=3)
    publish(project, "slow", repository=root / "repository", options=options)
    triton = TritonServer(
        repository=str(root / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with triton:
        yield triton


@dataclass
class Race:
    """When each low and each high request was answered (perf_counter ns), and how many lows were still
    unanswered when the highs went out."""

    lows_done: list[int]
    highs_done: list[int]
    outstanding: int

    def lows_after(self) -> list[int]:
        """For each high: how many of the lows waiting when it was sent were answered after it."""
        return [sum(1 for low in self.lows_done if low > high) for high in self.highs_done]


def raw_high(server: TritonServer, priority: int | None) -> Callable[[], None]:
    request = infer_request(server.host, server.http_port, "slow", X, ["output"], priority=priority)

    def send() -> None:
        with socket.create_connection((server.host, server.http_port), timeout=60) as sock:
            buffer, response = exchange(sock, request)
            assert check_response(buffer, response, OUTPUT_BYTES) is None

    return send


def race(server: TritonServer, send_high: Callable[[], None]) -> Race:
    """Queue LOWS requests at the default level from LOWS sockets; once 3 are answered (the queue is
    there), send HIGHS requests with ``send_high``, each from a thread of its own; wait for all."""
    request = infer_request(server.host, server.http_port, "slow", X, ["output"])
    sockets = [socket.create_connection((server.host, server.http_port), timeout=60) for _ in range(LOWS)]
    poller = select.epoll()
    buffers = {s.fileno(): b"" for s in sockets}
    lows_done: list[int] = []
    highs_done: list[int] = []
    threads: list[threading.Thread] = []

    def high() -> None:
        send_high()
        highs_done.append(time.perf_counter_ns())

    try:
        for s in sockets:
            poller.register(s.fileno(), select.EPOLLIN)
            s.sendall(request)
        by_fd = {s.fileno(): s for s in sockets}
        outstanding = 0
        while len(lows_done) < LOWS:
            for fd, _ in poller.poll(60):
                buffers[fd] += by_fd[fd].recv(1 << 16)
                response = parse_response(buffers[fd])
                if response is not None:
                    assert check_response(buffers[fd], response, OUTPUT_BYTES) is None
                    lows_done.append(time.perf_counter_ns())
            if len(lows_done) >= 3 and not threads:
                outstanding = LOWS - len(lows_done)
                threads = [threading.Thread(target=high) for _ in range(HIGHS)]
                for t in threads:
                    t.start()
        for t in threads:
            t.join(60)
    finally:
        poller.close()
        for s in sockets:
            s.close()
    assert len(highs_done) == HIGHS
    return Race(lows_done, highs_done, outstanding)


def test_priority_1_requests_are_served_ahead_of_the_queue_and_without_priority_they_wait(
    server: TritonServer,
) -> None:
    race(server, raw_high(server, None))  # warm the model up
    prioritised = race(server, raw_high(server, 1))
    control = race(server, raw_high(server, None))

    assert prioritised.outstanding >= LOWS - 8
    assert control.outstanding >= LOWS - 8
    # each priority-1 request waits at most for the batch in execution and the other highs
    assert all(after >= prioritised.outstanding * 0.6 for after in prioritised.lows_after()), prioritised.lows_after()
    # the same requests without a priority come after (nearly) everything queued before them
    assert all(after <= control.outstanding * 0.25 for after in control.lows_after()), control.lows_after()


def test_nexus_predict_priority_jumps_the_queue(server: TritonServer) -> None:
    def send() -> None:
        outputs = predict("slow", X, server=server.url, priority=1)
        assert outputs["output"].shape == (1, 256)

    result = race(server, send)

    assert all(after >= result.outstanding * 0.6 for after in result.lows_after()), result.lows_after()


def test_an_open_loop_mix_over_capacity_keeps_the_high_class_fast(server: TritonServer) -> None:
    """Offered twice what the model serves here: the default class queues up, the priority-1 share does not.

    The capacity is measured first (the time of one batch at a light load, two requests a batch), so the
    overload holds on a fast machine and on a loaded one alike.
    """
    light = run_open_loop(OpenLoopSettings(server.url, "slow", X, ["output"], OUTPUT_BYTES, rate=5, duration=1))
    assert light.errors == 0, light.first_error
    capacity = 2 / (light.latency.p50 / 1000)
    # the backlog drains after the window; give every request time to be answered however slow the machine
    settings = OpenLoopSettings(
        server.url, "slow", X, ["output"], OUTPUT_BYTES, rate=2 * capacity, duration=2, mix=(PriorityShare(0.2, 1),),
        timeout=60,
    )  # fmt: skip
    result = run_open_loop(settings)

    assert result.errors == 0, result.first_error
    rest, high = result.classes
    assert (rest.priority, high.priority) == (None, 1)
    assert rest.completed == rest.scheduled
    assert high.completed == high.scheduled > 5
    assert high.latency.p50 * 3 < rest.latency.p50, result.classes
