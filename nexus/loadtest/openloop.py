"""Open-loop load: requests at a fixed offered rate whatever the server does, latency counted from the schedule.

A closed loop (Locust's users, the benchmark's client) sends a request only once an earlier one is
answered: when the server slows down so does the load, and the requests that would have waited are
never sent (coordinated omission). Here the arrival times are drawn first, Poisson arrivals at
``rate`` per second (exponential gaps from a seeded RNG), and each request's latency runs from its
*scheduled* time, so the time it waited for a connection or for the client counts too; the latency
from the moment it actually went out is kept beside it.

One thread waits on ``epoll`` over a pool of keep-alive sockets, one request in flight on each: a
request goes out at its time on a free connection; when none is free the pool grows, up to
``max_connections``; at the cap the request waits for one and goes out *late* (more than ``late_ms``
after its time). Every answer is checked (:mod:`nexus.loadtest.wire`); bad answers, refused
connections and requests unanswered ``timeout`` seconds after their time are counted as errors, never
raised, so a caller (``nexus loadtest --rate``, a tuner) sees a failing server as a failed run. Each
call opens and closes its own sockets and starts no thread: call it as often as needed.

    settings = OpenLoopSettings("127.0.0.1:8000", "m", {"x": x}, ["y"], output_bytes=12, rate=200, duration=10)
    result = run_open_loop(settings)  # OpenLoopResult
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from nexus.errors import LoadTestError
from nexus.loadtest.pool import Pool
from nexus.loadtest.sender import Sender
from nexus.loadtest.wire import infer_request, plain_http_address


@dataclass(frozen=True)
class PriorityShare:
    """``share`` of the requests (0 < share < 1), drawn at random, sent at ``priority`` (1: Triton's highest)."""

    share: float
    priority: int


@dataclass(frozen=True, eq=False)
class OpenLoopSettings:
    """One open-loop run: what to send, at what rate, for how long.

    Attributes:
        server: Triton's HTTP endpoint, `host:port` or `http://host:port` (plain HTTP only).
        inputs: the tensors of every request, batch dimension included.
        output_bytes: the raw output bytes of a good answer; None checks only that it is a tensor answer.
        warmup: seconds sent at the same rate before the measured ``duration``; not counted.
        priority: the priority of every request outside ``mix``; None sends none (the model's default level).
        mix: shares of the requests sent at other priorities (:class:`PriorityShare`).
        timeout: seconds after its scheduled time by which a request must be answered, else it is an error.
    """

    server: str
    model: str
    inputs: Mapping[str, npt.NDArray[Any]]
    outputs: Sequence[str]
    output_bytes: int | None = None
    rate: float = 100.0
    duration: float = 10.0
    warmup: float = 0.0
    priority: int | None = None
    mix: tuple[PriorityShare, ...] = ()
    seed: int = 0
    max_connections: int = 256
    timeout: float = 10.0
    late_ms: float = 1.0
    #: Latency percentiles to report besides p50, p90 and p99 (e.g. ``(95, 99.9)``): :meth:`Latency.at`.
    percentiles: tuple[float, ...] = ()

    def check(self) -> None:
        if not self.rate > 0 or not math.isfinite(self.rate):
            raise LoadTestError(f"the rate {self.rate:g} is not a positive number of requests per second")
        if not self.duration > 0 or self.warmup < 0 or not self.timeout > 0:
            raise LoadTestError("the duration and timeout must be positive, the warm-up 0 or more")
        if self.max_connections < 1:
            raise LoadTestError("max_connections must be at least 1")
        if any(not 0 < q < 100 for q in self.percentiles):
            raise LoadTestError("percentiles are between 0 and 100 (exclusive), e.g. 95 or 99.9")
        if any(p < 0 for p in [*(m.priority for m in self.mix), self.priority or 0]):
            raise LoadTestError("a priority is 0 (the model's default level) or more; 1 is the highest")
        if any(not 0 < m.share < 1 for m in self.mix) or sum(m.share for m in self.mix) >= 1:
            raise LoadTestError("each share of a priority mix is between 0% and 100%, and they add up to under 100%")

    @property
    def address(self) -> tuple[str, int]:
        return plain_http_address(self.server)

    @property
    def priorities(self) -> list[int | None]:
        """The priority of each class of requests: the rest first, then each share of the mix."""
        return [self.priority, *(m.priority for m in self.mix)]


@dataclass(frozen=True)
class Latency:
    """Latency percentiles in milliseconds (NaN when nothing was answered); ``others`` holds any more
    percentiles asked for (:attr:`OpenLoopSettings.percentiles`), read with :meth:`at`."""

    p50: float
    p90: float
    p99: float
    max: float
    others: tuple[tuple[float, float], ...] = ()

    @classmethod
    def of(cls, ns: Sequence[int], percentiles: Sequence[float] = ()) -> Latency:
        extra = [q for q in dict.fromkeys(percentiles) if q not in (50, 90, 99)]
        if not ns:
            return cls(math.nan, math.nan, math.nan, math.nan, tuple((q, math.nan) for q in extra))
        values = np.percentile(np.asarray(ns, dtype=np.float64), [50, 90, 99, *extra]) / 1e6
        p50, p90, p99 = (float(v) for v in values[:3])
        return cls(p50, p90, p99, max(ns) / 1e6, tuple((q, float(v)) for q, v in zip(extra, values[3:], strict=True)))

    def at(self, percentile: float) -> float:
        """The latency at ``percentile`` (50, 90, 99 or one asked for in the settings)."""
        known = {50.0: self.p50, 90.0: self.p90, 99.0: self.p99, 100.0: self.max, **dict(self.others)}
        if percentile not in known:
            raise LoadTestError(f"p{percentile:g} was not measured; ask for it in OpenLoopSettings.percentiles")
        return known[percentile]


@dataclass(frozen=True)
class ClassResult:
    """The requests of one priority class (None: no priority sent, the model's default level)."""

    priority: int | None
    scheduled: int
    completed: int
    errors: int
    latency: Latency


@dataclass(frozen=True)
class OpenLoopResult:
    """What one run measured; counts and latencies cover the requests scheduled after the warm-up.

    Attributes:
        achieved_rate: good answers (warm-up requests' too) that arrived within the measured window, per second.
        late: requests sent more than ``late_ms`` after their scheduled time; ``max_late_ms`` the worst.
        latency: from each request's scheduled time to its answer; ``send_latency`` from when it went out.
        connections: the most connections open at once.
        classes: one entry per priority class when a mix is used, else empty.
    """

    offered_rate: float
    achieved_rate: float
    duration: float
    scheduled: int
    sent: int
    completed: int
    late: int
    max_late_ms: float
    errors: int
    first_error: str | None
    latency: Latency
    send_latency: Latency
    connections: int
    classes: list[ClassResult]

    @property
    def ok(self) -> bool:
        return self.errors == 0

    @property
    def scheduled_rate(self) -> float:
        """The rate the seeded draw gave (Poisson: around ``offered_rate``); ``achieved_rate`` compares to it."""
        return self.scheduled / self.duration


def schedule(settings: OpenLoopSettings) -> tuple[list[int], list[int]]:
    """The seeded arrival times (ns from the start, warm-up included) and each request's class index."""
    rng = np.random.default_rng(settings.seed)
    total = settings.warmup + settings.duration
    gaps = rng.exponential(
        1 / settings.rate, int(settings.rate * total * 1.2 + 6 * math.sqrt(settings.rate * total)) + 16
    )
    times = np.cumsum(gaps)
    while times[-1] < total:  # never in practice: the draw above is far above the mean
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1 / settings.rate, len(times)))])
    times = times[times < total]
    edges = np.cumsum([1 - sum(m.share for m in settings.mix), *(m.share for m in settings.mix)])
    classes = np.minimum(np.searchsorted(edges, rng.random(len(times)), side="right"), len(edges) - 1)
    return [int(t * 1e9) for t in times], [int(c) for c in classes]


