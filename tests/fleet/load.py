"""The load generator: threads sending raw KServe v2 infers through the router, every outcome recorded.

Each request is one fixed batch (:data:`fleet.world.SAMPLE`) over a keep-alive connection per pod (a
connection to a pod that left the router's view is closed, as a load balancer drains it). No retries:
a retry would hide the failure this is here to count. An answer is checked against the model run
in-process, which also tells which release's model answered, whatever the router believed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fleet.endpoints import Router
from fleet.pods import Pod
from fleet.world import INPUT, MODEL, SAMPLE, World
from nexus.errors import LoadTestError
from nexus.loadtest.wire import exchange, infer_request


@dataclass(frozen=True)
class Outcome:
    #: When it was sent (time.monotonic()).
    at: float
    #: The pod the router chose (None: no pod in its view) and that pod's release.
    pod: str | None
    release: str | None
    #: The release whose model's outputs came back (None: no answer, or outputs of neither).
    answered_by: str | None
    #: Why it failed; None for a good answer.
    error: str | None


@dataclass
class Load:
    router: Router
    world: World
    threads: int = 3
    #: Seconds each thread waits between two requests (0: closed loop).
    think: float = 0.01
    timeout: float = 15.0
    #: Requests sent over one connection before it is closed and a new one opened (None: no limit), as a
    #: load balancer's upstream keep-alive limit does; new connections are what a SIGTERMed Triton refuses.
    per_connection: int | None = 20
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)

    def _work(self) -> None:
        connections: dict[Pod, socket.socket] = {}
        used: dict[Pod, int] = {}
        while not self._stop.is_set():
            view = self.router.endpoints.view()
            for gone in [p for p in connections if p not in view]:
                connections.pop(gone).close()
            pod = self.router.pick()
            at = time.monotonic()
            if pod is None:
                outcome = Outcome(at, None, None, None, "no pod in the router's view")
            else:
                if pod not in connections:
                    used[pod] = 0
                outcome = self._send(pod, connections, at)
                used[pod] += 1
                if self.per_connection is not None and used[pod] >= self.per_connection and pod in connections:
                    connections.pop(pod).close()
            with self._lock:
                self.outcomes.append(outcome)
            if self.think:
                self._stop.wait(self.think)
        for conn in connections.values():
            conn.close()

    def _send(self, pod: Pod, connections: dict[Pod, socket.socket], at: float) -> Outcome:
        def failed(why: str) -> Outcome:
            if pod in connections:
                connections.pop(pod).close()
            return Outcome(at, pod.name, pod.release, None, why)

        try:
            conn = connections.get(pod)
            if conn is None:
                conn = connections[pod] = socket.create_connection(("127.0.0.1", pod.http_port), timeout=self.timeout)
            request = infer_request("127.0.0.1", pod.http_port, MODEL, {INPUT: SAMPLE}, [self.world.output])
            buffer, response = exchange(conn, request)
        except LoadTestError as e:
            return failed(str(e))
        except ConnectionRefusedError:
            return failed("connection refused")
        except ConnectionResetError:
            return failed("connection reset")
        except TimeoutError:
            return failed(f"no answer within {self.timeout:.0f} s")
        except OSError as e:
            return failed(f"socket error: {e.strerror or e}")
        body = buffer[response.start : response.end]
        if response.status != 200:
            return failed(f"HTTP {response.status}: {body[:160].decode(errors='replace')}")
        values = np.frombuffer(body[response.inference :], dtype=np.float32).reshape(len(SAMPLE), -1)
        answered_by = self.world.release_of(values)
        if answered_by is None:
            return failed("an answer that is neither release's model's outputs")
        return Outcome(at, pod.name, pod.release, answered_by, None)

    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)


def summary(outcomes: list[Outcome]) -> dict[str, object]:
    """Requests sent and failed, failures by reason, and answers by release."""
    failures = Counter(o.error for o in outcomes if o.error is not None)
    return {
        "sent": len(outcomes),
        "failed": sum(failures.values()),
        "reasons": dict(failures.most_common()),
        "answered_by": dict(Counter(o.answered_by for o in outcomes if o.error is None)),
    }
