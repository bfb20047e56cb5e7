"""The benchmark's open-loop rows: Poisson arrivals at rates found from the measured capacity, and the
saturated priority row.

Each row drives one served config with :func:`nexus.loadtest.openloop.run_open_loop`: requests
arrive at the offered rate whatever the server does, and each latency runs from the request's
*scheduled* send time, so queueing in front of the server is counted (a closed loop hides it by
sending less). Triton's statistics before and after the measured window give the server-side split
of the same requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from _bench_client import StatsDelta
from _bench_cpu import CpuSnapshot, CpuUse
from _bench_models import Reference
from nexus.loadtest.openloop import OpenLoopResult, OpenLoopSettings, PriorityShare, run_open_loop
from nexus.serving.admin import TritonAdmin
from nexus.serving.server import TritonServer
from nexus.tune.rates import estimate_capacity

#: Offered rates as shares of the measured capacity: from about 2 % of saturation up to saturation.
FRACTIONS = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
QUICK_FRACTIONS = (0.05, 0.5, 1.0)
#: The share of the priority row's requests sent at the top priority.
TOP_SHARE = 0.05
#: The priority rows' offered rate over their server's capacity. Priorities only reorder what waits in
#: Triton's queue, and at the capacity itself the queue rarely holds more than the next batch (then
#: everyone is in it, whatever its priority): the rows overload the server so that a backlog builds, and
#: let the client open enough connections that the backlog waits in Triton, not in the client.
PRIORITY_LOAD = 1.3
#: The most connections the priority rows open (fewer where the open-file limit is lower). Every request
#: of the backlog holds one; a backlog beyond them waits in the client, where no priority reaches it.
PRIORITY_CONNECTIONS = 12288
#: The share of those connections the backlog may fill: a row's window is shortened to keep it there.
BACKLOG_ROOM = 0.75
#: The shortest measured window of a priority row.
PRIORITY_MIN_SECONDS = 2.0
#: The first overload burst that finds a priority config's open-loop capacity, over its closed-loop one.
PRIORITY_BURST = 1.6
#: At most this share of a priority row's requests may go out late for the row to show priorities.
LATE_SHARE = 0.05
#: The models whose priority rows are measured. The CNN's smaller server serves 3,000-3,600 req/s open
#: loop here, and 1.3x that is well above the ~2,500 req/s this client keeps to beside Triton on two
#: cores (the open-loop rows' late sends); a trial on 2026-12-07 offered 4,672 req/s and sent 9,059 of
#: 23,684 requests late (the bursts' backlogs were not yet drained then). The MLP's serves about 1,000.
PRIORITY_MODELS = ("mlp",)
NO_PRIORITY_ROWS = (
    "Priorities are measured on the MLP only: this model's smaller server serves 3,000-3,600 req/s open loop "
    "here, and an overload of it is well above the rate this client keeps to beside Triton on two cores (a "
    "trial offering 4,672 req/s on 2026-12-07 sent 9,059 of 23,684 requests late), so the backlog would wait "
    "in the client, where no priority reaches it."
)
#: The issue's bound on the default's open-loop p99 over the best config at the same rate.
OPEN_MARGIN = 1.10
#: The config whose open-loop p99 is held to :data:`OPEN_MARGIN` (NexusML's default).
DEFAULT = "adaptive"


@dataclass
class OpenRow:
    model: str
    config: str
    #: The offered rate as a share of the capacity it was derived from.
    fraction: float
    offered: float
    achieved: float
    late: int
    errors: int
    p50: float
    p90: float
    p99: float
    avg_batch: float
    stats: StatsDelta
    cpu: CpuUse
    #: Every round's p99 when the rate was measured again in rounds (this row is the median round's).
    p99_rounds: tuple[float, ...] = ()

    def summary(self) -> str:
        s = self.stats
        return (
            f"{self.model:4} {self.config:10} open {self.fraction:4.0%} offered {self.offered:7,.0f} "
            f"achieved {self.achieved:7,.0f} req/s  late {self.late}  errors {self.errors}  "
            f"p50 {self.p50:7.2f}  p90 {self.p90:7.2f}  p99 {self.p99:7.2f} ms  batch {self.avg_batch:5.1f}  "
            f"queue {s.queue_ms:.3f}  in {s.input_ms:.3f}  infer {s.infer_ms:.3f}  out {s.output_ms:.3f} ms  "
            f"other {self.cpu.other:.0%}"
        )


@dataclass
class PriorityRow:
    """One saturated open-loop run with a share of the requests at the top priority."""

    model: str
    config: str
    #: This config's own closed-loop throughput at the highest concurrency (for the table).
    capacity: float
    #: What it served open loop when offered more (:func:`open_capacity`); the offered rate is
    #: PRIORITY_LOAD times the higher one's.
    served_open: float
    offered: float
    achieved: float
    #: The measured window (s): shortened where the backlog would outgrow the client's connections.
    seconds: float
    sent: int
    late: int
    #: p99 of the top-priority share and of the rest (ms); with no priorities sent, the same share's.
    top_p99: float
    rest_p99: float
    top_requests: int
    errors: int

    def summary(self) -> str:
        return (
            f"{self.model:4} {self.config:14} overloaded {self.offered:7,.0f} req/s offered for {self.seconds:.1f} s, "
            f"{self.achieved:7,.0f} achieved, {self.late} of {self.sent} late  top {TOP_SHARE:.0%} p99 "
            f"{self.top_p99:8.2f} ms  rest p99 {self.rest_p99:8.2f} ms  errors {self.errors}"
        )


def priorities_shown(marked: PriorityRow, control: PriorityRow) -> tuple[bool, str]:
    """Whether the two rows show priorities at work, and if not, why.

    They do when both were overloaded in Triton (the client kept its schedule, and the control served
    less than it was offered) and the marked share was served well ahead: under half the rest's p99 and
    half the same share's without priorities.
    """
    for row in (marked, control):
        if row.late > LATE_SHARE * max(row.sent, 1):
            return False, (
                f"the client sent {row.late:,} of {row.sent:,} requests late on {row.config}, so the backlog waited "
                "in the client, where no priority reaches it"
            )
    if control.achieved >= 0.95 * control.offered:
        return False, f"without priorities the server kept up ({control.achieved:,.0f} of {control.offered:,.0f} req/s)"
    if marked.top_p99 >= 0.5 * min(marked.rest_p99, control.top_p99):
        return False, "the marked share was not served ahead of the rest"
    return True, "shown"


def against_best(rows: list[OpenRow]) -> tuple[float, OpenRow, OpenRow] | None:
    """At one rate (``rows``): the default's p99 over the best config's, the default's row and the best's,
    among the rows answered without errors; None when the default is not among them."""
    answered = [r for r in rows if r.errors == 0]
    default = next((r for r in answered if r.config == DEFAULT), None)
    if default is None:
        return None
    best = min(answered, key=lambda r: r.p99)
    return default.p99 / best.p99, default, best


def default_misses(rows: list[OpenRow]) -> bool:
    """Whether the default's p99 is over :data:`OPEN_MARGIN` times the best at one rate (``rows``)."""
    compared = against_best(rows)
    return compared is not None and compared[0] > OPEN_MARGIN


