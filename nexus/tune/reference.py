"""The machine's speed for the model, measured beside every configuration the tuner measures.

On a shared machine the same forward pass does not take the same time all day: on the docs' MLP one
batch of one took 1 ms in one session and 2.2-3.4 ms in another, with nothing else of ours running
(docs/tuning.md). A served rate under a latency target moves with that far more than in proportion,
so two configurations measured at different speeds are not comparable, and nothing in their rates
says so. The reference says so: right after a configuration is applied, requests are sent **one at
a time** for a moment, and Triton's own statistics for batches of exactly one (``batch_stats``: the
model's execute call, no queue, no HTTP) give the mean time of one forward pass. Every configuration
sends the same requests the same way, so the figure is the machine's, not the configuration's.
"""

from __future__ import annotations

import socket
import time

from nexus.errors import LoadTestError, TritonError
from nexus.loadtest.wire import check_response, exchange, infer_request, plain_http_address
from nexus.serving.admin import TritonAdmin
from nexus.tune.probe import Workload

#: Requests sent before the counters are read: a model just loaded is slow on its first calls.
WARMUP_REQUESTS = 10
#: Fewest batches of one that make a reference (fewer: none is reported).
MIN_EXECUTIONS = 20


def reference_ms(url: str, model: str, workload: Workload, seconds: float = 0.5, timeout: float = 5.0) -> float | None:
    """Mean milliseconds of one batch-of-one forward pass of ``model``, from ``seconds`` of sequential requests.

    None when it could not be measured (a request failed, or too few ran); the tuner goes on without it.
    """
    admin = TritonAdmin(url)
    try:
        host, port = plain_http_address(url)
        body = infer_request(host, port, model, workload.inputs, workload.outputs)
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(WARMUP_REQUESTS):
                _one(sock, body, workload.output_bytes)
            before = admin.batch_compute(model, 1)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                _one(sock, body, workload.output_bytes)
            after = admin.batch_compute(model, 1)
    except (OSError, LoadTestError, TritonError):
        return None
    executions, ns = after[0] - before[0], after[1] - before[1]
    return ns / executions / 1e6 if executions >= MIN_EXECUTIONS else None


def _one(sock: socket.socket, body: bytes, output_bytes: int | None) -> None:
    """One request and its whole answer, which must be a good one (else :class:`LoadTestError`)."""
    buffer, response = exchange(sock, body)
    problem = check_response(buffer, response, output_bytes)
    if problem is not None:
        raise LoadTestError(problem)
