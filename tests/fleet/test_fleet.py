"""The Deployment's semantics on a local fleet: real Tritons with the rendered args, a readiness-aware router,
the rolling update played as the Deployment controller plays it, and every request counted.

Pods, endpoints and router: tests/fleet/pods.py, endpoints.py; the rollout: controller.py; the load:
load.py; the timings (scaled down) and the autoscaler's metric: harness.py. `make fleet` runs the same with
3 replicas, longer, and writes docs/scale-out.md.
"""

from __future__ import annotations

import time

import pytest

from fleet.harness import PROPAGATION, Harness, MetricSampler
from fleet.load import Load, Outcome, summary
from fleet.world import World

pytestmark = pytest.mark.slow


def _failures(outcomes: list[Outcome]) -> dict[str, object]:
    return summary(outcomes)["reasons"]  # type: ignore[return-value]


def test_a_rollout_to_a_new_release_and_back_fails_no_request(fleet_on_old: Harness, world: World) -> None:
    harness = fleet_on_old
    with Load(harness.router, world) as load:
        forward = harness.fleet.rollout(harness.spec(world.new))
        # back at once, as a `kubectl rollout undo` would be: the forward's old pods may still be terminating
        back = harness.fleet.rollout(harness.spec(world.old))
        harness.fleet.settle()  # at least the preStop pause (3 s) after the router was told the last pod left
    outcomes = load.snapshot()

    assert not forward.stalled
    assert not back.stalled
    assert _failures(outcomes) == {}
    # the router's release is the one whose model answered, request by request
    assert all(o.answered_by == o.release for o in outcomes)
    assert {o.answered_by for o in outcomes[:50]} == {world.old.id}
    # once the rollout has ended (every old pod deleted, the router told; some may still be in their preStop
    # pause), only the new release answers, until the way back's first pod is Ready
    cut = forward.started + (forward.complete_after or 0) + PROPAGATION
    after_forward = [o for o in outcomes if cut < o.at < back.started + back.ready_after[0]]
    assert after_forward
    assert {o.answered_by for o in after_forward} == {world.new.id}
    assert {o.answered_by for o in outcomes[-50:]} == {world.old.id}
    assert all(e.endswith("after SIGTERM") for e in forward.endings + back.endings), "no pod SIGKILLed"
    assert len(forward.endings + back.endings) == 2 * harness.replicas


def test_a_release_whose_model_fails_to_load_never_takes_traffic(fleet_on_old: Harness, world: World) -> None:
    harness = fleet_on_old
    old_pods = list(harness.fleet.pods)
    with Load(harness.router, world) as load:
        # longer than a good pod's start (about 17 s here, more on a busy machine): the broken pod has time to
        # start, fail to parse its config and be restarted, so the stall is the release's, not the clock's
        stalled = harness.fleet.rollout(harness.spec(world.broken), progress_deadline=30)
        broken = [p for p in harness.fleet.pods if p.release == world.broken.id]
        time.sleep(1)
    outcomes = load.snapshot()

    assert stalled.stalled
    assert stalled.ready_after == []
    assert len(broken) == 1  # one surge pod: maxSurge 1 holds, and maxUnavailable 0 kept every old pod
    assert [p for p in harness.fleet.pods if p.release == world.old.id] == old_pods
    assert not harness.endpoints.ever(broken[0])
    assert "failed to read text proto" in broken[0].server.errors()  # Triton exits: the pod crash-loops
    assert broken[0].restarts >= 1
    assert _failures(outcomes) == {}
    assert {o.answered_by for o in outcomes} == {world.old.id}
    # rolling back to the old template deletes the pod that never became Ready
    assert not harness.fleet.rollout(harness.spec(world.old)).stalled
    assert {p.release for p in harness.fleet.pods} == {world.old.id}


def test_the_autoscaling_metric_rises_under_load_and_falls_after(fleet_on_old: Harness, world: World) -> None:
    # Triton counts requests and their queue time as each one completes (not each --metrics-interval-ms), so
    # 1 s windows see the load; windows are told apart by when their scrapes were taken, not by their index
    harness, window = fleet_on_old, 1.0
    with MetricSampler(harness.fleet, window=window) as sampler:
        time.sleep(2.5 * window)
        with Load(harness.router, world, threads=8, think=0) as load:
            began = time.monotonic() - sampler.started
            time.sleep(5 * window)
        ended = time.monotonic() - sampler.started  # every answer is in
        time.sleep(3.5 * window)
    samples = sampler.samples
    idle_before = [s for s in samples if s.at < began]
    busy = [s for s in samples if s.since > began + window / 4 and s.at < ended]  # the load warmed up
    idle_after = [s for s in samples if s.since > ended + 0.2]
    timeline = f"load {began:.2f}-{ended:.2f} s, windows {[(round(s.since, 2), round(s.at, 2)) for s in samples]}"

    assert len(idle_before) >= 2, timeline
    assert len(busy) >= 3, timeline
    assert len(idle_after) >= 2, timeline
    assert _failures(load.snapshot()) == {}
    assert all(s.requests == 0 and s.queue_us == 0 for s in idle_before + idle_after), timeline
    assert all(s.requests > 0 for s in busy), timeline
    assert min(s.queue_us for s in busy) > 0, timeline


def test_the_control_sigterm_without_a_prestop_pause_fails_requests(fleet_on_old: Harness, world: World) -> None:
    """The harness can catch failures: a pod deleted with no preStop pause gets SIGTERM while the router still
    sends it requests (for the propagation delay). Last in the file: the fleet is one pod short after it."""
    harness = fleet_on_old
    with Load(harness.router, world) as load:
        time.sleep(1)
        harness.fleet.delete(harness.fleet.pods[0], prestop=0)
        time.sleep(PROPAGATION + 0.5)  # the router sends it requests until it hears; the pod ends in teardown
    reasons = _failures(load.snapshot())

    assert sum(reasons.values()) > 0  # type: ignore[call-overload]
    assert "no pod in the router's view" not in reasons