def median_round(rounds: list[OpenRow]) -> OpenRow:
    """One config's rows at one rate, measured in rounds: the median round's, with every round's p99."""
    ranked = sorted(rounds, key=lambda r: r.p99)
    return replace(ranked[len(ranked) // 2], p99_rounds=tuple(r.p99 for r in rounds))


def rates(capacity: float, fractions: tuple[float, ...]) -> list[tuple[float, float]]:
    """(fraction, requests/s) for each share of ``capacity``."""
    return [(f, capacity * f) for f in fractions]


def _settings(
    server: TritonServer, reference: Reference, model: str, rate: float, warmup: float, seconds: float
) -> OpenLoopSettings:
    x = np.random.default_rng(0).standard_normal((1, *reference.sample_shape)).astype(np.float32)
    return OpenLoopSettings(
        server=f"{server.host}:{server.http_port}",
        model=model,
        inputs={"x": x},
        outputs=["y"],
        output_bytes=4 * reference.outputs,
        rate=rate,
        duration=seconds,
        warmup=warmup,
    )


def measure_open(
    server: TritonServer,
    reference: Reference,
    config: str,
    fraction: float,
    rate: float,
    warmup: float,
    seconds: float,
) -> OpenRow:
    model = f"{reference.name}_{config}"
    settings = _settings(server, reference, model, rate, warmup, seconds)
    admin = TritonAdmin(server.url)
    before, cpu_before = admin.stats(model), CpuSnapshot.take(server.pid)
    result = run_open_loop(settings)
    cpu_after, after = CpuSnapshot.take(server.pid), admin.stats(model)
    # the warm-up's requests are in Triton's counters too: the split is per request, so it still holds
    stats = StatsDelta.between(before, after)
    row = OpenRow(
        model=reference.name,
        config=config,
        fraction=fraction,
        offered=result.offered_rate,
        achieved=result.achieved_rate,
        late=result.late,
        errors=result.errors,
        p50=result.latency.p50,
        p90=result.latency.p90,
        p99=result.latency.p99,
        avg_batch=stats.avg_batch,
        stats=stats,
        cpu=CpuUse.between(cpu_before, cpu_after, max(result.completed, 1)),
    )
    print(row.summary(), flush=True)
    return row


def open_capacity(
    server: TritonServer,
    reference: Reference,
    config: str,
    rate: float,
    warmup: float,
    seconds: float,
    connections: int,
    tries: int = 3,
) -> float:
    """What ``config`` serves open loop when offered more than it can take: the achieved rate of a burst at
    ``rate``, doubled while nearly all of it came back (at most ``tries`` bursts).

    A closed loop can misjudge it either way: it sends less while answers are slow (the CNN's small server,
    2,290 req/s closed loop against 3,011 open loop on 2026-12-07), or far less when Triton's batcher idles
    a lone instance between requests (106 against 928 for the MLP with priority levels).
    """

    def burst(offered: float) -> float:
        settings = replace(
            _settings(server, reference, f"{reference.name}_{config}", offered, warmup, seconds),
            max_connections=connections,
        )
        result = run_open_loop(settings)
        drained = wait_drained(server, settings.model)
        print(
            f"{reference.name:4} {config:14} burst {offered:7,.0f} req/s offered, {result.achieved_rate:7,.0f} "
            f"achieved (its backlog drained in {drained:.1f} s)",
            flush=True,
        )
        return result.achieved_rate

    return estimate_capacity(burst, rate, tries, growth=2.0, kept=0.9)


def wait_drained(server: TritonServer, model: str, settle: float = 1.0, limit: float = 120.0) -> float:
    """Wait until Triton has executed what is queued for ``model``: its request counts hold still for
    ``settle`` seconds (at most ``limit``); the seconds waited. An overloaded run leaves a backlog: a request
    the client gave up on (its timeout) is still in Triton's queue, and executing it takes the cores the next
    measurement needs."""
    admin = TritonAdmin(server.url)
    began = time.monotonic()
    last = admin.stats(model)
    while time.monotonic() - began < limit:
        time.sleep(settle)
        now = admin.stats(model)
        if (now.success, now.failure) == (last.success, last.failure):
            break
        last = now
    return time.monotonic() - began


def priority_window(offered: float, slowest: float, warmup: float, seconds: float, connections: int) -> float:
    """The priority rows' measured window: ``seconds``, shortened so that the backlog of the slower config
    (``offered - slowest`` requests a second over warm-up and window) stays within :data:`BACKLOG_ROOM` of
    the client's connections, but never under :data:`PRIORITY_MIN_SECONDS`."""
    growth = max(offered - slowest, 1.0)
    fits = BACKLOG_ROOM * connections / growth - warmup
    return max(PRIORITY_MIN_SECONDS, min(seconds, fits))


def measure_priority(
    server: TritonServer,
    reference: Reference,
    config: str,
    capacity: float,
    served_open: float,
    offered: float,
    warmup: float,
    seconds: float,
    connections: int,
    top: bool,
) -> PriorityRow:
    """An overloaded run at ``offered`` req/s with :data:`TOP_SHARE` of the requests marked: at priority 1
    when ``top``, else with no priority at all (the control: the same share, the same schedule).
    ``capacity`` and ``served_open`` are the config's own closed- and open-loop throughputs, for the table."""
    model = f"{reference.name}_{config}"
    base = _settings(server, reference, model, offered, warmup, seconds)
    marked = PriorityShare(TOP_SHARE, 1 if top else 0)
    settings = replace(base, mix=(marked,), max_connections=connections)
    result = run_open_loop(settings)
    wait_drained(server, model)
    top_class, rest = _classes(result)
    row = PriorityRow(
        model=reference.name,
        config=config,
        capacity=capacity,
        served_open=served_open,
        offered=result.offered_rate,
        achieved=result.achieved_rate,
        seconds=seconds,
        sent=result.sent,
        late=result.late,
        top_p99=top_class,
        rest_p99=rest,
        top_requests=result.classes[1].completed if len(result.classes) > 1 else 0,
        errors=result.errors,
    )
    print(row.summary(), flush=True)
    return row


def _classes(result: OpenLoopResult) -> tuple[float, float]:
    """p99 of the marked share and of the rest."""
    rest, marked = result.classes[0], result.classes[1]
    return marked.latency.p99, rest.latency.p99
