"""The benchmark's load generator: a closed-loop KServe v2 client over raw HTTP/1.1 keep-alive sockets.

On a 2-core machine the client shares the cores with Triton, so every microsecond it spends per
request is taken from the server. This one does the least a correct client can: one request, built
once with Triton's binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes,
then the raw input bytes), is sent again and again on ``concurrency`` blocking sockets; a single
thread waits on ``epoll`` for any of them to become readable, reads the response, checks it and sends
the next request on that socket at once. Each response must have status 200 and exactly the expected
number of output bytes after its JSON header; anything else is an error, and a run with errors fails.
The wire format and those checks are :mod:`nexus.loadtest.wire`, shared with the open-loop client.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from nexus.loadtest.wire import DATATYPES, check_response, infer_request, parse_response
from nexus.serving.admin import ModelCounters

__all__ = ["DATATYPES", "BenchError", "ClosedLoopClient", "LoadResult", "StatsDelta", "infer_request"]


class BenchError(RuntimeError):
    """The server answered something other than the expected inference result."""


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    #: Latency of every request completed inside the measured window, in nanoseconds.
    latencies_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_ns)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(np.asarray(self.latencies_ns), q)) / 1e6


class _Connection:
    __slots__ = ("buffer", "sent_ns", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.sent_ns = 0


class ClosedLoopClient:
    """``concurrency`` connections, each sending its next request as soon as its previous one is answered."""

    def __init__(self, host: str, port: int, request: bytes, output_bytes: int, concurrency: int) -> None:
        self.request = request
        self.output_bytes = output_bytes
        self.connections: list[_Connection] = []
        for _ in range(concurrency):
            sock = socket.create_connection((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections.append(_Connection(sock))
        self.by_fd = {c.sock.fileno(): c for c in self.connections}

    def close(self) -> None:
        for c in self.connections:
            c.sock.close()

    def __enter__(self) -> ClosedLoopClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, seconds: float) -> LoadResult:
        """Drive the closed loop for ``seconds``; requests still in flight then are awaited but not counted."""
        result = LoadResult(len(self.connections), seconds)
        latencies, errors = result.latencies_ns, result.errors
        poller = select.epoll()
        now = time.perf_counter_ns
        deadline = now() + int(seconds * 1e9)
        try:
            for c in self.connections:
                poller.register(c.sock.fileno(), select.EPOLLIN)
                c.sent_ns = now()
                c.sock.sendall(self.request)
            in_flight = len(self.connections)
            while in_flight:
                for fd, _ in poller.poll(10.0):
                    c = self.by_fd[fd]
                    chunk = c.sock.recv(1 << 20)
                    if not chunk:
                        raise BenchError("Triton closed a connection")
                    c.buffer += chunk
                    parsed = parse_response(c.buffer)
                    if parsed is None:
                        continue
                    done = now()
                    error = check_response(c.buffer, parsed, self.output_bytes)
                    c.buffer = c.buffer[parsed.end :]
                    if error is not None:
                        errors.append(error)
                    elif done <= deadline:
                        latencies.append(done - c.sent_ns)
                    if done < deadline:
                        c.sent_ns = now()
                        c.sock.sendall(self.request)
                    else:
                        in_flight -= 1
        finally:
            poller.close()
        if errors:
            raise BenchError(f"{len(errors)} bad answers, the first: {errors[0]}")
        return result


@dataclass(frozen=True)
class StatsDelta:
    """What Triton did between two statistics snapshots, per request in milliseconds."""

    inferences: int
    executions: int
    queue_ms: float
    input_ms: float
    infer_ms: float
    output_ms: float

    @property
    def avg_batch(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0

    @classmethod
    def between(cls, before: ModelCounters, after: ModelCounters) -> StatsDelta:
        """From two reads of :meth:`nexus.serving.admin.TritonAdmin.stats`."""
        d = after - before
        return cls(d.inferences, d.executions, *(d.per_request_ms(ns) or 0.0 for ns in
                   (d.queue_ns, d.input_ns, d.infer_ns, d.output_ns)))  # fmt: skip
