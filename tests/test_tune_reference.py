"""The tuner's reference speed on a real Triton: Triton's counters for batches of exactly one are counted
right, and the reference is the model's own forward pass (compared with the same artifact run in-process,
side by side, within a wide factor: it is a figure's meaning that is checked, not a speed)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import GitRepo, free_port
from nexus.loadtest.wire import check_response, exchange, infer_request
from nexus.serving.admin import TritonAdmin
from nexus.serving.model_config import ServingOptions
from nexus.serving.server import TritonServer
from nexus.tune.probe import Workload
from nexus.tune.reference import reference_ms
from test_priorities import OUTPUT_BYTES, make_slow_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Path]]:
    from nexus.registry import Project
    from nexus.serving.publish import publish

    root = tmp_path_factory.mktemp("reference")
    repo = GitRepo.create(root / "project")
    repo.gen({"train.py": "pass\n"}, commit="initial")
    project = Project.open(repo.root, env={})
    artifact = make_slow_model(root / "slow.pt2")
    project.store(artifact, "slow")
    publish(project, "slow", repository=root / "repository", options=ServingOptions(max_batch_size=4, instances=1))
    triton = TritonServer(
        repository=str(root / "repository"), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with triton:
        yield triton, artifact


def send(server: TritonServer, batch: int) -> None:
    x = {"x": np.ones((batch, 256), np.float32)}
    with socket.create_connection((server.host, server.http_port), timeout=30) as sock:
        buffer, response = exchange(sock, infer_request(server.host, server.http_port, "slow", x, ["output"]))
        assert check_response(buffer, response, OUTPUT_BYTES * batch) is None


def test_batch_compute_counts_the_executions_of_exactly_that_batch_size(served: tuple[TritonServer, Path]) -> None:
    server, _ = served
    admin = TritonAdmin(server.url)
    ones, twos = admin.batch_compute("slow", 1), admin.batch_compute("slow", 2)
    for _ in range(5):
        send(server, 1)
    send(server, 2)
    after_ones, after_twos = admin.batch_compute("slow", 1), admin.batch_compute("slow", 2)
    assert after_ones[0] - ones[0] == 5
    assert after_twos[0] - twos[0] == 1
    assert after_ones[1] > ones[1]
    assert after_twos[1] > twos[1]
    assert admin.batch_compute("slow", 3) == (0, 0)


def test_the_reference_is_the_model_s_forward_pass_and_none_when_it_cannot_be_measured(
    served: tuple[TritonServer, Path],
) -> None:
    import torch

    server, artifact = served
    workload = Workload({"x": np.ones((1, 256), np.float32)}, ["output"], OUTPUT_BYTES)
    served_ms = reference_ms(server.url, "slow", workload, seconds=2.0)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stub runs it (nexus_torch_threads 1)
    try:
        module = torch.export.load(str(artifact)).module()
        x = torch.ones(1, 256)
        with torch.inference_mode():
            module(x)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 1.0:
                module(x)
                n += 1
        in_process_ms = (time.perf_counter() - start) / n * 1000
    finally:
        torch.set_num_threads(threads)

    assert served_ms is not None
    assert in_process_ms / 4 < served_ms < in_process_ms * 4, (served_ms, in_process_ms)
    assert reference_ms(server.url, "absent", workload, seconds=0.2) is None  # Triton answers 404
    assert reference_ms(f"127.0.0.1:{free_port()}", "slow", workload, seconds=0.2) is None  # nothing listens
