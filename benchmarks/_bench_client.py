"""The benchmark's load generator: a closed-loop KServe v2 client over raw HTTP/1.1 keep-alive sockets.

On a 2-core machine the client shares the cores with Triton, so every microsecond it spends per
request is taken from the server. This one does the least a correct client can: one request, built
once with Triton's binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes,
then the raw input bytes), is sent again and again on ``concurrency`` blocking sockets; a single
thread waits on ``epoll`` for any of them to become readable, reads the response, checks it and sends
the next request on that socket at once. Each response must have status 200 and exactly the expected
number of output bytes after its JSON header; anything else is an error, and a run with errors fails.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from nexus.serving.admin import ModelCounters
from nexus.tensors import DTYPES

#: numpy dtype names -> KServe v2 data types.
DATATYPES = {d.numpy: d.triton for d in DTYPES.values() if d.numpy}


class BenchError(RuntimeError):
    """The server answered something other than the expected inference result."""


def infer_request(host: str, port: int, model: str, inputs: dict[str, npt.NDArray[Any]], outputs: list[str]) -> bytes:
    """The bytes of one KServe v2 inference request with binary inputs and binary outputs."""
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(value.shape),
                "datatype": DATATYPES[str(value.dtype)],
                "parameters": {"binary_data_size": value.nbytes},
            }
            for name, value in inputs.items()
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
    }
    json_part = json.dumps(header, separators=(",", ":")).encode()
    body = json_part + b"".join(np.ascontiguousarray(v).tobytes() for v in inputs.values())
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {len(json_part)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


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


def _parse(buffer: bytes) -> tuple[int, int, int, int] | None:
    """(status, header end, content length, inference header length) once a whole response is in."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").lower()
    status = int(head[9:12])
    length = inference = -1
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key == "content-length":
            length = int(value)
        elif key == "inference-header-content-length":
            inference = int(value)
    if length < 0:
        raise BenchError(f"response without Content-Length: {head!r}")
    if len(buffer) < end + 4 + length:
        return None
    return status, end + 4, length, inference


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

    def _check(self, c: _Connection, parsed: tuple[int, int, int, int]) -> str | None:
        status, start, length, inference = parsed
        if status != 200:
            return f"HTTP {status}: {c.buffer[start : start + length].decode(errors='replace')[:300]}"
        if inference < 0 or length - inference != self.output_bytes:
            return f"expected {self.output_bytes} output bytes, got {length - max(inference, 0)}"
        return None

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
                    parsed = _parse(c.buffer)
                    if parsed is None:
                        continue
                    done = now()
                    error = self._check(c, parsed)
                    c.buffer = c.buffer[parsed[1] + parsed[2] :]
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
