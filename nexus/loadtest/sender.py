"""The sending loop of the open-loop client (:mod:`nexus.loadtest.openloop`): one thread, one ``epoll``.

Each turn moves the requests now due to a FIFO of pending sends, sends as many as there are free (or
new, under the pool's cap) connections, expires requests unanswered ``timeout`` after their time, and
waits on ``epoll`` until the next request is due or an answer arrives. ``epoll`` waits in whole
milliseconds: the remainder below one is slept.
"""

from __future__ import annotations

import time
from collections import deque

from nexus.errors import LoadTestError
from nexus.loadtest.pool import Pool, Slot
from nexus.loadtest.wire import check_response, parse_response


class Sender:
    """One run's sends and answers: per request, its due, sent and answered times (0: not yet) or its error.

    Request ``r`` (the body ``bodies[classes[r]]``) is due ``offsets[r]`` ns after :attr:`start`.
    """

    def __init__(
        self,
        pool: Pool,
        offsets: list[int],
        classes: list[int],
        bodies: list[bytes],
        output_bytes: int | None,
        timeout: float,
    ) -> None:
        self.pool, self.classes, self.bodies, self.output_bytes = pool, classes, bodies, output_bytes
        self.timeout = timeout
        self.start = time.perf_counter_ns() + 5_000_000  # a moment to settle: the first sends are not late
        self.due = [self.start + o for o in offsets]
        self.sent = [0] * len(offsets)
        self.done = [0] * len(offsets)
        self.errors: dict[int, str] = {}
        self.timeout_ns = int(timeout * 1e9)

    def fail(self, r: int, message: str) -> None:
        self.errors[r] = message

    def drive(self) -> None:
        now, pool, due, n = time.perf_counter_ns, self.pool, self.due, len(self.due)
        pending: deque[int] = deque()
        i = sweep = 0
        while i < n or pending or pool.busy:
            t = now()
            while i < n and due[i] <= t:
                pending.append(i)
                i += 1
            while pending:
                try:
                    slot = pool.acquire()
                except OSError as e:
                    self.fail(pending.popleft(), f"cannot connect to {pool.host}:{pool.port}: {e}")
                    continue
                if slot is None:
                    break
                self.send(slot, pending.popleft())
            if t >= sweep:
                self.expire(pending, t)
                sweep = t + 10_000_000
            wait = min(due[i] - now() if i < n else 10_000_000, 10_000_000)
            events = pool.poll(wait // 1_000_000 / 1000 if wait >= 1_000_000 else 0.0)
            if not events and 0 < wait < 1_000_000:
                time.sleep(wait / 1e9)  # epoll waits in whole milliseconds; the rest is slept
            for fd, _ in events:
                self.receive(fd)

    def send(self, slot: Slot, r: int) -> None:
        slot.request = r
        self.sent[r] = time.perf_counter_ns()
        try:
            slot.sock.sendall(self.bodies[self.classes[r]])
        except OSError as e:
            self.fail(r, f"cannot send: {e}")
            self.pool.discard(slot)

    def receive(self, fd: int) -> None:
        slot = self.pool.slots.get(fd)
        if slot is None:
            return
        r = slot.request
        try:
            chunk = slot.sock.recv(1 << 20)
            slot.buffer += chunk
            response = parse_response(slot.buffer) if chunk else None
        except (OSError, LoadTestError) as e:
            chunk, message = b"", str(e)
        else:
            message = "the server closed the connection"
        if not chunk:
            if r >= 0:
                self.fail(r, message)
            self.pool.discard(slot)
            return
        if response is None:
            return
        t = time.perf_counter_ns()
        problem = check_response(slot.buffer, response, self.output_bytes)
        slot.buffer = slot.buffer[response.end :]
        if r < 0:  # an answer nobody asked for: the connection is out of step
            self.pool.discard(slot)
            return
        if problem is None:
            self.done[r] = t
        else:
            self.fail(r, problem)
        self.pool.release(slot)

    def expire(self, pending: deque[int], t: int) -> None:
        """Requests still unanswered ``timeout`` after their time are errors; their connections are closed."""
        while pending and self.due[pending[0]] + self.timeout_ns <= t:
            self.fail(pending.popleft(), f"not sent within {self.timeout:g}s: no connection came free")
        for slot in [s for s in self.pool.busy if self.due[s.request] + self.timeout_ns <= t]:
            self.fail(slot.request, f"no answer within {self.timeout:g}s of its scheduled time")
            self.pool.discard(slot)