def run_open_loop(settings: OpenLoopSettings) -> OpenLoopResult:
    """Send ``settings.rate`` requests a second for ``warmup + duration`` seconds and measure the answers.

    Raises:
        LoadTestError: the settings are wrong.
        TritonUnreachableError: no connection could be opened before the start (errors later are counted).
    """
    settings.check()
    host, port = settings.address
    offsets, classes = schedule(settings)
    bodies = [
        infer_request(host, port, settings.model, settings.inputs, list(settings.outputs), priority=p)
        for p in settings.priorities
    ]
    with Pool(host, port, settings.max_connections, settings.timeout) as pool:
        pool.open_initial(min(settings.max_connections, 4))
        sender = Sender(pool, offsets, classes, bodies, settings.output_bytes, settings.timeout)
        sender.drive()
    return _result(settings, sender, pool.most)


def _result(settings: OpenLoopSettings, run: Sender, connections: int) -> OpenLoopResult:
    s = settings
    first = run.start + int(s.warmup * 1e9)
    end = first + int(s.duration * 1e9)
    measured = [r for r, d in enumerate(run.due) if d >= first]
    late_ns = [run.sent[r] - run.due[r] for r in measured if run.sent[r]]
    answered = [r for r in measured if run.done[r]]
    errors = [r for r in measured if r in run.errors]
    classes = []
    if s.mix:
        for c, priority in enumerate(s.priorities):
            mine = [r for r in measured if run.classes[r] == c]
            classes.append(
                ClassResult(
                    priority,
                    len(mine),
                    sum(1 for r in mine if run.done[r]),
                    sum(1 for r in mine if r in run.errors),
                    Latency.of([run.done[r] - run.due[r] for r in mine if run.done[r]]),
                )
            )
    return OpenLoopResult(
        offered_rate=s.rate,
        achieved_rate=sum(1 for d in run.done if first <= d <= end) / s.duration,
        duration=s.duration,
        scheduled=len(measured),
        sent=len(late_ns),
        completed=len(answered),
        late=sum(1 for late in late_ns if late > s.late_ms * 1e6),
        max_late_ms=max(late_ns, default=0) / 1e6,
        errors=len(errors),
        first_error=run.errors[errors[0]] if errors else None,
        latency=Latency.of([run.done[r] - run.due[r] for r in answered], s.percentiles),
        send_latency=Latency.of([run.done[r] - run.sent[r] for r in answered]),
        connections=connections,
        classes=classes,
    )
