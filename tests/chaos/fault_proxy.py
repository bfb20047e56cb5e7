"""A loopback HTTP/1.1 proxy that injects storage faults, one decision per request.

It sits between an SDK (boto3, google-cloud-storage) and a test server (moto, the GCS emulator)
and, for each request, draws from a seeded RNG what the network or the server does to it:

=================  ==========================================================================
fault              what the client sees
=================  ==========================================================================
``pass``           the server's answer
``delay``          the server's answer, ``delay_s`` later
``error_500``      ``500`` with the service's error body (S3 ``InternalError`` XML, GCS JSON);
                   the request never reaches the server
``error_503``      ``503`` (S3 ``SlowDown``, GCS ``backendError``); never reaches the server
``cut_request``    part of the request reaches the server (part of its body, or of its request
                   line if it has none), then both connections close
``cut_response``   the server handles the request; the client gets the head and part of the
                   body (or, without a body, less than the status code), then EOF. (The head and
                   no body at all is ``truncated_head``: botocore takes that empty body for a
                   complete one, whatever Content-Length said.)
``truncated_head`` the server handles the request; the client gets the status line (http.client
                   takes the EOF for the end of the headers) or the whole head, then EOF: a
                   complete-looking answer without a body, the rare cut the SDKs do not catch
``corrupt``        the server's answer with one body byte flipped (a 2xx with a body only)
``error_404``      ``404`` (S3 ``NoSuchUpload``: what S3 and MinIO answer a second
                   CompleteMultipartUpload; GCS ``notFound``); never reaches the server
=================  ==========================================================================

``max_streak`` bounds how many times in a row the same request (method, target, Content-Range)
is faulted, so a client with enough retries must get through; ``outage_after`` cuts the link for
good once that many request-body bytes have passed (a network that dies mid-upload and stays
dead: new connections are accepted and closed at once).

Requests and answers are buffered whole (tests move tens of MiB, not more); ``throttle_bps``
slows request bodies down so that a transfer lasts long enough to be interrupted.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

FAULTS = ("pass", "delay", "error_500", "error_503", "cut_request", "cut_response", "truncated_head", "corrupt")


@dataclass
class FaultPlan:
    """Per-request fault probabilities (the rest of the mass is ``pass``)."""

    delay: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    cut_request: float = 0.0
    cut_response: float = 0.0
    truncated_head: float = 0.0
    corrupt: float = 0.0
    delay_s: tuple[float, float] = (0.05, 0.3)
    #: At most this many faults in a row for one request; None: no bound.
    max_streak: int | None = 2
    #: Only requests whose method is in this set are faulted (None: all).
    methods: frozenset[str] | None = None
    #: Only requests this accepts are faulted (None: all).
    where: Callable[[Request], bool] | None = None
    #: At most this many faults in all; None: no bound.
    limit: int | None = None
    #: Requests that are never cut (they may still be delayed or answered with an error).
    uncut: Callable[[Request], bool] | None = None
    #: The faults of the successive selected requests, in order, instead of random draws ("pass"
    #: once it runs out); ``max_streak``, ``limit`` and ``uncut`` still apply.
    script: list[str] | None = None

    def draw(self, rng: random.Random) -> str:
        x = rng.random()
        for name in FAULTS[1:]:
            p: float = getattr(self, name)
            if x < p:
                return name
            x -= p
        return "pass"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    head: bytes

    @property
    def key(self) -> tuple[str, str, str]:
        return self.method, self.target, self.headers.get("content-range", "")


@dataclass
class Event:
    method: str
    target: str
    fault: str
    status: int | None = None
    #: The server's answer when the client got only part of it (``cut_response``).
    lost_answer: bytes = b""
    #: Whether the client received the whole answer.
    delivered: bool = False
    #: Whether the plan's ``methods`` and ``where`` selected the request.
    matched: bool = False


class _Closed(Exception):
    """The peer closed the connection."""


_S3_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
    404: ("NoSuchUpload", "The specified upload does not exist."),
}
_GCS_ERRORS = {
    500: ("internalError", "Internal Error"),
    503: ("backendError", "Backend Error"),
    404: ("notFound", "Not Found"),
}
_REASONS = {404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}


def _error_body(dialect: str, status: int) -> tuple[bytes, str]:
    if dialect == "s3":
        code, message = _S3_ERRORS[status]
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>FAULTPROXY</RequestId></Error>"
        )
        return xml.encode(), "application/xml"
    reason, message = _GCS_ERRORS[status]
    payload = {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}
    return json.dumps(payload).encode(), "application/json; charset=UTF-8"


class _Conn:
    """A socket with a read buffer."""

    def __init__(
        self, sock: socket.socket, throttle_bps: float | None = None, counter: Callable[[int], None] | None = None
    ) -> None:
        self.sock = sock
        self.buf = b""
        self.throttle_bps = throttle_bps
        self.counter = counter

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise _Closed
        if self.counter:
            self.counter(len(data))
        if self.throttle_bps:
            time.sleep(len(data) / self.throttle_bps)
        self.buf += data

    def read_until(self, marker: bytes) -> bytes:
        while (i := self.buf.find(marker)) < 0:
            self._fill()
        out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker) :]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self) -> bytes:
        with contextlib.suppress(_Closed):
            while True:
                self._fill()
        out, self.buf = self.buf, b""
        return out

    def read_chunked(self) -> bytes:
        """A chunked body, returned as the raw bytes (framing included) to forward unchanged."""
        raw = b""
        while True:
            line = self.read_until(b"\r\n")
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                raw += self.read_until(b"\r\n")  # no trailers from these clients: the empty line
                return raw
            raw += self.read_exact(size + 2)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _read_response(upstream: _Conn, method: str) -> tuple[int, bytes, bytes, bool]:
    """The status, head, body and whether the connection stays open, of the next answer (1xx skipped)."""
    while True:
        head = upstream.read_until(b"\r\n\r\n")
        status_line, headers = _parse_head(head)
        if not status_line.split()[1].startswith("1"):
            break
    status = int(status_line.split()[1])
    no_body = method == "HEAD" or status in (204, 304)
    framed = "content-length" in headers or "transfer-encoding" in headers
    body = b"" if no_body else _read_body(upstream, headers, until_eof=True)
    keep = status_line.startswith("HTTP/1.1") and headers.get("connection", "").lower() != "close"
    return status, head, body, keep and (no_body or framed)


def _read_body(conn: _Conn, headers: dict[str, str], until_eof: bool) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return conn.read_chunked()
    if "content-length" in headers:
        return conn.read_exact(int(headers["content-length"]))
    return conn.read_to_eof() if until_eof else b""


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``, injecting faults by ``plan``.

    Args:
        dialect: "s3" or "gcs": how injected errors are worded.
        seed: the RNG seed (thread interleaving can reorder draws between concurrent requests).
        outage_after: request-body bytes after which the link dies for good (cut mid-request).
    """

    def __init__(
        self,
        target_port: int,
        plan: FaultPlan | None = None,
        *,
        dialect: str,
        seed: int = 0,
        throttle_bps: float | None = None,
        outage_after: int | None = None,
    ) -> None:
        self.target_port = target_port
        self.plan = plan or FaultPlan()
        self.dialect = dialect
        self.rng = random.Random(seed)
        self.throttle_bps = throttle_bps
        self.outage_after = outage_after
        self.body_bytes = 0
        #: Bytes received from clients so far, as they arrive (request heads included).
        self.received = 0
        self.events: list[Event] = []
        self.down = threading.Event()
        self._streaks: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._listener.close()
        self._close_all()

    def faults(self) -> Counter[str]:
        """How many requests got each fault so far."""
        with self._lock:
            return Counter(e.fault for e in self.events)

    def log(self) -> str:
        """One line per request so far: method, target, fault, status (for failure messages)."""
        with self._lock:
            return "\n".join(f"{e.method} {e.target[:110]} {e.fault} {e.status}" for e in self.events)

    def heal(self) -> None:
        """End an outage and stop injecting faults."""
        with self._lock:
            self.plan = FaultPlan()
            self.outage_after = None
            self.down.clear()

    # -- plumbing -------------------------------------------------------------------------------

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.update(socks)

    def _close(self, *socks: socket.socket | None) -> None:
        for s in socks:
            if s is None:
                continue
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            with self._lock:
                self._sockets.discard(s)

    def _close_all(self) -> None:
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down.is_set():
                self._close(client)
                continue
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True, name="fault-proxy-conn").start()

    def _count(self, n: int) -> None:
        with self._lock:
            self.received += n

    def _decide(self, request: Request) -> tuple[str, Event]:
        with self._lock:
            plan = self.plan
            fault = plan.draw(self.rng)
            matches = (plan.methods is None or request.method in plan.methods) and (
                plan.where is None or plan.where(request)
            )
            if not matches:
                fault = "pass"
            elif plan.script is not None:
                scripted = sum(e.matched for e in self.events)
                fault = plan.script[scripted] if scripted < len(plan.script) else "pass"
            if plan.limit is not None and sum(e.fault != "pass" for e in self.events) >= plan.limit:
                fault = "pass"
            if fault.startswith(("cut_", "truncated_")) and plan.uncut is not None and plan.uncut(request):
                fault = "pass"
            if plan.max_streak is not None and self._streaks[request.key] >= plan.max_streak:
                fault = "pass"
            if fault == "pass":
                self._streaks.pop(request.key, None)
            else:
                self._streaks[request.key] += 1
            delay = self.rng.uniform(*plan.delay_s) if fault == "delay" else 0.0
            event = Event(request.method, request.target, fault, matched=matches)
            self.events.append(event)
        if delay:
            time.sleep(delay)
        return fault, event

    def _serve(self, client_sock: socket.socket) -> None:
        client = _Conn(client_sock, self.throttle_bps, self._count)
        upstream: _Conn | None = None
        try:
            while True:
                request = self._read_head(client)
                fault, event = self._decide(request)
                if fault in ("error_404", "error_500", "error_503"):
                    if "100-continue" not in request.headers.get("expect", "").lower():
                        _read_body(client, request.headers, until_eof=False)  # the client sends it anyway
                    self._answer_error(client_sock, request, event, int(fault[-3:]))
                    return
                request = self._continue(client, request)
                if upstream is None:
                    upstream = _Conn(socket.create_connection(("127.0.0.1", self.target_port)))
                    self._track(upstream.sock)
                if fault == "cut_request":
                    length = int(request.headers.get("content-length", "0"))
                    if length:  # the server waits for the rest of the body, then sees the close
                        partial = request.head + client.read_exact(self.rng.randrange(length))
                    else:  # part of the request line: http.server takes a head cut between lines for whole
                        partial = request.head[: self.rng.randrange(request.head.index(b"\r\n"))]
                    upstream.sock.sendall(partial)
                    time.sleep(0.05)  # let the server read the partial request before the cut
                    return
                body = self._read_request_body(client, request, upstream.sock)
                if body is None:
                    event.fault = "outage"
                    return
                upstream.sock.sendall(request.head + body)
                status, head, answer, keep = _read_response(upstream, request.method)
                event.status = status
                if fault in ("cut_response", "truncated_head"):
                    event.lost_answer = head + answer
                    status_line_end = head.index(b"\r\n")
                    if fault == "truncated_head":  # after the status line, or after the whole head
                        cut = self.rng.choice([status_line_end + 2, len(head)])
                    elif len(answer) > 1:  # Content-Length promises more than comes; at least one byte
                        cut = len(head) + 1 + self.rng.randrange(len(answer) - 1)
                    else:  # within "HTTP/1.1 20": a status line cut any later reads as a whole one
                        cut = self.rng.randrange(head.index(b" ") + 3)
                    client_sock.sendall(event.lost_answer[:cut])
                    return
                if fault == "corrupt" and answer and 200 <= status < 300:
                    i = self.rng.randrange(len(answer))
                    answer = answer[:i] + bytes([answer[i] ^ 0xFF]) + answer[i + 1 :]
                client_sock.sendall(head + answer)
                event.delivered = True
                if not keep:
                    self._close(upstream.sock)
                    upstream = None
                if request.headers.get("connection", "").lower() == "close":
                    return
        except (_Closed, OSError):
            return
        finally:
            self._close(client_sock, upstream.sock if upstream else None)

    @staticmethod
    def _read_head(client: _Conn) -> Request:
        head = client.read_until(b"\r\n\r\n")
        request_line, headers = _parse_head(head)
        method, target = request_line.split()[:2]
        return Request(method, target, headers, head)

    @staticmethod
    def _continue(client: _Conn, request: Request) -> Request:
        """Answer `Expect: 100-continue` here, and drop the header: the proxy forwards whole bodies."""
        if "100-continue" not in request.headers.get("expect", "").lower():
            return request
        client.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = b"\r\n".join(line for line in request.head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
        return Request(request.method, request.target, request.headers, head)

    def _read_request_body(self, client: _Conn, request: Request, upstream: socket.socket) -> bytes | None:
        """The whole body; None if the outage budget ran out in it (the part before went upstream)."""
        length = int(request.headers.get("content-length", "-1"))
        with self._lock:
            budget = None if self.outage_after is None else self.outage_after - self.body_bytes
        if budget is None or length < 0 or length <= budget:
            body = _read_body(client, request.headers, until_eof=False)
            with self._lock:
                self.body_bytes += len(body)
            return body
        partial = client.read_exact(max(budget, 0))
        with self._lock:
            self.body_bytes += len(partial)
        self.down.set()
        upstream.sendall(request.head + partial)
        time.sleep(0.05)
        self._close_all()
        return None

    def _answer_error(self, sock: socket.socket, request: Request, event: Event, status: int) -> None:
        body, content_type = _error_body(self.dialect, status)
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        event.status = status
        sock.sendall(head.encode() + (b"" if request.method == "HEAD" else body))
        event.delivered = True
