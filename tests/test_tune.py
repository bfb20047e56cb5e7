"""`nexus tune`: the hill climb and the rate search on synthetic surfaces, targets as typed, the record that
`nexus publish` serves from, and one quick run end to end against a real Triton."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from helpers import GitRepo
from nexus.cli import app
from nexus.errors import ServingRecordError, TuneError
from nexus.registry import Project
from nexus.registry.metadata import ModelVersion
from nexus.serving.model_config import ServingOptions, parse_config, read_serving
from nexus.serving.publish import publish
from nexus.serving.tuned import SERVING_FILE, record, recorded_options
from nexus.tensors import Signature, TensorSpec
from nexus.tune.rates import Probe, estimate_capacity, passes, rate_search
from nexus.tune.results import Contender, Evaluation, Machine, Spread, TuneResult, choose, serpentine
from nexus.tune.run import measure_again
from nexus.tune.search import hill_climb, neighbours
from nexus.tune.space import FULL_SPACE, QUICK_SPACE, canonical, grid, start_point
from nexus.tune.target import Target, parse_latency, parse_target, target_from_options

MLP_SIGNATURE = Signature([TensorSpec("x", "float32", [-1, 4])], [TensorSpec("y", "float32", [-1, 3])])

# --- the hill climb ---------------------------------------------------------------------------


class Counted:
    """A synthetic score that counts its calls."""

    def __init__(self, surface: Any) -> None:
        self.surface, self.calls = surface, 0

    def __call__(self, point: dict[str, Any]) -> float:
        self.calls += 1
        return float(self.surface(point))


def peak(optimum: dict[str, Any], falloff: float = 0.7) -> Any:
    """A unimodal surface over FULL_SPACE: 1000 at ``optimum``, x ``falloff`` per grid step away along any dimension."""

    def surface(point: dict[str, Any]) -> float:
        steps = sum(abs(list(v).index(point[n]) - list(v).index(optimum[n])) for n, v in FULL_SPACE.items())
        return 1000 * falloff**steps

    return surface


START = {"instances": 2, "max_batch_size": 32, "policy": "adaptive", "max_queue_delay_us": 10_000}


def test_the_climb_finds_the_optimum_of_a_unimodal_surface_measuring_a_fraction_of_the_grid() -> None:
    optimum = {"instances": 4, "max_batch_size": 2, "policy": "window", "max_queue_delay_us": 500}
    score = Counted(peak(optimum))

    climb = hill_climb(FULL_SPACE, START, score)

    assert climb.best == optimum
    assert climb.best_score == 1000
    assert climb.stopped == "converged"
    assert climb.path[0] == START
    assert climb.path[-1] == optimum
    assert score.calls == climb.evaluations < 504 / 4
    assert len({tuple(sorted(p.items())) for p, _ in climb.scores}) == climb.evaluations  # none measured twice


def test_the_climb_stops_when_no_neighbour_gains_five_percent() -> None:
    # every step towards the optimum gains 3%: not worth a move
    score = Counted(peak({"instances": 4, "max_batch_size": 1, "policy": "window", "max_queue_delay_us": 0}, 1 / 1.03))

    climb = hill_climb(FULL_SPACE, START, score, min_gain=0.05)

    assert climb.best == START
    assert climb.stopped == "converged"
    assert score.calls == 1 + len(neighbours(FULL_SPACE, START))
    assert hill_climb(FULL_SPACE, START, Counted(score.surface), min_gain=0.02).best != START


def test_the_climb_spends_no_more_than_its_budget() -> None:
    optimum = {"instances": 4, "max_batch_size": 1, "policy": "window", "max_queue_delay_us": 0}
    score = Counted(peak(optimum))
    climb = hill_climb(FULL_SPACE, START, score, max_evaluations=5)
    assert (score.calls, climb.evaluations, climb.stopped) == (5, 5, "budget")
    assert climb.best_score == max(s for _, s in climb.scores)

    clock = Counted(peak(optimum))
    stopped = hill_climb(FULL_SPACE, START, clock, keep_going=lambda: clock.calls < 3)
    assert (clock.calls, stopped.stopped) == (3, "budget")


def test_adaptive_configurations_differing_only_in_delay_are_measured_once() -> None:
    target = Target(99, 20)
    score = Counted(lambda p: 100 + p["max_batch_size"])
    start = start_point(QUICK_SPACE, target, ServingOptions(), _version())
    climb = hill_climb(QUICK_SPACE, start, score, canonical=lambda p: canonical(p, QUICK_SPACE, target))
    adaptive = [p for p, _ in climb.scores if p["policy"] == "adaptive"]
    assert {p["max_queue_delay_us"] for p in adaptive} == {20_000}
    assert len(grid(QUICK_SPACE, target)) == 3 * 4 * (1 + 4)


def _version() -> Any:
    from nexus.registry.metadata import ModelVersion

    return ModelVersion("m", 1, "0" * 40, "file:///x", True, "0" * 64, 10, "torchscript", "t", "a")


# --- the rate search --------------------------------------------------------------------------


def server(limit: float, capacity: float = 1000.0, calls: list[float] | None = None) -> Any:
    """A synthetic server: meets the target up to ``limit`` requests/s, answers up to ``capacity``."""

    def measure(rate: float) -> Probe:
        if calls is not None:
            calls.append(rate)
        achieved = min(rate, capacity)
        latency = 5.0 if rate <= limit else 50.0
        return Probe(rate, achieved, 1.0, int(rate), 0, 0, latency, latency, latency, latency)

    return measure


def test_the_rate_search_brackets_the_highest_rate_under_the_target_within_its_resolution() -> None:
    calls: list[float] = []
    found = rate_search(server(437, calls=calls), lambda p: passes(p, 20), 1000, resolution=0.05, max_probes=14)
    assert found.served is not None
    assert 437 / 1.05 <= found.rate <= 437
    assert calls[:2] == [1000, 20]  # the capacity first, then the floor
    assert len(set(calls)) <= 10


def test_the_rate_search_stops_at_once_when_the_capacity_passes_or_the_floor_fails() -> None:
    calls: list[float] = []
    assert rate_search(server(5000, calls=calls), lambda p: passes(p, 20), 1000).rate == 1000
    assert calls == [1000]
    calls.clear()
    assert rate_search(server(1, calls=calls), lambda p: passes(p, 20), 1000).rate == 0
    assert calls == [1000, 20, 20]  # the floor is tried twice before the search gives up


def test_a_capacity_that_passes_is_no_ceiling_the_search_steps_above_it() -> None:
    # the burst said 1000; the configuration sustains 1180 under the target
    calls: list[float] = []
    found = rate_search(server(1180, 5000, calls), lambda p: passes(p, 20), 1000, above=3)
    assert calls[:3] == pytest.approx([1000, 1100, 1210])  # 10 % steps (twice the resolution) until one fails
    assert 1180 / 1.05 <= found.rate <= 1180  # then bisected to the resolution
    assert len(calls) == 4
    # at most ``above`` steps: 1000 * 1.1 ** 3 = 1331 is the last rate tried
    calls.clear()
    found = rate_search(server(5000, 5000, calls), lambda p: passes(p, 20), 1000, above=3)
    assert calls == pytest.approx([1000, 1100, 1210, 1331])
    assert found.rate == pytest.approx(1331)
    # a failure above the capacity is not confirmed: failing there is what is expected
    calls.clear()
    found = rate_search(server(1000, 5000, calls), lambda p: passes(p, 20), 1000, above=3)
    assert calls == pytest.approx([1000, 1100, math.sqrt(1000 * 1100)])
    assert found.rate == 1000


def test_a_configuration_that_fails_the_rate_it_must_beat_gets_only_a_coarse_search() -> None:
    calls: list[float] = []
    found = rate_search(server(300, calls=calls), lambda p: passes(p, 20), 1000, first=600, coarse=2)
    assert found.coarse
    assert calls[:2] == [600, 600]  # the rate to beat, failed twice (confirmed)
    assert len(calls) == 4
    assert found.rate <= 300


def test_a_neighbour_that_fails_the_rate_to_beat_is_tried_at_the_best_less_the_gain_next() -> None:
    best, gain = 1000.0, 1.05
    # within reach: it serves up to 990, just under the best; the coarse windows say so
    calls: list[float] = []
    found = rate_search(
        server(990, 3000, calls), lambda p: passes(p, 20), 3000, first=best * gain, coarse=2, fallback=best / gain
    )
    assert found.coarse
    assert calls[:3] == [best * gain, best * gain, best / gain]  # failed twice, then the best less the gain
    assert len(calls) == 4  # the same windows as a coarse search without a fallback
    assert best / gain <= found.rate <= 990
    assert calls[3] == pytest.approx(best)  # between the two: does it tie the best itself?
    # out of reach: 300 fails the fallback twice and the coarse windows are spent; a lower bound of nothing
    calls.clear()
    found = rate_search(
        server(300, 3000, calls), lambda p: passes(p, 20), 3000, first=best * gain, coarse=2, fallback=best / gain
    )
    assert found.coarse
    assert found.rate == 0
    assert calls == [best * gain, best * gain, best / gain, best / gain]
    # a neighbour that passes the rate to beat gets the full search; the fallback plays no part
    calls.clear()
    found = rate_search(
        server(1500, 3000, calls), lambda p: passes(p, 20), 3000, first=best * gain, coarse=2, fallback=best / gain
    )
    assert not found.coarse
    assert found.rate >= 1500 / 1.05
    assert best / gain not in calls


def hiccups(limit: float, at: set[float], calls: list[float]) -> Any:
    """The synthetic server of :func:`server`, but the first window at each rate in ``at`` fails (a pause)."""
    steady = server(limit)

    def measure(rate: float) -> Probe:
        calls.append(rate)
        probe: Probe = steady(rate)
        if rate in at and calls.count(rate) == 1:
            return Probe(rate, rate, 1.0, int(rate), 0, 0, 5.0, 5.0, 400.0, 400.0)
        return probe

    return measure


def test_one_failing_window_below_the_limit_does_not_lower_the_rate_found() -> None:
    calls: list[float] = []
    # 20 passes, then the first window at the bisection's middle (141 req/s) hits a pause of the machine
    found = rate_search(hiccups(437, {math.sqrt(20 * 1000)}, calls), lambda p: passes(p, 20), 1000, max_probes=14)
    assert calls.count(math.sqrt(20 * 1000)) == 2  # measured again before it counted
    assert 437 / 1.05 <= found.rate <= 437


def test_without_confirmation_the_same_pause_sets_the_limit() -> None:
    calls: list[float] = []
    measure = hiccups(437, {math.sqrt(20 * 1000)}, calls)
    found = rate_search(measure, lambda p: passes(p, 20), 1000, max_probes=12, confirm=False)
    assert found.rate < math.sqrt(20 * 1000)  # what docs/tuning.md saw before the confirmation


def test_every_failure_between_floor_and_capacity_is_measured_twice_and_nothing_else_is() -> None:
    calls: list[float] = []
    found = rate_search(server(437, calls=calls), lambda p: passes(p, 20), 1000, resolution=0.05, max_probes=14)
    assert 437 / 1.05 <= found.rate <= 437
    assert calls.count(1000) == 1
    assert all(calls.count(r) == (2 if 437 < r < 1000 else 1) for r in calls)


class Reruns:
    """A session's re-measuring side: what it evaluated, each configuration's next served rates, and a clock."""

    def __init__(self, evaluations: list[Evaluation], rates: dict[int, list[float]], time_for: int = 99) -> None:
        self.evaluations, self.rates, self.time_for = evaluations, rates, time_for
        self.remeasured: list[ServingOptions] = []

    def remeasure(self, e: Evaluation) -> Evaluation:
        self.remeasured.append(e.options)
        return Evaluation(e.options, served=self.rates[e.options.max_batch_size].pop(0))

    def time_for_reruns(self, contenders: int, reruns: int) -> bool:
        return contenders <= self.time_for


def tune_result(searched: list[Evaluation], contenders: list[Contender]) -> TuneResult:
    winner = searched[0]
    version = ModelVersion("m", 1, "0" * 40, "file:///m", True, "0" * 64, 1, "torchscript", "", "")
    return TuneResult(
        "m", version, Target(99, 20), searched, winner, [], Spread((winner.served,)), None, "converged", 1.0,
        Machine("cpu", 2), "", contenders=contenders,
    )  # fmt: skip


def evaluations(*served: tuple[int, float, bool]) -> list[Evaluation]:
    """Evaluations told apart by max batch size: (max batch size, served, coarse)."""
    return [Evaluation(ServingOptions(max_batch_size=b), served=s, coarse=c) for b, s, c in served]


def test_the_search_best_and_near_ones_are_measured_again_and_the_highest_median_wins() -> None:
    found = evaluations((32, 1000, False), (16, 950, False), (8, 700, False), (64, 900, True), (4, 850, False))
    session = Reruns(found, {32: [600, 610], 16: [940, 960], 64: [1010, 1020], 4: [800, 790]})

    contenders = measure_again(session, found[0], 2)  # type: ignore[arg-type]

    # within 80 % of the best: 950 and 900 (a coarse search's lower bound); 850 comes after them, 700 is too far
    assert [c.evaluation.served for c in contenders] == [1000, 950, 900]
    assert [c.spread.rates for c in contenders] == [(1000, 600, 610), (950, 940, 960), (900, 1010, 1020)]
    # one lucky window made 32 the search's best; the neighbour that only tied it within the gain wins
    assert choose(contenders).evaluation is found[3]
    # in rounds, back and forth, so that a drift of the machine's speed falls on every contender alike; the
    # search's last (4) is not a contender, so the rounds start with the search's best
    assert [o.max_batch_size for o in session.remeasured] == [32, 16, 64, 64, 16, 32]


def test_a_coarse_neighbour_below_the_bar_is_not_measured_again() -> None:
    # 700: what a coarse search placed between the floor and the fallback; not within reach of 1000
    found = evaluations((32, 1000, False), (64, 700, True), (4, 850, False))
    session = Reruns(found, {32: [990, 1000], 4: [800, 790]})
    contenders = measure_again(session, found[0], 2)  # type: ignore[arg-type]
    assert [c.evaluation.served for c in contenders] == [1000, 850]
    assert [o.max_batch_size for o in session.remeasured] == [4, 32, 32, 4]


def test_rounds_go_back_and_forth_so_a_steady_drift_falls_on_each_alike() -> None:
    assert serpentine("ABC", 3) == list("ABCCBAABC")
    assert serpentine("A", 2) == ["A", "A"]
    assert serpentine("AB", 0) == []
    # each item's mean position over an even number of rounds is the same: a linear drift is balanced
    order = serpentine("ABCD", 4)
    means = {x: sum(i for i, y in enumerate(order) if y == x) / 4 for x in "ABCD"}
    assert set(means.values()) == {7.5}
    # and each round begins where the one before ended: 12 changes of configuration, where A B C D, A B C D ... has 15
    assert sum(a != b for a, b in pairwise(order)) == 12


def test_the_frontier_table_marks_the_start_as_what_publish_renders_now() -> None:
    from rich.console import Console

    from nexus.cli.tune import frontier_table

    def rows(result: TuneResult) -> dict[str, str]:
        console = Console(width=200, record=True)
        console.print(frontier_table(result))
        lines = console.export_text().splitlines()
        return {served: next(line for line in lines if f" {served} " in line) for served in ("900", "1,000")}

    start, better = evaluations((32, 900, False), (16, 1000, False))
    beaten = rows(replace(tune_result([start, better], []), winner=better))
    assert "the start: what publish renders now" in beaten["900"]
    assert "winner" not in beaten["900"]
    assert "winner" in beaten["1,000"]
    assert "start" not in beaten["1,000"]
    kept = rows(tune_result([start, better], []))
    assert "winner, the start: what publish renders now" in kept["900"]


def test_the_contenders_are_as_many_as_the_budget_has_room_for_in_rounds() -> None:
    found = evaluations((32, 1000, False), (16, 950, False), (4, 850, False))
    session = Reruns(found, {32: [900, 910], 16: [990, 995], 4: [1, 2]}, time_for=2)
    contenders = measure_again(session, found[0], 2)  # type: ignore[arg-type]
    assert [c.evaluation for c in contenders] == found[:2]
    assert [o.max_batch_size for o in session.remeasured] == [32, 16, 16, 32]
    assert choose(contenders).evaluation is found[1]


def test_the_start_is_measured_again_beside_the_best_however_far_below_it_one_search_put_it() -> None:
    # the start (what publish serves now) searched at 400, far under the 80 % bar; 950 is near the best
    found = evaluations((32, 400, False), (64, 1000, False), (16, 950, False), (8, 900, False))
    session = Reruns(found, {64: [610, 600], 32: [990, 1010], 16: [700, 720]})

    contenders = measure_again(session, found[1], 2, incumbent=found[0])  # type: ignore[arg-type]

    # the start takes the first place beside the best, then the nearest; 900 no longer fits in CONTENDERS
    assert [c.evaluation for c in contenders] == [found[1], found[0], found[2]]
    assert [o.max_batch_size for o in session.remeasured] == [64, 32, 16, 16, 32, 64]
    assert choose(contenders).evaluation is found[0]  # the lucky challenger does not replace it


def test_the_start_is_not_measured_twice_when_it_is_the_best_nor_when_it_served_nothing() -> None:
    found = evaluations((32, 1000, False), (16, 950, False))
    session = Reruns(found, {32: [900, 910], 16: [990, 995]})
    contenders = measure_again(session, found[0], 2, incumbent=found[0])  # type: ignore[arg-type]
    assert [c.evaluation for c in contenders] == found
    failed = evaluations((32, 0, False), (16, 950, False))
    session = Reruns(failed, {16: [990, 995]})
    contenders = measure_again(session, failed[1], 2, incumbent=failed[0])  # type: ignore[arg-type]
    assert [c.evaluation for c in contenders] == [failed[1]]


def test_the_run_s_speed_is_every_search_s_reference_and_its_drift_the_slowest_over_the_fastest() -> None:
    searched = [
        Evaluation(ServingOptions(max_batch_size=b), served=100, reference_ms=r) for b, r in ((32, 2.0), (16, None))
    ]
    again = Contender(searched[0], [Evaluation(searched[0].options, served=90, reference_ms=3.0)])
    result = tune_result(searched, [again])
    assert result.speed is not None
    assert result.speed.rates == (2.0, 3.0)
    assert result.drift == pytest.approx(1.5)
    assert tune_result([Evaluation(ServingOptions())], []).speed is None


def test_only_the_search_best_is_measured_again_when_the_budget_has_no_room() -> None:
    found = evaluations((32, 1000, False), (16, 950, False))
    session = Reruns(found, {32: [900, 910], 16: [990, 995]}, time_for=1)
    contenders = measure_again(session, found[0], 2)  # type: ignore[arg-type]
    assert [c.evaluation for c in contenders] == [found[0]]
    assert len(session.remeasured) == 2
    assert choose(contenders).evaluation is found[0]


def test_capacity_is_what_comes_back_when_far_more_is_offered() -> None:
    calls: list[float] = []
    measure = server(0, capacity=3000, calls=calls)
    assert estimate_capacity(lambda rate: measure(rate).achieved, 1000) == 3000
    assert calls == [1000, 4000]


def test_capacity_bursts_grow_by_the_given_factor_while_enough_came_back() -> None:
    # the benchmark's open-loop capacity: doubled while 90 % came back
    calls: list[float] = []
    measure = server(0, capacity=3000, calls=calls)
    achieved = estimate_capacity(lambda rate: measure(rate).achieved, 1000, growth=2, kept=0.9)
    assert (achieved, calls) == (3000, [1000, 2000, 4000])
    # 3,000 of 3,500 came back (86 %): above capacity by the 90 % rule, not by the default 80 %
    calls.clear()
    assert estimate_capacity(lambda rate: measure(rate).achieved, 3500, growth=2, kept=0.9) == 3000
    assert calls == [3500]
    calls.clear()
    assert estimate_capacity(lambda rate: measure(rate).achieved, 3500) == 3000
    assert calls == [3500, 14000]


def test_a_probe_passes_only_without_errors_late_sends_or_a_shortfall() -> None:
    good = Probe(1000, 990, 2.0, 2000, 0, 0, 3, 5, 9, 9)
    assert passes(good, 10)
    assert not passes(good, 8)
    assert not passes(Probe(1000, 990, 2.0, 2000, 0, 1, 3, 5, 9, 9), 10)  # one error
    assert not passes(Probe(1000, 800, 2.0, 2000, 0, 0, 3, 5, 9, 9), 10)  # 20% short
    assert not passes(Probe(1000, 990, 2.0, 2000, 200, 0, 3, 5, 9, 9), 10)  # 10% late
    assert not passes(Probe(1000, 990, 2.0, 2000, 0, 0, 3, 5, math.nan, math.nan), 10)  # nothing answered


def test_a_probe_is_compared_with_what_its_draw_scheduled_not_with_the_offered_mean() -> None:
    # 50/s for 4 s is 200 requests on average; one seeded draw gives what it gives, in every window
    def window(scheduled: int, answered: int) -> Probe:
        return Probe(50, answered / 4.0, 4.0, scheduled, 0, 0, 3, 5, 9, 9, scheduled=scheduled)

    assert passes(window(150, 150), 20)  # the draw fell 25 % under the mean, and all of it came back
    assert passes(window(150, 146), 20)  # short by what a 20 ms target leaves in flight at the end
    assert not passes(window(240, 200), 20)  # 40 of 240 never came back, though 200 is the mean
    assert not passes(window(150, 140), 20)
    # without the count, the mean and three Poisson sigmas (44 requests) decide: both the other way round
    assert not passes(replace(window(150, 150), scheduled=None), 20)
    assert passes(replace(window(240, 200), scheduled=None), 20)


# --- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ms"), [("20ms", 20), ("0.02s", 20), ("500us", 0.5), ("1.5 ms", 1.5), ("2S", 2000)])
def test_latencies_are_read_in_ms_s_and_us(text: str, ms: float) -> None:
    assert parse_latency(text) == pytest.approx(ms)


def test_targets_are_read_as_an_option_per_percentile_or_one_general_form() -> None:
    assert parse_target("p95=15ms") == Target(95, 15)
    assert parse_target("P99<=0.02s") == Target(99, 20)
    assert target_from_options(None, p99="20ms") == Target(99, 20)
    assert str(Target(99, 20)) == "p99 ≤ 20 ms"
    for bad in ("p99", "99=20ms", "p100=1ms", "p99=fast"):
        with pytest.raises(TuneError, match=r"write"):
            parse_target(bad)
    with pytest.raises(TuneError, match="give one latency target"):
        target_from_options("p99=20ms", p90="5ms")


# --- the record, and publish ------------------------------------------------------------------

TUNED = ServingOptions(max_batch_size=8, max_queue_delay_us=2000, policy="window", instances=1)


def test_publish_serves_the_recorded_options_and_a_typed_option_overrides_just_that_one(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m", signature=MLP_SIGNATURE)
    record(project, "m", TUNED, {"target": {"percentile": 99.0, "ms": 20.0}})
    out = tmp_path / "repo"

    tuned = CliRunner().invoke(app, ["publish", "m", "-r", str(out)])

    assert tuned.exit_code == 0, tuned.output
    assert tuned.stdout.splitlines()[1] == (
        "  serving: 1 instance, batches of up to 8 in 2 ms windows (tuned for p99 ≤ 20 ms, .nexus_serving.json)"
    )
    assert read_serving(parse_config((out / "m/config.pbtxt").read_text()))[0] == TUNED

    typed = CliRunner().invoke(app, ["publish", "m", "-r", str(out), "--max-batch-size", "4"])

    assert typed.exit_code == 0, typed.output
    assert typed.stdout.splitlines()[1].endswith(
        "(tuned for p99 ≤ 20 ms, .nexus_serving.json; --max-batch-size as given)"
    )
    options = read_serving(parse_config((out / "m/config.pbtxt").read_text()))[0]
    assert options == ServingOptions(max_batch_size=4, max_queue_delay_us=2000, policy="window", instances=1)

    # the library too; and a model with no record gets the defaults
    publish(project, "m", repository=out)
    assert read_serving(parse_config((out / "m/config.pbtxt").read_text()))[0] == TUNED
    project.store(models["torchscript"], "other", signature=MLP_SIGNATURE)
    publish(project, "other", repository=out)
    assert read_serving(parse_config((out / "other/config.pbtxt").read_text()))[0] == ServingOptions()


def test_recording_keeps_other_models_and_replaces_the_file_atomically(repo: GitRepo) -> None:
    project = Project.open()
    record(project, "a", TUNED, {})
    record(project, "b", ServingOptions(instances=3), {"note": "x"})
    record(project, "a", ServingOptions(max_batch_size=16), {})
    data = json.loads((repo.root / SERVING_FILE).read_text())
    assert data["format"] == 1
    assert sorted(data["models"]) == ["a", "b"]
    assert recorded_options(project, "a") == ServingOptions(max_batch_size=16)
    assert recorded_options(project, "b") == ServingOptions(instances=3)
    assert [p.name for p in repo.root.iterdir() if p.name.startswith(".nexus_serving")] == [SERVING_FILE]


@pytest.mark.parametrize(
    "text",
    ["{not json", '{"format": 2, "models": {}}', '{"format": 1, "models": {"m": {"options": {"max_batch_size": "8"}}}}',
     '{"format": 1, "models": {"m": {"options": {"speed": 1}}}}',
     '{"format": 1, "models": {"m": {"options": {"max_batch_size": -1}}}}'],
)  # fmt: skip
def test_a_corrupt_serving_record_is_a_one_line_error_naming_the_file(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path, text: str
) -> None:
    project = Project.open()
    project.store(models["torchscript"], "m", signature=MLP_SIGNATURE)
    (repo.root / SERVING_FILE).write_text(text)
    with pytest.raises(ServingRecordError):
        recorded_options(project, "m")

    result = CliRunner().invoke(app, ["publish", "m", "-r", str(tmp_path / "repo")])

    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {repo.root / SERVING_FILE} is not a valid NexusML serving record (")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()


# --- bad input to the command -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["m", "--p99", "20"], "Error: cannot read the latency '20'; write a positive time with its unit: 20ms"),
        (["m", "--target", "fast"], "Error: cannot read the target 'fast'; write PERCENTILE=LATENCY"),
        (["m"], "Error: give one latency target, e.g. --p99 20ms"),
        (["m", "--p99", "20ms", "--budget", "0"], "Error: the duration '0' is not positive"),
        (["m", "--target", "p100=15ms"], "Error: the percentile p100 is not between 0 and 100"),
        (["nope", "--p99", "20ms"], "Error: no model named 'nope'"),
    ],
)
def test_bad_input_to_tune_is_a_one_line_error(
    repo: GitRepo, models: dict[str, Path], args: list[str], message: str
) -> None:
    Project.open().store(models["torchscript"], "m", signature=MLP_SIGNATURE)
    result = CliRunner().invoke(app, ["tune", *args])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (repo.root / SERVING_FILE).exists()


# --- end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_tune_measures_on_a_real_triton_reports_and_records_what_publish_then_serves(
    repo: GitRepo, models: dict[str, Path], tmp_path: Path
) -> None:
    Project.open().store(models["torchscript"], "m", signature=MLP_SIGNATURE)

    # any percentile: p95 is not one the load client reports by default
    result = CliRunner().invoke(app, ["tune", "m", "--target", "p95=50ms", "--quick", "--budget", "60s"])

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "m v1: p95 ≤ 50 ms" in out
    assert "served req/s" in out
    assert "winner" in out
    assert "Winner: " in out
    assert f"Recorded in {SERVING_FILE}" in out
    (report,) = (repo.root / ".nexus" / "tune" / "m").iterdir()
    assert {p.name for p in report.iterdir()} >= {"results.json", "results.csv"}
    results = json.loads((report / "results.json").read_text())
    assert results["target"] == {"percentile": 95.0, "ms": 50.0}
    assert len(results["spread"]["rates"]) == 3
    # the winner is the contender with the highest median of its measurements
    medians = {c["config"]: c["median"] for c in results["contenders"]}
    assert results["winner"]["config"] in medians
    assert medians[results["winner"]["config"]] == max(medians.values()) == results["spread"]["median"]
    # the machine's speed beside every search: one reference per evaluation and rerun, printed and recorded
    searches = results["evaluations"] + [r for c in results["contenders"] for r in c["reruns"]]
    assert all(e["reference_ms"] > 0 for e in searches if e["error"] is None)
    speed = results["speed"]
    assert len(speed["reference_ms"]) == len(searches)
    assert speed["min"] <= speed["median"] <= speed["max"]
    assert speed["drift"] == pytest.approx(speed["max"] / speed["min"], rel=1e-2)
    # printed to 2 places from the unrounded figures; results.json keeps 3 places
    printed = re.search(r"Machine speed: one forward pass of a single request took ([\d.]+)-([\d.]+) ms", out)
    assert printed, out
    assert float(printed[1]) == pytest.approx(speed["min"], abs=0.0051)
    assert float(printed[2]) == pytest.approx(speed["max"], abs=0.0051)
    with open(report / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"search", "rerun"} <= {r["stage"] for r in rows}
    assert all(r["offered"] and r["p99_ms"] is not None for r in rows)
    # every window is judged against what its draw scheduled (the Poisson count, not the offered mean)
    assert all(int(r["scheduled"]) > 0 for r in rows)
    windows = [p for e in results["evaluations"] for p in e["probes"] if p["latency_ms"] is not None]
    assert windows
    for w in windows:
        assert w["passed"] == passes(Probe(**{k: v for k, v in w.items() if k != "passed"}), 50.0)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no frontier.png" in out
    else:
        assert (report / "frontier.png").stat().st_size > 0

    recorded = json.loads((repo.root / SERVING_FILE).read_text())["models"]["m"]
    assert recorded["tuned"]["target"] == {"percentile": 95.0, "ms": 50.0}
    assert recorded["tuned"]["version"] == 1
    assert recorded["tuned"]["spread"]["min"] <= recorded["tuned"]["served_rate"] <= recorded["tuned"]["spread"]["max"]
    assert recorded["tuned"]["report"] == str(report.relative_to(repo.root))
    assert recorded["tuned"]["reference_ms"] == pytest.approx(speed["median"], abs=1e-3)
    winner = ServingOptions(**recorded["options"])
    assert winner == ServingOptions(**results["winner"]["options"])

    published = CliRunner().invoke(app, ["publish", "m", "-r", str(tmp_path / "repo")])
    assert published.exit_code == 0, published.output
    assert read_serving(parse_config((tmp_path / "repo/m/config.pbtxt").read_text()))[0] == winner
