"""The highest open-loop rate a configuration serves under a latency target: capacity first, then a log-scale bisection.

Pure functions over a measuring callback (one open-loop window at a rate -> :class:`Probe`), so they are
tested without a server. The design:

1. **Capacity.** A short burst offered far above what the server can do, with as many connections as
   the configuration can keep busy (twice instances x max batch size, as Model Analyzer sizes its
   concurrency); what comes back per second is the capacity. When everything offered came back, the
   burst was not above capacity, and it is repeated at 4x the rate (at most 3 times).
2. **Bisection** on a log scale between ``floor`` (2 %) of the capacity and the capacity. A rate
   *passes* when the chosen percentile is under the target, nothing failed, what came back is what was
   scheduled in the window (short by at most the requests still in flight at its end) and at most 5 % of
   the sends were late (by a quarter of the target: the client could not keep up; latency counts from the
   schedule anyway). The
   search probes ``first`` (the capacity, or a caller's hint), then the floor if nothing passed yet
   (failing there twice, the configuration serves nothing under the target), the capacity if nothing failed
   yet, and then the geometric middle of the highest passing and lowest failing rates, until they are
   within ``resolution`` (5 %) of each other or ``max_probes`` windows are spent.
   **A failure is confirmed**: a window that fails below the capacity is measured once more at the same
   rate, and the rate fails only if both fail. On a shared machine one scheduling pause fails a high
   percentile's window, and a bisection that took it for the limit never came back above it
   (docs/tuning.md measured the same configuration's rate moving 1,753 -> 1,066 req/s that way). Each
   real failure costs one more window; a pause costs one window instead of the rest of the search.
   **Above the capacity**: when the capacity itself passes, the search steps above it (``above``) by
   twice ``resolution`` (10 %; 20 % with ``--quick``) until a window fails, and bisects that step. A
   burst is short and comes right after a load; at a loose target nearly every configuration passed its
   own, so its served rate was one burst's figure, and bursts of one configuration moved 3,952-6,250
   req/s within a minute (docs/tuning.md, 2026-12-07).
3. **Pruning.** A neighbour in the hill climb only matters if it beats the current best by the climb's
   5 %; its search starts at that rate (the hint), and if it fails there only ``coarse`` more windows
   place it: first at the ``fallback`` (the best's rate less the 5 %), then between the two. Passing the
   fallback, it ties the best within the climb's gain, and the tuner measures it again beside the best
   (one search at this width cannot step by 5 %: two configurations measured 4-18 % apart in one grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Probe:
    """One open-loop window at an offered rate, and what Triton said about it.

    Attributes:
        achieved: good answers per second that arrived within the window.
        latency_ms: the target's percentile of the latency from each request's scheduled time.
        avg_batch: requests per executed batch over the window, from Triton's statistics.
        scheduled: requests the seeded draw placed in the window (None: not known, ``offered x seconds``
            stands for it).
    """

    offered: float
    achieved: float
    seconds: float
    sent: int
    late: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    latency_ms: float
    avg_batch: float | None = None
    first_error: str | None = None
    scheduled: int | None = None


def passes(probe: Probe, target_ms: float, late_share: float = 0.05) -> bool:
    """Served under the target: percentile under ``target_ms``, no errors, all scheduled came back, few late sends.

    The answers counted in a window and the requests scheduled in it differ by those in flight at its two
    ends: answers to warm-up requests arrive after it starts, and requests due near its end are answered
    after it. When the target is met, each end holds about ``rate x target`` of them. Without the scheduled
    count, the offered rate's mean stands in, with three Poisson standard deviations of slack: every window
    at a rate reuses one seeded draw, so at low rates that mean can sit well off what was really sent (7-17 %
    under it at the low rates of one run on 2026-12-02).
    """
    if probe.scheduled is not None:
        expected = float(probe.scheduled)
        in_flight = probe.offered * target_ms / 1e3
        shortfall = in_flight + 3 * math.sqrt(in_flight) + 2
    else:
        expected = probe.offered * probe.seconds
        shortfall = 3 * math.sqrt(expected) + 2  # three standard deviations of a Poisson count, and rounding
    return (
        probe.errors == 0
        and probe.latency_ms <= target_ms
        and probe.achieved * probe.seconds >= expected - shortfall
        and probe.late <= late_share * max(probe.sent, 1)
    )


def estimate_capacity(
    burst: Callable[[float], float], start_rate: float, tries: int = 3, *, growth: float = 4.0, kept: float = 0.8
) -> float:
    """Requests per second the server answers when offered more than it can take (see the module docstring).

    Args:
        burst: offers a rate for a short window and returns the rate that came back.
        growth: the next burst's rate when at least ``kept`` of this one came back (it was not above capacity).
    """
    rate, best = start_rate, 0.0
    for _ in range(tries):
        achieved = burst(rate)
        best = max(best, achieved)
        if achieved < kept * rate:
            break
        rate *= growth
    return best


@dataclass
class RateSearch:
    """The probes of one search; ``served`` is the highest passing one (None: nothing passed)."""

    probes: list[Probe] = field(default_factory=list)
    served: Probe | None = None
    #: Stopped short after failing the hint (a neighbour that cannot win): ``served`` is a lower bound.
    coarse: bool = False

    @property
    def rate(self) -> float:
        return self.served.offered if self.served is not None else 0.0


def rate_search(
    measure: Callable[[float], Probe],
    ok: Callable[[Probe], bool],
    capacity: float,
    *,
    first: float | None = None,
    floor: float = 0.02,
    resolution: float = 0.05,
    max_probes: int = 9,
    coarse: int | None = None,
    fallback: float | None = None,
    above: int = 0,
    confirm: bool = True,
) -> RateSearch:
    """The highest rate between ``floor * capacity`` and ``capacity`` that passes ``ok``.

    Args:
        measure: one window at a rate.
        first: the first rate to try (default the capacity); with ``coarse``, a rate that only matters if
            passed: failing it, at most ``coarse`` more windows are spent.
        fallback: with ``coarse`` and ``first``, the rate tried after ``first`` failed, before the floor (the
            best's rate less the climb's gain: whether the configuration is within reach of the best).
        above: when ``capacity`` itself passes, step above it, twice ``resolution`` at a time, at most this
            many steps: the burst's figure is no upper bound of what the configuration sustains.
        confirm: measure a rate that failed between the floor and ``capacity`` once more before taking it as
            failed (the second window counts against ``max_probes`` too).
    """
    result = RateSearch()
    if capacity <= 0:
        return result
    low, top = capacity * floor, capacity
    good: Probe | None = None
    bad: float | None = None
    budget = max_probes
    hint = first if first is not None and low < first < top else None
    fall = None
    if hint is not None and coarse is not None and fallback is not None and low < fallback < hint:
        fall = fallback
    ceiling = top * (1 + 2 * resolution) ** above * (1 + 1e-9)
    tried: list[float] = []
    while len(result.probes) < budget:
        if not result.probes:
            rate = hint if hint is not None else top
        elif good is None and fall is not None and fall not in tried:
            rate = fall
        elif good is None:
            if fall is not None and tried.count(fall) >= 2:  # within reach of the best it is not
                break
            if tried.count(low) >= 2:  # failing at the floor ends the search; one hiccup must not
                break
            rate = low
        elif bad is None:
            if top not in tried:
                rate = top
            elif good.offered * (1 + 2 * resolution) <= ceiling:
                rate = good.offered * (1 + 2 * resolution)
            else:
                break
        else:
            if bad <= good.offered * (1 + resolution):
                break
            rate = math.sqrt(good.offered * bad)
        tried.append(rate)
        probe = measure(rate)
        result.probes.append(probe)
        if confirm and not ok(probe) and low < rate < top and len(result.probes) < budget:
            tried.append(rate)
            probe = measure(rate)  # a second window: one pause of the machine must not set the limit
            result.probes.append(probe)
        if ok(probe):
            if good is None or probe.offered > good.offered:
                good = probe
        elif bad is None or rate < bad:
            bad = rate
        if set(tried) == {hint} and coarse is not None and good is None:  # the hint failed (confirmed)
            budget, result.coarse = len(result.probes) + coarse, True
    result.served = good
    return result
